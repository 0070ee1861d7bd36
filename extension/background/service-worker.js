// The extension's background: the only place that starts and follows tasks.
//
// Pages (the in-page YouTube button, the popup) send it messages; it calls the
// backend, writes every change to the history in chrome.storage.local, and the
// pages render from storage. Keeping the work here means closing the popup
// never loses a task, and a service worker that Chrome stopped picks up every
// unfinished task again when it next wakes (resumeUnfinished).

import { ApiError, createApiClient } from "../lib/api-client.mjs";
import { bytesToBase64 } from "../lib/base64.mjs";
import { createHistory, entryUpdateFromTask, unfinished } from "../lib/history.mjs";
import { generationOptions, loadSettings } from "../lib/settings.mjs";
import { SourceError, chooseSource } from "../lib/source.mjs";
import { watchTask } from "../lib/task-watcher.mjs";

const storage = chrome.storage.local;
// The API key lives in storage.local: keep that area away from content
// scripts, which run inside youtube.com's renderer. The in-page panel gets
// its task's updates by message instead (notifyPage).
storage.setAccessLevel({ accessLevel: "TRUSTED_CONTEXTS" }).catch(() => {});

// Every history write goes through here, so the page that started a task sees it change.
const history = (() => {
  const store = createHistory(storage);
  return {
    ...store,
    async update(id, fields) {
      const entry = await store.update(id, fields);
      if (entry) notifyPage(entry);
      return entry;
    },
  };
})();

function notifyPage(entry) {
  if (Number.isInteger(entry.pageTabId)) {
    chrome.tabs.sendMessage(entry.pageTabId, { type: "segue:entry", entry }).catch(() => {
      // the tab was closed or navigated away: nobody to tell
    });
  }
}
const watching = new Map(); // entry id -> AbortController

async function clientFor(backendUrl) {
  const settings = await loadSettings(storage);
  return { settings, client: createApiClient({ baseUrl: backendUrl ?? settings.backendUrl, apiKey: settings.apiKey }) };
}

const localId = () => `local-${crypto.randomUUID()}`;

// --- reading a tab -----------------------------------------------------------

async function readTab(tabId) {
  try {
    // On YouTube the content script is already there and answers directly.
    const state = await chrome.tabs.sendMessage(tabId, { type: "segue:read-player" });
    if (state) return state;
  } catch {
    // no content script in this tab: inject the reader below
  }
  try {
    const [result] = await chrome.scripting.executeScript({ target: { tabId }, files: ["content/player-reader.js"] });
    return result?.result ?? null;
  } catch (error) {
    throw new SourceError("Segue cannot read this page. Open it in a tab and click the Segue toolbar button "
      + `while it is showing (Chrome grants access to the active tab on that click). (${error.message})`);
  }
}

// --- starting tasks ----------------------------------------------------------

async function generate(source, pageTabId = null) {
  const { settings, client } = await clientFor();
  const options = generationOptions(settings);
  const base = {
    kind: "generate", url: source.url, currentTime: source.currentTime, title: source.title,
    pageUrl: source.pageUrl, sourceKind: source.kind, backendUrl: client.base, pageTabId,
    promptLength: options.promptLength, duration: options.duration, model: options.model ?? null,
  };
  let answer;
  try {
    answer = await client.generate({ url: source.url, currentTime: source.currentTime, ...options });
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    // Kept in history too: the user sees what was sent and the server's reason.
    const entry = await history.add({ ...base, id: localId(), taskId: null, status: "failed", error: error.message,
      errorCode: error.code || null });
    return { ok: false, error: error.message, entry };
  }
  const entry = await history.add({ ...base, id: answer.task_id, taskId: answer.task_id,
    status: answer.status ?? "queued", queue_position: answer.queue_position ?? null });
  follow(entry);
  return { ok: true, entry };
}

async function continueEntry(id) {
  const parent = await history.get(id);
  if (!parent || !parent.taskId) return { ok: false, error: "That history item no longer exists." };
  if (parent.status !== "completed") return { ok: false, error: "Only a completed result can be continued." };
  const { settings, client } = await clientFor(parent.backendUrl);
  try {
    const audio = await client.fetchAudio(parent.taskId);
    const body = { audio: bytesToBase64(audio.bytes), task_id: parent.taskId,
      prompt_duration: settings.continuePromptDuration };
    const options = generationOptions(settings);
    for (const key of ["model", "prompt", "seed"]) if (options[key] !== undefined) body[key] = options[key];
    const answer = await client.continueClip(body);
    const entry = await history.add({
      id: answer.task_id, taskId: answer.task_id, kind: "continue", parentId: parent.id, url: parent.url,
      currentTime: parent.currentTime, title: parent.title, pageUrl: parent.pageUrl, backendUrl: client.base,
      promptDuration: body.prompt_duration, model: body.model ?? null,
      status: answer.status ?? "queued", queue_position: answer.queue_position ?? null,
    });
    follow(entry);
    return { ok: true, entry };
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    return { ok: false, error: error.message };
  }
}

async function cancelEntry(id) {
  const entry = await history.get(id);
  if (!entry || !entry.taskId) return { ok: false, error: "That history item no longer exists." };
  const { client } = await clientFor(entry.backendUrl);
  try {
    const task = await client.cancel(entry.taskId);
    return { ok: true, entry: await history.update(id, entryUpdateFromTask(task)) };
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.code === "task_finished") {
      // It ended first: record how, rather than leaving a stale "processing".
      const task = await client.getTask(entry.taskId).catch(() => null);
      if (task) await history.update(id, entryUpdateFromTask(task));
    }
    return { ok: false, error: error.message };
  }
}

async function audioOf(id) {
  const entry = await history.get(id);
  if (!entry || !entry.taskId) return { ok: false, error: "That history item no longer exists." };
  const { client } = await clientFor(entry.backendUrl);
  const audio = await client.fetchAudio(entry.taskId);
  return { ok: true, audio: bytesToBase64(audio.bytes), type: audio.type, filename: audio.filename };
}

// --- following tasks ---------------------------------------------------------

// Chrome stops an idle extension service worker after ~30 s; an extension API
// call resets that timer, so while tasks are followed we make a cheap one.
let keepAlive = null;
function updateKeepAlive() {
  if (watching.size > 0 && keepAlive === null) {
    keepAlive = setInterval(() => chrome.runtime.getPlatformInfo(), 20_000);
  } else if (watching.size === 0 && keepAlive !== null) {
    clearInterval(keepAlive);
    keepAlive = null;
  }
}

function follow(entry) {
  if (!entry.taskId || watching.has(entry.id)) return;
  const controller = new AbortController();
  watching.set(entry.id, controller);
  updateKeepAlive();
  (async () => {
    const { client } = await clientFor(entry.backendUrl);
    try {
      const final = await watchTask(client, entry.taskId, {
        signal: controller.signal,
        onUpdate: (fields) => history.update(entry.id, { ...fields, watchError: null }),
      });
      await history.update(entry.id, { ...entryUpdateFromTask(final), watchError: null });
    } catch (error) {
      if (controller.signal.aborted) return;
      // The task may still be running; say why it is not being followed, and
      // the next popup opening (resumeUnfinished) tries again.
      const gone = error instanceof ApiError && error.status === 404;
      await history.update(entry.id, gone
        ? { status: "failed", error: `The backend no longer knows this task (${error.message}).` }
        : { watchError: error.message });
    } finally {
      watching.delete(entry.id);
      updateKeepAlive();
    }
  })();
}

async function resumeUnfinished() {
  for (const entry of unfinished(await history.list())) follow(entry);
}

// --- messages ----------------------------------------------------------------

async function handle(message, sender) {
  switch (message?.type) {
    case "segue:read-tab": // popup: what would be sent for this tab
      return { ok: true, source: chooseSource(await readTab(message.tabId)) };
    case "segue:generate-tab": // popup's button
      return generate(chooseSource(await readTab(message.tabId)));
    case "segue:generate-page": // the in-page button: the content script read the player itself
      if (!sender.tab) throw new SourceError("only a page can ask to generate from itself");
      // sender.url is set by Chrome, so a page cannot claim to be another one.
      return generate(chooseSource({ ...message.state, pageUrl: sender.url }), sender.tab.id);
    case "segue:continue":
      return continueEntry(message.id);
    case "segue:cancel":
      return cancelEntry(message.id);
    case "segue:audio": // the in-page panel's player (content scripts cannot import the API client)
      return audioOf(message.id);
    case "segue:resume":
      await resumeUnfinished();
      return { ok: true };
    default:
      return { ok: false, error: `unknown message ${String(message?.type)}` };
  }
}

chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  handle(message, sender).then(sendResponse, (error) => {
    sendResponse({ ok: false, error: error instanceof SourceError || error instanceof ApiError ? error.message
      : `Unexpected error: ${error?.message ?? error}` });
  });
  return true; // answer asynchronously
});

chrome.runtime.onStartup.addListener(resumeUnfinished);
chrome.runtime.onInstalled.addListener(resumeUnfinished);
resumeUnfinished();
