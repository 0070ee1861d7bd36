// The status board: polls GET /health (whose body also comes with a 503) and the sidecar's /health, and
// keeps a few minutes of history in memory for the sparklines and the recent task rate.
import { readConfig } from "./api.js";

const config = readConfig();
const REFRESH_MS = 3000;
const HISTORY_MS = 10 * 60 * 1000;   // sparklines cover ten minutes
const RATE_WINDOW_MS = 5 * 60 * 1000; // tasks/min averages the last five
const $ = (id) => document.getElementById(id);

const samples = [];           // {t, workers, queue, done} per refresh
const lastDone = new Map();   // worker_id -> tasks_done at the previous refresh
let lastSuccess = 0;

async function getJson(url) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 5000);
  try {
    const response = await fetch(url, { signal: controller.signal, cache: "no-store" });
    // /health answers 503 with the same report when a part is down: that body is what we want.
    const body = await response.json().catch(() => null);
    return { ok: response.ok, status: response.status, body };
  } catch {
    return { ok: false, status: 0, body: null };
  } finally {
    clearTimeout(timer);
  }
}

function setTile(name, state, text, detail) {
  const tile = document.querySelector(`.tile[data-component="${name}"]`);
  tile.dataset.state = state;
  tile.querySelector(".state").textContent = text || state;
  if (detail !== undefined) tile.querySelector(".detail").textContent = detail;
}

function finishedSince(report) {
  // Tasks finished since the previous refresh, summed over workers; a restarted worker starts again at 0.
  let finished = 0;
  const seen = new Set();
  for (const worker of report.worker_details || []) {
    const id = worker.worker_id;
    const done = Number(worker.tasks_done) || 0;
    seen.add(id);
    if (lastDone.has(id)) finished += Math.max(0, done - lastDone.get(id));
    lastDone.set(id, done);
  }
  for (const id of [...lastDone.keys()]) if (!seen.has(id)) lastDone.delete(id);
  return finished;
}

function recentRate(now) {
  const window = samples.filter((s) => now - s.t <= RATE_WINDOW_MS);
  if (window.length < 2) return null;
  const span = (window[window.length - 1].t - window[0].t) / 60000;
  const done = window.slice(1).reduce((sum, s) => sum + s.done, 0);
  return span > 0 ? done / span : null;
}

function render(health, sidecar) {
  const now = Date.now();
  const report = health.body && typeof health.body === "object" && "status" in health.body ? health.body : null;
  const down = [];

  if (report) {
    lastSuccess = now;
    setTile("api", "live", "live", `answered in ${health.ms} ms`);
    for (const part of ["mongodb", "redis", "pytorch"]) {
      const state = report[part] === "live" ? "live" : "down";
      if (state === "down") down.push(part === "mongodb" ? "MongoDB" : part === "redis" ? "Redis" : "PyTorch");
      setTile(part, state, state);
    }
    $("components").querySelector('[data-component="redis"] .detail').textContent =
      report.queue_depth === null || report.queue_depth === undefined ? "job queue unreachable" : `${report.queue_depth} queued`;
    $("components").querySelector('[data-component="pytorch"] .detail').textContent =
      report.torch_version ? `torch ${report.torch_version} on ${deviceText(report.device)}` : "no worker with a working device";
    const finished = finishedSince(report);
    samples.push({ t: now, workers: report.workers || 0, queue: report.queue_depth ?? 0, done: finished });
  } else {
    setTile("api", "down", "down", health.status ? `HTTP ${health.status}` : "no answer");
    down.push("API");
    for (const part of ["mongodb", "redis", "pytorch"]) setTile(part, "unknown", "unknown", "needs the API");
  }

  if (sidecar.ok && sidecar.body?.status === "live") {
    setTile("sidecar", "live", "live", sidecar.body.ffmpeg ? `ffmpeg ${sidecar.body.ffmpeg.split("-")[0]}` : "ffmpeg ready");
  } else {
    setTile("sidecar", "down", "down", sidecar.body?.error || `no answer at ${config.sidecarUrl}`);
    down.push("Sidecar");
  }

  const partsLive = report && ["mongodb", "redis", "pytorch"].every((part) => report[part] === "live");
  if (partsLive && report.status !== "live" && Object.keys(report.models_failed || {}).length) {
    down.push("Default model");  // every part answers, but no worker could load the default model
  }

  while (samples.length && now - samples[0].t > HISTORY_MS) samples.shift();

  const hero = $("hero");
  hero.dataset.state = down.length ? "down" : "live";
  $("hero-title").textContent = down.length ? `${down.join(", ")} ${down.length === 1 ? "is" : "are"} down` : "All systems live";
  $("hero-detail").textContent = report
    ? `${report.workers || 0} worker${report.workers === 1 ? "" : "s"} · ${report.queue_depth ?? "?"} queued · ${deviceText(report.device)}`
    : "The API did not answer its health check.";
  document.title = `${down.length ? "▼ degraded" : "● live"} · Segue status`;

  if (report) renderStats(report, now);
}

function deviceText(device) {
  if (Array.isArray(device)) return device.join(", ");
  return device || "no device";
}

function renderStats(report, now) {
  $("stat-workers").textContent = String(report.workers ?? 0);
  $("stat-queue").textContent = report.queue_depth ?? "–";
  const rate = recentRate(now);
  $("stat-rate").textContent = rate === null ? "–" : rate >= 10 ? rate.toFixed(0) : rate.toFixed(1);
  $("stat-device").textContent = deviceText(report.device);
  $("stat-torch").textContent = report.torch_version ? `torch ${report.torch_version}` : "";
  sparkline($("spark-workers"), samples.map((s) => s.workers), "#8b6cff");
  sparkline($("spark-queue"), samples.map((s) => s.queue), "#22d3ee");
  sparkline($("spark-rate"), rateSeries(), "#3ddc97");

  const models = report.models_loaded || [];
  $("models").replaceChildren(...(models.length ? models.map((m) => chip(m)) : [span("muted", "none loaded")]));
  // Models a worker could not load, with its reason: the host's to fix (network, SEGUE_MODELS).
  const failed = Object.entries(report.models_failed || {});
  $("model-failures").replaceChildren(...failed.map(([model, reason]) => {
    const li = document.createElement("li");
    li.append(span("chip failed", shortName(model)), span("reason", `could not be loaded: ${reason}`));
    li.title = model;
    return li;
  }));

  const workers = report.worker_details || [];
  $("heartbeat-note").textContent = `heartbeat every ${config.heartbeatSeconds || 10} s`;
  $("workers").replaceChildren(...(workers.length ? workers.map(workerRow) : [emptyRow()]));
}

function rateSeries() {
  // Tasks per minute over a sliding minute, per sample: smooth enough to read as a trend.
  return samples.map((s, i) => {
    const from = samples.findIndex((x) => s.t - x.t <= 60000);
    const span = (s.t - samples[from].t) / 60000;
    const done = samples.slice(from + 1, i + 1).reduce((sum, x) => sum + x.done, 0);
    return span > 0 ? done / span : 0;
  });
}

function sparkline(canvas, values, colour) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  if (values.length < 2) return;
  const max = Math.max(1, ...values) * 1.35; // headroom: a flat line sits low, under the number
  const x = (i) => (i / (values.length - 1)) * w;
  const y = (v) => h - 3 - (v / max) * (h - 8);
  const fill = ctx.createLinearGradient(0, 0, 0, h);
  fill.addColorStop(0, `${colour}55`);
  fill.addColorStop(1, `${colour}00`);
  ctx.beginPath();
  values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
  ctx.strokeStyle = colour;
  ctx.lineWidth = 2;
  ctx.stroke();
  ctx.lineTo(w, h);
  ctx.lineTo(0, h);
  ctx.closePath();
  ctx.fillStyle = fill;
  ctx.fill();
}

function span(className, text) {
  return Object.assign(document.createElement("span"), { className, textContent: text });
}

function shortName(model) {
  return model.startsWith("/") ? model.split("/").filter(Boolean).pop() : model;
}

function chip(model) {
  const node = span("chip", shortName(model));
  node.title = model;
  return node;
}

function cell(label, content, className = "") {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (className) td.className = className;
  if (content instanceof Node) td.append(content); else td.textContent = content;
  return td;
}

function workerRow(worker) {
  const tr = document.createElement("tr");
  const running = worker.current_tasks || [];
  const count = Array.isArray(running) ? running.length : Number(running) || 0;
  const models = (worker.models_loaded || []).map(shortName);
  const failed = Object.keys(worker.models_failed || {}).map((m) => `${shortName(m)} (failed)`);
  tr.append(
    cell("Worker", worker.worker_id || "?", "id"),
    cell("Host · PID", `${worker.host || "?"} · ${worker.pid ?? "?"}`, "mono"),
    cell("Device", worker.device || "?"),
    cell("Models", [...models, ...failed].join(", ") || "none", failed.length ? "warn" : ""),
    cell("yt-dlp · JS runtime", ytdlpText(worker), worker.js_runtime ? "mono" : "mono warn"),
    worker.ready === false
      ? cell("Running", "loading model", "busy")
      : cell("Running", count ? `${count} task${count === 1 ? "" : "s"}` : "idle", count ? "busy" : "idle"),
    cell("Done", String(worker.tasks_done ?? 0), "num"),
  );
  return tr;
}

function ytdlpText(worker) {
  if (!worker.yt_dlp) return "?";
  const age = worker.yt_dlp_age_days > 60 ? ` (${worker.yt_dlp_age_days} days old)` : "";
  const runtime = worker.js_runtime || "no JS runtime: YouTube will fail";
  return `${worker.yt_dlp}${age} · ${runtime}`;
}

function emptyRow() {
  const tr = document.createElement("tr");
  tr.className = "empty";
  const td = document.createElement("td");
  td.colSpan = 7;
  td.textContent = "No worker has reported in the last heartbeats.";
  tr.append(td);
  return tr;
}

function tickUpdated() {
  const node = $("updated");
  if (!lastSuccess) return;
  const seconds = Math.round((Date.now() - lastSuccess) / 1000);
  node.textContent = seconds < 2 ? "updated just now" : `updated ${seconds} s ago`;
  $("refresh").classList.toggle("stale", seconds > (REFRESH_MS / 1000) * 3);
  $("refresh").dataset.checkedAt = String(lastSuccess);
}

async function refresh() {
  const started = performance.now();
  const [health, sidecar] = await Promise.all([getJson("/health"), getJson(`${config.sidecarUrl}/health`)]);
  health.ms = Math.round(performance.now() - started);
  render(health, sidecar);
  tickUpdated();
  document.documentElement.dataset.refreshes = String(Number(document.documentElement.dataset.refreshes || 0) + 1);
  setTimeout(refresh, REFRESH_MS);
}

setInterval(tickUpdated, 1000);
refresh();
