// Following a task: over SSE in the format the contract gives for
// /tasks/<id>/events, and by polling /tasks/<id> where that route answers 404.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createApiClient } from "../lib/api-client.mjs";
import { watchTask } from "../lib/task-watcher.mjs";
import { json, startServer } from "./helpers/loopback-server.mjs";

let server;
const polls = { POLLED00001: 0 };

function sse(res, events) {
  res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
  for (const [type, data] of events) res.write(`event: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
  res.end();
}

before(async () => {
  server = await startServer({
    "GET /tasks/STREAMED001/events": (req, res) => sse(res, [
      ["progress", { progress: 10 }], ["audio", { seq: 0, pcm: "AAAA", final: false }],
      ["progress", { progress: 60 }], ["completed", { task_id: "STREAMED001", status: "completed", bpm: 120,
        audio_url: "/tasks/STREAMED001/audio" }],
    ]),
    "GET /tasks/FAILED00001/events": (req, res) => sse(res, [["failed", { task_id: "FAILED00001", status: "failed",
      error: "could not download the video" }]]),
    // A stream that ends without a final event (a proxy cut it): the watcher must poll.
    "GET /tasks/CUTOFF00001/events": (req, res) => sse(res, [["progress", { progress: 5 }]]),
    "GET /tasks/CUTOFF00001": (req, res) => json(res, 200, { task_id: "CUTOFF00001", status: "completed", audio: "UklGRg==" }),
    // No /events route for POLLED00001: 404, as on a server without the streaming routes.
    "GET /tasks/POLLED00001": (req, res) => {
      polls.POLLED00001 += 1;
      const n = polls.POLLED00001;
      if (n === 1) return json(res, 200, { status: "queued", progress: 0, queue_position: 2, eta_seconds: 9 });
      if (n === 2) return json(res, 503, { error: "the task store (MongoDB) is unavailable", code: "store_unavailable" });
      if (n === 3) return json(res, 200, { status: "processing", progress: 55 });
      return json(res, 200, { status: "completed", progress: 100, audio: "UklGRg==", duration_seconds: 16 });
    },
  });
});
after(() => server.close());

const client = () => createApiClient({ baseUrl: server.url, apiKey: "k" });
const instant = async () => {};

test("SSE: progress and audio chunks are reported, the final event's document returned", async () => {
  const updates = [];
  const final = await watchTask(client(), "STREAMED001", { onUpdate: (u) => updates.push(u), sleep: instant });
  assert.deepEqual(updates, [{ status: "processing", progress: 10 }, { status: "processing", chunks: 1 },
    { status: "processing", progress: 60 }]);
  assert.equal(final.status, "completed");
  assert.equal(final.bpm, 120);
  // audio=0: the extension shows progress only, so the server leaves the PCM chunks out.
  const sent = server.requests.find((r) => r.path === "/tasks/STREAMED001/events?audio=0");
  assert.equal(sent.headers.accept, "text/event-stream");
  assert.equal(sent.headers.authorization, "Bearer k", "the stream is opened with fetch so the key is sent");
  assert.ok(!server.requests.some((r) => r.path === "/tasks/STREAMED001"), "no polling while the stream works");
});

test("SSE: a failed event carries the server's reason", async () => {
  const final = await watchTask(client(), "FAILED00001", { sleep: instant });
  assert.equal(final.status, "failed");
  assert.equal(final.error, "could not download the video");
});

test("a stream that ends without a final event falls back to polling", async () => {
  const final = await watchTask(client(), "CUTOFF00001", { sleep: instant });
  assert.equal(final.status, "completed");
  assert.equal(final.audio, undefined, "the base64 blob is not kept");
});

test("404 on /events: polls /tasks/<id> every interval, riding out a 503", async () => {
  const updates = [];
  const waits = [];
  const final = await watchTask(client(), "POLLED00001", {
    onUpdate: (u) => updates.push(u), pollIntervalMs: 1000, sleep: async (ms) => { waits.push(ms); },
  });
  assert.equal(final.status, "completed");
  assert.equal(final.duration_seconds, 16);
  assert.deepEqual(updates, [{ status: "queued", progress: 0, queue_position: 2, eta_seconds: 9 },
    { status: "processing", progress: 55, queue_position: undefined, eta_seconds: undefined }]);
  assert.deepEqual(waits, [1000, 1000, 1000]);
  assert.equal(polls.POLLED00001, 4);
});

test("an unknown task ends the watch with the server's 404", async () => {
  await assert.rejects(watchTask(client(), "UNKNOWN0001", { sleep: instant }), (error) => error.status === 404);
});

test("abort stops a watch", async () => {
  const controller = new AbortController();
  const watching = watchTask(client(), "POLLED00001", { signal: controller.signal,
    sleep: (ms, signal) => new Promise((resolve, reject) => signal.addEventListener("abort", () => reject(new Error("stopped")))) });
  polls.POLLED00001 = 0;
  setTimeout(() => controller.abort(new Error("stopped")), 50);
  await assert.rejects(watching, /stopped/);
});
