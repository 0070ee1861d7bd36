"""Prometheus metrics kept in Redis, so every API process reports the same numbers.

Counters and histograms live in Redis hashes that workers update with
``record_task`` / ``record_batch`` (one MULTI/EXEC pipeline per call, so a
scrape never sees a histogram whose count and buckets disagree). A custom
collector reads them at scrape time together with live gauges (queue depth,
tasks by status, live workers). Per-process ``prometheus_client`` metrics
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
import math
from typing import TYPE_CHECKING, Iterable, Iterator

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from . import heartbeat
from .store import FINAL_STATES

if TYPE_CHECKING:
    from .services import Services

PREFIX = "segue:metrics:"
TASK_SECONDS_KEY = PREFIX + "task_seconds"
AUDIO_SECONDS_KEY = PREFIX + "audio_seconds"
BATCH_SIZE_KEY = PREFIX + "batch_size"
WEBHOOKS_KEY = PREFIX + "webhooks"

# Tasks run from under a second (tiny models, short clips) to the 1800 s job timeout.
TASK_SECONDS_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
STATUSES = ("queued", "processing") + FINAL_STATES

# Hash fields are JSON lists (labels..., part) so any model id or path is safe as a label.
_SUM, _COUNT = "sum", "count"


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
    pipe.hincrbyfloat(key, _field(*labels, _SUM), value)
    pipe.hincrby(key, _field(*labels, _COUNT), 1)


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


# -- reading -------------------------------------------------------------------

def _decoded(raw: dict) -> dict[tuple, float]:
    values = {}
    for key, value in raw.items():
        try:
            values[tuple(json.loads(key))] = float(value)
        except (ValueError, TypeError):
            continue  # a field written by something else: not ours to report
    return values


def _histogram(name: str, doc: str, label_names: list[str], raw: dict,
               bounds: tuple[float, ...]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=label_names)
    values = _decoded(raw)
    label_sets = sorted({key[:-1] for key in values if key[-1] == _COUNT})
    for labels in label_sets:
        cumulative, buckets = 0.0, []
        for bound in [repr(float(b)) for b in bounds] + ["+Inf"]:
            cumulative += values.get(labels + (bound,), 0.0)
            buckets.append((_le(bound), cumulative))
        family.add_metric(list(labels), buckets, values.get(labels + (_SUM,), 0.0))
    return family


def _le(bound: str) -> str:
    if bound == "+Inf":
        return bound
    value = float(bound)
    return str(int(value)) if value.is_integer() and not math.isinf(value) else bound


class SegueCollector:
    """Reads every metric at scrape time; Redis or MongoDB errors propagate (the route answers 503)."""

    def __init__(self, services: Services):
        self.services = services

    def collect(self) -> Iterator[Metric]:
        from .webhooks import DUE_KEY  # here: webhooks imports this module

        s = self.services
        # One round trip for the recorded numbers, so they come from one moment.
        pipe = s.redis.pipeline(transaction=True)
        for key in (TASK_SECONDS_KEY, AUDIO_SECONDS_KEY, BATCH_SIZE_KEY, WEBHOOKS_KEY):
            pipe.hgetall(key)
        pipe.zcard(DUE_KEY)
        task_seconds, audio_seconds, batch_sizes, webhooks, webhooks_due = pipe.execute()
        depth = s.queue.depth()
        beats = heartbeat.read_all(s.redis)
        by_status = s.store.count_by_status()

        yield _gauge("segue_queue_depth", "Jobs waiting on the queue.", depth)
        tasks = GaugeMetricFamily("segue_tasks", "Task documents by status.", labels=["status"])
        for status in STATUSES:
            tasks.add_metric([status], by_status.get(status, 0))
        yield tasks
        yield _gauge("segue_workers", "Workers with a live heartbeat.", len(beats))
        current = GaugeMetricFamily("segue_worker_current_tasks", "Tasks each live worker is running.",
                                    labels=["worker_id"])
        for beat in beats:
            current.add_metric([str(beat.get("worker_id", ""))], len(beat.get("current_tasks") or []))
        yield current
        yield _histogram("segue_task_seconds", "Seconds a task ran on a worker, by model and outcome.",
                         ["model", "status"], task_seconds, TASK_SECONDS_BUCKETS)
        yield _counter("segue_generated_audio_seconds", "Seconds of audio generated, by model.",
                       ["model"], _decoded(audio_seconds).items())
        yield _histogram("segue_batch_size", "Per ended task: the most tasks its worker's engine decoded together while it ran.", [], batch_sizes,
                         BATCH_SIZE_BUCKETS)
        yield _counter("segue_webhook_deliveries", "Webhook delivery attempts by outcome "
                       "(pending = failed for now, will be retried).", ["outcome"], _decoded(webhooks).items())
        yield _gauge("segue_webhooks_due", "Webhook deliveries waiting, retries included.", webhooks_due)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, label_names: list[str], values: Iterable[tuple[tuple, float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=label_names)
    for labels, value in sorted(values):
        family.add_metric(list(labels), value)
    return family


def registry_for(services: Services) -> CollectorRegistry:
    """A registry of this app's own (no process or platform metrics: they would differ per gunicorn worker)."""
    # auto_describe=False: registering must not scrape (Redis may be down at start-up).
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SegueCollector(services))
    return registry
