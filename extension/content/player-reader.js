// Reads the position and source of the page's main media element.
//
// A classic script, used two ways: listed before content/youtube.js in the
// manifest (which calls segueReadPlayerState on each click), and injected by
// the service worker with chrome.scripting.executeScript({files}) on other
// pages, where the value of the last expression below is the result.
// It only reads; the choice of what to send to the server is lib/source.mjs.

globalThis.segueReadPlayerState = function segueReadPlayerState() {
  const youTubePlayer = document.querySelector("#movie_player video.html5-main-video, video.html5-main-video");
  const all = Array.from(document.querySelectorAll("video, audio"));
  // YouTube keeps ad and preview players around: its main player wins, then
  // whatever is playing, then anything with a source.
  const media = youTubePlayer
    || all.find((element) => !element.paused && !element.ended)
    || all.find((element) => element.currentSrc || element.src)
    || all[0];
  const base = { pageUrl: location.href, title: document.title };
  if (!media) return { ...base, found: false };
  return {
    ...base,
    found: true,
    mediaSrc: media.currentSrc || media.src || "",
    currentTime: media.currentTime,
    duration: Number.isFinite(media.duration) ? media.duration : null,
    paused: media.paused,
  };
};

segueReadPlayerState();
