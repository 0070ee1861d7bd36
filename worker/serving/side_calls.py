"""Redis calls the engine's per-step callbacks need, made on a thread of their own.

The engine calls each task's callbacks on its one stepping thread, between
decoding steps: has a cancel been asked for, is anyone listening, and the
progress. Each needs a Redis round trip every fraction of a second. Made on
the stepping thread, every round trip paused every task of the batch:

- on a 2-core laptop, where the Redis server competes with torch for the
  cores, about 2 % of a task's time;
- across machines (RTT ~1 ms) with tens of tasks per GPU, much more.

Here the callbacks read the latest answer and return at once. One thread
per worker process makes the calls: at most one call per task and question
is in flight, so a slow or absent Redis delays the answers but never the
steps. A cancel is then seen one poll later (0.25 s) at worst.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import redis

log = logging.getLogger(__name__)

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def submit(call: Callable, *args) -> Future:
    """Run ``call(*args)`` on the process's side-call thread."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segue-side-calls")
        return _executor.submit(call, *args)


class Polled:
    """A yes/no Redis question asked every ``period`` seconds off the caller's thread.

    ``value()`` never waits: it returns the latest answer (``initial`` until
    the first one arrives) and asks again when the period has passed and no
    question is in flight. A Redis error is logged; the answer then becomes
    ``on_error`` (None: keep the last one)."""

    def __init__(self, ask: Callable[[], bool], period: float, *, initial: bool, on_error: bool | None,
                 what: str):
        self.ask = ask
        self.period = period
        self.on_error = on_error
        self.what = what
        self._value = initial
        self._asked_at = time.monotonic()
        self._pending: Future | None = submit(ask)  # asked at once: the first answer is ready soonest

    def value(self) -> bool:
        pending = self._pending
        if pending is not None and pending.done():
            self._pending = None
            try:
                self._value = bool(pending.result())
            except redis.RedisError as exc:  # a Redis blip: ask again next period
                log.warning("could not check %s: %s", self.what, exc)
                if self.on_error is not None:
                    self._value = self.on_error
        if self._pending is None and time.monotonic() - self._asked_at >= self.period:
            self._asked_at = time.monotonic()
            self._pending = submit(self.ask)
        return self._value
