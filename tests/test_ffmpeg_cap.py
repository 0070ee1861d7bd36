"""The API runs at most SEGUE_FFMPEG_MAX_CONCURRENT ffmpeg processes; past the wait, a 503 with Retry-After.

Real ffmpeg throughout, and no timing: the only slot is held by a real ffmpeg
reading from a FIFO that the test writes to when it chooses, so "busy" and
"free again" are states the test controls, not races it hopes to win.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading

import pytest

from backend.core import audiofile
from tests.conftest import wait_for
from tests.media_server import make_click_track, wav_bytes


def _m4a(tmp_path, seconds: float = 3.0) -> bytes:
    """AAC in MP4: libsndfile cannot read it, so the API needs ffmpeg to probe it."""
    source, target = tmp_path / "clip.wav", tmp_path / "clip.m4a"
    source.write_bytes(wav_bytes(make_click_track(120, seconds, sr=32000), 32000))
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source),
                    "-c:a", "aac", "-movflags", "+faststart", str(target)], check=True, capture_output=True)
    return target.read_bytes()


@pytest.fixture
def m4a_body(tmp_path):
    return {"audio": base64.b64encode(_m4a(tmp_path)).decode(), "prompt_duration": 1}


class HeldSlot:
    """A real ffmpeg that holds a gate slot while it waits for input on a FIFO."""

    def __init__(self, tmp_path, gate: audiofile.FfmpegGate):
        self.fifo = tmp_path / "held.wav"
        os.mkfifo(self.fifo)
        self.gate = gate
        self.result: list = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        # Deterministic: the slot is counted as taken before ffmpeg even starts.
        wait_for(lambda: gate._slots._value == 0, timeout=30, message="the held ffmpeg to take its slot")

    def _run(self):
        try:
            self.result.append(audiofile._run_ffmpeg_to_wav(["-f", "wav", "-i", f"file:{self.fifo}"], stdin=None))
        except BaseException as exc:  # reported by release()
            self.result.append(exc)

    def release(self) -> bytes:
        with open(self.fifo, "wb") as writer:  # ffmpeg gets its input and ends
            writer.write(wav_bytes(make_click_track(120, 1.0, sr=8000), 8000))
        self.thread.join(60)
        assert not self.thread.is_alive()
        out = self.result[0]
        assert isinstance(out, bytes), out
        return out


@pytest.fixture
def capped(settings):
    from backend.api.app import create_app

    def make(limit: int, wait: float):
        app = create_app(settings=settings.with_(ffmpeg_max_concurrent=limit, ffmpeg_wait_seconds=wait))
        app.config["TESTING"] = True
        return app

    yield make
    audiofile.configure_ffmpeg(0, 10.0)  # back to the defaults for other tests


def test_a_busy_ffmpeg_slot_gives_503_with_retry_after_and_stores_nothing(capped, m4a_body, tmp_path):
    app = capped(limit=1, wait=0)
    client = app.test_client()
    held = HeldSlot(tmp_path, audiofile.ffmpeg_gate())
    try:
        response = client.post("/continue", json=m4a_body)
        assert response.status_code == 503, response.get_json()
        assert response.get_json()["code"] == "ffmpeg_busy" and "ffmpeg" in response.get_json()["error"]
        assert int(response.headers["Retry-After"]) >= 1
        assert app.extensions["segue"].store.tasks.count_documents({}) == 0
        # A WAV needs no ffmpeg (libsndfile reads it): not affected by the cap.
        wav = {"audio": base64.b64encode(wav_bytes(make_click_track(120, 3.0, sr=32000), 32000)).decode(),
               "prompt_duration": 1}
        assert client.post("/continue", json=wav).status_code == 202
    finally:
        assert held.release().startswith(b"RIFF")
    # The slot is free again: the same request goes through (its ffmpeg really runs).
    response = client.post("/continue", json=m4a_body)
    assert response.status_code == 202, response.get_json()


def test_requests_wait_for_a_slot_within_the_bound(capped, m4a_body, tmp_path):
    app = capped(limit=1, wait=120)  # generous: the test frees the slot itself
    client = app.test_client()
    held = HeldSlot(tmp_path, audiofile.ffmpeg_gate())
    answers: list = []
    waiting = threading.Thread(target=lambda: answers.append(client.post("/continue", json=m4a_body)), daemon=True)
    waiting.start()
    # It waits (the slot is taken) until the held ffmpeg gets its input.
    assert not answers
    held.release()
    waiting.join(120)
    assert answers and answers[0].status_code == 202, answers and answers[0].get_json()


def test_the_cap_defaults_to_the_number_of_cores(settings):
    assert audiofile.FfmpegGate(0, 1).limit == (os.cpu_count() or 1)
    assert audiofile.FfmpegGate(3, 1).limit == 3
