import assert from "node:assert/strict";
import { test } from "node:test";
import { SourceError, chooseSource } from "../lib/source.mjs";

test("a YouTube page sends its canonical watch link, never the blob: media source", () => {
  const source = chooseSource({
    pageUrl: "https://www.youtube.com/watch?v=dQw4w9WgXcQ&list=PL1&t=3", found: true,
    mediaSrc: "blob:https://www.youtube.com/1234", currentTime: 83.456789, title: "A song - YouTube",
  });
  assert.deepEqual(source, { url: "https://www.youtube.com/watch?v=dQw4w9WgXcQ", currentTime: 83.46,
    title: "A song", pageUrl: "https://www.youtube.com/watch?v=dQw4w9WgXcQ&list=PL1&t=3", kind: "youtube" });
});

test("another page sends its player's http(s) source", () => {
  const source = chooseSource({ pageUrl: "http://127.0.0.1:8000/player.html", found: true,
    mediaSrc: "http://127.0.0.1:8000/click.wav", currentTime: 2, title: "Player" });
  assert.equal(source.url, "http://127.0.0.1:8000/click.wav");
  assert.equal(source.kind, "media");
  assert.equal(source.currentTime, 2);
});

test("positions that are not a finite non-negative number become 0", () => {
  for (const currentTime of [undefined, null, NaN, -4, "x", Infinity]) {
    const source = chooseSource({ pageUrl: "https://youtu.be/dQw4w9WgXcQ", found: true, currentTime });
    assert.equal(source.currentTime, 0, String(currentTime));
  }
});

test("pages the server cannot use are refused with a reason", () => {
  assert.throws(() => chooseSource(null), SourceError);
  assert.throws(() => chooseSource({ pageUrl: "https://example.com/", found: false }), /No video or audio player/);
  assert.throws(() => chooseSource({ pageUrl: "https://example.com/", found: true, mediaSrc: "blob:https://example.com/1" }),
    /blob: source/);
  assert.throws(() => chooseSource({ pageUrl: "https://example.com/", found: true, mediaSrc: "" }), /no downloadable/);
  assert.throws(() => chooseSource({ pageUrl: "https://www.youtube.com/", found: true, mediaSrc: "blob:x" }), SourceError);
});
