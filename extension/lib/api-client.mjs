// The Segue HTTP API as the extension uses it (see API.md in the repository).
//
// Every call goes through `request`, which adds the API key, turns network
// failures and the server's JSON errors into ApiError with the server's own
// sentence, and never evaluates anything it receives. Routes that older
// servers lack (/events, /audio, /models) answer 404 there; callers fall back
// to the compatible routes (polling /tasks/<id>, the task's base64 `audio`).

import { base64ToBytes, sniffAudioType } from "./base64.mjs";

export class ApiError extends Error {
  constructor(message, { status = 0, code = "", body = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

export function createApiClient({ baseUrl, apiKey = "", fetchImpl = globalThis.fetch }) {
  const base = String(baseUrl).replace(/\/+$/, "");

  function headers(extra = {}) {
    const result = { ...extra };
    if (apiKey) result.Authorization = `Bearer ${apiKey}`;
    return result;
  }

  async function send(method, path, { body, accept = "application/json", signal } = {}) {
    const init = { method, headers: headers({ Accept: accept }), signal, cache: "no-store" };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    try {
      return await fetchImpl(base + path, init);
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new ApiError(`Cannot reach the Segue backend at ${base} (${error.message}). Check the backend URL in the options.`,
        { code: "network_error" });
    }
  }

  async function failure(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // a proxy's HTML error page, say: describe it by status alone
    }
    const message = body && typeof body.error === "string" ? body.error
      : `The backend answered HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`;
    return new ApiError(message, { status: response.status, code: body?.code ?? "", body });
  }

  async function request(method, path, options) {
    const response = await send(method, path, options);
    if (!response.ok) throw await failure(response);
    return response.json();
  }

  const id = (taskId) => encodeURIComponent(taskId);

  return {
    base,
    generate: (body) => request("POST", "/generate", { body }),
    continueClip: (body) => request("POST", "/continue", { body }),
    getTask: (taskId) => request("GET", `/tasks/${id(taskId)}`),
    getProgress: (taskId) => request("GET", `/progress/${id(taskId)}`),
    cancel: (taskId) => request("POST", `/tasks/${id(taskId)}/cancel`, { body: {} }),

    /** The server's /health body, whether it says live (200) or degraded (503). */
    async health() {
      const response = await send("GET", "/health");
      if (response.status !== 200 && response.status !== 503) throw await failure(response);
      return response.json();
    },

    /** The offered models, or null when the server has no /models route. */
    async models() {
      const response = await send("GET", "/models");
      if (response.status === 404) return null;
      if (!response.ok) throw await failure(response);
      return response.json();
    },

    /**
     * Open /tasks/<id>/events. Resolves to the streaming Response, or null when
     * the server answers 404 (no such route on this server, or an unknown task:
     * either way the caller polls, and polling reports an unknown task clearly).
     */
    async openEvents(taskId, signal) {
      const response = await send("GET", `/tasks/${id(taskId)}/events?audio=0`, { accept: "text/event-stream", signal });
      if (response.status === 404) return null;
      if (!response.ok) throw await failure(response);
      return response;
    },

    /** The result file: {bytes, type, filename}. Uses /audio, else the task's base64 `audio`. */
    async fetchAudio(taskId) {
      const response = await send("GET", `/tasks/${id(taskId)}/audio`, { accept: "audio/*" });
      if (response.ok) {
        const bytes = new Uint8Array(await response.arrayBuffer());
        const type = (response.headers.get("Content-Type") || "").split(";")[0] || sniffAudioType(bytes);
        return { bytes, type, filename: filenameFrom(response.headers.get("Content-Disposition"), taskId, type) };
      }
      if (response.status !== 404) throw await failure(response);
      const task = await request("GET", `/tasks/${id(taskId)}`);
      if (task.status !== "completed" || typeof task.audio !== "string") {
        throw new ApiError(`The result is not ready (task is ${task.status}).`, { code: "task_not_completed" });
      }
      const bytes = base64ToBytes(task.audio);
      const type = sniffAudioType(bytes);
      return { bytes, type, filename: filenameFrom(null, taskId, type) };
    },
  };
}

/** The file name the server suggests, else segue-<first 8 of id>.<ext>. Path separators are dropped. */
export function filenameFrom(disposition, taskId, type) {
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition || "");
  if (match) {
    const name = decodeURIComponent(match[1]).replace(/[\\/]/g, "_").trim();
    if (name) return name;
  }
  const ext = type === "audio/mpeg" ? "mp3" : type === "audio/flac" ? "flac" : type === "audio/ogg" ? "ogg" : "wav";
  return `segue-${String(taskId).slice(0, 8)}.${ext}`;
}
