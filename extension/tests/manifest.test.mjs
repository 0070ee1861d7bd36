// The manifest is the extension's security boundary: check that it asks for
// exactly the documented permissions and that every file it names exists.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";

const root = new URL("../", import.meta.url);
const manifest = JSON.parse(readFileSync(new URL("manifest.json", root)));

test("Manifest V3 with exactly the documented permissions", () => {
  assert.equal(manifest.manifest_version, 3);
  assert.deepEqual([...manifest.permissions].sort(), ["activeTab", "scripting", "storage"]);
  assert.equal(manifest.host_permissions, undefined, "no host permissions: the backend is reached through CORS");
  assert.equal(manifest.background.type, "module");
  for (const script of manifest.content_scripts) {
    for (const pattern of script.matches) assert.match(pattern, /^https:\/\/(www|m|music)\.youtube\.com\/\*$/);
  }
});

test("every file the manifest names exists; icons are PNGs of the stated size", () => {
  const files = [manifest.background.service_worker, manifest.action.default_popup, manifest.options_ui.page,
    ...manifest.content_scripts.flatMap((s) => [...s.js, ...(s.css ?? [])])];
  for (const file of files) assert.ok(existsSync(new URL(file, root)), file);
  for (const [size, file] of Object.entries({ ...manifest.icons, ...manifest.action.default_icon })) {
    const png = readFileSync(new URL(file, root));
    assert.equal(png.subarray(1, 4).toString("ascii"), "PNG", file);
    assert.equal(png.readUInt32BE(16), Number(size), `${file} width`);
    assert.equal(png.readUInt32BE(20), Number(size), `${file} height`);
  }
});
