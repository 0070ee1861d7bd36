// The toolbar popup: generate from the active tab, and the history (progress,
// play, download, continue, cancel). It renders from chrome.storage, where the
// service worker records every change, so it can be closed at any time.
//
// `?tab=<id>` targets a given tab instead of the active one (used when the
// popup page is opened in a tab of its own, as the browser tests do).

import { createApiClient } from "../lib/api-client.mjs";
import { HISTORY_KEY, createHistory } from "../lib/history.mjs";
import { loadSettings } from "../lib/settings.mjs";
import { formatClock } from "../lib/youtube.mjs";

const storage = chrome.storage.local;
const history = createHistory(storage);
const $ = (id) => document.getElementById(id);
const rows = new Map(); // entry id -> {li, audioUrl}
let settings;

function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) if (child) node.append(child);
  return node;
}

const send = (message) => chrome.runtime.sendMessage(message)
  .catch((error) => ({ ok: false, error: error.message }));

async function targetTabId() {
  const param = new URLSearchParams(location.search).get("tab");
  if (param) return Number(param);
  const [tab] = await chrome.tabs.query({ active: true, currentWindow: true });
  return tab?.id;
}

async function showSource(tabId) {
  const answer = await send({ type: "segue:read-tab", tabId });
  if (!answer.ok) {
    $("source").textContent = answer.error;
    $("generate").disabled = true;
    return;
  }
  const { source } = answer;
  $("source").textContent = `${source.title || source.url}`;
  $("source").title = source.url;
  $("generate").textContent = `Generate from ${formatClock(source.currentTime)}`;
  $("generate").disabled = false;
}

async function generate(tabId) {
  $("generate").disabled = true;
  $("generate-error").hidden = true;
  const answer = await send({ type: "segue:generate-tab", tabId });
  if (!answer.ok) {
    $("generate-error").textContent = answer.error;
    $("generate-error").hidden = false;
  }
  await showSource(tabId); // refresh the position shown on the button
}

// --- history -----------------------------------------------------------------

const LABELS = { queued: "Queued", processing: "Generating", completed: "Done", failed: "Failed", canceled: "Canceled" };

function describe(entry) {
  let text = LABELS[entry.status] ?? entry.status;
  if (entry.status === "processing" && Number.isFinite(entry.progress)) text += ` ${Math.floor(entry.progress)}%`;
  if (entry.status === "queued" && Number.isFinite(entry.queue_position)) text += ` (position ${entry.queue_position + 1})`;
  if (entry.status === "queued" || entry.status === "processing") {
    if (Number.isFinite(entry.eta_seconds)) text += `, about ${Math.ceil(entry.eta_seconds)} s left`;
    if (entry.cancel_requested) text += ", canceling";
  }
  if (entry.status === "completed" && Number.isFinite(entry.duration_seconds)) {
    text += `: ${entry.duration_seconds.toFixed(1)} s`;
    if (Number.isFinite(entry.bpm)) text += ` at ${Math.round(entry.bpm)} BPM`;
  }
  return text;
}

function renderEntry(entry) {
  let row = rows.get(entry.id);
  if (!row) {
    row = { li: el("li", { className: "entry" }), audioUrl: null, player: null };
    row.li.dataset.id = entry.id;
    rows.set(entry.id, row);
  }
  const origin = entry.kind === "continue" ? "continued" : `from ${formatClock(entry.currentTime)}`;
  const parts = [
    el("div", { className: "title", textContent: entry.title || entry.url, title: entry.url }),
    el("div", { className: "meta", textContent: `${origin} · ${entry.url}` }),
    el("div", { className: `status status-${entry.status}`, textContent: describe(entry) }),
  ];
  if (entry.status === "queued" || entry.status === "processing") {
    parts.push(el("progress", { max: 100, value: entry.progress ?? 0 }));
  }
  if (entry.error) parts.push(el("div", { className: "error", textContent: entry.error }));
  if (entry.watchError) parts.push(el("div", { className: "error", textContent: `Not following: ${entry.watchError}` }));

  const actions = el("div", { className: "actions" });
  const button = (label, onClick) => {
    const b = el("button", { type: "button", textContent: label });
    b.dataset.action = label.toLowerCase();
    b.addEventListener("click", () => onClick(b));
    actions.append(b);
    return b;
  };
  if (entry.status === "completed") {
    if (!row.audioUrl) button("Play", (b) => loadAudio(entry, row, b));
    else actions.append(el("a", { href: row.audioUrl, download: row.filename, textContent: "Download" }));
    button("Continue", (b) => act(b, { type: "segue:continue", id: entry.id }, row));
  }
  if ((entry.status === "queued" || entry.status === "processing") && entry.taskId) {
    button("Cancel", (b) => act(b, { type: "segue:cancel", id: entry.id }, row));
  }
  button("Remove", () => history.remove(entry.id));
  parts.push(actions);
  if (row.player) parts.push(row.player); // keep a playing player across re-renders
  if (row.actionError) parts.push(el("div", { className: "error", textContent: row.actionError }));
  row.li.replaceChildren(...parts);
  return row.li;
}

async function act(buttonNode, message, row) {
  buttonNode.disabled = true;
  const answer = await send(message);
  row.actionError = answer.ok ? null : answer.error;
  buttonNode.disabled = false;
  await render();
}

async function loadAudio(entry, row, buttonNode) {
  buttonNode.disabled = true;
  buttonNode.textContent = "Loading…";
  try {
    const client = createApiClient({ baseUrl: entry.backendUrl ?? settings.backendUrl, apiKey: settings.apiKey });
    const audio = await client.fetchAudio(entry.taskId);
    row.audioUrl = URL.createObjectURL(new Blob([audio.bytes], { type: audio.type }));
    row.filename = audio.filename;
    row.player = el("audio", { controls: true, src: row.audioUrl });
    row.actionError = null;
    row.player.play().catch(() => {}); // a popup may not autoplay; the controls are there
  } catch (error) {
    row.actionError = error.message;
  }
  await render();
}

async function render() {
  const list = await history.list();
  $("empty").hidden = list.length > 0;
  const seen = new Set(list.map((entry) => entry.id));
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      if (row.audioUrl) URL.revokeObjectURL(row.audioUrl);
      rows.delete(id);
    }
  }
  $("history").replaceChildren(...list.map(renderEntry));
}

// --- start -------------------------------------------------------------------

async function main() {
  settings = await loadSettings(storage);
  $("backend").textContent = `Backend: ${settings.backendUrl}${settings.apiKey ? " (with API key)" : ""}`;
  $("open-options").addEventListener("click", () => chrome.runtime.openOptionsPage());
  const tabId = await targetTabId();
  $("generate").addEventListener("click", () => generate(tabId));
  chrome.storage.onChanged.addListener((changes, area) => {
    if (area === "local" && changes[HISTORY_KEY]) render();
    if (area === "local" && changes.settings) location.reload();
  });
  send({ type: "segue:resume" }); // follow anything a stopped service worker left behind
  await render();
  if (tabId !== undefined) await showSource(tabId);
  else $("source").textContent = "No active tab.";
}

main();
