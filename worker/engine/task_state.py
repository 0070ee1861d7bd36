"""One task's progress, cancellation and outcome inside the scheduler (``RowState``).

Callbacks are the caller's code (progress reports to Redis, cancel checks):
a callback that raises fails its own task, never the others of the batch.
"""

from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger(__name__)

RUNNING, DONE, CANCELED, FAILED = "running", "done", "canceled", "failed"


class GenerationCanceled(Exception):
    """A request was canceled (its ``should_stop`` or the caller's ``on_step`` said so)."""


class RowState:
    """One task inside the scheduler (one window of it past 30 s): its steps, callbacks and outcome."""

    def __init__(self, index: int, total_steps: int, on_progress: Callable[[int, int], None] | None,
                 should_stop: Callable[[], bool] | None):
        self.index = index
        self.total_steps = total_steps
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.status = RUNNING
        self.error: BaseException | None = None
        self.reported = 0  # highest step passed to on_progress; a retry never goes back
        self.streamer = None  # worker.engine.streaming.RowStreamer when the request wants audio chunks

    def report(self, step: int) -> None:
        step = min(step, self.total_steps)
        if self.on_progress is not None and step > self.reported:
            self._guard(self.on_progress, step, self.total_steps)
        self.reported = max(self.reported, step)

    def poll_stop(self, step: int) -> None:
        if self.should_stop is not None and self.status == RUNNING and self._guard(self.should_stop):
            self.cancel(step)

    def cancel(self, step: int) -> None:
        if self.status == RUNNING:
            self.status = CANCELED
            self.error = GenerationCanceled(f"canceled at step {step} of {self.total_steps}")

    def fail(self, error: BaseException) -> None:
        self.status = FAILED
        self.error = error

    def _guard(self, callback: Callable, *args):
        # A failing callback fails its own row, never the batch.
        try:
            return callback(*args)
        except Exception as exc:  # noqa: BLE001 - any callback error belongs to this row
            log.warning("row %d: callback %r failed: %r", self.index, callback, exc)
            exc.__traceback__ = None  # its frames hold the batch's tensors
            self.fail(exc)
            return None
