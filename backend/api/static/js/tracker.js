// Following a task to its end: Server-Sent Events when the server has them, else polling /tasks/<id> every second.
// SSE is read with fetch() rather than EventSource because EventSource cannot send the Authorization header.

import { createParser } from "../vendor/eventsource-parser/index.js";

const TERMINAL = new Set(["completed", "failed", "canceled"]);
const POLL_MS = 1000;

const sleep = (ms, signal) => new Promise((resolve, reject) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(timer); reject(new DOMException("aborted", "AbortError")); }, { once: true });
});

export async function followTask(api, id, handlers = {}) {
  if (api.has("/events")) {
    const final = await streamEvents(api, id, handlers).catch((error) => {
      if (error.name === "AbortError") throw error;
      return null; // the stream broke or was refused: polling reaches the end too, and reports an unknown id
    });
    if (final) return final;
  }
  return poll(api, id, handlers);
}

async function poll(api, id, { onTask, signal }) {
  let failures = 0;
  for (;;) {
    let task;
    try {
      task = await api.task(id, signal);
      failures = 0;
    } catch (error) {
      if (error.name === "AbortError" || (error.status >= 400 && error.status < 500 && error.status !== 429)) throw error;
      failures += 1;
      if (failures > 30) throw error;
      await sleep(error.retryAfter ? error.retryAfter * 1000 : POLL_MS * Math.min(failures, 5), signal);
      continue;
    }
    onTask?.(task);
    if (TERMINAL.has(task.status)) return task;
    await sleep(POLL_MS, signal);
  }
}

async function streamEvents(api, id, { onTask, onProgress, onAudio, signal }) {
  const response = await api.fetch(`/tasks/${encodeURIComponent(id)}/events`, { signal });
  if (!response.body) return null;
  // One look at the task document gives the queue position and status before the first event.
  api.task(id, signal).then((task) => onTask?.(task)).catch(() => {});
  let final = null;
  // eventsource-parser (vendored) splits the stream into events, whatever the reads cut through (a \r\n too).
  const parser = createParser({
    onEvent(message) {
      if (final) return;
      const event = decodeEvent(message);
      if (!event) return;
      if (event.type === "progress") onProgress?.(Number(event.data.progress));
      else if (event.type === "audio") onAudio?.(event.data);
      else if (TERMINAL.has(event.type)) final = { status: event.type, ...event.data };
    },
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return null; // ended without a final event
    parser.feed(value);
    if (final) {
      drain(reader); // the server closes the stream after its final event; aborting would log a failed request
      return final;
    }
  }
}

async function drain(reader) {
  try {
    while (!(await reader.read()).done) { /* nothing after the final event matters */ }
  } catch { /* the connection dropped: nothing left to read anyway */ }
}

function decodeEvent(message) {
  try {
    return { type: message.event || "message", data: JSON.parse(message.data) };
  } catch {
    return null; // not JSON: not one of ours
  }
}

export const isTerminal = (status) => TERMINAL.has(status);
