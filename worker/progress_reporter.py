"""Throttled, monotonic progress for one task.

Generation calls back once per decoding step (50 per second of audio);
writing each to Redis would be wasteful, so a write happens when progress
moved by at least a point or half a second passed. Stages map onto slices
of 0-100 so the bar moves through fetching, generating and encoding.
"""

from __future__ import annotations

import logging
import time

import redis

from backend.core.progress import ProgressStore

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

    def report(self, value: float, *, force: bool = False) -> None:
        value = min(100.0, max(self.value, float(value)))
        self.value = value
        now = time.monotonic()
        if force or value - self._written >= self.min_step or now - self._written_at >= self.min_interval:
            self._written_at = now
            try:
                self._written = self.store.raise_to(self.task_id, value)
            except redis.RedisError as exc:
                # Redis restarting: the task goes on; the next write (or the final document) catches up.
                log.warning("could not write the progress of task %s: %s", self.task_id, exc)

    def stage(self, start: float, end: float):
        """A callback mapping a stage's own fraction (done, total) onto [start, end]."""

        def on_step(done: int, total: int) -> None:
            fraction = 0.0 if total <= 0 else min(1.0, done / total)
            self.report(start + (end - start) * fraction)

        return on_step
