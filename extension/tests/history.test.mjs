import assert from "node:assert/strict";
import { test } from "node:test";
import { HISTORY_KEY, createHistory, entryUpdateFromTask, unfinished } from "../lib/history.mjs";
import { memoryStorage } from "./helpers/memory-storage.mjs";

test("entries are added newest first, stamped, and replaced by id", async () => {
  let clock = 1000;
  const storage = memoryStorage();
  const history = createHistory(storage, { now: () => clock++ });
  await history.add({ id: "a", url: "u1" });
  await history.add({ id: "b", url: "u2" });
  const readd = await history.add({ id: "a", url: "u1", status: "failed" });
  assert.deepEqual((await history.list()).map((e) => e.id), ["a", "b"]);
  assert.equal(readd.status, "failed");
  assert.equal((await history.get("b")).status, "queued");
  assert.ok((await history.get("b")).createdAt >= 1000);
  assert.equal(await history.get("zzz"), null);
  await assert.rejects(history.add({ url: "no id" }));
});

test("concurrent updates are all kept, and progress never goes backwards", async () => {
  const storage = memoryStorage();
  const history = createHistory(storage);
  await history.add({ id: "t", progress: 0 });
  await Promise.all([
    history.update("t", { progress: 40, status: "processing" }),
    history.update("t", { queue_position: 0 }),
    history.update("t", { progress: 10 }), // a late poll racing a newer event
    history.update("t", { eta_seconds: 3 }),
  ]);
  const entry = await history.get("t");
  assert.equal(entry.progress, 40);
  assert.equal(entry.status, "processing");
  assert.equal(entry.queue_position, 0);
  assert.equal(entry.eta_seconds, 3);
  assert.equal(await history.update("missing", { progress: 1 }), null);
});

test("the list is capped, removal and clearing work", async () => {
  const storage = memoryStorage();
  const history = createHistory(storage, { limit: 3 });
  for (const id of ["1", "2", "3", "4", "5"]) await history.add({ id });
  assert.deepEqual((await history.list()).map((e) => e.id), ["5", "4", "3"]);
  await history.remove("4");
  assert.deepEqual((await history.list()).map((e) => e.id), ["5", "3"]);
  await history.clear();
  assert.deepEqual(storage.data[HISTORY_KEY], []);
});

test("a damaged stored value reads as an empty history", async () => {
  const history = createHistory(memoryStorage({ [HISTORY_KEY]: "garbage" }));
  assert.deepEqual(await history.list(), []);
});

test("task documents map onto entries without the audio blob", () => {
  const update = entryUpdateFromTask({ task_id: "x", status: "completed", progress: 99.5, audio: "AAAA",
    duration_seconds: 16.2, bpm: 120, error: null, request: { url: "u" } });
  assert.deepEqual(update, { status: "completed", progress: 100, duration_seconds: 16.2, bpm: 120, error: null });
  assert.deepEqual(unfinished([{ id: 1, status: "queued" }, { id: 2, status: "processing" }, { id: 3, status: "completed" },
    { id: 4, status: "failed" }]).map((e) => e.id), [1, 2]);
});
