"""What the routes do: submit tasks, hand out results, cancel, list models, report health.

Routes stay thin (parse, call one of these, answer); everything here works on
the handles in ``Services`` so the same code runs under gunicorn and in tests.
Reading a task (its public view) is shared with webhooks: ``backend.core.view``.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from backend.api import catalogue
from backend.api.auth import current_owner
from backend.core import cancellation, heartbeat, webhooks
from backend.core.audiofile import probe_audio_bytes
from backend.core.clock import utcnow
from backend.core.connections import Services
from backend.core.errors import BadRequest, Conflict
from backend.core.ids import new_task_id
from backend.core.tasks import CONTENT_TYPES
from backend.core.urlguard import check_url_allowed
from backend.core.view import load_task, result_bytes, task_view

# -- submission ---------------------------------------------------------------

def _sampling(services: Services, model: str, values: dict[str, Any]) -> dict[str, Any]:
    keys = ("prompt", "seed", "top_k", "top_p", "temperature", "cfg_coef", "output_format", "webhook", "melody")
    out = {k: values[k] for k in keys}
    source = services.settings.model_source(model)
    if out["melody"] and catalogue.describe(model, source).kind != "musicgen_melody":
        raise BadRequest(f"'melody' conditioning needs a melody model; {model} is not one", code="melody_unsupported")
    if out["prompt"] is None:
        # A model's default description conditions requests that bring none (as gary4web did for fine-tunes).
        out["prompt"] = catalogue.default_description(model, services.settings.descriptions, source)
        out["prompt_source"] = "model_default" if out["prompt"] else None
    return out


def _enqueue_new(services: Services, doc: dict) -> dict:
    # Ping Redis first so a down queue answers 503 before anything is stored.
    services.redis.ping()
    services.store.insert_task(doc)
    try:
        services.queue.enqueue(doc["_id"], job_id=doc["job_id"])
    except redis.RedisError:
        services.store.delete_task(doc["_id"])
        raise
    try:
        position = services.queue.position(doc["job_id"])
    except redis.RedisError:  # queued already: a 503 now would make the client submit it twice
        position = None
    return {"task_id": doc["_id"], "status": "queued", "queue_position": position or 0}


def _new_task(kind: str, model: str, request: dict, parent: str | None = None) -> dict:
    task_id = new_task_id()
    return {"_id": task_id, "job_id": task_id, "kind": kind, "status": "queued", "model": model, "request": request,
            "parent_task_id": parent, "created_at": utcnow(), "started_at": None, "completed_at": None,
            "error": None, "progress": 0.0, "attempts": 0, "owner": current_owner()}


def submit_generate(services: Services, values: dict[str, Any]) -> dict:
    check_url_allowed(values["url"], services.settings.allow_private_urls)
    model = values["model"] or services.settings.default_model
    low, high = values["duration"]
    request = {"url": values["url"], "currentTime": values["currentTime"], "promptLength": values["promptLength"],
               "duration": f"{low:g}-{high:g}", "duration_min": low, "duration_max": high,
               **_sampling(services, model, values)}
    return _enqueue_new(services, _new_task("generate", model, request))


def submit_continue(services: Services, values: dict[str, Any]) -> dict:
    audio: bytes = values["audio"]
    info = probe_audio_bytes(audio)
    if info.duration_seconds < 1.0:
        raise BadRequest(f"'audio' is {info.duration_seconds:.2f} s long; at least 1 s is needed",
                         code="audio_too_short")
    if info.duration_seconds > services.settings.max_clip_seconds:
        raise BadRequest(f"'audio' is {info.duration_seconds:.0f} s long; the limit is "
                         f"{services.settings.max_clip_seconds:g} s", code="audio_too_long")
    model = values["model"] or services.settings.default_model
    request = {"prompt_duration": values["prompt_duration"], "duration": values["duration"],
               "input_seconds": round(info.duration_seconds, 3),
               "input_sample_rate": info.sample_rate, "input_channels": info.channels,
               **_sampling(services, model, values)}
    doc = _new_task("continue", model, request, parent=values["task_id"])
    services.redis.ping()
    doc["input_file_id"] = services.store.put_audio(doc["_id"], "input", audio, "application/octet-stream")
    try:
        return _enqueue_new(services, doc)
    except Exception:
        services.store.delete_audio(doc["input_file_id"])
        raise


def result_file(services: Services, doc: dict) -> tuple[bytes, str, str]:
    """The finished audio, its content type and a download name; 409 until the task completed."""
    if doc["status"] != "completed" or doc.get("result_file_id") is None:
        raise Conflict(f"task {doc['_id']} is {doc['status']}; its audio exists once it is completed",
                       code="task_not_completed")
    fmt = doc.get("request", {}).get("output_format") or "wav"
    return result_bytes(services, doc), CONTENT_TYPES[fmt], f"segue-{doc['_id'][:8]}.{fmt}"


# -- cancel -------------------------------------------------------------------------

def cancel_task(services: Services, task_id: str) -> dict:
    """Cancel a queued task at once, or ask the worker running it to stop; 409 once it has ended."""
    doc = load_task(services, task_id)
    if doc["status"] == "queued":
        if services.store.finish(task_id, "canceled", {"error": "canceled by request"}, only_from=("queued",)):
            webhooks.schedule(services.redis, task_id)
            # Left on the queue (if Redis fails here), the job is skipped: workers claim only queued tasks.
            services.queue.remove(doc.get("job_id") or task_id)
        doc = load_task(services, task_id)
    if doc["status"] == "processing":
        cancellation.request_cancel(services.redis, task_id)
        services.store.update(task_id, {"cancel_requested": True})
        doc = load_task(services, task_id)
    if doc["status"] in ("completed", "failed"):
        raise Conflict(f"task {task_id} already ended ({doc['status']}); there is nothing to cancel",
                       code="task_finished")
    return task_view(services, doc, include_audio=False)


# -- models -------------------------------------------------------------------------

def models_failed(beats: list[dict]) -> dict[str, str]:
    """Model id -> why a worker could not load it, from the workers' heartbeats."""
    failed: dict[str, str] = {}
    for beat in beats:
        for model, reason in (beat.get("models_failed") or {}).items():
            failed.setdefault(model, str(reason))
    return failed


def models_view(services: Services) -> dict:
    try:
        beats = heartbeat.read_all(services.redis)
    except redis.RedisError:
        beats = []  # the list of offered models does not need Redis
    loaded = {m for b in beats for m in b.get("models_loaded", [])}
    settings = services.settings
    models = catalogue.catalogue([(m, settings.model_source(m)) for m in settings.model_ids],
                                 settings.descriptions, loaded, models_failed(beats))
    return {"models": [m.to_json() for m in models], "default": services.settings.default_model}


# -- health -----------------------------------------------------------------------

def ready(services: Services) -> dict:
    """Can this API process take requests? Redis and MongoDB must answer; workers may be scaled to zero."""
    report: dict[str, Any] = {}
    try:
        services.redis.ping()
        report["redis"] = "live"
    except redis.RedisError:
        report["redis"] = "down"
    try:
        services.store.ping()
        report["mongodb"] = "live"
    except Exception:  # any failure means the store is unusable right now
        report["mongodb"] = "down"
    report["status"] = "ready" if report["redis"] == report["mongodb"] == "live" else "unavailable"
    return {"status": report["status"], "redis": report["redis"], "mongodb": report["mongodb"]}


def queue_load(services: Services) -> dict:
    """Queued plus running tasks (a Redis error reaches the JSON 503 handler)."""
    load = services.queue.load()
    return {"queue": services.queue.name, "queued": load.queued, "running": load.running, "total": load.total}


def health(services: Services) -> dict:
    report: dict[str, Any] = {}
    try:
        services.store.ping()
        report["mongodb"] = "live"
    except Exception:  # any failure means the store is unusable right now
        report["mongodb"] = "down"
    beats: list[dict] = []
    try:
        services.redis.ping()
        report["redis"] = "live"
        beats = heartbeat.read_all(services.redis)
        report["queue_depth"] = services.queue.depth()
    except redis.RedisError:
        report["redis"] = "down"
        report["queue_depth"] = None
    # A worker still loading its default model (ready false) is reported but not yet counted live.
    working = [b for b in beats if b.get("torch_ok") and b.get("ready", True)]
    report["pytorch"] = "live" if working else "down"
    report["workers"] = len(beats)
    # A worker told to stop (SIGTERM) finishes what it holds and takes nothing new.
    report["workers_draining"] = sum(1 for b in beats if b.get("draining"))
    devices = sorted({b.get("device") for b in working if b.get("device")})
    report["device"] = devices[0] if len(devices) == 1 else (devices or None)
    report["models_loaded"] = sorted({m for b in working for m in b.get("models_loaded", [])})
    report["torch_version"] = working[0].get("torch_version") if working else None
    report["models_failed"] = models_failed(working)
    report["worker_details"] = [
        {k: b.get(k) for k in ("worker_id", "host", "pid", "device", "models_loaded", "models_failed",
                               "current_tasks", "tasks_done", "ready", "draining", "torch_version", "yt_dlp", "yt_dlp_age_days",
                               "js_runtime", "ejs")} for b in beats]
    alive = all(report[k] == "live" for k in ("mongodb", "redis", "pytorch"))
    # Workers that cannot load the default model cannot serve a request that names none.
    default = services.settings.default_model
    if working and default not in report["models_loaded"] and default in report["models_failed"]:
        alive = False
    report["status"] = "live" if alive else "degraded"
    report["checked_at"] = time.time()
    return report
