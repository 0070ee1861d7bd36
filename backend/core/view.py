"""The public view of a task: the document clients read, with live progress, queue place and ETA.

The API answers it (``GET /tasks/<id>``, events) and webhooks post it; both read it from here.
"""

from __future__ import annotations

import base64
import time

from backend.core import eta, heartbeat
from backend.core.clock import iso, utcnow
from backend.core.connections import Services
from backend.core.errors import NotFound
from backend.core.ids import looks_like_task_id
from backend.core.tasks import ACTIVE_STATUSES


def load_task(services: Services, task_id: str) -> dict:
    doc = services.store.get_task(task_id) if looks_like_task_id(task_id) else None
    if doc is None:
        raise NotFound(f"no task with id {task_id!r}", code="task_not_found")
    return doc


def current_progress(services: Services, doc: dict) -> float:
    if doc["status"] == "completed":
        return 100.0
    if doc["status"] == "queued":
        return 0.0
    live = services.progress.get(doc["_id"])
    return max(float(doc.get("progress") or 0.0), live or 0.0)


_WORKER_COUNT_TTL = 5.0
_worker_count: dict[int, tuple[float, int]] = {}


def _live_workers(services: Services) -> int:
    """Live workers, cached a few seconds: counting them scans Redis, and queued tasks are polled often."""
    now = time.monotonic()
    cached = _worker_count.get(id(services))
    if cached is None or now - cached[0] > _WORKER_COUNT_TTL:
        cached = (now, len(heartbeat.read_all(services.redis)))
        _worker_count[id(services)] = cached
    return cached[1]


def _eta(services: Services, doc: dict, position: int | None, progress: float) -> float | None:
    status = doc["status"]
    if status not in ACTIVE_STATUSES:
        return None
    batch_seconds = eta.mean_batch_seconds(services.redis)
    if status == "queued":
        workers = max(1, _live_workers(services))
        return eta.queued_eta(batch_seconds, position or 1, workers, services.settings.max_batch)
    started = doc.get("started_at")
    elapsed = (utcnow() - started).total_seconds() if started else 0.0
    return eta.running_eta(batch_seconds, elapsed, progress)


def task_view(services: Services, doc: dict, *, include_audio: bool = True) -> dict:
    status = doc["status"]
    position = services.queue.position(doc.get("job_id", doc["_id"])) if status == "queued" else None
    progress = current_progress(services, doc)
    view = {
        "task_id": doc["_id"],
        "status": status,
        "progress": round(progress, 2),
        "model": doc.get("model"),
        "created_at": iso(doc.get("created_at")),
        "started_at": iso(doc.get("started_at")),
        "completed_at": iso(doc.get("completed_at")),
        "error": doc.get("error"),
        "queue_position": position or 0,
        "eta_seconds": _eta(services, doc, position, progress),
        "cancel_requested": bool(doc.get("cancel_requested")),
        "parent_task_id": doc.get("parent_task_id"),
        "request": doc.get("request", {}),
        "duration_seconds": doc.get("duration_seconds"),
        "sample_rate": doc.get("sample_rate"),
        "channels": doc.get("channels"),
        "bpm": doc.get("bpm"),
        "seed": doc.get("seed"),
        "output_format": doc.get("request", {}).get("output_format"),
        "processing_time_ms": doc.get("processing_time_ms"),
        "batch_size": doc.get("batch_size"),
        "attempts": doc.get("attempts"),
        "webhook_delivery": doc.get("webhook_delivery"),
    }
    if include_audio and status == "completed" and doc.get("result_file_id") is not None:
        view["audio"] = base64.b64encode(services.store.read_audio(doc["result_file_id"])).decode("ascii")
    return view


def result_bytes(services: Services, doc: dict) -> bytes:
    return services.store.read_audio(doc["result_file_id"])
