"""Segue end to end: the real stack (``python -m backend.dev.devstack``) and a client.

The stack is what ``make run`` starts (embedded Valkey and SecantusDB, the
sidecar, gunicorn, one worker), so a task's time includes the API,
MongoDB/GridFS, the RQ queue, the worker, result encoding and the client's
polling, exactly as a web-app user sees it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from backend.dev.embedded import free_port

from .workload import Workload

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.1
# A poll waits this long for an answer: on a 2-core machine loaded by others the API can stall for 30 s+
# while the worker decodes (seen once: the run was lost to a read timeout).
HTTP_TIMEOUT_S = 180


class TaskFailed(RuntimeError):
    pass


class SegueStack:
    def __init__(self, model: Path, data_dir: Path, log_path: Path, max_batch: int, extra_env: dict | None = None):
        self.log_path = log_path
        self.env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MONGO_URL")}
        self.env.update(SEGUE_MODELS=str(model.resolve()), SEGUE_DATA_DIR=str(data_dir), PORT=str(free_port()),
                        EXPRESS_PORT=str(free_port()), SEGUE_HOST="127.0.0.1", SEGUE_MAX_BATCH=str(max_batch),
                        # The bench polls every 0.1 s from one address: limits would turn that into 429s.
                        SEGUE_RATE_LIMIT="off", SEGUE_READ_RATE_LIMIT="off", SEGUE_MAX_QUEUED_PER_KEY="0")
        self.env.update(extra_env or {})
        self.api = f"http://127.0.0.1:{self.env['PORT']}"
        self.process: subprocess.Popen | None = None
        self.http = requests.Session()
        self.last_submit_s = 0.0

    def start(self, timeout: float = 600) -> float:
        """Start the stack and wait for /health 200 (the worker has loaded the model); returns seconds taken."""
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "backend.dev.devstack"], cwd=ROOT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the stack exited with {self.process.returncode} while starting")
            try:
                if requests.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return time.perf_counter() - started
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"/health did not answer 200 within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # devstack stops every child it started
        try:
            self.process.wait(90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def batch_sizes(self, task_ids: list[str]) -> list[int | None]:
        """Each task's batch size, from the worker's "task X completed ... (batch of N)" log line."""
        found = dict(re.findall(r"task (\S+) completed in [0-9.]+ s \(batch of (\d+)\)", self.log_tail(10**7)))
        return [int(found[t]) if t in found else None for t in task_ids]

    # -- client ---------------------------------------------------------------

    def submit(self, work: Workload, seed: int, prompt_b64: str) -> str:
        body = {"audio": prompt_b64, "prompt_duration": work.prompt_seconds, "duration": work.total_seconds,
                "seed": seed}
        answer = requests.post(f"{self.api}/continue", json=body, timeout=60)
        if answer.status_code != 202:
            raise TaskFailed(f"POST /continue answered {answer.status_code}: {answer.text[:500]}")
        return answer.json()["task_id"]

    def wait(self, task_ids: list[str], timeout: float = 1800) -> tuple[float, list[dict]]:
        """Poll until every task completed; returns the moment the last one was seen done, and the documents.

        One poller for all tasks, always asking about the oldest unfinished
        one: eight clients polling at 20 Hz would take CPU from the worker on
        2 cores. Tasks of one batch finish together, so once one is done the
        rest are confirmed at once, and the last completion is seen within
        about one poll period.
        """
        docs: dict[str, dict] = {}
        pending = list(task_ids)
        deadline = time.perf_counter() + timeout
        polls = 0
        while pending:
            # /progress is the cheap poll; the document is read once it says 100
            # (and every second, to notice a failed task).
            polls += 1
            progress = self.http.get(f"{self.api}/progress/{pending[0]}", timeout=HTTP_TIMEOUT_S).json().get("progress", 0)
            if progress < 100 and polls % 10 and time.perf_counter() <= deadline:
                time.sleep(POLL_S)
                continue
            doc = self.http.get(f"{self.api}/tasks/{pending[0]}", timeout=HTTP_TIMEOUT_S).json()
            if doc.get("status") == "completed":
                doc.pop("audio", None)
                docs[pending.pop(0)] = doc
                continue
            if doc.get("status") in ("failed", "canceled"):
                raise TaskFailed(f"task {pending[0]} {doc['status']}: {doc.get('error')}")
            if time.perf_counter() > deadline:
                raise TaskFailed(f"task {pending[0]} still {doc.get('status')} after {timeout:.0f} s")
            time.sleep(POLL_S)
        return time.perf_counter(), [docs[t] for t in task_ids]

    def run_one(self, work: Workload, seed: int, prompt_b64: str) -> tuple[float, dict]:
        """One task end to end: submit, poll until completed; returns its wall seconds."""
        started = time.perf_counter()
        task_id = self.submit(work, seed, prompt_b64)
        done, docs = self.wait([task_id])
        return done - started, docs[0]

    def run_concurrent(self, work: Workload, seeds: list[int], prompt_b64: str) -> tuple[float, list[dict]]:
        """Submit one task per seed at the same moment (one client thread each); wall = first submit to last done."""
        gate = threading.Barrier(len(seeds) + 1)
        task_ids: list[str | BaseException | None] = [None] * len(seeds)
        accepted: list[float] = [0.0] * len(seeds)

        def client(i: int) -> None:
            gate.wait()
            try:
                task_ids[i] = self.submit(work, seeds[i], prompt_b64)
                accepted[i] = time.perf_counter()
            except BaseException as exc:  # reported below, in the caller's thread
                task_ids[i] = exc

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(seeds))]
        for thread in threads:
            thread.start()
        gate.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        for result in task_ids:
            if isinstance(result, BaseException):
                raise result
        # How long the last POST took to be accepted: a worker batches what is queued by then.
        self.last_submit_s = max(accepted) - started
        done, docs = self.wait(task_ids)  # type: ignore[arg-type]
        return done - started, docs
