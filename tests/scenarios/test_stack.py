"""The whole stack as `make run` starts it, driven like the gary4web web app.

Starts ``python -m backend.dev.devstack`` (embedded Valkey and SecantusDB, the
express sidecar, gunicorn, one worker) with the tiny model, generates from a
loopback URL, crops the result with the sidecar, continues it, checks bad
input and unknown ids, then stops it with SIGTERM and checks that nothing is
left running or listening; a restart still serves the earlier result.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys

import psutil
import pytest
import requests

from backend.core.audiofile import decode_audio_bytes
from backend.dev.embedded import free_port, port_open
from tests.conftest import ROOT, wait_for


class Stack:
    def __init__(self, env: dict, log_path):
        self.env = env
        self.log_path = log_path
        self.api = f"http://127.0.0.1:{env['PORT']}"
        self.sidecar = f"http://127.0.0.1:{env['EXPRESS_PORT']}"
        self.process: subprocess.Popen | None = None
        self.descendants: list[psutil.Process] = []
        self.ports: set[int] = set()

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "backend.dev.devstack"], cwd=ROOT, env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT)

        def healthy():
            try:
                return requests.get(f"{self.api}/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_for(healthy, timeout=120, interval=0.5, message="/health to answer 200")
        except AssertionError:
            self.stop()
            raise AssertionError(open(self.log_path, errors="replace").read()[-4000:])
        parent = psutil.Process(self.process.pid)
        self.descendants = parent.children(recursive=True)
        self.ports = {c.laddr.port for p in [parent, *self.descendants] for c in _listening(p)}

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


def _listening(process: psutil.Process):
    try:
        return [c for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        return []


WEB_APP_MODEL = "facebook/musicgen-small"


def make_stack_env(tiny_model, data_dir, **extra: str) -> dict:
    """The environment `make run` gets for a test stack: embedded servers, the tiny model, free ports."""
    env = dict(os.environ)
    for key in ("REDIS_URL", "MONGO_URL"):
        env.pop(key, None)
    env.update(SEGUE_MODELS=str(tiny_model), SEGUE_DATA_DIR=str(data_dir), PORT=str(free_port()),
               EXPRESS_PORT=str(free_port()), SEGUE_ALLOW_PRIVATE_URLS="1",
               SEGUE_HEARTBEAT_SECONDS="2", SEGUE_API_WORKERS="2", SEGUE_HOST="127.0.0.1")
    env.update(extra)
    return env


@pytest.fixture
def stack_env(tiny_model, tmp_path):
    # The web app's own model id, served from the tiny folder (an ID=PATH alias), as a host without the hub would.
    return make_stack_env(tiny_model, tmp_path / "var", SEGUE_MODELS=f"{WEB_APP_MODEL}={tiny_model}")


def poll_task(api: str, task_id: str, timeout: float = 180) -> dict:
    def done():
        task = requests.get(f"{api}/tasks/{task_id}", timeout=10).json()
        return task if task["status"] in ("completed", "failed", "canceled") else None

    return wait_for(done, timeout=timeout, interval=0.5, message=f"task {task_id}")


def test_stack_serves_a_gary4web_session_and_stops_cleanly(stack_env, media_server, tmp_path):
    stack = Stack(stack_env, tmp_path / "stack.log")
    stack.start()
    try:
        health = requests.get(f"{stack.api}/health", timeout=5).json()
        assert {health[k] for k in ("mongodb", "redis", "pytorch", "status")} == {"live"}
        assert health["workers"] == 1 and health["device"] == "cpu"
        assert health["models_loaded"] == [WEB_APP_MODEL] and health["models_failed"] == {}
        assert requests.get(f"{stack.sidecar}/health", timeout=5).json()["status"] == "live"

        # Exactly the web app's body: currentTime a float, the other numbers strings, its model id.
        response = requests.post(f"{stack.api}/generate", json={
            "url": media_server.url("/click120.wav"), "currentTime": 2.0, "model": WEB_APP_MODEL,
            "promptLength": "6", "duration": "16-18"}, timeout=10)
        assert response.status_code == 202
        task_id = response.json()["task_id"]
        task = poll_task(stack.api, task_id)
        assert task["status"] == "completed", task["error"]
        assert abs(task["bpm"] - 120) <= 2 and 16 - 0.02 <= task["duration_seconds"] <= 18 + 0.02
        assert requests.get(f"{stack.api}/progress/{task_id}", timeout=5).json() == {"progress": 100.0}

        # Crop to 12 s with the sidecar, then continue the cropped clip.
        crop = requests.post(f"{stack.sidecar}/crop-audio", json={"audioData": task["audio"], "start": 0,
                                                                  "end": 12}, timeout=60)
        assert crop.status_code == 200
        cropped = crop.text
        audio, sr = decode_audio_bytes(base64.b64decode(cropped))
        assert abs(audio.shape[1] / sr - 12) < 0.1
        response = requests.post(f"{stack.api}/continue", json={"task_id": task_id, "audio": cropped,
                                                                "model": WEB_APP_MODEL, "prompt_duration": "6"},
                                 timeout=30)
        assert response.status_code == 202
        child_id = response.json()["task_id"]
        assert child_id != task_id
        child = poll_task(stack.api, child_id)
        assert child["status"] == "completed", child["error"]
        assert child["parent_task_id"] == task_id
        longer, longer_sr = decode_audio_bytes(base64.b64decode(child["audio"]))
        assert abs(longer.shape[1] / longer_sr - (audio.shape[1] / sr - 6 + 30)) < 0.05
        assert requests.get(f"{stack.api}/tasks/{task_id}", timeout=10).json()["audio"] == task["audio"]

        # Bad input: 4xx JSON; unknown ids: 404.
        for path, body in (("/generate", {}), ("/generate", {"url": "ftp://x"}),
                           ("/generate", {"url": media_server.url("/a.wav"), "duration": "18-16"}),
                           ("/generate", {"url": media_server.url("/a.wav"), "currentTime": "-3"}),
                           ("/continue", {"audio": "@@@"}), ("/continue", {"audio": "aGVsbG8="})):
            response = requests.post(f"{stack.api}{path}", json=body, timeout=10)
            assert 400 <= response.status_code < 500 and "error" in response.json(), (path, body)
        response = requests.post(f"{stack.api}/generate", data="nope", timeout=10,
                                 headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and response.json()["code"] == "invalid_json"
        for path in ("/tasks/", "/progress/", "/fetch-result/"):
            response = requests.get(f"{stack.api}{path}UnknownTaskId0123456789ab", timeout=10)
            assert response.status_code == 404 and "error" in response.json()
    finally:
        stack.stop()

    # SIGTERM left nothing running or listening.
    assert stack.process.returncode == 0
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in stack.descendants),
             timeout=10, message="stack processes to exit")
    assert stack.ports >= {int(stack_env["PORT"]), int(stack_env["EXPRESS_PORT"])}
    assert not [port for port in stack.ports if port_open(port)]

    # Results live in SEGUE_DATA_DIR: a restarted stack still serves them.
    stack.start()
    try:
        again = requests.get(f"{stack.api}/tasks/{task_id}", timeout=10).json()
        assert again["status"] == "completed" and again["audio"] == task["audio"]
    finally:
        stack.stop()
