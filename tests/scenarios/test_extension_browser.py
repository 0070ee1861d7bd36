"""The Chrome extension (extension/), loaded unpacked into Debian's headless Chromium, against the real stack.

Chromium 156's headless mode loads unpacked Manifest V3 extensions (service worker, content scripts, extension
pages), so the extension runs here exactly as it ships. The stack is ``python -m backend.dev.devstack`` with the tiny
model and API keys switched on, so every call the extension makes must carry the key set in its options page.

Two honest limits of an offline test machine shape what is asserted:

- youtube.com cannot be reached. A page that mimics a YouTube watch page (the player's DOM shape, a <video>
  playing a loopback file) is served at the real ``https://www.youtube.com/watch?...`` address by Playwright
  routing, so the content script's match pattern is the shipped one. Clicking the in-page button must send the
  canonical watch link and the player's position, and the panel must show the server's own refusal (it cannot
  resolve www.youtube.com). No task can exist for it.
- The success path (progress, playback, download, continue) uses the extension's other documented mode: on any
  page, the popup reads the page's <video> and sends its http(s) source. In real use Chrome's ``activeTab`` grant
  (a click on the toolbar button) lets it read the page; Playwright cannot click the toolbar, and
  ``chrome.action.openPopup()`` grants nothing, so that phase loads a copy of the extension whose manifest adds
  one host permission, ``http://127.0.0.1/*``, standing in for the grant. No code differs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import requests

from tests.conftest import ARTIFACTS, ROOT
from tests.media_server import MediaServer, make_click_track, wav_bytes
from tests.scenarios.test_stack import Stack, make_stack_env

CHROMIUM = "/usr/bin/chromium"
EXTENSION = ROOT / "extension"
API_KEY = "extension-test-key-0123456789"
VIDEO_ID = "dQw4w9WgXcQ"

YOUTUBE_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Click track at 120 BPM - YouTube</title>
</head><body style="margin:0;background:#0f0f0f;color:#fff;font-family:Roboto,Arial,sans-serif">
<ytd-app><div id="content"><ytd-watch-flexy>
  <div id="player" style="width:854px">
    <div id="movie_player" class="html5-video-player ytp-autohide" style="position:relative;width:854px;height:480px">
      <div class="html5-video-container">
        <video class="video-stream html5-main-video" preload="auto" src="{media}"
               style="width:854px;height:480px;background:#000"></video>
      </div>
      <div class="ytp-chrome-bottom" style="position:absolute;left:12px;right:12px;bottom:0;height:48px">
        <div class="ytp-chrome-controls" style="display:flex;justify-content:space-between;height:48px">
          <div class="ytp-left-controls"><button class="ytp-play-button ytp-button">Play</button></div>
          <div class="ytp-right-controls" style="display:flex"><button class="ytp-settings-button ytp-button">
            Settings</button><button class="ytp-fullscreen-button ytp-button">Full screen</button></div>
        </div>
      </div>
    </div>
  </div>
  <h1 class="ytd-watch-metadata">Click track at 120 BPM</h1>
</ytd-watch-flexy></div></ytd-app></body></html>"""

PLAIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Loopback player</title></head>
<body><h1>A page with a video</h1><video id="v" controls preload="auto" src="/click120.wav"></video></body></html>"""


def launch(playwright, extension: Path, profile: Path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, headless=True, accept_downloads=True,
        viewport={"width": 1200, "height": 800},
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              f"--disable-extensions-except={extension}", f"--load-extension={extension}"])
    worker = context.service_workers[0] if context.service_workers else context.wait_for_event(
        "serviceworker", timeout=20_000)
    extension_id = worker.url.split("/")[2]
    return context, worker, extension_id


def watch_errors(page, errors: list[str]) -> None:
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and errors.append(f"{page.url}: console: {msg.text}"))


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def configure(context, extension_id: str, api: str, errors: list[str], screenshot_name: str | None = None) -> None:
    """Set the backend URL and key through the options page, as a user would."""
    page = context.new_page()
    watch_errors(page, errors)
    page.goto(f"chrome-extension://{extension_id}/options/options.html")
    page.fill("#backendUrl", "not a url")
    page.click("#save")
    page.wait_for_selector("#status.bad")
    assert "Backend URL must be a full http:// or https:// address" in page.inner_text("#status")
    page.fill("#backendUrl", api + "/")
    page.fill("#apiKey", API_KEY)
    page.click("#save")
    page.wait_for_selector("#status.ok")
    assert page.input_value("#backendUrl") == api, "the saved URL is normalised"
    page.click("#test")
    page.wait_for_function("() => document.querySelector('#health').textContent.startsWith('Connected')",
                           timeout=20_000)
    assert page.inner_text("#health") == "Connected: status live, 1 worker(s), device cpu"
    if screenshot_name:
        shot(page, screenshot_name)
    page.close()


def seek(page, selector: str, seconds: float) -> None:
    page.wait_for_function(f"() => document.querySelector('{selector}').readyState >= 1", timeout=20_000)
    page.evaluate("""([selector, t]) => new Promise(resolve => {
        const v = document.querySelector(selector);
        v.addEventListener('seeked', resolve, { once: true });
        v.currentTime = t;
    })""", [selector, seconds])


def generate_requests(context, api: str) -> list:
    """Every POST /generate the extension's service worker sends, as seen on the wire."""
    seen: list = []
    context.on("request", lambda r: r.method == "POST" and r.url == f"{api}/generate" and seen.append(r))
    return seen


def auth(api_key: str = API_KEY) -> dict:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture(scope="module")
def keyed_stack(tiny_model, tmp_path_factory):
    """One stack for this module (started as tests/scenarios/test_stack.py does), with API keys on."""
    tmp = tmp_path_factory.mktemp("extension-stack")
    env = make_stack_env(tiny_model, tmp / "var", SEGUE_API_WORKERS="1",
                         SEGUE_API_KEYS=hashlib.sha256(API_KEY.encode()).hexdigest())
    stack = Stack(env, tmp / "stack.log")
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(stack.log_path, ARTIFACTS / "extension-stack.log")


@pytest.fixture(scope="module")
def media():
    with MediaServer() as server:
        server.add("/click120.wav", wav_bytes(make_click_track(120, 40.0, sr=44100, channels=2), 44100), "audio/wav")
        server.add("/player.html", PLAIN_PAGE.encode(), "text/html; charset=utf-8")
        yield server


def test_youtube_button_sends_link_and_position_and_shows_the_servers_refusal(keyed_stack, media, tmp_path):
    from playwright.sync_api import sync_playwright

    api = keyed_stack.api
    assert requests.post(f"{api}/generate", json={"url": media.url("/click120.wav")}, timeout=10).status_code == 401
    errors: list[str] = []
    with sync_playwright() as playwright:
        context, worker, extension_id = launch(playwright, EXTENSION, tmp_path / "profile")
        try:
            configure(context, extension_id, api, errors, screenshot_name="extension-options")
            sent = generate_requests(context, api)

            # Chromium keeps a public https page from loading loopback addresses (Local Network Access), so the
            # player's file is proxied from the loopback media server at a youtube.com address.
            def youtube(route):
                url = route.request.url
                if url.startswith("https://www.youtube.com/watch"):
                    route.fulfill(status=200, content_type="text/html; charset=utf-8",
                                  body=YOUTUBE_PAGE.replace("{media}", "/segue-test-media/click120.wav"))
                elif url == "https://www.youtube.com/segue-test-media/click120.wav":
                    route.fulfill(response=route.fetch(url=media.url("/click120.wav")))
                else:
                    route.fulfill(status=404)

            context.route("https://www.youtube.com/**", youtube)
            page = context.new_page()
            watch_errors(page, errors)
            page.goto(f"https://www.youtube.com/watch?v={VIDEO_ID}&list=PL0123456789&t=5s")
            seek(page, "video.html5-main-video", 12.5)

            # The content script put its button into the player's control bar; one click generates.
            button = page.wait_for_selector("#movie_player .ytp-right-controls > button.segue-button", timeout=10_000)
            button.click()
            page.wait_for_selector("[data-segue-panel] .segue-error", timeout=20_000)

            # What went over the wire: the canonical link (no playlist, no t=), the player's position, the key.
            assert len(sent) == 1
            body = sent[0].post_data_json
            assert body == {"url": f"https://www.youtube.com/watch?v={VIDEO_ID}", "currentTime": 12.5,
                            "promptLength": 6, "duration": "16-18"}
            assert sent[0].headers["authorization"] == f"Bearer {API_KEY}"

            # The panel shows the server's own reason, word for word.
            answer = requests.post(f"{api}/generate", json=body, headers=auth(), timeout=10)
            assert answer.status_code == 400
            reason = answer.json()["error"]
            assert "www.youtube.com" in reason
            panel = page.inner_text("[data-segue-panel]")
            assert "Segue from 0:12" in panel and "Failed" in panel and reason in panel
            shot(page, "extension-youtube-refused")

            # History records what was sent and why it failed.
            history = worker.evaluate("chrome.storage.local.get('history').then(r => r.history)")
            assert len(history) == 1
            entry = history[0]
            assert (entry["status"], entry["url"], entry["currentTime"], entry["error"], entry["taskId"]) == (
                "failed", f"https://www.youtube.com/watch?v={VIDEO_ID}", 12.5, reason, None)
            assert entry["title"] == "Click track at 120 BPM"

            # The popup, pointed at the YouTube tab, offers the current position and lists the failure.
            tab_id = worker.evaluate("""async () => {
                for (const tab of await chrome.tabs.query({})) {
                    try {
                        if (await chrome.tabs.sendMessage(tab.id, { type: 'segue:read-player' })) return tab.id;
                    } catch (e) { /* no content script in this tab */ }
                }
                return null;
            }""")
            assert tab_id is not None
            popup = context.new_page()
            watch_errors(popup, errors)
            popup.set_viewport_size({"width": 400, "height": 600})
            popup.goto(f"chrome-extension://{extension_id}/popup/popup.html?tab={tab_id}")
            popup.wait_for_selector("#generate:not([disabled])", timeout=10_000)
            assert popup.inner_text("#generate") == "Generate from 0:12"
            assert popup.inner_text("#source") == "Click track at 120 BPM"
            assert reason in popup.inner_text("#history")
            shot(popup, "extension-popup-youtube")
        finally:
            context.close()
    assert not errors, "\n".join(errors)


def test_any_page_generates_plays_downloads_and_continues(keyed_stack, media, tmp_path):
    from playwright.sync_api import sync_playwright

    api = keyed_stack.api
    # The shipped extension, plus the one host permission that stands in for the toolbar click's activeTab grant.
    copy = tmp_path / "extension"
    shutil.copytree(EXTENSION, copy, ignore=shutil.ignore_patterns("node_modules", "tests"))
    manifest = json.loads((copy / "manifest.json").read_text())
    assert "host_permissions" not in manifest
    manifest["host_permissions"] = ["http://127.0.0.1/*"]
    (copy / "manifest.json").write_text(json.dumps(manifest))

    errors: list[str] = []
    with sync_playwright() as playwright:
        context, worker, extension_id = launch(playwright, copy, tmp_path / "profile")
        try:
            configure(context, extension_id, api, errors)
            sent = generate_requests(context, api)
            player = context.new_page()
            player.goto(media.url("/player.html"))
            seek(player, "#v", 2.0)
            tab_id = worker.evaluate("chrome.tabs.query({url: 'http://127.0.0.1/*'}).then(tabs => tabs[0].id)")

            # The key is in chrome.storage.local, which the extension closes to content scripts (they live in
            # the web page's renderer): a script injected into the page's extension world cannot read it.
            leaked = worker.evaluate("""async tabId => {
                const [answer] = await chrome.scripting.executeScript({ target: { tabId }, func: async () => {
                    try { return JSON.stringify(await chrome.storage.local.get(null)); }
                    catch (e) { return 'refused: ' + e.message; }
                } });
                return answer.result;
            }""", tab_id)
            assert leaked.startswith("refused") and API_KEY not in leaked, leaked

            popup = context.new_page()
            watch_errors(popup, errors)
            popup.set_viewport_size({"width": 400, "height": 700})
            popup.goto(f"chrome-extension://{extension_id}/popup/popup.html?tab={tab_id}")
            popup.wait_for_selector("#generate:not([disabled])", timeout=10_000)
            assert popup.inner_text("#generate") == "Generate from 0:02"
            assert popup.inner_text("#source") == "Loopback player"
            assert popup.inner_text("#backend") == f"Backend: {api} (with API key)"
            # Record every status line the popup shows, to see progress before the result.
            popup.evaluate("""() => {
                window.seenStatuses = [];
                new MutationObserver(() => document.querySelectorAll('#history .status').forEach(node => {
                    if (window.seenStatuses.at(-1) !== node.textContent) window.seenStatuses.push(node.textContent);
                })).observe(document.getElementById('history'),
                            { childList: true, subtree: true, characterData: true });
            }""")
            with context.expect_event("request", predicate=lambda r: r.method == "POST" and r.url == f"{api}/generate",
                                      timeout=20_000):
                popup.click("#generate")

            # The request names the page's media source and its position; the server created that task.
            assert len(sent) == 1
            assert sent[0].post_data_json == {"url": media.url("/click120.wav"), "currentTime": 2,
                                              "promptLength": 6, "duration": "16-18"}
            assert sent[0].headers["authorization"] == f"Bearer {API_KEY}"
            item = popup.wait_for_selector("#history li.entry", timeout=20_000)
            task_id = item.get_attribute("data-id")
            task = requests.get(f"{api}/tasks/{task_id}", headers=auth(), timeout=10).json()
            assert task["request"]["url"] == media.url("/click120.wav")
            assert task["request"]["currentTime"] == 2

            popup.wait_for_selector(f"li.entry[data-id='{task_id}'] .status-completed", timeout=180_000)
            task = requests.get(f"{api}/tasks/{task_id}", headers=auth(), timeout=10).json()
            assert task["status"] == "completed", task["error"]
            status = popup.inner_text(f"li.entry[data-id='{task_id}'] .status")
            assert status == f"Done: {task['duration_seconds']:.1f} s at {round(task['bpm'])} BPM"
            seen = popup.evaluate("window.seenStatuses")
            assert seen[-1] == status and any(s.startswith(("Queued", "Generating")) for s in seen[:-1]), seen
            progress = [e["progress"] for e in worker.evaluate(
                "chrome.storage.local.get('history').then(r => r.history)") if e["id"] == task_id]
            assert progress == [100]

            # Play: the result loads into an audio element whose length is the task's.
            popup.click(f"li.entry[data-id='{task_id}'] button[data-action='play']")
            audio = popup.wait_for_selector(f"li.entry[data-id='{task_id}'] audio", timeout=20_000)
            popup.wait_for_function("a => Number.isFinite(a.duration) && a.duration > 0", arg=audio, timeout=20_000)
            assert abs(audio.evaluate("a => a.duration") - task["duration_seconds"]) < 0.05

            # Download: the file saved is exactly the server's result.
            with popup.expect_download() as download_info:
                popup.click(f"li.entry[data-id='{task_id}'] a[download]")
            download = download_info.value
            assert download.suggested_filename == f"segue-{task_id[:8]}.wav"
            saved = Path(download.path()).read_bytes()
            assert saved == base64.b64decode(task["audio"])

            # Continue: a new task from this result, followed to the end, about 30 - 6 s longer.
            popup.click(f"li.entry[data-id='{task_id}'] button[data-action='continue']")
            child_row = popup.wait_for_selector(f"li.entry:not([data-id='{task_id}'])", timeout=30_000)
            child_id = child_row.get_attribute("data-id")
            popup.wait_for_selector(f"li.entry[data-id='{child_id}'] .status-completed", timeout=180_000)
            child = requests.get(f"{api}/tasks/{child_id}", headers=auth(), timeout=10).json()
            assert child["status"] == "completed" and child["parent_task_id"] == task_id
            assert abs(child["duration_seconds"] - (task["duration_seconds"] - 6 + 30)) < 0.1
            assert "continued" in popup.inner_text(f"li.entry[data-id='{child_id}'] .meta")
            shot(popup, "extension-popup-history")

            # History survives the popup: a fresh popup lists both, newest first.
            popup.close()
            again = context.new_page()
            again.goto(f"chrome-extension://{extension_id}/popup/popup.html?tab={tab_id}")
            again.wait_for_selector("#history li.entry >> nth=1")
            assert again.eval_on_selector_all("#history li.entry", "rows => rows.map(r => r.dataset.id)") == [
                child_id, task_id]
        finally:
            context.close()
    assert not errors, "\n".join(errors)
