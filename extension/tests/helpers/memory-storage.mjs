// The slice of chrome.storage.local's promise API that lib/history.mjs and
// lib/settings.mjs use (get(key) / set(object)), kept in memory for Node.
// Values go through JSON like chrome.storage's serialisation, so a test sees
// the same copies-not-references behaviour the extension gets. The real
// chrome.storage is exercised by tests/scenarios/test_extension_browser.py.
export function memoryStorage(initial = {}) {
  const data = JSON.parse(JSON.stringify(initial));
  return {
    data,
    async get(key) {
      return key in data ? { [key]: JSON.parse(JSON.stringify(data[key])) } : {};
    },
    async set(values) {
      for (const [key, value] of Object.entries(values)) data[key] = JSON.parse(JSON.stringify(value));
    },
  };
}
