"""RQ job entry point: ``worker.jobs.run_task(task_id)``.

This is the task boundary: whatever happens inside (bad media, a model
error, RQ's timeout), the task document ends ``completed`` or ``failed`` with
a readable reason; the exception is then re-raised so RQ's own registries
(``rq info``) stay truthful.
"""

from __future__ import annotations

import logging
import time

from rq import get_current_job
from rq.timeouts import JobTimeoutException

from backend.clock import utcnow
from backend.errors import SegueError

from . import audio as audio_ops
from . import pipeline, runtime
from .progress_reporter import ProgressReporter

log = logging.getLogger(__name__)

CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}


def describe_failure(exc: BaseException, timeout: int) -> str:
    if isinstance(exc, JobTimeoutException):
        return f"the task ran longer than the {timeout} s limit and was stopped"
    if isinstance(exc, SegueError):
        return exc.message
    if isinstance(exc, MemoryError):
        return "the worker ran out of memory while generating"
    text = str(exc).strip() or exc.__class__.__name__
    return f"generation failed: {text[:500]}"


def run_task(task_id: str) -> str:
    rt = runtime.get()
    store, progress = rt.services.store, rt.services.progress
    doc = store.claim(task_id, rt.worker_id)
    if doc is None:
        log.info("task %s is no longer queued (canceled or already taken); skipping", task_id)
        return "skipped"
    rt.current_task = task_id
    reporter = ProgressReporter(progress, task_id)
    reporter.report(0.5, force=True)
    started = time.monotonic()
    try:
        outcome = _run(rt, doc, reporter)
        _store_result(rt, doc, outcome, started)
        progress.raise_to(task_id, 100.0)
        log.info("task %s completed in %.1f s", task_id, time.monotonic() - started)
        return "completed"
    except BaseException as exc:
        job = get_current_job()
        message = describe_failure(exc, int(job.timeout) if job and job.timeout else rt.settings.job_timeout)
        store.finish(task_id, "failed", {"error": message, "progress": reporter.value},
                     only_from=("processing",))
        log.warning("task %s failed: %s", task_id, message, exc_info=not isinstance(exc, SegueError))
        raise
    finally:
        rt.current_task = None
        rt.tasks_done += 1


def _run(rt: runtime.Runtime, doc: dict, reporter: ProgressReporter) -> pipeline.Outcome:
    engine = rt.models.get(doc["model"])
    request = doc["request"]
    if doc["kind"] == "generate":
        return pipeline.run_generate(engine, request, reporter, fetch_timeout=rt.settings.fetch_timeout,
                                     allow_private=rt.settings.allow_private_urls)
    clip = rt.services.store.read_audio(doc["input_file_id"])
    return pipeline.run_continue(engine, request, clip, reporter)


def _store_result(rt: runtime.Runtime, doc: dict, outcome: pipeline.Outcome, started: float) -> None:
    task_id = doc["_id"]
    fmt = doc["request"].get("output_format") or "wav"
    audio = audio_ops.prevent_clipping(outcome.audio)
    if fmt == "mp3":
        data = audio_ops.encode_mp3(audio, outcome.sample_rate)
    else:
        data = audio_ops.encode_wav(audio, outcome.sample_rate)
    store = rt.services.store
    file_id = store.put_audio(task_id, "result", data, CONTENT_TYPES[fmt])
    fields = {
        "result_file_id": file_id,
        "progress": 100.0,
        "duration_seconds": round(audio.shape[1] / outcome.sample_rate, 4),
        "sample_rate": outcome.sample_rate,
        "channels": int(audio.shape[0]),
        "bpm": outcome.bpm,
        "seed": outcome.seed,
        "prompt_seconds": outcome.prompt_seconds,
        "target_seconds": outcome.target_seconds,
        "processing_time_ms": int((time.monotonic() - started) * 1000),
        "result_bytes": len(data),
    }
    if not store.finish(task_id, "completed", fields, only_from=("processing",)):
        # Canceled (or reaped) while we worked: keep the outcome it already has.
        store.delete_audio(file_id)
        log.info("task %s ended elsewhere while running; result discarded", task_id)
        return
    # Input audio of a /continue is no longer needed once its task has a result.
    if doc.get("input_file_id") is not None:
        store.extend_audio_expiry(doc["input_file_id"], utcnow())
