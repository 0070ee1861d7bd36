"""The ``/metrics`` collector: reads the numbers ``backend.core.metrics`` keeps in Redis at scrape time,
together with live gauges (queue depth, tasks by status, live workers, webhooks due)."""

from __future__ import annotations

import json
import math
from typing import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from backend.core import heartbeat
from backend.core.connections import Services
from backend.core.metrics import (AUDIO_SECONDS_KEY, BATCH_SIZE_BUCKETS, BATCH_SIZE_KEY, COUNT_PART, SUM_PART,
                                  TASK_SECONDS_BUCKETS, TASK_SECONDS_KEY, WEBHOOKS_KEY)
from backend.core.tasks import STATUSES
from backend.core.webhooks import DUE_KEY


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
    label_sets = sorted({key[:-1] for key in values if key[-1] == COUNT_PART})
    for labels in label_sets:
        cumulative, buckets = 0.0, []
        for bound in [repr(float(b)) for b in bounds] + ["+Inf"]:
            cumulative += values.get(labels + (bound,), 0.0)
            buckets.append((_le(bound), cumulative))
        family.add_metric(list(labels), buckets, values.get(labels + (SUM_PART,), 0.0))
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
