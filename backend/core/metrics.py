"""Prometheus metrics kept in Redis, so every API process reports the same numbers.

Counters and histograms live in Redis hashes that workers update with
``record_task`` / ``record_batch`` (one MULTI/EXEC pipeline per call, so a
scrape never sees a histogram whose count and buckets disagree). The API's
collector (``backend.api.prometheus``) reads them at scrape time together with
live gauges (queue depth, tasks by status, live workers). Per-process ``prometheus_client`` metrics
would be wrong twice over: each gunicorn worker would report only its own
share, and the numbers that matter are produced on worker machines.

Exposed (all prefixed ``segue_``):

- ``segue_queue_depth``                      jobs waiting on the RQ queue
- ``segue_tasks{status}``                    task documents by status
- ``segue_workers``                          workers with a live heartbeat
- ``segue_worker_current_tasks{worker_id}``  tasks each live worker is running
- ``segue_task_seconds{model,status}``       histogram: how long tasks ran on a worker
- ``segue_generated_audio_seconds_total{model}``  seconds of audio generated
- ``segue_batch_size``                       histogram: per task, the most tasks its engine decoded together
- ``segue_webhook_deliveries_total{outcome}``    webhook attempts: delivered, pending (retry), failed
- ``segue_webhooks_due``                     webhook deliveries waiting (incl. retries)
"""

from __future__ import annotations

import json

import redis

PREFIX = "segue:metrics:"
TASK_SECONDS_KEY = PREFIX + "task_seconds"
AUDIO_SECONDS_KEY = PREFIX + "audio_seconds"
BATCH_SIZE_KEY = PREFIX + "batch_size"
WEBHOOKS_KEY = PREFIX + "webhooks"

# Tasks run from under a second (tiny models, short clips) to the 1800 s job timeout.
TASK_SECONDS_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)

# Hash fields are JSON lists (labels..., part) so any model id or path is safe as a label.
SUM_PART, COUNT_PART = "sum", "count"


def _field(*parts) -> str:
    return json.dumps(list(parts))


def _bucket(value: float, bounds: tuple[float, ...]) -> str:
    """The upper bound of the one bucket ``value`` falls in (stored non-cumulative)."""
    for bound in bounds:
        if value <= bound:
            return repr(float(bound))
    return "+Inf"


def _observe(pipe, key: str, labels: tuple, value: float, bounds: tuple[float, ...]) -> None:
    pipe.hincrby(key, _field(*labels, _bucket(value, bounds)), 1)
    pipe.hincrbyfloat(key, _field(*labels, SUM_PART), value)
    pipe.hincrby(key, _field(*labels, COUNT_PART), 1)


def record_task(connection: redis.Redis, *, status: str, model: str, seconds: float, audio_seconds: float) -> None:
    """Count one ended task: how long it ran and how much audio it produced (0 when it failed)."""
    pipe = connection.pipeline(transaction=True)
    _observe(pipe, TASK_SECONDS_KEY, (model, status), max(0.0, float(seconds)), TASK_SECONDS_BUCKETS)
    if audio_seconds:
        pipe.hincrbyfloat(AUDIO_SECONDS_KEY, _field(model), float(audio_seconds))
    pipe.execute()


def record_batch(connection: redis.Redis, size: int) -> None:
    """Count one ended task's batch size: the most tasks its engine decoded together while it ran."""
    pipe = connection.pipeline(transaction=True)
    _observe(pipe, BATCH_SIZE_KEY, (), int(size), BATCH_SIZE_BUCKETS)
    pipe.execute()


def record_webhook(connection: redis.Redis, outcome: str) -> None:
    connection.hincrby(WEBHOOKS_KEY, _field(outcome), 1)
