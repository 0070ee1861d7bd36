"""The listener flood (part of `make load`): many open event streams must not starve the API.

Starts Redis, MongoDB and the API exactly as `make run` does (gunicorn with
``backend/api/gunicorn_conf.py``, ``SEGUE_API_WORKERS`` processes, gevent), with no
worker, so the tasks listened to stay queued and the streams stay open. It
submits a few tasks and opens ``--listeners`` ``GET /tasks/<id>/events``
connections at once, spread over them (loopback only, one selector thread
reading them all). One second after they connected, while the API is still
admitting them, it sends ``--probes`` ``/health`` probes one after the other,
each on a new connection as a monitor would, and prints their max and p50
against the target: none over 250 ms (issue 19; before the fix the first took
1.4 to 5.5 s). Then, while they are held: publishes an audio chunk to every task each
second, spread over the second as independent tasks would send them (so
every listener receives events through the per-process hub),
measures ``/health`` latency for ``--seconds`` and submits a ``POST /continue``
and a ``POST /generate`` every second. It prints listeners held, ``/health`` p50/p99, the ``/generate``
statuses, 5xx and errors, then one JSON line; it exits 1 when the goal (every
listener held, ``/health`` p99 under 100 ms, every ``/generate`` accepted, no
5xx, no probe over 250 ms) is missed.

    python -m bench.flood [--listeners 1000] [--seconds 20] [--tasks 8] [--api-workers 2] [--probes 20]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: No /health probe sent one second after the listeners connected may take longer (issue 19).
PROBE_TARGET_MS = 250.0


@dataclass
class _Conn:
    sock: socket.socket
    path: str
    head: bytes = b""
    status: int | None = None
    received: int = 0
    events: int = 0
    closed: bool = False


@dataclass
class ListenerPool:
    """Many long-lived HTTP GETs held open by one selector thread; what arrives is counted and dropped."""

    host: str
    port: int
    conns: list[_Conn] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def open(self, path: str, headers: dict[str, str] | None = None) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=10)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: text/event-stream\r\n{extra}\r\n".encode())
        sock.setblocking(False)
        conn = _Conn(sock, path)
        with self._lock:
            self.conns.append(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                registered = bool(self._selector.get_map())
            if not registered:
                time.sleep(0.02)
                continue
            for key, _ in self._selector.select(timeout=0.1):
                conn: _Conn = key.data
                try:
                    data = conn.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                with self._lock:
                    if not data:
                        conn.closed = True
                        self._selector.unregister(conn.sock)
                        conn.sock.close()
                        continue
                    conn.received += len(data)
                    if conn.status is None:
                        conn.head += data
                        if b"\r\n" in conn.head:
                            try:
                                conn.status = int(conn.head.split(b" ", 2)[1])
                            except (IndexError, ValueError):
                                conn.status = -1
                    conn.events += data.count(b"\nevent: ") + data.startswith(b"event: ")

    def statuses(self) -> dict[int | None, int]:
        with self._lock:
            out: dict[int | None, int] = {}
            for c in self.conns:
                out[c.status] = out.get(c.status, 0) + 1
            return out

    def held(self) -> int:
        """Connections answered 200 and still open."""
        with self._lock:
            return sum(1 for c in self.conns if c.status == 200 and not c.closed)

    def answered(self) -> int:
        with self._lock:
            return sum(1 for c in self.conns if c.status is not None)

    def events_per_path(self) -> dict[str, list[int]]:
        with self._lock:
            out: dict[str, list[int]] = {}
            for c in self.conns:
                out.setdefault(c.path, []).append(c.events)
            return out

    def head_of(self, status: int) -> bytes:
        with self._lock:
            for c in self.conns:
                if c.status == status:
                    return c.head
        return b""

    def close_one(self) -> None:
        with self._lock:
            for c in self.conns:
                if not c.closed:
                    c.closed = True
                    self._selector.unregister(c.sock)
                    c.sock.close()
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for c in self.conns:
                if not c.closed:
                    c.closed = True
                    try:
                        self._selector.unregister(c.sock)
                    except (KeyError, ValueError):
                        pass
                    c.sock.close()
            self._selector.close()


def _pool_main(host: str, port: int, commands, answers) -> None:
    """A ListenerPool in its own process, driven through two queues."""
    pool = ListenerPool(host, port)
    while True:
        command, arg = commands.get()
        if command == "open":
            for path in arg:
                pool.open(path)
            answers.put(None)
        elif command == "stats":
            events = [n for counts in pool.events_per_path().values() for n in counts]
            answers.put({"held": pool.held(), "answered": pool.answered(),
                         "statuses": pool.statuses(), "min_events": min(events) if events else 0})
        else:
            pool.close()
            answers.put(None)
            return


class RemotePool:
    """ListenerPool in a child process: its reading never competes with the measuring process for the GIL."""

    def __init__(self, host: str, port: int):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._commands, self._answers = ctx.Queue(), ctx.Queue()
        self._process = ctx.Process(target=_pool_main, args=(host, port, self._commands, self._answers), daemon=True)
        self._process.start()

    def _ask(self, command: str, arg=None, timeout: float = 120):
        self._commands.put((command, arg))
        return self._answers.get(timeout=timeout)

    def open(self, paths: list[str]) -> None:
        self._ask("open", paths)

    def stats(self) -> dict:
        return self._ask("stats")

    def close(self) -> None:
        try:
            self._ask("close", timeout=20)
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()


def wait_until(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def wav_base64(seconds: float = 2.0, sr: int = 8000) -> str:
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def probe_health(base: str, count: int, timeout: float = 30.0) -> tuple[list[float], dict[int, int], list[str]]:
    """``count`` GET /health one after the other, each on a new connection: latencies (ms), statuses, errors."""
    import requests

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    for _ in range(count):
        started = time.perf_counter()
        try:
            response = requests.get(f"{base}/health", timeout=timeout, headers={"Connection": "close"})
        except requests.RequestException as exc:
            errors.append(f"/health probe: {exc}")
            continue
        latencies.append((time.perf_counter() - started) * 1000)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    return latencies, statuses, errors


def run(listeners: int, seconds: float, tasks: int, api_workers: int, tiny_model: str, probes: int = 20) -> dict:
    import redis
    import requests

    from backend.core.chunks import Chunk, publish
    from backend.dev.embedded import free_port, start_mongo, start_redis, stop_process
    from backend.core.settings import Settings

    data = Path(tempfile.mkdtemp(prefix="segue-flood-"))
    rds = start_redis(data / "redis", persist=False, stdout=subprocess.DEVNULL)
    mongo = start_mongo(data / "mongo", stdout=subprocess.DEVNULL)
    port = free_port()
    env = dict(os.environ, PORT=str(port), SEGUE_HOST="127.0.0.1", REDIS_URL=rds.url, MONGO_URL=mongo.url,
               SEGUE_MODELS=tiny_model, SEGUE_API_WORKERS=str(api_workers), SEGUE_LOG_LEVEL="WARNING",
               SEGUE_RATE_LIMIT="off", SEGUE_READ_RATE_LIMIT="off", SEGUE_MAX_QUEUED_PER_KEY="0",
               SEGUE_MAX_STREAMS_PER_CALLER=str(listeners + 10), SEGUE_ALLOW_PRIVATE_URLS="1",
               PYTHONUNBUFFERED="1")
    log_path = data / "gunicorn.log"
    log = open(log_path, "wb")
    api = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "backend/api/gunicorn_conf.py", "--access-logfile",
                            "/dev/null", "backend.api.wsgi:app"], cwd=ROOT, env=env, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    pool = None
    try:
        def pings():
            try:
                return requests.get(f"{base}/ping", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        if not wait_until(pings, 60, 0.2):
            raise RuntimeError("the API did not start: " + log_path.read_text(errors="replace")[-2000:])
        clip = wav_base64()
        task_ids = []
        for _ in range(tasks):
            r = requests.post(f"{base}/continue", json={"audio": clip, "prompt_duration": 1, "duration": 2},
                              timeout=30)
            r.raise_for_status()
            task_ids.append(r.json()["task_id"])

        pool = RemotePool("127.0.0.1", port)
        started = time.monotonic()
        pool.open([f"/tasks/{task_ids[i % tasks]}/events" for i in range(listeners)])  # connected, requests sent
        connect_s = time.monotonic() - started
        # The probes start one second after the listeners connected, while the API is still admitting them.
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started - connect_s)))
        answered_before_probes = pool.stats()["answered"]
        probe_ms, probe_status, probe_errors = probe_health(base, probes)
        wait_until(lambda: pool.stats()["answered"] >= listeners, 60, 0.2)
        opened_s = time.monotonic() - started
        held_at_start = pool.stats()["held"]

        connection = redis.Redis.from_url(rds.url)
        stop = threading.Event()

        def publisher():
            # One audio chunk per task per second, as a running task would send; tasks run independently,
            # so their chunks are spread over the second rather than all sent at the same instant.
            seq = 0
            while not stop.is_set():
                for task_id in task_ids:
                    publish(connection, task_id, Chunk(seq, seq * 100, 32000, 1, b"\0" * 400))
                    if stop.wait(1.0 / len(task_ids)):
                        return
                seq += 1

        threading.Thread(target=publisher, daemon=True).start()
        health_ms: list[float] = []
        health_status: dict[int, int] = {}
        generate_status: dict[int, int] = {}
        errors: list[str] = []
        session = requests.Session()
        end = time.monotonic() + seconds
        next_generate = time.monotonic()
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                r = session.get(f"{base}/health", timeout=20)
                health_ms.append((time.perf_counter() - t0) * 1000)
                health_status[r.status_code] = health_status.get(r.status_code, 0) + 1
            except requests.RequestException as exc:
                errors.append(f"/health: {exc}")
            if time.monotonic() >= next_generate:
                next_generate += 1.0
                try:
                    r = session.post(f"{base}/continue", json={"audio": clip, "prompt_duration": 1, "duration": 2},
                                     timeout=20)
                    generate_status[r.status_code] = generate_status.get(r.status_code, 0) + 1
                except requests.RequestException as exc:
                    errors.append(f"/continue: {exc}")
                try:
                    r = session.post(f"{base}/generate", json={"url": "http://127.0.0.1:9/a.wav"}, timeout=20)
                    generate_status[r.status_code] = generate_status.get(r.status_code, 0) + 1
                except requests.RequestException as exc:
                    errors.append(f"/generate: {exc}")
            time.sleep(0.05)
        stop.set()
        final = pool.stats()
        held_at_end = final["held"]
        listener_statuses = final["statuses"]
        server_errors = sum(n for s, n in list(health_status.items()) + list(generate_status.items())
                            if s >= 500 and s != 503) + sum(n for s, n in listener_statuses.items() if s and s >= 500)
        # /health is 503 here by design (no worker runs), which is not a server error.
        result = {
            "listeners": listeners, "held_at_start": held_at_start, "held_at_end": held_at_end,
            "connect_seconds": round(connect_s, 2), "open_seconds": round(opened_s, 2),
            "probes": probes, "probe_ms": [round(v, 1) for v in probe_ms],
            "probe_max_ms": round(max(probe_ms), 1) if probe_ms else None,
            "probe_p50_ms": round(statistics.median(probe_ms), 1) if probe_ms else None,
            "probe_target_ms": PROBE_TARGET_MS, "probe_status": {str(k): v for k, v in probe_status.items()},
            "probe_errors": probe_errors[:5], "answered_before_probes": answered_before_probes, "listener_statuses": {str(k): v for k, v in listener_statuses.items()},
            "min_events_per_listener": final["min_events"],
            "health_requests": len(health_ms), "health_status": {str(k): v for k, v in health_status.items()},
            "health_p50_ms": round(statistics.median(health_ms), 1) if health_ms else None,
            "health_p99_ms": round(percentile(health_ms, 99), 1) if health_ms else None,
            "health_max_ms": round(max(health_ms), 1) if health_ms else None,
            "submissions": {str(k): v for k, v in generate_status.items()},
            "server_errors_5xx": server_errors, "errors": errors[:5], "error_count": len(errors),
            "api_workers": api_workers, "worker_class": Settings.from_env().api_worker_class,
            "seconds": seconds, "tasks": tasks,
        }
        result["probe_goal_met"] = bool(len(probe_ms) == probes and not probe_errors
                                        and max(probe_ms) <= PROBE_TARGET_MS)
        result["goal_met"] = bool(held_at_start == listeners and held_at_end == listeners and health_ms
                                  and result["health_p99_ms"] < 100 and not errors and server_errors == 0
                                  and set(generate_status) <= {202, 400} and result["probe_goal_met"])
        return result
    finally:
        if pool is not None:
            pool.close()
        stop_process(api, 15)
        log.close()
        rds.stop()
        mongo.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--probes", type=int, default=20, help="/health probes sent 1 s after the listeners connect")
    parser.add_argument("--model", default=None, help="model folder offered (default: the cached tiny test model)")
    args = parser.parse_args(argv)
    model = args.model
    if model is None:
        from worker.testing.random_model import build_tiny_musicgen

        model = str(build_tiny_musicgen(ROOT / ".cache" / "test-models" / "tiny-mono"))
    r = run(args.listeners, args.seconds, args.tasks, args.api_workers, model, args.probes)
    print(f"listener flood        {r['listeners']} /events listeners on {r['tasks']} tasks, "
          f"{r['api_workers']} {r['worker_class']} API workers, {r['seconds']:g} s")
    print(f"probes 1 s after      {r['probes']} /health probes (new connections) while {r['answered_before_probes']} of "
          f"{r['listeners']} listeners were answered: max {r['probe_max_ms']} ms  p50 {r['probe_p50_ms']} ms  "
          f"target: none over {PROBE_TARGET_MS:g} ms, {'met' if r['probe_goal_met'] else 'MISSED'}  "
          f"(statuses {r['probe_status']}) {r['probe_errors'] or ''}")
    print(f"listeners held        {r['held_at_start']} after {r['open_seconds']} s (connected in "
          f"{r['connect_seconds']} s), {r['held_at_end']} at the end; "
          f"statuses {r['listener_statuses']}; every listener got >= {r['min_events_per_listener']} events")
    print(f"/health during flood  p50 {r['health_p50_ms']} ms  p99 {r['health_p99_ms']} ms  max "
          f"{r['health_max_ms']} ms  ({r['health_requests']} requests, statuses {r['health_status']}; "
          "503 = no worker in this run)")
    print(f"submissions           {r['submissions']} (202 accepted; 400 = the /generate URL refused, as it must be)")
    print(f"5xx / errors          {r['server_errors_5xx']} / {r['error_count']} {r['errors'] or ''}")
    print(f"goal                  {'met' if r['goal_met'] else 'MISSED'} (all held, /health p99 < 100 ms, "
          f"submissions answered, no 5xx, no probe over {PROBE_TARGET_MS:g} ms)")
    print(json.dumps(r))
    return 0 if r["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
