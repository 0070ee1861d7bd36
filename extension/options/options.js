// Options page: backend URL, API key and generation defaults, validated by
// lib/settings.mjs before they are stored.

import { createApiClient } from "../lib/api-client.mjs";
import { createHistory } from "../lib/history.mjs";
import { DEFAULT_SETTINGS, SETTINGS_KEY, loadSettings, normaliseBackendUrl, saveSettings } from "../lib/settings.mjs";

const storage = chrome.storage.local;
const $ = (id) => document.getElementById(id);
const FIELDS = Object.keys(DEFAULT_SETTINGS);

function say(id, text, ok) {
  $(id).textContent = text;
  $(id).className = ok ? "ok" : "bad";
}

function formValues() {
  return Object.fromEntries(FIELDS.map((name) => [name, $(name).value]));
}

async function testConnection() {
  let client;
  try {
    client = createApiClient({ baseUrl: normaliseBackendUrl($("backendUrl").value), apiKey: $("apiKey").value.trim() });
  } catch (error) {
    say("health", error.message, false);
    return;
  }
  say("health", "Checking…", true);
  try {
    const health = await client.health();
    const parts = [`status ${health.status}`];
    if (health.workers !== undefined) parts.push(`${health.workers} worker(s)`);
    if (health.device) parts.push(`device ${health.device}`);
    say("health", `Connected: ${parts.join(", ")}`, health.status === "live");
    await fillModels(client);
  } catch (error) {
    say("health", error.message, false);
  }
}

async function fillModels(client) {
  try {
    const answer = await client.models();
    const models = Array.isArray(answer?.models) ? answer.models : [];
    $("models").replaceChildren(...models.map((model) => Object.assign(document.createElement("option"), {
      value: model.id, textContent: model.description ? `${model.id}: ${model.description}` : model.id,
    })));
  } catch {
    // the list is a convenience; any id the server offers can be typed
  }
}

async function main() {
  const settings = await loadSettings(storage);
  for (const name of FIELDS) $(name).value = settings[name];
  $("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const saved = await saveSettings(storage, formValues());
      for (const name of FIELDS) $(name).value = saved[name];
      say("status", "Saved.", true);
      fillModels(createApiClient({ baseUrl: saved.backendUrl, apiKey: saved.apiKey }));
    } catch (error) {
      say("status", error.message, false);
    }
  });
  $("test").addEventListener("click", testConnection);
  $("clear-history").addEventListener("click", async () => {
    await createHistory(storage).clear();
    say("status", "History cleared.", true);
  });
  // Only a backend the user chose is contacted; the default URL may not exist.
  if (SETTINGS_KEY in (await storage.get(SETTINGS_KEY))) {
    fillModels(createApiClient({ baseUrl: settings.backendUrl, apiKey: settings.apiKey }));
  }
}

main();
