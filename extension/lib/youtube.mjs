// YouTube link handling. The backend canonicalises links too; doing it here as
// well means the history shows one stable URL per video and playlist/timestamp
// parameters never leave the browser.

const VIDEO_ID = /^[A-Za-z0-9_-]{11}$/;
const WATCH_HOSTS = new Set(["youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com"]);
const SHORT_HOSTS = new Set(["youtu.be", "www.youtu.be"]);
const ID_PATH_PREFIXES = new Set(["shorts", "embed", "live", "v"]);

function parse(url) {
  try {
    return new URL(url);
  } catch {
    return null;
  }
}

/** The 11-character video id of a YouTube video link, or null for anything else. */
export function youTubeVideoId(url) {
  const parsed = parse(url);
  if (!parsed || !/^https?:$/.test(parsed.protocol)) return null;
  const host = parsed.hostname.toLowerCase();
  const segments = parsed.pathname.split("/").filter(Boolean);
  let id = null;
  if (SHORT_HOSTS.has(host)) id = segments[0] ?? null;
  else if (WATCH_HOSTS.has(host)) {
    if (segments[0] === "watch") id = parsed.searchParams.get("v");
    else if (segments.length >= 2 && ID_PATH_PREFIXES.has(segments[0])) id = segments[1];
  }
  return id && VIDEO_ID.test(id) ? id : null;
}

export function canonicalWatchUrl(videoId) {
  return `https://www.youtube.com/watch?v=${videoId}`;
}

/** True for a page that shows one YouTube video (watch, shorts, youtu.be...). */
export function isYouTubeVideoPage(url) {
  return youTubeVideoId(url) !== null;
}

/**
 * Seconds from a YouTube `t=` / `start=` value: "90", "90s", "1m30s", "1h2m3s".
 * Returns null when the value is not one of those shapes.
 */
export function parseTimeParam(value) {
  if (value === null || value === undefined) return null;
  const text = String(value).trim().toLowerCase();
  if (/^\d+(\.\d+)?s?$/.test(text)) return Number.parseFloat(text);
  const match = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(text);
  if (!match || text === "") return null;
  const [, h = 0, m = 0, s = 0] = match;
  return Number(h) * 3600 + Number(m) * 60 + Number(s);
}

/** The start time a link carries (`t=` or `start=`, query or fragment), or null. */
export function linkStartTime(url) {
  const parsed = parse(url);
  if (!parsed) return null;
  const fragment = new URLSearchParams(parsed.hash.replace(/^#/, ""));
  for (const params of [parsed.searchParams, fragment]) {
    for (const key of ["t", "start"]) {
      const seconds = parseTimeParam(params.get(key));
      if (seconds !== null) return seconds;
    }
  }
  return null;
}

/** "m:ss" or "h:mm:ss" for a position in seconds (floored, as players show it). */
export function formatClock(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "0:00";
  const total = Math.floor(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}
