"""The web app at / in a real Chromium, against the full stack with the tiny model.

A person's session: paste a loopback media URL, press Generate, watch the progress reach 100, see the waveform
and a playable <audio>, crop at the cursor (through the sidecar), continue, download WAV and MP3, reload and
find the history. Also: keyboard only at phone width, the YouTube mode offline, every kind of error in words,
and the API key field when keys are on. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import serve_app
from tests.scenarios.browser import (DESKTOP, PHONE, browser, canvas_ink, full_stack,  # noqa: F401
                                     horizontal_overflow, open_page, screenshot)

GENERATE_TIMEOUT_MS = 150_000
STATUS_4XX = "the server responded with a status of 4"

WATCH_PROGRESS = """() => {
    const bar = document.getElementById('progress');
    const listen = document.getElementById('listen');
    window.seenProgress = [];
    window.seenLiveAudio = false;
    new MutationObserver(() => window.seenProgress.push(Number(bar.getAttribute('aria-valuenow'))))
        .observe(bar, { attributes: true, attributeFilter: ['aria-valuenow'] });
    // "Listen live" appears with the first streamed audio chunk (SSE), before the result is in.
    new MutationObserver(() => { if (!listen.hidden) window.seenLiveAudio = true; })
        .observe(listen, { attributes: true, attributeFilter: ['hidden'] });
}"""


def ready(page):
    page.wait_for_function("document.documentElement.dataset.ready === 'true'")


def audio_duration(page) -> float:
    page.wait_for_function("() => { const a = document.querySelector('audio'); return a.src && a.readyState >= 1"
                           " && Number.isFinite(a.duration); }")
    return page.eval_on_selector("audio", "a => a.duration")


def wait_for_new_audio(page, previous_src: str | None) -> str:
    page.wait_for_function("prev => { const a = document.querySelector('audio[src]'); return a && a.src !== prev; }",
                           arg=previous_src, timeout=GENERATE_TIMEOUT_MS)
    return page.get_attribute("audio", "src")


def history_badges(page) -> list[str]:
    return page.locator("#history .badge").all_inner_texts()


def test_generate_crop_continue_download_and_history(browser, full_stack, media_server, tmp_path):
    watched = open_page(browser, f"{full_stack.api}/")
    page = watched.page
    ready(page)
    assert page.locator("audio[src]").count() == 0
    assert page.locator("#model option").count() >= 1
    screenshot(page, "webapp-desktop-empty")

    # Generate from a loopback click track, 2 s in.
    page.fill("input[name=url]", media_server.url("/click120.wav"))
    page.fill("#currentTime", "2")
    assert page.inner_text("#start-readout") == "0:02.0"
    page.evaluate(WATCH_PROGRESS)
    page.get_by_role("button", name="Generate", exact=True).click()
    first_src = wait_for_new_audio(page, None)
    assert first_src.startswith("blob:")
    page.wait_for_function("document.getElementById('progress').getAttribute('aria-valuenow') === '100'")
    seen = page.evaluate("window.seenProgress")
    assert seen and seen[-1] == 100 and seen == sorted(seen), seen
    assert page.inner_text("#progress-label") == "Done"
    assert page.evaluate("window.seenLiveAudio"), "no audio chunk was streamed while generating"
    assert page.locator("#listen").is_hidden()

    # Waveform drawn, audio playable, the result described.
    duration = audio_duration(page)
    assert 16 - 0.1 <= duration <= 18 + 0.1
    assert canvas_ink(page, "#wave-canvas") > 0.05
    assert "120 BPM" in page.inner_text("#result-meta")
    page.focus("#waveform")
    page.keyboard.press(" ")  # Space plays, like any audio editor
    page.wait_for_function("document.querySelector('audio').currentTime > 0.3")
    page.keyboard.press(" ")
    assert page.eval_on_selector("audio", "a => a.paused")
    screenshot(page, "webapp-desktop-result")

    # Crop at a cursor set by clicking the waveform 60% of the way in.
    box = page.locator("#waveform").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2)
    cursor = float(page.get_attribute("#waveform", "aria-valuenow"))
    assert abs(cursor - 0.6 * duration) < 0.3
    page.get_by_role("button", name="Crop at cursor", exact=True).click()
    cropped_src = wait_for_new_audio(page, first_src)
    cropped = audio_duration(page)
    assert abs(cropped - cursor) < 0.15, (cropped, cursor)
    assert history_badges(page)[0] == "CROP"

    # Continue the cropped clip: the last 6 s are the prompt, 30 s are generated.
    page.get_by_role("button", name="Continue", exact=True).click()
    wait_for_new_audio(page, cropped_src)
    continued = audio_duration(page)
    assert abs(continued - (cropped - 6 + 30)) < 0.3, (continued, cropped)
    page.wait_for_function("document.querySelectorAll('#history .badge').length === 3")
    assert history_badges(page) == ["CONTINUE", "CROP", "GENERATE"]

    # Downloads: a real WAV and a real MP3 (made by the sidecar).
    with page.expect_download() as wav_download:
        page.get_by_role("button", name="Download WAV", exact=True).click()
    wav = tmp_path / "clip.wav"
    wav_download.value.save_as(wav)
    assert wav_download.value.suggested_filename.endswith(".wav")
    assert wav.read_bytes()[:4] == b"RIFF" and wav.read_bytes()[8:12] == b"WAVE"
    with page.expect_download() as mp3_download:
        page.get_by_role("button", name="Download MP3", exact=True).click()
    mp3 = tmp_path / "clip.mp3"
    mp3_download.value.save_as(mp3)
    head = mp3.read_bytes()[:3]
    assert mp3_download.value.suggested_filename.endswith(".mp3")
    assert head == b"ID3" or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0), head
    screenshot(page, "webapp-desktop-continued")

    # The history survives a reload, and opening an entry plays it again.
    page.reload()
    ready(page)
    page.wait_for_function("document.querySelectorAll('#history .history-item').length === 3")
    assert history_badges(page) == ["CONTINUE", "CROP", "GENERATE"]
    assert page.locator("audio[src]").count() == 0
    page.locator("#history .history-item").nth(2).click()
    assert abs(audio_duration(page) - duration) < 0.05
    screenshot(page, "webapp-desktop-history")
    watched.assert_clean()
    watched.close()


def test_keyboard_only_session_at_phone_width(browser, full_stack, media_server):
    watched = open_page(browser, f"{full_stack.api}/", PHONE, is_mobile=True, has_touch=True)
    page = watched.page
    ready(page)
    assert horizontal_overflow(page) <= 0
    screenshot(page, "webapp-phone-empty")

    def tab_to(predicate: str, limit: int = 40) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate(f"(() => {{ const el = document.activeElement; return {predicate}; }})()"):
                return
        raise AssertionError(f"Tab never reached: {predicate}")

    tab_to("el.name === 'url'")
    page.keyboard.type(media_server.url("/click100.wav"))
    tab_to("el.tagName === 'BUTTON' && el.textContent.trim() === 'Generate'")
    page.keyboard.press("Enter")
    wait_for_new_audio(page, None)
    assert page.get_attribute("#progress", "aria-valuenow") == "100"

    # The waveform cursor moves with the arrow keys.
    page.focus("#waveform")
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    assert float(page.get_attribute("#waveform", "aria-valuenow")) == pytest.approx(2.0)
    assert page.inner_text("#cursor-readout") == "0:02.0"
    assert horizontal_overflow(page) <= 0
    for selector in ("#waveform", "audio", "#crop", "#continue", "#download-wav"):
        assert page.locator(selector).is_visible(), selector
    screenshot(page, "webapp-phone-result")
    watched.assert_clean()
    watched.close()


def test_youtube_link_switches_to_the_embed_mode_without_contacting_youtube(browser, full_stack):
    watched = open_page(browser, f"{full_stack.api}/")
    page = watched.page
    ready(page)
    assert page.locator("#youtube-box").is_hidden()
    page.fill("input[name=url]", "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42")
    assert page.locator("#youtube-box").is_visible()
    assert page.inner_text("#source-kind") == "YouTube"
    assert "dQw4w9WgXcQ" in page.inner_text("#yt-load")
    assert page.input_value("#currentTime") == "42"  # the link's t= sets the start
    # The start field stays usable by hand in YouTube mode.
    page.fill("#currentTime", "12.5")
    assert page.inner_text("#start-readout") == "0:12.5"
    page.fill("input[name=url]", "https://youtu.be/dQw4w9WgXcQ")
    assert page.locator("#youtube-box").is_visible()
    screenshot(page, "webapp-desktop-youtube")
    # A plain media URL switches back.
    page.fill("input[name=url]", "http://127.0.0.1:9/a.mp3")
    assert page.locator("#youtube-box").is_hidden()
    assert page.inner_text("#source-kind") == "Media URL"
    assert page.locator("iframe").count() == 0
    # Nothing left the machine: every request went to loopback (or was a blob:/data: URL).
    outside = [u for u in watched.requests
               if urlsplit(u).scheme in ("http", "https", "ws", "wss") and urlsplit(u).hostname != "127.0.0.1"]
    assert not outside, outside
    watched.assert_clean()
    watched.close()


def test_every_error_is_shown_in_words(browser, full_stack, media_server):
    watched = open_page(browser, f"{full_stack.api}/")
    page = watched.page
    ready(page)

    def toast_after_generate() -> str:
        page.evaluate("document.getElementById('toasts').replaceChildren()")
        page.get_by_role("button", name="Generate", exact=True).click()
        page.wait_for_selector(".toast.error", timeout=GENERATE_TIMEOUT_MS)
        return page.inner_text(".toast.error")

    # No URL: caught before any request.
    assert "Paste a link" in toast_after_generate()
    assert page.get_attribute("input[name=url]", "aria-invalid") == "true"

    # Whatever the API refuses, its own sentence and code are shown.
    for marked, fields in (("url", {"url": "ftp://example.com/a.mp3"}),
                           ("durationMin", {"url": media_server.url("/click120.wav"), "durationMin": "18",
                                            "durationMax": "16"}),
                           ("currentTime", {"url": media_server.url("/click120.wav"), "currentTime": "-3"})):
        body = {"url": fields["url"], "promptLength": "6",
                "duration": f"{fields.get('durationMin', '16')}-{fields.get('durationMax', '18')}"}
        if "currentTime" in fields:
            body["currentTime"] = fields["currentTime"]
        expected = requests.post(f"{full_stack.api}/generate", json=body, timeout=10)
        assert expected.status_code == 400
        page.fill("input[name=url]", fields["url"])
        page.fill("#durationMin", fields.get("durationMin", "16"))
        page.fill("#durationMax", fields.get("durationMax", "18"))
        page.fill("#currentTime", fields.get("currentTime", "0"))
        text = toast_after_generate()
        assert expected.json()["error"].lower() in text.lower(), (text, expected.json())
        assert expected.json()["code"] in text
        # The field the API named is marked and focused, ready to be fixed.
        assert page.get_attribute(f"#{marked}", "aria-invalid") == "true"
        assert page.evaluate("document.activeElement.id") == marked
    screenshot(page, "webapp-desktop-error", full_page=False)

    # A task that fails on the worker: its error, in the toast and in the history.
    page.fill("#durationMin", "16")
    page.fill("#durationMax", "18")
    page.fill("#currentTime", "0")
    page.fill("input[name=url]", media_server.url("/no-such-track.wav"))
    text = toast_after_generate()
    assert "404" in text, text
    assert page.get_attribute("#progress", "class").split().count("failed") == 1
    page.wait_for_function("document.querySelector('#history .badge')?.textContent === 'failed'")
    assert "404" in page.inner_text("#history .history-item")
    watched.assert_clean(allowed=(STATUS_4XX,))
    watched.close()


def test_api_key_field_when_keys_are_on(browser, settings):
    from backend.api.app import create_app

    key = "browser-test-key"
    app = create_app(settings=settings.with_(api_keys=(hashlib.sha256(key.encode()).hexdigest(),)))
    with serve_app(app) as base:
        watched = open_page(browser, f"{base}/")
        page = watched.page
        ready(page)
        assert page.locator("#key-form").is_visible()
        page.fill("input[name=url]", "http://127.0.0.1:9/a.wav")
        page.get_by_role("button", name="Generate", exact=True).click()
        page.wait_for_selector(".toast.error")
        assert "API key" in page.inner_text(".toast.error")
        assert page.evaluate("document.activeElement.id") == "api-key"

        page.fill("#api-key", key)
        page.get_by_role("button", name="Save key", exact=True).click()
        page.get_by_role("button", name="Generate", exact=True).click()
        # No worker runs here: the task is accepted and waits in the queue.
        page.wait_for_function("document.getElementById('progress-label').textContent === 'Queued'")
        page.wait_for_selector("#history .badge.running")
        page.reload()
        ready(page)
        assert page.input_value("#api-key") == key
        assert page.locator("#history .badge.running").count() == 1
        watched.assert_clean(allowed=("status of 401",))
        watched.close()
