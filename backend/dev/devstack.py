"""`make run`: the whole stack in the foreground, one process tree, prefixed logs.

Starts, in order: Redis (embedded Valkey unless REDIS_URL is set), MongoDB
(embedded SecantusDB unless MONGO_URL is set), the express-server sidecar,
the API under gunicorn, and SEGUE_WORKERS workers. Ctrl-C or SIGTERM stops
them in reverse order; each child runs in its own process group so nothing
it spawned (gunicorn's workers, say) outlives the stack. A worker that dies
is restarted; any other part dying stops the stack.

The commands are the ones docker-compose.yml runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from backend.core.settings import Settings
from backend.dev.embedded import EmbeddedServer, free_port, port_open, start_mongo, start_redis, stop_process

ROOT = Path(__file__).resolve().parents[2]
_print_lock = threading.Lock()


def log(prefix: str, line: str) -> None:
    with _print_lock:
        sys.stdout.write(f"{prefix:<10}| {line}\n")
        sys.stdout.flush()


def pump(prefix: str, stream) -> None:
    for raw in iter(stream.readline, b""):
        log(prefix, raw.decode("utf-8", "replace").rstrip())


@dataclass
class Child:
    name: str
    command: list[str]
    env: dict[str, str]
    restart: bool = False
    process: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=pump, args=(self.name, self.process.stdout), daemon=True).start()

    def stop(self, timeout: float) -> None:
        stop_process(self.process, timeout)


def pick_port(preferred: int) -> int:
    return preferred if not port_open(preferred) else free_port()


class Stack:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.servers: list[EmbeddedServer] = []
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.parent_pid = os.getppid()

    def start_services(self) -> dict[str, str]:
        env = dict(os.environ)
        data = self.settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        if not self.settings.redis_url:
            server = start_redis(data / "redis", pick_port(6379), persist=True, stdout=subprocess.PIPE)
            self._adopt(server)
            env["REDIS_URL"] = server.url
        if not self.settings.mongo_url:
            server = start_mongo(data / "mongo", pick_port(27017), stdout=subprocess.PIPE)
            self._adopt(server)
            env["MONGO_URL"] = server.url
        log("stack", f"redis at {env['REDIS_URL']}")
        log("stack", f"mongodb at {env['MONGO_URL']}")
        return env

    def _adopt(self, server: EmbeddedServer) -> None:
        self.servers.append(server)
        threading.Thread(target=pump, args=(server.name, server.process.stdout), daemon=True).start()

    def start_apps(self, env: dict[str, str]) -> None:
        python = sys.executable
        env = dict(env, PYTHONUNBUFFERED="1", EXPRESS_PORT=str(self.settings.express_port),
                   EXPRESS_HOST=env.get("EXPRESS_HOST", self.settings.host))
        self.children.append(Child("express", ["node", "express-server/server.js"], env))
        self.children.append(Child("api", [python, "-m", "gunicorn", "-c", "backend/api/gunicorn_conf.py",
                                           "backend.api.wsgi:app"], env))
        for index in range(self.settings.workers):
            self.children.append(Child(f"worker{index + 1}", [python, "-m", "worker"], env, restart=True))
        for child in self.children:
            child.start()
        log("stack", f"API on http://127.0.0.1:{self.settings.port}  sidecar on "
                     f"http://127.0.0.1:{self.settings.express_port}  (Ctrl-C stops everything)")

    def watch(self) -> int:
        while not self.stopping.is_set():
            if os.getppid() != self.parent_pid:
                log("stack", "parent process went away; stopping")
                return 0
            for child in self.children:
                code = child.process.poll()
                if code is None:
                    continue
                if child.restart and not self.stopping.is_set():
                    recent = [t for t in child.restarts if time.monotonic() - t < 60]
                    if len(recent) >= 5:
                        log("stack", f"{child.name} keeps dying (exit {code}); stopping the stack")
                        return 1
                    child.restarts = recent + [time.monotonic()]
                    log("stack", f"{child.name} exited with {code}; restarting it")
                    child.start()
                else:
                    log("stack", f"{child.name} exited with {code}; stopping the stack")
                    return 1
            for server in self.servers:
                if server.process.poll() is not None:
                    log("stack", f"{server.name} exited with {server.process.returncode}; stopping the stack")
                    return 1
            self.stopping.wait(0.5)
        return 0

    def shutdown(self) -> None:
        self.stopping.set()
        for child in reversed(self.children):
            child.stop(timeout=20 if child.name.startswith("worker") else 10)
        for server in reversed(self.servers):
            server.stop(timeout=10)
        log("stack", "stopped")


def stop_with_parent() -> None:
    """Get SIGTERM when our parent dies: `make` does not pass SIGTERM on to its children."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the parent-pid check in Stack.watch still catches it


def main() -> int:
    settings = Settings.from_env()
    stack = Stack(settings)
    stop_with_parent()

    def on_signal(signum, _frame):
        log("stack", f"received {signal.Signals(signum).name}; stopping")
        stack.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    try:
        env = stack.start_services()
        if not stack.stopping.is_set():
            stack.start_apps(env)
            code = stack.watch()
    except Exception as exc:
        log("stack", f"start-up failed: {exc}")
        code = 1
    finally:
        stack.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
