// One Server-Sent Events parser for the web app and the extension: the vendored copies of
// eventsource-parser are byte for byte the pinned npm package, and both users of it survive
// reads that cut a \r\n in two (the web app's old hand-written parser dispatched early there).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { followTask } from "../../backend/api/static/js/tracker.js";
import { readSse } from "../lib/sse.mjs";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const PACKAGE = here("../node_modules/eventsource-parser/");
const COPIES = [here("../vendor/eventsource-parser/"), here("../../backend/api/static/vendor/eventsource-parser/")];

test("the vendored copies are the pinned eventsource-parser, with its licence", () => {
  const pinned = JSON.parse(readFileSync(here("../package.json"), "utf8")).devDependencies["eventsource-parser"];
  const installed = JSON.parse(readFileSync(`${PACKAGE}package.json`, "utf8"));
  assert.equal(installed.version, pinned, "run `npm ci` in extension/");
  for (const copy of COPIES) {
    assert.ok(readFileSync(`${copy}index.js`).equals(readFileSync(`${PACKAGE}dist/index.js`)), `${copy}index.js`);
    assert.ok(readFileSync(`${copy}LICENSE`).equals(readFileSync(`${PACKAGE}LICENSE`)), `${copy}LICENSE`);
    assert.match(readFileSync(`${copy}README`, "utf8"), new RegExp(`eventsource-parser ${pinned.replaceAll(".", "\\.")} `));
  }
});

// A multi-line JSON event whose first data line's \r\n is split between two reads.
const PIECES = ["event: progress\r\ndata: {\"progress\":\r", "\ndata: 7}\r\n\r\nevent: completed\r\ndata: {\"task_id\": \"t\"}\r\n\r\n"];

function streamOf(pieces) {
  const bytes = pieces.map((piece) => new TextEncoder().encode(piece));
  return new ReadableStream({
    start(controller) {
      for (const chunk of bytes) controller.enqueue(chunk);
      controller.close();
    },
  });
}

test("the web app's tracker reads an event whose \\r\\n is split between reads as one event", async () => {
  const api = {
    has: (path) => path === "/events",
    fetch: async () => new Response(streamOf(PIECES)),
    task: async () => ({ status: "processing" }),
  };
  const progress = [];
  const final = await followTask(api, "t", { onProgress: (p) => progress.push(p) });
  assert.deepEqual(progress, [7]);
  assert.deepEqual(final, { status: "completed", task_id: "t" });
});

test("the extension reads the same split stream as the same events", async () => {
  const events = [];
  await readSse(new Response(streamOf(PIECES)), (event) => events.push(event));
  assert.deepEqual(events.map((e) => [e.type, JSON.parse(e.data)]),
    [["progress", { progress: 7 }], ["completed", { task_id: "t" }]]);
});
