// Following a task to its end: Server-Sent Events when the server has them, else polling /tasks/<id> every second.
// SSE is read with fetch() rather than EventSource because EventSource cannot send the Authorization header.

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
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return null; // ended without a final event
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = parseEvent(block);
      if (!event) continue;
      if (event.type === "progress") onProgress?.(Number(event.data.progress));
      else if (event.type === "audio") onAudio?.(event.data);
      else if (TERMINAL.has(event.type)) {
        drain(reader); // the server closes the stream after its final event; aborting would log a failed request
        return { status: event.type, ...event.data };
      }
    }
  }
}

async function drain(reader) {
  try {
    while (!(await reader.read()).done) { /* nothing after the final event matters */ }
  } catch { /* the connection dropped: nothing left to read anyway */ }
}

function parseEvent(block) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  try {
    return { type, data: JSON.parse(data.join("\n")) };
  } catch {
    return null;
  }
}

export const isTerminal = (status) => TERMINAL.has(status);
