"""Estimated seconds until a task ends, from how long recent batches took.

Workers keep an exponentially weighted mean of their batches' wall time in
Redis (shared by every API process and worker machine). A queued task at
place ``p`` waits for ``ceil(p / (workers * max_batch))`` batches (each
worker takes up to ``max_batch`` tasks at a time), then runs one itself; a
running task's remaining time is projected from its progress so far.
"""

from __future__ import annotations

import math

import redis

KEY = "segue:stats:batch_seconds"
WEIGHT = 0.3  # of the newest batch in the mean
MIN_PROGRESS_FOR_PROJECTION = 5.0

_UPDATE = """
local old = tonumber(redis.call('GET', KEYS[1]) or '')
local new = tonumber(ARGV[1])
if old then new = old + tonumber(ARGV[2]) * (new - old) end
redis.call('SET', KEYS[1], tostring(new))
return tostring(new)
"""


def record_batch_seconds(connection: redis.Redis, seconds: float) -> float:
    return float(connection.eval(_UPDATE, 1, KEY, f"{seconds:.3f}", str(WEIGHT)))


def mean_batch_seconds(connection: redis.Redis) -> float | None:
    raw = connection.get(KEY)
    return None if raw is None else float(raw)


def queued_eta(batch_seconds: float | None, position: int, workers: int, max_batch: int) -> float | None:
    if batch_seconds is None or workers < 1 or position < 1:
        return None
    batches_ahead = math.ceil(position / (workers * max(1, max_batch))) - 1
    return round((batches_ahead + 1) * batch_seconds, 1)


def running_eta(batch_seconds: float | None, elapsed: float, progress: float) -> float | None:
    if progress >= MIN_PROGRESS_FOR_PROJECTION:
        return round(max(0.0, elapsed * (100.0 - progress) / progress), 1)
    if batch_seconds is None:
        return None
    return round(max(0.0, batch_seconds - elapsed), 1)
