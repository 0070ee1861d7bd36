// Talking to the Segue API (same origin) and the ffmpeg sidecar: one place that turns every failure into a
// sentence a person can act on, and that carries the API key when the server wants one.

const KEY_STORAGE = "segue.apiKey";

export class ApiError extends Error {
  constructor(message, { status = 0, code = "network_error", retryAfter = null, detail = "" } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.detail = detail;
  }
}

export function readConfig() {
  const node = document.getElementById("segue-config");
  return node ? JSON.parse(node.textContent) : {};
}

export const apiKey = {
  get: () => localStorage.getItem(KEY_STORAGE) || "",
  set: (key) => (key ? localStorage.setItem(KEY_STORAGE, key) : localStorage.removeItem(KEY_STORAGE)),
};

// What the server says, plus what the person can do about it.
const ADVICE = {
  missing_api_key: "This server needs an API key: enter it at the top right.",
  invalid_api_key: "The API key was refused: check it at the top right.",
  rate_limited: "Too many requests.",
  too_many_queued: "You already have the most tasks allowed waiting.",
  queue_unavailable: "The job queue is down; try again in a moment.",
  store_unavailable: "The task store is down; try again in a moment.",
  payload_too_large: "That clip is too large to send.",
};

export async function errorFromResponse(response, what) {
  let body = null;
  try { body = await response.clone().json(); } catch { /* not JSON: a proxy page or an empty body */ }
  const code = (body && body.code) || `http_${response.status}`;
  const retryAfter = Number(response.headers.get("Retry-After")) || null;
  let message = (body && body.error) || `${what} answered HTTP ${response.status} ${response.statusText}`.trim();
  message = message.charAt(0).toUpperCase() + message.slice(1);
  let detail = ADVICE[code] || "";
  if (retryAfter) detail = `${detail} Retry in ${retryAfter} s.`.trim();
  return new ApiError(message, { status: response.status, code, retryAfter, detail });
}

function networkError(what, url) {
  return new ApiError(`Could not reach ${what}`, {
    code: "network_error", detail: `No answer from ${new URL(url, location.href).origin}. Is it running?`,
  });
}

export class Api {
  constructor(config) {
    this.config = config;
    this.routes = null; // paths listed in /openapi.json, filled by discover()
  }

  headers(extra = {}) {
    const key = apiKey.get();
    return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
  }

  async fetch(path, { method = "GET", body, signal, what = "The Segue API" } = {}) {
    const init = { method, signal, headers: this.headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
    if (body !== undefined) init.body = JSON.stringify(body);
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw networkError(what, path);
    }
    if (!response.ok) throw await errorFromResponse(response, what);
    return response;
  }

  async json(path, options) {
    return (await this.fetch(path, options)).json();
  }

  // Which optional routes this server has. Reading the OpenAPI document first means no request ever goes to a
  // route that is not there (each would print a 404 in the console); the document is public even with keys on.
  async discover() {
    try {
      const response = await fetch("/openapi.json");
      this.routes = response.ok ? Object.keys((await response.json()).paths || {}) : [];
    } catch {
      this.routes = [];
    }
    return this.routes;
  }

  has(suffix) {
    return (this.routes || []).some((path) => path === suffix || path.endsWith(suffix));
  }

  async models() {
    if (this.has("/models")) {
      try {
        const data = await this.json("/models");
        if (Array.isArray(data.models) && data.models.length) return data;
      } catch { /* fall through to the default model */ }
    }
    return { models: [], default: null };
  }

  submit(kind, body) {
    return this.json(`/${kind}`, { method: "POST", body });
  }

  task(id, signal) {
    return this.json(`/tasks/${encodeURIComponent(id)}`, { signal });
  }

  cancel(id) {
    return this.json(`/tasks/${encodeURIComponent(id)}/cancel`, { method: "POST", body: {} });
  }

  // The finished audio as a Blob: the file route when the server has it, else the base64 in the task document.
  async resultAudio(id, task) {
    if (this.has("/audio")) {
      try {
        const response = await this.fetch(`/tasks/${encodeURIComponent(id)}/audio`);
        const blob = await response.blob();
        if (blob.size) return blob;
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 404) throw error;
      }
    }
    const doc = task && task.audio ? task : await this.task(id);
    if (!doc.audio) throw new ApiError("The finished task carries no audio", { code: "no_audio" });
    return base64ToBlob(doc.audio);
  }

  // The sidecar crops and converts; it answers base64 MP3 as text/plain, and JSON errors.
  async crop(audioBase64, start, end) {
    const url = `${this.config.sidecarUrl}/crop-audio`;
    const body = { audioData: audioBase64, start };
    if (end !== undefined && end !== null) body.end = end;
    let response;
    try {
      response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    } catch {
      throw networkError("the audio sidecar", url);
    }
    if (!response.ok) throw await errorFromResponse(response, "The audio sidecar");
    return base64ToBlob((await response.text()).trim(), "audio/mpeg");
  }
}

export function sniffMime(bytes) {
  const head = String.fromCharCode(...bytes.slice(0, 4));
  if (head === "RIFF") return "audio/wav";
  if (head === "fLaC") return "audio/flac";
  if (head === "OggS") return "audio/ogg";
  return "audio/mpeg";
}

export function base64ToBlob(b64, mime) {
  const binary = atob(b64.replace(/^data:[^,]*,/, "").replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return new Blob([bytes], { type: mime || sniffMime(bytes) });
}

export function blobToBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}
