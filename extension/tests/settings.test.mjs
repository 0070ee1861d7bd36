import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_SETTINGS, SETTINGS_KEY, SettingsError, generationOptions, loadSettings, normaliseBackendUrl,
  saveSettings, validateSettings } from "../lib/settings.mjs";
import { memoryStorage } from "./helpers/memory-storage.mjs";

test("backend URLs are normalised and anything else refused", () => {
  assert.equal(normaliseBackendUrl(" http://localhost:8001/ "), "http://localhost:8001");
  assert.equal(normaliseBackendUrl("https://segue.example.com/api//"), "https://segue.example.com/api");
  for (const bad of ["localhost:8001", "ftp://x", "javascript:alert(1)", "", "http://x/?a=1", "http://x/#f"]) {
    assert.throws(() => normaliseBackendUrl(bad), SettingsError, bad);
  }
});

test("settings are validated with the server's own limits", () => {
  const clean = validateSettings({ backendUrl: "http://h:1/", promptLength: "8", duration: " 10 - 12 ", seed: "42" });
  assert.equal(clean.backendUrl, "http://h:1");
  assert.equal(clean.promptLength, 8);
  assert.equal(clean.duration, "10-12");
  for (const bad of [{ promptLength: 0 }, { promptLength: 31 }, { promptLength: "" }, { duration: "18-16" },
    { duration: "0-5" }, { duration: "10-31" }, { duration: "abc" }, { seed: "1.5" }, { prompt: "x".repeat(501) },
    { continuePromptDuration: 30 }]) {
    assert.throws(() => validateSettings(bad), SettingsError, JSON.stringify(bad));
  }
});

test("save then load round-trips through storage; damage falls back to defaults", async () => {
  const storage = memoryStorage();
  assert.deepEqual(await loadSettings(storage), DEFAULT_SETTINGS);
  await saveSettings(storage, { backendUrl: "http://api.test:9000", apiKey: " k " });
  const loaded = await loadSettings(storage);
  assert.equal(loaded.backendUrl, "http://api.test:9000");
  assert.equal(loaded.apiKey, "k");
  await assert.rejects(saveSettings(storage, { backendUrl: "nope" }), SettingsError);
  assert.equal((await loadSettings(storage)).backendUrl, "http://api.test:9000", "a rejected save changes nothing");
  const damaged = memoryStorage({ [SETTINGS_KEY]: { backendUrl: 12 } });
  assert.deepEqual(await loadSettings(damaged), DEFAULT_SETTINGS);
});

test("generation options carry only what is set", () => {
  assert.deepEqual(generationOptions(DEFAULT_SETTINGS), { promptLength: 6, duration: "16-18" });
  assert.deepEqual(generationOptions({ ...DEFAULT_SETTINGS, model: "m", prompt: "p", seed: "-3" }),
    { promptLength: 6, duration: "16-18", model: "m", prompt: "p", seed: -3 });
});
