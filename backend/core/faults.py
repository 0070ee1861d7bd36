"""Hold points for the fault-injection tests: stop a task at a named instant of its life, deterministically.

Off unless ``SEGUE_FAULT_HOLD_DIR`` names a folder (tests only; never set it
in production). Then, at each named point, a process looks for the file
``<dir>/<point>.arm``. If it is there, the process takes it (renames it, so
exactly one process holds for one arming), writes ``<dir>/<point>.reached``
with the task id, and waits until ``<dir>/<point>.release`` appears. The test
meanwhile kills or stops the process, restarts a service, or releases it.
No sleeps decide anything: the test waits for the ``.reached`` file.

Points (in a task's order): ``taken`` (off the queue, not yet claimed),
``preparing`` (claimed, before the download), ``generating`` (inside the
engine, at a decoding step), ``storing`` (result encoded and uploaded, before
the task document says ``completed``), ``webhook`` (the task ended, its
webhook claimed for delivery but not yet sent), ``webhook-sent`` (sent,
its outcome not yet recorded), ``requeue`` (housekeeping set
a task back to queued, before enqueuing its job), ``claim`` (just before the
claim is written to MongoDB).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

POLL_SECONDS = 0.02

_hold_dir: Path | None = None


def configure(hold_dir: str | os.PathLike | None) -> None:
    global _hold_dir
    _hold_dir = Path(hold_dir) if hold_dir else None


def hold(point: str, task_id: str = "") -> None:
    """Wait at ``point`` if a test armed it; returns at once otherwise (the normal case: one None check)."""
    if _hold_dir is None:
        return
    armed = _hold_dir / f"{point}.arm"
    taken = _hold_dir / f"{point}.taken.{os.getpid()}"
    try:
        os.rename(armed, taken)  # atomic: one process, one task per arming
    except FileNotFoundError:
        return
    (_hold_dir / f"{point}.reached").write_text(f"{task_id}\n{os.getpid()}\n")
    log.warning("fault hold point %s reached by task %s; waiting for release", point, task_id)
    release = _hold_dir / f"{point}.release"
    while not release.exists():
        time.sleep(POLL_SECONDS)
    log.warning("fault hold point %s released", point)
