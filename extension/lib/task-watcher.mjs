// Follow one task to its end: Server-Sent Events when the server offers them,
// otherwise (404, or a stream that breaks off) GET /tasks/<id> once a second.

import { ApiError } from "./api-client.mjs";
import { readSse } from "./sse.mjs";

export const FINAL_STATUSES = new Set(["completed", "failed", "canceled"]);

const delay = (ms, signal) => new Promise((resolve, reject) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => {
    clearTimeout(timer);
    reject(signal.reason ?? new Error("aborted"));
  }, { once: true });
});

/** A task document without the base64 `audio` blob (history keeps metadata only). */
export function withoutAudio(task) {
  const { audio, ...rest } = task;
  return rest;
}

/**
 * @param client  an api-client
 * @param onUpdate  called with partial task fields as they change: {status, progress, queue_position, eta_seconds, chunks}
 * @returns the final task document (status completed, failed or canceled), without `audio`
 */
export async function watchTask(client, taskId, {
  onUpdate = () => {}, signal, pollIntervalMs = 1000, sleep = delay, maxTransientFailures = 60,
} = {}) {
  const streamed = await followEvents(client, taskId, onUpdate, signal);
  if (streamed) return streamed;
  return poll(client, taskId, { onUpdate, signal, pollIntervalMs, sleep, maxTransientFailures });
}

/** The final document from the event stream, or null when the caller should poll instead. */
async function followEvents(client, taskId, onUpdate, signal) {
  let response;
  try {
    response = await client.openEvents(taskId, signal);
  } catch (error) {
    if (signal?.aborted) throw error;
    return null; // the stream is an optimisation; polling is the contract every server keeps
  }
  if (!response) return null;
  let final = null;
  let chunks = 0;
  try {
    await readSse(response, (event) => {
      if (final) return;
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return; // not ours to interpret
      }
      if (event.type === "progress" && typeof data.progress === "number") {
        onUpdate({ status: "processing", progress: data.progress });
      } else if (event.type === "audio") {
        chunks += 1;
        onUpdate({ status: "processing", chunks });
      } else if (FINAL_STATUSES.has(event.type)) {
        final = withoutAudio({ ...data, status: data.status ?? event.type });
      }
    }, signal);
  } catch (error) {
    if (signal?.aborted) throw error;
  }
  return final;
}

async function poll(client, taskId, { onUpdate, signal, pollIntervalMs, sleep, maxTransientFailures }) {
  let failures = 0;
  for (;;) {
    if (signal?.aborted) throw signal.reason ?? new Error("aborted");
    let task = null;
    try {
      task = await client.getTask(taskId);
      failures = 0;
    } catch (error) {
      // A restarting server (network error, 502/503) is worth waiting for; a 4xx is an answer.
      const transient = error instanceof ApiError && (error.status === 0 || error.status >= 500 || error.status === 429);
      if (!transient || ++failures > maxTransientFailures) throw error;
    }
    if (task) {
      const { status, progress, queue_position, eta_seconds } = task;
      if (FINAL_STATUSES.has(status)) return withoutAudio(task);
      onUpdate({ status, progress, queue_position, eta_seconds });
    }
    await sleep(pollIntervalMs, signal);
  }
}
