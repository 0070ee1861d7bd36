"""docker-compose.yml itself, run as real containers with podman (`make test-images`; not part of `make test`).

`make test-images` first builds every image from the real Dockerfiles on stand-in bases (scripts/images.sh).
This module then runs the compose file through podman-compose, which reads the file itself; the only layer on
top is deploy/tests/compose.no-gpu.yml (no GPU reservation: there is no GPU here), and the environment picks
the stand-in `mongo` image (SecantusDB), loopback-only published ports and the tiny model. It drives the web
app's flow through the published ports, checks every container's own health check, SIGKILLs the worker and
sees compose's restart policy bring it back and its task complete, then takes the stack `down` and reads in
podman's event log that every container exited on SIGTERM within its grace period.

What it cannot prove here: the GPU reservation and the NVIDIA runtime, the CUDA torch build (the CPU build is
installed), the public base images (stand-ins from Debian packages replace them), and Docker's own compose
(podman-compose 1.6 on podman 4.3, which ignores `condition: service_healthy`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests
import yaml

from backend.core.audiofile import decode_audio_bytes
from backend.dev.embedded import free_port
from tests.conftest import ARTIFACTS, CACHE, ROOT, wait_for
from tests.media_server import MediaServer, make_click_track
from worker.pipeline.audio import encode_wav

PROJECT = f"segue-images-{os.getpid()}"
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "deploy/tests/compose.no-gpu.yml"]
WEB_APP_MODEL = "facebook/musicgen-small"
WORKER_UID = 10001  # the `segue` user of Dockerfile.worker
SERVICES = ("redis", "mongo", "api", "worker", "express-server", "maintenance")


def _images() -> dict[str, str]:
    out = subprocess.run(["bash", str(ROOT / "scripts/images.sh"), "names"], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split("=", 1) for line in out.split())


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=timeout,
                          env=_env())


def _env(**extra: str) -> dict:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
           "CONTAINERS_CONF": str(ROOT / "deploy/podman/containers.conf")}
    env.update(extra)
    return env


def _grace_seconds(text: str | None) -> float:
    """Compose's duration (`75s`, `5m`); 10 s when unset, as compose's default."""
    if not text:
        return 10.0
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


class Stack:
    """The compose project: its environment, its containers, and a stand-in for podman's health-check timers."""

    def __init__(self, env: dict):
        self.env = env
        self.api = f"http://127.0.0.1:{env['PORT']}"
        self.sidecar = f"http://127.0.0.1:{env['EXPRESS_PORT']}"
        self.health: dict[str, str] = {}
        self._stop_checks = threading.Event()
        self._checks = threading.Thread(target=self._run_health_checks, daemon=True)

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
        result = subprocess.run([str(ROOT / ".venv/bin/podman-compose"), "-p", PROJECT, *files, *args],
                                capture_output=True, text=True, timeout=timeout, env=self.env, cwd=ROOT)
        assert result.returncode == 0, f"podman-compose {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    def container(self, service: str) -> str:
        return f"{PROJECT}_{service}_1"

    def inspect(self, service: str) -> dict:
        return json.loads(podman("inspect", self.container(service)).stdout)[0]

    def start_health_checks(self) -> None:
        self._checks.start()

    def _run_health_checks(self) -> None:
        # podman runs health checks from systemd timers; these machines have no systemd, so run each
        # container's own check (from its image or the compose file) the same way, every two seconds.
        while not self._stop_checks.is_set():
            for service in SERVICES:
                result = podman("healthcheck", "run", self.container(service), check=False, timeout=30)
                self.health[service] = "healthy" if result.returncode == 0 else (result.stdout + result.stderr).strip()
            self._stop_checks.wait(2)

    def stop_health_checks(self) -> None:
        self._stop_checks.set()
        if self._checks.is_alive():
            self._checks.join(60)

    def api_health(self) -> dict | None:
        try:
            response = requests.get(f"{self.api}/health", timeout=5)
        except requests.RequestException:
            return None
        return response.json() if response.status_code == 200 else None

    def save_logs(self) -> None:
        folder = ARTIFACTS / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for service in SERVICES:
            logs = podman("logs", self.container(service), check=False)
            (folder / f"{service}.log").write_text(logs.stdout + logs.stderr)


def _model_volume(tiny_model: Path) -> None:
    """The tiny model where compose's `hf-cache` volume is mounted (/models), owned by the worker's user."""
    volume = f"{PROJECT}_hf-cache"
    podman("volume", "create", "--label", f"io.podman.compose.project={PROJECT}", volume)
    mountpoint = Path(podman("volume", "inspect", "-f", "{{.Mountpoint}}", volume).stdout.strip())
    shutil.copytree(tiny_model, mountpoint / "tiny-mono")
    for path in [mountpoint, *mountpoint.rglob("*")]:
        os.chown(path, WORKER_UID, WORKER_UID)


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    from worker.testing.random_model import build_tiny_musicgen

    return build_tiny_musicgen(CACHE / "tiny-mono")


@pytest.fixture(scope="module")
def stack(tiny_model):
    images = _images()
    for name in ("SEGUE_API_IMAGE", "SEGUE_WORKER_IMAGE", "SEGUE_REDIS_IMAGE", "SEGUE_SIDECAR_IMAGE",
                 "STANDIN_MONGO"):
        assert podman("image", "exists", images[name], check=False).returncode == 0, \
            f"{images[name]} is not built: run `make test-images` (it builds the images first)"
    env = _env(PORT=str(free_port()), EXPRESS_PORT=str(free_port()), SEGUE_PUBLISH_ADDRESS="127.0.0.1",
               SEGUE_MONGO_IMAGE=images["STANDIN_MONGO"], SEGUE_MODELS=f"{WEB_APP_MODEL}=/models/tiny-mono",
               SEGUE_ALLOW_PRIVATE_URLS="1", SEGUE_HEARTBEAT_SECONDS="2")
    stack = Stack(env)
    _model_volume(tiny_model)
    try:
        stack.compose("up", "-d")
        stack.start_health_checks()
        try:
            wait_for(lambda: (h := stack.api_health()) and h["status"] == "live" and h["workers"] == 1,
                     timeout=300, interval=1, message="/health to report the stack live")
        except AssertionError:
            stack.save_logs()
            raise
        yield stack
    finally:
        stack.stop_health_checks()
        stack.save_logs()
        subprocess.run([str(ROOT / ".venv/bin/podman-compose"), "-p", PROJECT,
                        *[a for p in COMPOSE_FILES for a in ("-f", str(p))], "down", "-v", "-t", "5"],
                       capture_output=True, env=env, cwd=ROOT, timeout=300)
        podman("volume", "rm", "-f", f"{PROJECT}_hf-cache", check=False)


@pytest.fixture(scope="module")
def media(stack):
    """Click tracks served from the compose network's own gateway address (the host side of its bridge)."""
    network = json.loads(podman("network", "inspect", f"{PROJECT}_default").stdout)[0]
    gateway = network["subnets"][0]["gateway"]
    with MediaServer(host=gateway) as server:
        server.add("/click120.wav", encode_wav(make_click_track(120, 40.0, sr=44100, channels=2), 44100),
                   "audio/wav")
        yield server


def poll_task(api: str, task_id: str, timeout: float = 300) -> dict:
    def done():
        task = requests.get(f"{api}/tasks/{task_id}", timeout=10).json()
        return task if task["status"] in ("completed", "failed", "canceled") else None

    return wait_for(done, timeout=timeout, interval=0.5, message=f"task {task_id}")


def test_health_reports_every_part_live(stack):
    health = stack.api_health()
    assert {health[k] for k in ("mongodb", "redis", "pytorch", "status")} == {"live"}
    assert health["device"] == "cpu" and health["models_loaded"] == [WEB_APP_MODEL]
    [worker] = health["worker_details"]
    # The worker's yt-dlp finds its JavaScript runtime (deno from PyPI) and the EJS solver scripts.
    assert worker["js_runtime"] and "deno" in str(worker["js_runtime"]) and worker["ejs"], worker
    assert worker["host"] == stack.inspect("worker")["Config"]["Hostname"]
    assert requests.get(f"{stack.sidecar}/health", timeout=5).json()["status"] == "live"
    # Each container's own health check (image HEALTHCHECK or compose's) passes; maintenance has none.
    wait_for(lambda: all(stack.health.get(s) == "healthy" for s in SERVICES if s != "maintenance"),
             timeout=120, interval=1, message=f"every health check to pass ({stack.health})")
    for service in SERVICES:
        state = stack.inspect(service)
        assert state["State"]["Running"], service
        user = state["Config"]["User"]
        if service != "mongo":  # the stand-in's user matters not; the others are Segue's images
            assert user and user not in ("0", "root"), f"{service} runs as root"


def test_web_app_flow_through_the_published_ports(stack, media):
    response = requests.post(f"{stack.api}/generate", json={
        "url": media.url("/click120.wav"), "currentTime": 2.0, "model": WEB_APP_MODEL,
        "promptLength": "6", "duration": "16-18"}, timeout=10)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    task = poll_task(stack.api, task_id)
    assert task["status"] == "completed", task["error"]
    assert abs(task["bpm"] - 120) <= 2 and 16 - 0.02 <= task["duration_seconds"] <= 18 + 0.02
    assert requests.get(f"{stack.api}/progress/{task_id}", timeout=5).json() == {"progress": 100.0}

    # Crop with the sidecar, continue the cropped clip, fetch the result as the web app does.
    crop = requests.post(f"{stack.sidecar}/crop-audio", json={"audioData": task["audio"], "start": 0, "end": 12},
                         timeout=60)
    assert crop.status_code == 200, crop.text
    audio, sr = decode_audio_bytes(base64.b64decode(crop.text))
    assert abs(audio.shape[1] / sr - 12) < 0.1
    response = requests.post(f"{stack.api}/continue", json={"task_id": task_id, "audio": crop.text,
                                                            "model": WEB_APP_MODEL, "prompt_duration": "6"},
                             timeout=30)
    assert response.status_code == 202, response.text
    child_id = response.json()["task_id"]
    child = poll_task(stack.api, child_id)
    assert child["status"] == "completed", child["error"] and child["parent_task_id"] == task_id
    fetched = requests.get(f"{stack.api}/fetch-result/{child_id}", timeout=10).json()
    assert fetched["status"] == "completed"
    longer, longer_sr = decode_audio_bytes(base64.b64decode(fetched["audio"]))
    assert abs(longer.shape[1] / longer_sr - (12 - 6 + 30)) < 0.05
    # Bad input is a JSON 4xx through the container too.
    response = requests.post(f"{stack.api}/generate", json={"url": "ftp://x"}, timeout=10)
    assert 400 <= response.status_code < 500 and "error" in response.json()


def test_killed_worker_is_restarted_by_compose_and_its_task_completes(stack):
    clip = make_click_track(120, 4.0, sr=32000)
    response = requests.post(f"{stack.api}/continue", json={
        "audio": base64.b64encode(encode_wav(clip, 32000)).decode(), "prompt_duration": 2, "duration": 30},
        timeout=30)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    wait_for(lambda: requests.get(f"{stack.api}/progress/{task_id}", timeout=5).json()["progress"] > 5,
             timeout=300, interval=0.05, message="the task to be generating")
    # Freeze the worker so the task cannot finish between this check and the kill.
    podman("pause", stack.container("worker"))
    try:
        assert requests.get(f"{stack.api}/tasks/{task_id}", timeout=10).json()["status"] == "processing"
        before = stack.inspect("worker")
        os.kill(before["State"]["Pid"], signal.SIGKILL)  # as the OOM killer or a crash would
    finally:
        podman("unpause", stack.container("worker"))
    wait_for(lambda: (s := stack.inspect("worker"))["RestartCount"] > before["RestartCount"]
             and s["State"]["Running"], timeout=120, interval=0.5, message="compose to restart the worker")
    task = poll_task(stack.api, task_id)
    assert task["status"] == "completed", task["error"]
    assert task["attempts"] == 2 and "stopped while running" in task["last_error"]
    health = stack.api_health()
    assert health and health["workers"] == 1


def test_down_stops_every_container_on_sigterm_within_its_grace_period(stack):
    config = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    names = {stack.container(s): s for s in SERVICES}
    stack.stop_health_checks()
    since = datetime.now().astimezone()
    started = time.monotonic()
    stack.compose("down")
    took = time.monotonic() - started
    events = podman("events", "--since", since.isoformat(), "--until", datetime.now().astimezone().isoformat(),
                    "--filter", "event=died", "--format", "json").stdout
    died = {}
    for line in events.splitlines():
        event = json.loads(line)
        if event.get("Name") in names:
            died[names[event["Name"]]] = event
    assert set(died) == set(SERVICES), f"no exit seen for {set(SERVICES) - set(died)}"
    report = []
    for service, event in died.items():
        grace = _grace_seconds(config[service].get("stop_grace_period"))
        moment = datetime.fromisoformat(str(event["time"])) if isinstance(event.get("time"), str) \
            else datetime.fromtimestamp(event["time"]).astimezone()
        elapsed = (moment - since).total_seconds()
        code = int(event.get("ContainerExitCode", -1))
        report.append(f"{service}: exit {code} after {elapsed:.1f} s (grace {grace:.0f} s)")
        # 137 = SIGKILL: what podman sends when the grace period ran out.
        assert code != 137 and elapsed < grace, report[-1]
    print("\n".join(report), f"\ndown took {took:.1f} s")
