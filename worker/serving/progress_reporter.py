"""Throttled, monotonic progress for one task.

Generation calls back once per decoding step (50 per second of audio);
writing each to Redis would be wasteful, so a write happens when progress
moved by at least a point or half a second passed. Stages map onto slices
of 0-100 so the bar moves through fetching, generating and encoding.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future

import redis

from backend.core.progress import ProgressStore

from . import side_calls

log = logging.getLogger(__name__)


class ProgressReporter:
    def __init__(self, store: ProgressStore, task_id: str, *, min_step: float = 1.0, min_interval: float = 0.5):
        self.store = store
        self.task_id = task_id
        self.min_step = min_step
        self.min_interval = min_interval
        self.value = 0.0
        self._written = -1.0
        self._written_at = 0.0
        self._pending: Future | None = None  # a write on the side-call thread

    def report(self, value: float, *, force: bool = False, in_background: bool = False) -> None:
        """``in_background``: write on the side-call thread (``worker.serving.side_calls``), skipping this
        write while the previous one is still on its way (the next carries the newer value)."""
        value = min(100.0, max(self.value, float(value)))
        self.value = value
        now = time.monotonic()
        if force or value - self._written >= self.min_step or now - self._written_at >= self.min_interval:
            if in_background:
                if self._pending is None or self._pending.done():
                    self._written_at = now
                    self._written = value  # the store only ever raises it: as good as written
                    self._pending = side_calls.submit(self._write, value)
                return
            self._written_at = now
            self._write(value)

    def _write(self, value: float) -> None:
        try:
            self._written = self.store.raise_to(self.task_id, value)
        except redis.RedisError as exc:
            # Redis restarting: the task goes on; the next write (or the final document) catches up.
            log.warning("could not write the progress of task %s: %s", self.task_id, exc)

    def stage(self, start: float, end: float, *, in_background: bool = False):
        """A callback mapping a stage's own fraction (done, total) onto [start, end]; ``in_background``: its
        writes are made on the side-call thread (the engine's stepping thread calls it)."""

        def on_step(done: int, total: int) -> None:
            fraction = 0.0 if total <= 0 else min(1.0, done / total)
            self.report(start + (end - start) * fraction, in_background=in_background)

        return on_step
