import assert from "node:assert/strict";
import { test } from "node:test";
import { createSseParser, readSse } from "../lib/sse.mjs";

function parseAll(pieces) {
  const events = [];
  const parser = createSseParser((event) => events.push(event));
  for (const piece of pieces) parser.push(piece);
  parser.end();
  return events;
}

test("events, ids, comments and multi-line data", () => {
  const text = ": keep-alive\n\nevent: progress\ndata: {\"progress\": 42.5}\n\n"
    + "event: audio\nid: 3\ndata: {\"seq\": 3}\n\ndata: a\ndata: b\n\n";
  assert.deepEqual(parseAll([text]), [
    { type: "progress", data: "{\"progress\": 42.5}", id: null },
    { type: "audio", data: "{\"seq\": 3}", id: "3" },
    { type: "message", data: "a\nb", id: "3" },
  ]);
});

test("any split of the byte stream gives the same events, with \\r\\n and \\r line ends", () => {
  const text = "event: progress\r\ndata: {\"progress\": 1}\r\n\r\nevent: completed\rdata:{\"status\":\"completed\"}\r\r";
  const whole = parseAll([text]);
  assert.equal(whole.length, 2);
  assert.equal(whole[1].data, "{\"status\":\"completed\"}");
  for (let cut = 1; cut < text.length; cut += 1) {
    assert.deepEqual(parseAll([text.slice(0, cut), text.slice(cut)]), whole, `split at ${cut}`);
  }
});

test("an event cut off before its blank line is not dispatched", () => {
  assert.deepEqual(parseAll(["event: completed\ndata: {}\n"]), []);
});

test("readSse reads a streamed Response body, multi-byte characters split across chunks", async () => {
  const bytes = new TextEncoder().encode("event: failed\ndata: {\"error\": \"caf\u00e9 \u266b\"}\n\n");
  const stream = new ReadableStream({
    start(controller) {
      for (let i = 0; i < bytes.length; i += 5) controller.enqueue(bytes.subarray(i, i + 5));
      controller.close();
    },
  });
  const events = [];
  await readSse(new Response(stream), (event) => events.push(event));
  assert.equal(events.length, 1);
  assert.equal(JSON.parse(events[0].data).error, "caf\u00e9 \u266b");
});
