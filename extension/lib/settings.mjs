// Extension settings: defaults, validation, and load/save over a storage area.
//
// Kept in chrome.storage.local, not .sync: the API key is a secret and sync
// would copy it into the user's Google account and onto every signed-in device.

export const SETTINGS_KEY = "settings";

export const DEFAULT_SETTINGS = Object.freeze({
  backendUrl: "http://localhost:8001",
  apiKey: "",
  model: "",            // "" = the server's default model
  promptLength: 6,      // seconds of the video used as the prompt
  duration: "16-18",    // total output length range, prompt included
  prompt: "",           // optional text description
  seed: "",             // "" = random
  continuePromptDuration: 6,
});

export class SettingsError extends Error {}

/** "http://host:port/base" without a trailing slash, or a SettingsError. */
export function normaliseBackendUrl(value) {
  const text = String(value ?? "").trim();
  let url;
  try {
    url = new URL(text);
  } catch {
    throw new SettingsError("Backend URL must be a full http:// or https:// address, e.g. http://localhost:8001");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new SettingsError("Backend URL must start with http:// or https://");
  }
  if (url.search || url.hash) throw new SettingsError("Backend URL must not contain ? or #");
  return (url.origin + url.pathname).replace(/\/+$/, "");
}

function numberIn(value, name, min, max) {
  const number = Number(value);
  if (String(value).trim() === "" || !Number.isFinite(number) || number < min || number > max) {
    throw new SettingsError(`${name} must be a number from ${min} to ${max}`);
  }
  return number;
}

/** Validate a settings object (as typed in the options page); returns the cleaned copy. */
export function validateSettings(input) {
  const merged = { ...DEFAULT_SETTINGS, ...input };
  const clean = {
    backendUrl: normaliseBackendUrl(merged.backendUrl),
    apiKey: String(merged.apiKey ?? "").trim(),
    model: String(merged.model ?? "").trim(),
    promptLength: numberIn(merged.promptLength, "Prompt length", 1, 30),
    duration: String(merged.duration ?? "").trim(),
    prompt: String(merged.prompt ?? "").trim(),
    seed: String(merged.seed ?? "").trim(),
    continuePromptDuration: numberIn(merged.continuePromptDuration, "Continue prompt length", 1, 29),
  };
  const range = /^(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)$/.exec(clean.duration);
  if (!range || Number(range[1]) < 1 || Number(range[1]) > Number(range[2]) || Number(range[2]) > 30) {
    throw new SettingsError('Duration must be "MIN-MAX" seconds with 1 ≤ MIN ≤ MAX ≤ 30, e.g. 16-18');
  }
  clean.duration = `${range[1]}-${range[2]}`;
  if (clean.prompt.length > 500) throw new SettingsError("Text prompt must be at most 500 characters");
  if (clean.seed !== "" && !/^-?\d+$/.test(clean.seed)) throw new SettingsError("Seed must be a whole number or empty");
  return clean;
}

/** Settings from storage, defaults filled in. A damaged stored value falls back to defaults. */
export async function loadSettings(storage) {
  const stored = (await storage.get(SETTINGS_KEY))[SETTINGS_KEY] ?? {};
  try {
    return validateSettings(stored);
  } catch {
    return { ...DEFAULT_SETTINGS };
  }
}

export async function saveSettings(storage, input) {
  const clean = validateSettings(input);
  await storage.set({ [SETTINGS_KEY]: clean });
  return clean;
}

/** The fields of POST /generate that come from settings (url and currentTime come from the tab). */
export function generationOptions(settings) {
  const body = { promptLength: settings.promptLength, duration: settings.duration };
  if (settings.model) body.model = settings.model;
  if (settings.prompt) body.prompt = settings.prompt;
  if (settings.seed !== "") body.seed = Number(settings.seed);
  return body;
}
