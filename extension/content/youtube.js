// On YouTube video pages: a "Segue" button in the player's control bar that
// generates from the current position in one click, and a small panel that
// follows the task (progress, the server's error, then a player and a
// download link). Classic script; content/player-reader.js runs before it.
//
// Text from the server is only ever set with textContent, never as HTML.

(() => {
  const BUTTON_CLASS = "segue-button";
  let panel = null;
  let currentId = null;
  let audioUrl = null;
  const latest = new Map(); // entry id -> newest entry the service worker sent

  chrome.runtime.onMessage.addListener((message, _sender, sendResponse) => {
    if (message?.type === "segue:read-player") sendResponse(globalThis.segueReadPlayerState());
    // The service worker reports each change of a task this page started.
    if (message?.type === "segue:entry") followed(message.entry);
  });

  function element(tag, props = {}, children = []) {
    const node = Object.assign(document.createElement(tag), props);
    for (const child of children) node.append(child);
    return node;
  }

  // YouTube is a single-page app that rebuilds its player on navigation, so
  // the button is (re)attached whenever it is missing.
  function ensureButton() {
    const existing = document.querySelector(`.${BUTTON_CLASS}`);
    // YouTube's home and search pages have preview players too: only video pages get the button.
    if (!/^\/(watch|shorts\/|live\/)/.test(location.pathname)) {
      existing?.remove();
      return;
    }
    if (existing) return;
    const controls = document.querySelector("#movie_player .ytp-right-controls");
    const button = element("button", {
      className: controls ? `${BUTTON_CLASS} ytp-button` : `${BUTTON_CLASS} segue-floating`,
      type: "button", textContent: "Segue", title: "Continue this music from the current position with Segue",
    });
    button.setAttribute("aria-label", "Generate with Segue from the current position");
    button.addEventListener("click", generate);
    if (controls) controls.prepend(button);
    else if (document.querySelector("video")) document.body.append(button);
  }

  async function generate(event) {
    event.preventDefault();
    event.stopPropagation(); // the player would take the click as play/pause
    const state = globalThis.segueReadPlayerState();
    showPanel();
    render({ status: "sending", progress: 0, currentTime: state.currentTime });
    let answer;
    try {
      answer = await chrome.runtime.sendMessage({ type: "segue:generate-page", state });
    } catch (error) {
      // After the extension is reloaded this page's script is orphaned.
      render({ status: "failed", error: `Segue was updated or disabled; reload the page. (${error.message})` });
      return;
    }
    if (answer?.entry) {
      currentId = answer.entry.id;
      // Updates can overtake the answer itself; show the newest we have.
      render(latest.get(currentId) ?? answer.entry);
    } else {
      render({ status: "failed", error: answer?.error ?? "No answer from the extension." });
    }
  }

  function showPanel() {
    if (!panel) {
      panel = element("section", { className: "segue-panel" });
      panel.setAttribute("role", "status");
      panel.setAttribute("data-segue-panel", "");
      document.body.append(panel);
    }
    panel.hidden = false;
    if (audioUrl) URL.revokeObjectURL(audioUrl);
    audioUrl = null;
  }

  const STATUS_TEXT = {
    sending: "Sending…", queued: "Queued", processing: "Generating", completed: "Done",
    failed: "Failed", canceled: "Canceled",
  };

  function render(entry) {
    const close = element("button", { className: "segue-close", type: "button", textContent: "×", title: "Close" });
    close.addEventListener("click", () => { panel.hidden = true; });
    const clock = Number.isFinite(entry.currentTime) ? ` from ${formatClock(entry.currentTime)}` : "";
    const header = element("header", {}, [element("span", { textContent: `Segue${clock}` }), close]);
    let line = STATUS_TEXT[entry.status] ?? entry.status;
    if (entry.status === "processing" && Number.isFinite(entry.progress)) line += ` ${Math.floor(entry.progress)}%`;
    if (entry.status === "queued" && Number.isFinite(entry.queue_position)) line += ` (position ${entry.queue_position + 1})`;
    const children = [header, element("div", { className: "segue-status", textContent: line })];
    if (entry.status === "queued" || entry.status === "processing" || entry.status === "sending") {
      children.push(element("progress", { max: 100, value: entry.progress ?? 0 }));
    }
    if (entry.error) children.push(element("div", { className: "segue-error", textContent: entry.error }));
    if (entry.watchError) children.push(element("div", { className: "segue-error", textContent: entry.watchError }));
    if (entry.status === "completed") {
      const play = element("button", { type: "button", textContent: "Play" });
      play.addEventListener("click", () => loadAudio(entry.id, play));
      children.push(element("div", { className: "segue-actions" }, [play,
        element("span", { textContent: "More in the Segue toolbar popup" })]));
    }
    panel.replaceChildren(...children);
  }

  async function loadAudio(id, button) {
    button.disabled = true;
    button.textContent = "Loading…";
    const answer = await chrome.runtime.sendMessage({ type: "segue:audio", id }).catch((e) => ({ error: e.message }));
    if (!answer?.ok) {
      panel.append(element("div", { className: "segue-error", textContent: answer?.error ?? "Could not load audio." }));
      button.textContent = "Play";
      button.disabled = false;
      return;
    }
    const bytes = Uint8Array.from(atob(answer.audio), (c) => c.charCodeAt(0));
    audioUrl = URL.createObjectURL(new Blob([bytes], { type: answer.type }));
    const player = element("audio", { controls: true, src: audioUrl });
    const download = element("a", { href: audioUrl, download: answer.filename, textContent: "Download" });
    button.replaceWith(download);
    panel.append(player);
    player.play().catch(() => {}); // autoplay may be refused; the controls are there
  }

  function formatClock(seconds) {
    const total = Math.floor(seconds);
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  function followed(entry) {
    if (!entry) return;
    latest.set(entry.id, entry);
    if (entry.id !== currentId || !panel || panel.hidden) return;
    if (entry.status === "completed" && panel.querySelector("audio, a[download]")) return; // already playing
    render(entry);
  }

  ensureButton();
  document.addEventListener("yt-navigate-finish", ensureButton);
  setInterval(ensureButton, 1000);
})();
