// YouTube links: recognise them, and embed the player only when asked (a facade first), so the page never
// contacts youtube.com by itself. The embedded player reports its time through the documented postMessage
// protocol of the IFrame API, which lets the start-time field follow the player's cursor without its script.

const HOSTS = new Set(["youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com", "youtu.be",
  "www.youtube-nocookie.com", "youtube-nocookie.com"]);
const ID = /^[A-Za-z0-9_-]{11}$/;

export function youtubeInfo(text) {
  let url;
  try { url = new URL(text.trim()); } catch { return null; }
  if (!HOSTS.has(url.hostname)) return null;
  let id = null;
  if (url.hostname === "youtu.be") id = url.pathname.slice(1).split("/")[0];
  else if (url.pathname === "/watch") id = url.searchParams.get("v");
  else {
    const match = url.pathname.match(/^\/(?:embed|shorts|live|v)\/([^/?#]+)/);
    if (match) id = match[1];
  }
  if (!id || !ID.test(id)) return null;
  return { id, start: parseStart(url.searchParams.get("t") || url.searchParams.get("start")) };
}

function parseStart(value) {
  if (!value) return null;
  if (/^\d+(\.\d+)?$/.test(value)) return Number(value);
  const match = value.match(/^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/);
  if (!match) return null;
  return (Number(match[1] || 0) * 3600) + (Number(match[2] || 0) * 60) + Number(match[3] || 0);
}

export class YouTubeEmbed {
  constructor(frame, { onTime } = {}) {
    this.frame = frame;
    this.onTime = onTime;
    this.iframe = null;
    window.addEventListener("message", (event) => this.receive(event));
  }

  load(id, start = 0) {
    this.unload();
    const iframe = document.createElement("iframe");
    const params = new URLSearchParams({ enablejsapi: "1", origin: location.origin, start: String(Math.floor(start || 0)), rel: "0" });
    iframe.src = `https://www.youtube-nocookie.com/embed/${id}?${params}`;
    iframe.title = "YouTube player";
    iframe.allow = "autoplay; encrypted-media; picture-in-picture";
    iframe.addEventListener("load", () => this.listen());
    this.frame.append(iframe);
    this.iframe = iframe;
  }

  unload() {
    this.iframe?.remove();
    this.iframe = null;
  }

  listen() {
    // Asks the player to send "infoDelivery" messages (currentTime among them), as the IFrame API does.
    this.iframe?.contentWindow?.postMessage(JSON.stringify({ event: "listening", id: 1, channel: "widget" }), "*");
  }

  receive(event) {
    if (!this.iframe || event.source !== this.iframe.contentWindow) return;
    let data;
    try { data = typeof event.data === "string" ? JSON.parse(event.data) : event.data; } catch { return; }
    const time = data?.info?.currentTime;
    if (data?.event === "infoDelivery" && Number.isFinite(time)) this.onTime?.(time);
  }
}
