// Decide what to send to POST /generate for the video a tab is showing.
//
// The content script reports raw facts about the page (its URL, the <video>'s
// source and position); the choice lives here so it can be tested without a
// browser. On YouTube the media source is a blob: URL fed by Media Source
// Extensions, useless to the server, so the watch link is sent and the server
// fetches it with yt-dlp. On any other page the <video>/<audio> source itself
// is sent when it is a plain http(s) URL the server can download.

import { canonicalWatchUrl, youTubeVideoId } from "./youtube.mjs";

export class SourceError extends Error {}

/**
 * @param {{pageUrl: string, mediaSrc?: string, currentTime?: number, duration?: number, title?: string}|null} state
 * @returns {{url: string, currentTime: number, title: string, pageUrl: string, kind: "youtube"|"media"}}
 */
export function chooseSource(state) {
  if (!state || typeof state.pageUrl !== "string") {
    throw new SourceError("Could not read this tab. Open a YouTube video (or a page with a video) and try again.");
  }
  if (state.found === false) {
    throw new SourceError("No video or audio player found on this page.");
  }
  const currentTime = roundTime(state.currentTime);
  const title = typeof state.title === "string" ? state.title.replace(/ - YouTube$/, "").trim().slice(0, 200) : "";
  const videoId = youTubeVideoId(state.pageUrl);
  if (videoId) {
    return { url: canonicalWatchUrl(videoId), currentTime, title, pageUrl: state.pageUrl, kind: "youtube" };
  }
  const src = typeof state.mediaSrc === "string" ? state.mediaSrc : "";
  if (/^https?:\/\//i.test(src)) {
    return { url: src, currentTime, title, pageUrl: state.pageUrl, kind: "media" };
  }
  if (src) {
    throw new SourceError("This page's player streams from a " + src.split(":")[0]
      + ": source, which the server cannot download. Use a YouTube video or a direct http(s) media link.");
  }
  throw new SourceError("This page's player has no downloadable http(s) source.");
}

/** Milliseconds of precision are noise for a music prompt; keep two decimals. */
function roundTime(value) {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds < 0) return 0;
  return Math.round(seconds * 100) / 100;
}
