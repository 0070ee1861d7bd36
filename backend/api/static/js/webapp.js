// The studio page: submit a generation, follow it live, show the result as a waveform with a player, crop,
// continue, download, and keep this browser's clips in IndexedDB.
import { Api, ApiError, apiKey, blobToBase64, readConfig } from "./api.js";
import { history, newId } from "./history.js";
import { LivePlayer } from "./liveplayer.js";
import { followTask } from "./tracker.js";
import { showError, toast } from "./ui.js";
import { decodePcmChunk, encodeWav } from "./wav.js";
import { drawThumbnail, formatTime, peaks, Waveform } from "./waveform.js";
import { YouTubeEmbed, youtubeInfo } from "./youtube.js";

const config = readConfig();
const api = new Api(config);
const $ = (id) => document.getElementById(id);
const form = $("generate-form");
const audio = $("audio");
const THUMB_PEAKS = 64;

const state = {
  current: null,      // the history entry on show
  buffer: null,       // its decoded audio
  objectUrl: null,
  active: null,       // {entryId, controller} of the task the progress bar follows
  busy: false,
};

const waveform = new Waveform($("waveform"), {
  onSeek: (seconds) => {
    if (Number.isFinite(audio.duration)) audio.currentTime = Math.min(seconds, audio.duration);
  },
});
$("waveform").addEventListener("cursorchange", (event) => { $("cursor-readout").textContent = formatTime(event.detail); });

// ---------- decoding ----------

// An OfflineAudioContext decodes without needing a user gesture (an AudioContext would warn until one).
const decoder = new OfflineAudioContext(2, 1, 44100);
async function decode(blob) {
  try {
    return await decoder.decodeAudioData(await blob.arrayBuffer());
  } catch {
    throw new ApiError("This browser could not decode the audio", { code: "undecodable_audio" });
  }
}

// ---------- source: URL, YouTube, start time ----------

const youtube = new YouTubeEmbed($("yt-frame"), {
  onTime: (seconds) => setStart(Math.round(seconds * 10) / 10),
});

function setStart(seconds) {
  $("currentTime").value = String(seconds);
  updateStartReadout();
}

function updateStartReadout() {
  const value = Number($("currentTime").value);
  $("start-readout").textContent = $("currentTime").value === "" || !(value >= 0) ? "–" : formatTime(value);
}

let shownVideo = null;
function updateSourceMode() {
  const info = youtubeInfo($("url").value);
  $("url").removeAttribute("aria-invalid");
  $("youtube-box").hidden = !info;
  $("source-kind").textContent = info ? "YouTube" : "Media URL";
  $("yt-load").hidden = false;
  if (!info) {
    youtube.unload();
    shownVideo = null;
    return;
  }
  if (info.id !== shownVideo) {
    youtube.unload();
    shownVideo = info.id;
    $("yt-id").textContent = `video ${info.id}`;
    if (info.start !== null) setStart(info.start);
  }
}

$("url").addEventListener("input", updateSourceMode);
$("currentTime").addEventListener("input", updateStartReadout);
$("yt-load").addEventListener("click", () => {
  const info = youtubeInfo($("url").value);
  if (!info) return;
  $("yt-load").hidden = true;
  youtube.load(info.id, Number($("currentTime").value) || 0);
});
$("promptLength").addEventListener("input", () => { $("prompt-readout").textContent = `${$("promptLength").value} s`; });
$("seed-dice").addEventListener("click", () => { $("seed").value = String(Math.floor(Math.random() * 2 ** 31)); });

// ---------- API key ----------

function initKeyForm() {
  if (!config.authRequired) return;
  const keyForm = $("key-form");
  keyForm.hidden = false;
  $("api-key").value = apiKey.get();
  const paint = () => { $("key-dot").className = `dot ${apiKey.get() ? "live" : "warn"}`; };
  paint();
  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey.set($("api-key").value.trim());
    paint();
    toast({ kind: "success", title: apiKey.get() ? "API key saved in this browser" : "API key removed" });
  });
}

function reportError(error, title) {
  showError(error, title);
  if (error instanceof ApiError && ["missing_api_key", "invalid_api_key"].includes(error.code) && config.authRequired) {
    $("api-key").focus();
  }
}

// ---------- models ----------

async function loadModels() {
  await api.discover();
  const { models, default: fallback } = await api.models();
  if (!models.length) return;
  const select = $("model");
  select.replaceChildren();
  for (const model of models) {
    const option = document.createElement("option");
    option.value = model.id;
    const name = model.id.includes("/") && model.id.startsWith("/") ? model.id.split("/").filter(Boolean).pop() : model.id;
    option.textContent = `${name}${model.loaded ? "  · loaded" : ""}`;
    if (model.description) option.title = model.description;
    option.selected = model.default || model.id === fallback;
    select.append(option);
  }
}

// ---------- requests ----------

// Values go to the API as typed (numbers as strings are part of the contract), so its own checks and
// messages apply; only an empty URL is caught here.
function commonFields() {
  const body = {};
  const put = (key, id) => {
    const value = $(id).value.trim();
    if (value !== "") body[key] = value;
  };
  put("model", "model");
  put("prompt", "prompt");
  put("seed", "seed");
  for (const name of ["temperature", "cfg_coef", "top_k", "top_p"]) put(name, name);
  return body;
}

function generateBody() {
  const body = {
    url: $("url").value.trim(),
    promptLength: $("promptLength").value,
    duration: `${$("durationMin").value.trim()}-${$("durationMax").value.trim()}`,
    ...commonFields(),
  };
  const start = $("currentTime").value.trim();
  if (start !== "") body.currentTime = start;
  return body;
}

function describeSource(url, start) {
  const info = youtubeInfo(url);
  let name;
  if (info) name = `YouTube ${info.id}`;
  else {
    try {
      const parsed = new URL(url);
      name = decodeURIComponent(parsed.pathname.split("/").filter(Boolean).pop() || parsed.hostname);
    } catch {
      name = url;
    }
  }
  return `${name} @ ${formatTime(Number(start) || 0, 0)}`;
}

function setBusy(busy) {
  state.busy = busy;
  $("generate").disabled = busy;
  $("continue").disabled = busy || !state.current;
  $("generate").setAttribute("aria-busy", String(busy));
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (state.busy) return;
  const body = generateBody();
  if (!body.url) {
    $("url").setAttribute("aria-invalid", "true");
    $("url").focus();
    toast({ kind: "error", title: "Paste a link to a track first", detail: "A YouTube link or any http(s) audio or video URL." });
    return;
  }
  await submitTask("generate", body, {
    title: describeSource(body.url, body.currentTime),
    subtitle: body.prompt ? `“${body.prompt}”` : "new music",
    boundary: Number(body.promptLength) || 0,
    expectedSeconds: Number($("durationMax").value) - Number(body.promptLength),
  });
});

$("continue").addEventListener("click", async () => {
  const entry = state.current;
  if (!entry || state.busy) return;
  const body = { audio: await blobToBase64(entry.blob), prompt_duration: $("promptLength").value, ...commonFields() };
  if (entry.taskId) body.task_id = entry.taskId;
  await submitTask("continue", body, {
    title: entry.title,
    subtitle: `extended from ${formatTime(state.buffer?.duration || 0)}`,
    parentId: entry.id,
    boundary: state.buffer?.duration || 0,
    expectedSeconds: 30 - Number(body.prompt_duration),
  });
});

async function submitTask(kind, body, meta) {
  setBusy(true);
  progress.start("Submitting…");
  try {
    const answer = await api.submit(kind, body);
    const entry = {
      id: answer.task_id, taskId: answer.task_id, kind, status: "running", createdAt: Date.now(),
      title: meta.title, subtitle: meta.subtitle, parentId: meta.parentId || null, boundary: meta.boundary,
      expectedSeconds: meta.expectedSeconds,
    };
    await history.put(entry);
    renderHistory();
    progress.task({ status: answer.status, queue_position: answer.queue_position, progress: 0 });
    await track(entry, true);
  } catch (error) {
    // Refused before a task existed: the toast says why, and the field it names is marked.
    progress.hide();
    reportError(error);
    markField(error);
  } finally {
    setBusy(false);
  }
}

// The API names the offending field first ("'duration' range '18-16' is reversed ..."): point at its input.
const FIELD_INPUTS = {
  url: ["url"], currentTime: ["currentTime"], promptLength: ["promptLength"], prompt_duration: ["promptLength"],
  duration: ["durationMin", "durationMax"], model: ["model"], prompt: ["prompt"], seed: ["seed"],
  temperature: ["temperature"], top_k: ["top_k"], top_p: ["top_p"], cfg_coef: ["cfg_coef"],
};
function markField(error) {
  const match = /^'(\w+)'/.exec(error?.message || "");
  const ids = match && FIELD_INPUTS[match[1]];
  if (!ids) return;
  for (const id of ids) $(id).setAttribute("aria-invalid", "true");
  if ($(ids[0]).closest("details")) $(ids[0]).closest("details").open = true;
  $(ids[0]).focus();
}
form.addEventListener("input", (event) => event.target.removeAttribute?.("aria-invalid"));

// ---------- following a task ----------

async function track(entry, showProgress) {
  const controller = new AbortController();
  if (showProgress) {
    state.active?.controller.abort();
    state.active = { entryId: entry.id, controller };
  }
  const mine = () => state.active?.entryId === entry.id;
  let live = false;
  const handlers = {
    signal: controller.signal,
    onTask: (task) => mine() && progress.task(task),
    onProgress: (value) => mine() && progress.set(value),
    onAudio: (chunk) => {
      if (!mine() || !chunk.pcm) return;
      if (!live) {
        live = true;
        showWaveformArea();
        waveform.startLive(entry.expectedSeconds || 12);
        livePlayer.reset();
        $("listen").setAttribute("aria-pressed", "false");
        $("listen").hidden = false;
      }
      const samples = decodePcmChunk(chunk.pcm);
      waveform.addLiveChunk(samples, chunk.channels || 1, chunk.sample_rate || 32000);
      livePlayer.add(samples, chunk.channels || 1, chunk.sample_rate || 32000, chunk.offset_samples);
    },
  };
  try {
    const final = await followTask(api, entry.taskId, handlers);
    if (final.status === "completed") {
      const blob = await api.resultAudio(entry.taskId, final);
      const buffer = await decode(blob);
      const done = await history.update(entry.id, {
        status: "done", blob, duration: buffer.duration, peaks: Array.from(peaks(buffer, THUMB_PEAKS)),
        bpm: final.bpm ?? null, model: final.model ?? null, completedAt: Date.now(),
      });
      if (mine()) {
        progress.done(final);
        await show(done, buffer);
      }
    } else {
      const message = final.status === "canceled" ? "Canceled" : (final.error || "The task failed");
      await history.update(entry.id, { status: final.status === "canceled" ? "canceled" : "failed", error: message });
      if (mine()) {
        progress.fail(message);
        if (final.status === "failed") reportError(new ApiError(message, { code: "task_failed" }), "Generation failed");
        restoreCurrent();
      }
    }
  } catch (error) {
    if (error.name === "AbortError") return;
    if (error instanceof ApiError && error.status === 404) {
      await history.update(entry.id, { status: "failed", error: "The server no longer has this task" });
    }
    if (mine()) {
      progress.fail(error.message);
      reportError(error);
      restoreCurrent();
    }
  } finally {
    if (mine()) {
      state.active = null;
      $("listen").hidden = true; // what is already scheduled plays out; playing the result stops it
    }
    renderHistory();
  }
}

const livePlayer = new LivePlayer();
$("listen").addEventListener("click", async () => {
  const on = $("listen").getAttribute("aria-pressed") !== "true";
  $("listen").setAttribute("aria-pressed", String(on));
  if (on) await livePlayer.start().catch((error) => showError(error)); else livePlayer.stop();
});

$("cancel").addEventListener("click", async () => {
  const active = state.active;
  if (!active) return;
  $("cancel").disabled = true;
  try {
    await api.cancel(active.entryId);
    progress.label("Canceling…");
  } catch (error) {
    reportError(error);
  } finally {
    $("cancel").disabled = false;
  }
});

const progress = {
  value: 0,
  start(label) {
    this.value = 0;
    $("progress-wrap").hidden = false;
    $("progress").classList.remove("failed");
    $("progress").classList.add("indeterminate");
    $("cancel").hidden = true;
    this.label(label);
    this.detail("");
    this.paint();
  },
  label(text) { $("progress-label").textContent = text; },
  detail(text) { $("progress-detail").textContent = text; },
  set(value) {
    if (!Number.isFinite(value)) return;
    // Progress never goes back, whatever order the updates arrive in.
    this.value = Math.max(this.value, Math.min(100, value));
    $("progress").classList.remove("indeterminate");
    if (this.value < 100) this.label("Generating");
    this.paint();
  },
  task(task) {
    $("cancel").hidden = !api.has("/cancel") || !["queued", "processing"].includes(task.status);
    if (task.status === "queued") {
      this.label("Queued");
      $("progress").classList.add("indeterminate");
      this.detail(task.queue_position ? `position ${task.queue_position}` : "");
    } else if (task.status === "processing") {
      this.label(task.cancel_requested ? "Canceling…" : "Generating");
      this.detail(Number.isFinite(task.eta_seconds) && task.eta_seconds > 0 ? `about ${Math.ceil(task.eta_seconds)} s left` : "");
    }
    if (task.status !== "queued") this.set(Number(task.progress) || 0);
  },
  done(task) {
    this.set(100);
    $("cancel").hidden = true;
    const seconds = task.started_at && task.completed_at ? secondsBetween(task.started_at, task.completed_at) : null;
    this.label("Done");
    this.detail(seconds !== null ? `in ${seconds.toFixed(1)} s` : "");
  },
  hide() {
    $("progress-wrap").hidden = true;
  },
  fail(message) {
    $("progress-wrap").hidden = false;
    $("progress").classList.remove("indeterminate");
    $("progress").classList.add("failed");
    $("cancel").hidden = true;
    this.label(message);
    this.detail("");
  },
  paint() {
    const rounded = Math.round(this.value);
    $("progress-fill").style.width = `${this.value}%`;
    $("progress").setAttribute("aria-valuenow", String(rounded));
    $("progress-value").textContent = `${rounded}%`;
  },
};

function secondsBetween(a, b) {
  const toMs = (v) => (typeof v === "number" ? v * (v < 1e12 ? 1000 : 1) : Date.parse(v));
  const diff = (toMs(b) - toMs(a)) / 1000;
  return Number.isFinite(diff) && diff >= 0 ? diff : null;
}

// ---------- showing a clip ----------

function showWaveformArea() {
  $("empty-state").hidden = true;
  $("waveform").hidden = false;
}

async function show(entry, buffer) {
  buffer = buffer || await decode(entry.blob);
  state.current = entry;
  state.buffer = buffer;
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = URL.createObjectURL(entry.blob);
  audio.src = state.objectUrl;
  showWaveformArea();
  $("wave-legend").hidden = false;
  $("player").hidden = false;
  waveform.setAudio(buffer, { boundary: entry.boundary || 0 });
  $("continue").disabled = state.busy;
  renderMeta(entry, buffer);
  renderHistory();
}

function restoreCurrent() {
  if (state.current && state.buffer) waveform.setAudio(state.buffer, { boundary: state.current.boundary || 0 });
  else if (!state.current) {
    $("waveform").hidden = true;
    $("empty-state").hidden = false;
  }
}

function renderMeta(entry, buffer) {
  const chips = [formatTime(buffer.duration), `${buffer.numberOfChannels === 1 ? "mono" : "stereo"}`];
  if (entry.bpm) chips.unshift(`${Math.round(entry.bpm)} BPM`);
  if (entry.model) chips.push(entry.model.split("/").filter(Boolean).pop());
  $("result-meta").replaceChildren(...chips.map((text) => Object.assign(document.createElement("span"), { className: "chip", textContent: text })));
}

function animatePlayhead() {
  waveform.setPlayhead(audio.currentTime);
  if (!audio.paused && !audio.ended) requestAnimationFrame(animatePlayhead);
}
audio.addEventListener("play", () => {
  livePlayer.stop();
  $("listen").setAttribute("aria-pressed", "false");
  requestAnimationFrame(animatePlayhead);
});
for (const type of ["seeked", "timeupdate", "ended"]) audio.addEventListener(type, () => waveform.setPlayhead(audio.currentTime));

// Space plays/pauses when the waveform has focus, as in any audio editor.
$("waveform").addEventListener("keydown", (event) => {
  if (event.key === " " && state.current) {
    event.preventDefault();
    if (audio.paused) audio.play().catch((error) => showError(error)); else audio.pause();
  }
});

// ---------- crop and download ----------

$("crop").addEventListener("click", async () => {
  const entry = state.current;
  if (!entry) return;
  const at = waveform.cursor;
  if (at < 0.5) {
    toast({ kind: "error", title: "Put the cursor where the clip should end", detail: "Click the waveform, or focus it and use the arrow keys." });
    $("waveform").focus();
    return;
  }
  $("crop").disabled = true;
  try {
    const blob = await api.crop(await blobToBase64(entry.blob), 0, Number(at.toFixed(3)));
    const buffer = await decode(blob);
    const cropped = {
      id: newId("crop"), kind: "crop", status: "done", createdAt: Date.now(), taskId: entry.taskId,
      parentId: entry.id, title: entry.title, subtitle: `cropped at ${formatTime(at)}`,
      boundary: Math.min(entry.boundary || 0, buffer.duration), bpm: entry.bpm, model: entry.model,
      blob, duration: buffer.duration, peaks: Array.from(peaks(buffer, THUMB_PEAKS)),
    };
    await history.put(cropped);
    await show(cropped, buffer);
    toast({ kind: "success", title: `Cropped to ${formatTime(buffer.duration)}` });
  } catch (error) {
    reportError(error, "Crop failed");
  } finally {
    $("crop").disabled = false;
  }
});

function fileName(entry, extension) {
  const base = (entry.taskId || entry.id).replace(/[^A-Za-z0-9_-]/g, "").slice(0, 8);
  return `segue-${base}${entry.kind === "crop" ? "-crop" : ""}.${extension}`;
}

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function download(format, button) {
  const entry = state.current;
  if (!entry) return;
  button.disabled = true;
  try {
    let blob = entry.blob;
    if (format === "wav" && blob.type !== "audio/wav") blob = encodeWav(state.buffer);
    if (format === "mp3" && blob.type !== "audio/mpeg") blob = await api.crop(await blobToBase64(entry.blob), 0, null);
    saveBlob(blob, fileName(entry, format));
  } catch (error) {
    reportError(error, "Download failed");
  } finally {
    button.disabled = false;
  }
}
$("download-wav").addEventListener("click", (event) => download("wav", event.currentTarget));
$("download-mp3").addEventListener("click", (event) => download("mp3", event.currentTarget));

// ---------- history ----------

function timeAgo(ms) {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toLocaleDateString();
}

let renderQueued = false;
function renderHistory() {
  // Many events ask for a redraw at once; one per frame is enough.
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(async () => {
    renderQueued = false;
    let entries;
    try {
      entries = await history.all();
    } catch (error) {
      reportError(error, "The clip history is not available in this browser");
      return;
    }
    const list = $("history");
    list.replaceChildren(...entries.map(historyRow));
    $("history-empty").hidden = entries.length > 0;
    $("history-clear").hidden = entries.length === 0;
    for (const canvas of list.querySelectorAll("canvas[data-id]")) {
      const entry = entries.find((e) => e.id === canvas.dataset.id);
      drawThumbnail(canvas, entry?.peaks || [], { boundaryFraction: entry?.duration ? (entry.boundary || 0) / entry.duration : 0 });
    }
  });
}

function historyRow(entry) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "history-item";
  button.dataset.status = entry.status;
  if (state.current?.id === entry.id) button.setAttribute("aria-current", "true");
  const canvas = document.createElement("canvas");
  canvas.dataset.id = entry.id;
  canvas.setAttribute("aria-hidden", "true");
  const text = document.createElement("span");
  text.style.minWidth = "0";
  const title = document.createElement("span");
  title.className = "title";
  const badge = document.createElement("span");
  const label = entry.status === "done" ? entry.kind : entry.status;
  badge.className = `badge ${entry.status === "done" ? entry.kind : entry.status === "running" ? "running" : "failed"}`;
  badge.textContent = label;
  title.append(badge, document.createTextNode(entry.title || entry.id));
  const sub = document.createElement("span");
  sub.className = "sub";
  const parts = [entry.subtitle];
  if (entry.duration) parts.push(formatTime(entry.duration));
  if (entry.bpm) parts.push(`${Math.round(entry.bpm)} BPM`);
  if (entry.error) parts.push(entry.error);
  sub.textContent = parts.filter(Boolean).join(" · ");
  text.append(title, sub);
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = timeAgo(entry.createdAt);
  button.append(canvas, text, when);
  // Spoken name without the words on the main buttons ("Generate", "Continue"), so those stay unambiguous.
  const spoken = { generate: "new clip", continue: "extended clip", crop: "cropped clip" }[entry.kind] || "clip";
  button.setAttribute("aria-label", `Open ${entry.status === "done" ? spoken : `${entry.status} task`}: ${entry.title || entry.id}, ${sub.textContent}`);
  button.addEventListener("click", () => openEntry(entry.id));
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "ghost remove";
  remove.setAttribute("aria-label", `Remove ${entry.title || "clip"} from history`);
  remove.textContent = "✕";
  remove.addEventListener("click", async () => {
    await history.remove(entry.id);
    renderHistory();
  });
  li.append(button, remove);
  return li;
}

async function openEntry(id) {
  const entry = await history.get(id);
  if (!entry) return;
  if (entry.status === "done") {
    try {
      await show(entry);
      $("waveform").focus();
    } catch (error) {
      reportError(error);
    }
  } else if (entry.status === "running") {
    if (state.active?.entryId !== id) {
      progress.start("Following task…");
      track(entry, true);
    }
  } else {
    toast({ kind: "error", title: entry.error || "This task did not finish", code: entry.status });
  }
}

$("history-clear").addEventListener("click", async () => {
  if (!window.confirm("Remove every clip from this browser's history?")) return;
  await history.clear();
  renderHistory();
});

// ---------- start ----------

async function start() {
  initKeyForm();
  updateSourceMode();
  updateStartReadout();
  setBusy(false);
  renderHistory();
  try {
    await loadModels();
  } catch (error) {
    reportError(error, "Could not load the model list");
  }
  // Tasks that were still running when the page was left: follow them again, the newest on screen.
  const running = (await history.all()).filter((entry) => entry.status === "running");
  running.forEach((entry, index) => {
    if (index === 0) progress.start("Following task…");
    track(entry, index === 0);
  });
  document.documentElement.dataset.ready = "true";
}

start();
