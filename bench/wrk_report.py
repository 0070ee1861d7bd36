"""Run wrk against one URL and read back requests/s, latency percentiles and errors.

wrk (the Debian package) prints, with ``--latency``::

      Latency Distribution
         50%    1.02ms
         99%    6.31ms
      41123 requests in 10.00s, 1.21GB read
      Socket errors: connect 0, read 0, write 0, timeout 3
      Non-2xx or 3xx responses: 12
    Requests/sec:   4111.83

The "Socket errors" and "Non-2xx" lines appear only when non-zero.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass
class WrkResult:
    url: str
    requests: int
    seconds: float
    requests_per_s: float
    latency_ms: dict[str, float] = field(default_factory=dict)  # "50%", "75%", "90%", "99%"
    socket_errors: dict[str, int] = field(default_factory=dict)  # connect, read, write, timeout
    non_2xx: int = 0

    @property
    def p99_ms(self) -> float | None:
        return self.latency_ms.get("99%")

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx

    def as_dict(self) -> dict:
        return {**asdict(self), "p99_ms": self.p99_ms, "errors": self.errors}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse(output: str, url: str = "") -> WrkResult:
    """Read wrk's text output; raises ValueError when it does not look like a finished run."""
    done = re.search(r"(\d+) requests in ([0-9.]+)(us|ms|s|m|h),", output)
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    if not done or not rate:
        raise ValueError(f"unexpected wrk output:\n{output}")
    latency = {f"{pct}%": _ms(value, unit) for pct, value, unit in
               re.findall(r"^\s+(\d+(?:\.\d+)?)%\s+([0-9.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)}
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, sockets.groups()))) if sockets \
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(url=url, requests=int(done.group(1)), seconds=_ms(done.group(2), done.group(3)) / 1000,
                     requests_per_s=float(rate.group(1)), latency_ms=latency, socket_errors=socket_errors,
                     non_2xx=int(non_2xx.group(1)) if non_2xx else 0)


def find_wrk(install: bool = True, log=print) -> str | None:
    """The wrk binary; installed with apt-get when missing and we are root, else None (with a hint)."""
    found = shutil.which("wrk")
    if found or not install:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log("wrk is not installed; install it with `sudo apt-get install -y wrk` to run the HTTP part")
        return None
    log("wrk: installing it with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet).returncode != 0:
        subprocess.run(["apt-get", "update"], **quiet)
        subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet)
    found = shutil.which("wrk")
    if not found:
        log("wrk: apt-get could not install it; skipping the HTTP part")
    return found


def run(wrk: str, url: str, *, threads: int = 2, connections: int = 16, seconds: int = 10) -> tuple[WrkResult, str]:
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return parse(done.stdout, url), done.stdout
