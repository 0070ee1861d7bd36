import assert from "node:assert/strict";
import { test } from "node:test";
import { canonicalWatchUrl, formatClock, isYouTubeVideoPage, linkStartTime, parseTimeParam, youTubeVideoId }
  from "../lib/youtube.mjs";

test("video ids come out of every spelling of a video link", () => {
  const id = "dQw4w9WgXcQ";
  for (const url of [
    `https://www.youtube.com/watch?v=${id}`,
    `https://www.youtube.com/watch?v=${id}&list=PL123&index=4&t=42s`,
    `https://youtube.com/watch?feature=share&v=${id}`,
    `https://m.youtube.com/watch?v=${id}`,
    `https://music.youtube.com/watch?v=${id}&si=abc`,
    `https://youtu.be/${id}?t=10`,
    `https://www.youtube.com/shorts/${id}`,
    `https://www.youtube.com/embed/${id}?start=5`,
    `https://www.youtube.com/live/${id}`,
    `http://www.youtube.com/watch?v=${id}#t=1m`,
  ]) {
    assert.equal(youTubeVideoId(url), id, url);
  }
  assert.equal(canonicalWatchUrl(id), `https://www.youtube.com/watch?v=${id}`);
});

test("pages that are not one video give no id", () => {
  for (const url of [
    "https://www.youtube.com/", "https://www.youtube.com/results?search_query=x",
    "https://www.youtube.com/playlist?list=PL123", "https://www.youtube.com/@channel",
    "https://www.youtube.com/watch?v=short", "https://www.youtube.com/watch?v=dQw4w9WgXc$",
    "https://notyoutube.com/watch?v=dQw4w9WgXcQ", "https://www.youtube.com.evil.test/watch?v=dQw4w9WgXcQ",
    "ftp://www.youtube.com/watch?v=dQw4w9WgXcQ", "not a url", "", null,
  ]) {
    assert.equal(youTubeVideoId(url), null, String(url));
    assert.equal(isYouTubeVideoPage(url), false);
  }
});

test("t= values in every YouTube form", () => {
  assert.equal(parseTimeParam("90"), 90);
  assert.equal(parseTimeParam("90s"), 90);
  assert.equal(parseTimeParam("12.5"), 12.5);
  assert.equal(parseTimeParam("1m30s"), 90);
  assert.equal(parseTimeParam("1h2m3s"), 3723);
  assert.equal(parseTimeParam("2m"), 120);
  for (const bad of ["", "abc", "1x", "-5", "1m-3s", null, undefined]) assert.equal(parseTimeParam(bad), null, String(bad));
  assert.equal(linkStartTime("https://youtu.be/dQw4w9WgXcQ?t=1m5s"), 65);
  assert.equal(linkStartTime("https://www.youtube.com/embed/dQw4w9WgXcQ?start=7"), 7);
  assert.equal(linkStartTime("https://www.youtube.com/watch?v=dQw4w9WgXcQ#t=30"), 30);
  assert.equal(linkStartTime("https://www.youtube.com/watch?v=dQw4w9WgXcQ"), null);
});

test("clock format matches the player's", () => {
  assert.equal(formatClock(0), "0:00");
  assert.equal(formatClock(83.9), "1:23");
  assert.equal(formatClock(3723), "1:02:03");
  assert.equal(formatClock(NaN), "0:00");
  assert.equal(formatClock(-1), "0:00");
});
