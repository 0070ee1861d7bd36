// The client's real fetch() calls against a loopback HTTP server that answers
// the way API.md says the backend does (the backend itself is exercised with
// the extension in tests/scenarios/test_extension_browser.py).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { ApiError, createApiClient, filenameFrom } from "../lib/api-client.mjs";
import { bytesToBase64 } from "../lib/base64.mjs";
import { json, startServer } from "./helpers/loopback-server.mjs";

const WAV = Uint8Array.from([..."RIFF"].map((c) => c.charCodeAt(0)).concat([1, 2, 3, 4, 5, 6, 7, 8]));
let server;

before(async () => {
  server = await startServer({
    "POST /generate": (req, res, record) => {
      const body = JSON.parse(record.body);
      if (!body.url) return json(res, 400, { error: "url is required", code: "invalid_field" });
      return json(res, 202, { task_id: "T1234567890", status: "queued", queue_position: 0 });
    },
    "GET /tasks/T1234567890": (req, res) => json(res, 200, { task_id: "T1234567890", status: "completed",
      audio: bytesToBase64(WAV) }),
    "GET /tasks/T1234567890/audio": (req, res) => json(res, 404, { error: "not found", code: "not_found" }),
    "GET /tasks/NEWSERVER01/audio": (req, res) => {
      res.writeHead(200, { "Content-Type": "audio/wav", "Content-Disposition": 'attachment; filename="segue-NEWSERVE.wav"' });
      res.end(Buffer.from(WAV));
    },
    "GET /tasks/RUNNING0001/audio": (req, res) => json(res, 409, { error: "the task is not completed yet",
      code: "task_not_completed" }),
    "POST /tasks/T1234567890/cancel": (req, res) => json(res, 200, { task_id: "T1234567890", status: "processing",
      cancel_requested: true }),
    "GET /health": (req, res) => json(res, 503, { status: "down", redis: "live", mongodb: "down" }),
    "GET /tasks/PROXYFAIL01": (req, res) => {
      res.writeHead(502, "Bad Gateway", { "Content-Type": "text/html" });
      res.end("<h1>Bad gateway</h1>");
    },
  });
});
after(() => server.close());

test("requests carry JSON and the API key as a Bearer token", async () => {
  const client = createApiClient({ baseUrl: server.url + "/", apiKey: "s3cret" });
  const answer = await client.generate({ url: "https://www.youtube.com/watch?v=dQw4w9WgXcQ", currentTime: 83.5 });
  assert.equal(answer.task_id, "T1234567890");
  const sent = server.requests.at(-1);
  assert.equal(sent.path, "/generate");
  assert.equal(sent.headers.authorization, "Bearer s3cret");
  assert.equal(sent.headers["content-type"], "application/json");
  assert.deepEqual(JSON.parse(sent.body), { url: "https://www.youtube.com/watch?v=dQw4w9WgXcQ", currentTime: 83.5 });
});

test("cancel posts to the task's cancel route", async () => {
  const task = await createApiClient({ baseUrl: server.url, apiKey: "k" }).cancel("T1234567890");
  assert.equal(task.cancel_requested, true);
  const sent = server.requests.at(-1);
  assert.deepEqual([sent.method, sent.path, sent.headers.authorization], ["POST", "/tasks/T1234567890/cancel", "Bearer k"]);
});

test("no key, no Authorization header", async () => {
  await createApiClient({ baseUrl: server.url }).getTask("T1234567890");
  assert.equal(server.requests.at(-1).headers.authorization, undefined);
});

test("the server's error sentence and code reach the caller", async () => {
  const client = createApiClient({ baseUrl: server.url });
  await assert.rejects(client.generate({}), (error) => error instanceof ApiError && error.status === 400
    && error.message === "url is required" && error.code === "invalid_field");
  await assert.rejects(client.getTask("nope"), (error) => error.status === 404 && error.message === "not found");
});

test("a non-JSON error page and an unreachable server give readable errors", async () => {
  const client = createApiClient({ baseUrl: server.url });
  await assert.rejects(client.getTask("PROXYFAIL01"), (error) => error instanceof ApiError && error.status === 502
    && error.message === "The backend answered HTTP 502 Bad Gateway");
  await assert.rejects(client.getTask("x/../../health"), (error) => error.status === 404);
  assert.equal(server.requests.at(-1).path, "/tasks/x%2F..%2F..%2Fhealth", "ids are escaped into one path segment");
  const dead = createApiClient({ baseUrl: "http://127.0.0.1:9" });
  await assert.rejects(dead.getTask("x"), (error) => error.code === "network_error"
    && /Cannot reach the Segue backend at http:\/\/127\.0\.0\.1:9/.test(error.message));
});

test("health returns the body of a 503 instead of throwing", async () => {
  const health = await createApiClient({ baseUrl: server.url }).health();
  assert.equal(health.mongodb, "down");
});

test("models is null where the server has no /models route", async () => {
  assert.equal(await createApiClient({ baseUrl: server.url }).models(), null);
});

test("audio comes from /audio with the server's file name, else from the task's base64", async () => {
  const client = createApiClient({ baseUrl: server.url });
  const direct = await client.fetchAudio("NEWSERVER01");
  assert.deepEqual([...direct.bytes], [...WAV]);
  assert.equal(direct.type, "audio/wav");
  assert.equal(direct.filename, "segue-NEWSERVE.wav");
  const fallback = await client.fetchAudio("T1234567890");
  assert.deepEqual([...fallback.bytes], [...WAV]);
  assert.equal(fallback.type, "audio/wav");
  assert.equal(fallback.filename, "segue-T1234567.wav");
  await assert.rejects(client.fetchAudio("RUNNING0001"), (error) => error.code === "task_not_completed");
});

test("suggested file names cannot climb directories", () => {
  assert.equal(filenameFrom('attachment; filename="../../etc/x.wav"', "abc", "audio/wav"), ".._.._etc_x.wav");
  assert.equal(filenameFrom(null, "abcdefghijk", "audio/mpeg"), "segue-abcdefgh.mp3");
});
