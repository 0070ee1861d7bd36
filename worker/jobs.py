"""Task execution: the boundary where every task gets its outcome.

``run_tasks`` runs one or more tasks (a batch the worker collected) through
prepare → one batched MusicGen call → finish → store. Whatever happens to a
task (bad media, a model error, RQ's timeout, a crash of the batch), its
document ends ``completed`` or ``failed`` with a readable reason, and one
task's failure never fails the others.

``run_task(task_id)`` is the RQ job function for a task run on its own; it
re-raises failures so RQ's registries (``rq info``) stay truthful.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from backend.core import cancellation, chunks, eta, metrics, webhooks
from backend.core.clock import utcnow
from backend.core.errors import SegueError, TaskFailure

from . import runtime
from .pipeline import audio as audio_ops
from .pipeline import stages as pipeline
from .chunk_publisher import ChunkPublisher
from .engine import GenerationCanceled
from .model_cache import ModelUnavailable
from .progress_reporter import ProgressReporter
from .pipeline.windows import WindowedGeneration

log = logging.getLogger(__name__)

CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}
# Where each stage sits on the 0-100 progress bar.
PREPARED_AT, GENERATED_AT = 10.0, 96.0
PREPARE_THREADS = 4  # downloads are I/O-bound; tempo detection releases the GIL in numba
CANCEL_POLL_SECONDS = 0.25  # how often a running task checks for a cancel request (one Redis EXISTS)


def describe_failure(exc: BaseException, timeout: int) -> str:
    if isinstance(exc, JobTimeoutException):
        return f"the task ran longer than the {timeout} s limit and was stopped"
    if isinstance(exc, GenerationCanceled):
        return "canceled while generating"
    if isinstance(exc, SegueError):
        return exc.message
    if isinstance(exc, MemoryError):
        return "the worker ran out of memory while generating"
    text = str(exc).strip() or exc.__class__.__name__
    return f"generation failed: {text[:500]}"


@dataclass
class TaskRun:
    task_id: str
    doc: dict
    reporter: ProgressReporter
    started: float = field(default_factory=time.monotonic)
    prepared: pipeline.Prepared | None = None
    error: BaseException | None = None
    done: bool = False


def run_task(task_id: str) -> str:
    job = get_current_job()
    timeout = int(job.timeout) if job and job.timeout else runtime.get().settings.job_timeout
    outcome = run_tasks([task_id], timeout=timeout)[task_id]
    if outcome is not None:
        raise outcome
    return "done"


def run_tasks(task_ids: list[str], *, timeout: int) -> dict[str, BaseException | None]:
    """Run tasks together; returns each task's failure (None when it completed or was skipped)."""
    rt = runtime.get()
    batch_started = time.monotonic()
    outcomes: dict[str, BaseException | None] = {task_id: None for task_id in task_ids}
    runs = _claim(rt, task_ids)
    rt.current_tasks = [run.task_id for run in runs]
    try:
        for model, group in _by_model(runs).items():
            _run_group(rt, model, group)
    except BaseException as exc:  # timeout or crash of the whole batch: fail whatever is unfinished
        for run in runs:
            if not run.done:
                run.error = run.error or exc
        raise
    finally:
        for run in runs:
            if run.error is not None and not run.done:
                _fail(rt, run, timeout)
            outcomes[run.task_id] = run.error
        rt.current_tasks = []
        rt.tasks_done += len(runs)
        if runs:
            _record_batch(rt, time.monotonic() - batch_started, len(runs))
    return outcomes


def _record_batch(rt: runtime.Runtime, seconds: float, size: int) -> None:
    try:
        eta.record_batch_seconds(rt.services.redis, seconds)
        metrics.record_batch(rt.services.redis, size)
    except Exception as exc:  # statistics must never fail a batch
        log.warning("could not record batch statistics: %s", exc)


def _record_task(rt: runtime.Runtime, run: TaskRun, status: str, audio_seconds: float = 0.0) -> None:
    try:
        metrics.record_task(rt.services.redis, status=status, model=run.doc["model"],
                            seconds=time.monotonic() - run.started, audio_seconds=audio_seconds)
    except Exception as exc:  # statistics must never fail a task
        log.warning("could not record task statistics: %s", exc)


def _claim(rt: runtime.Runtime, task_ids: list[str]) -> list[TaskRun]:
    runs = []
    for task_id in task_ids:
        doc = rt.services.store.claim(task_id, rt.worker_id)
        if doc is None:
            log.info("task %s is no longer queued (canceled or taken); skipping", task_id)
            continue
        reporter = ProgressReporter(rt.services.progress, task_id)
        reporter.report(0.5, force=True)
        chunks.reset(rt.services.redis, task_id)  # a retry streams from the start again
        runs.append(TaskRun(task_id, doc, reporter))
    return runs


def _by_model(runs: list[TaskRun]) -> dict[str, list[TaskRun]]:
    groups: dict[str, list[TaskRun]] = {}
    for run in runs:
        groups.setdefault(run.doc["model"], []).append(run)
    return groups


def _prepare(rt: runtime.Runtime, run: TaskRun) -> None:
    try:
        request = run.doc["request"]
        if run.doc["kind"] == "generate":
            run.prepared = pipeline.prepare_generate(request, fetch_timeout=rt.settings.fetch_timeout,
                                                     allow_private=rt.settings.allow_private_urls,
                                                     cookies_file=rt.settings.ytdlp_cookies or None,
                                                     upstream_proxy=rt.settings.ytdlp_proxy or None)
        else:
            clip = rt.services.store.read_audio(run.doc["input_file_id"])
            run.prepared = pipeline.prepare_continue(request, clip)
        run.reporter.report(PREPARED_AT)
    except Exception as exc:
        run.error = exc


def _run_group(rt: runtime.Runtime, model: str, runs: list[TaskRun]) -> None:
    pool = ThreadPoolExecutor(max_workers=min(PREPARE_THREADS, len(runs)))
    try:
        list(pool.map(lambda run: _prepare(rt, run), runs))
    except BaseException:
        # The job's time limit (or a stop) fired while downloads ran: end the job now rather than
        # wait for them; what is still running ends by its own socket timeout and is discarded.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    ready = [run for run in runs if run.prepared is not None]
    if not ready:
        return
    try:
        engine = rt.models.get(model)
    except ModelUnavailable as exc:  # already says which model and why
        for run in ready:
            run.error = exc
        return
    except Exception as exc:
        for run in ready:
            run.error = TaskFailure(f"model {model} could not be loaded: {exc}")
        return
    for run in ready:
        request = run.prepared.request
        request.on_progress = run.reporter.stage(PREPARED_AT, GENERATED_AT)
        request.should_stop = _cancel_check(rt, run.task_id)
        request.on_audio = ChunkPublisher(rt.services.redis, run.task_id, engine.sample_rate)
    results = _generate_windowed(engine, [run.prepared.request for run in ready])
    for run, result in zip(ready, results):
        if isinstance(result, BaseException):
            run.error = result
            continue
        try:
            _store_result(rt, run, run.prepared.finish(result))
        except Exception as exc:
            run.error = exc
        finally:
            run.prepared = None  # drop the prompt and result arrays as soon as possible


def _generate_windowed(engine, requests: list) -> list:
    """Every request through as many 30 s windows as it needs; each round of windows is one batch."""
    windows = [WindowedGeneration(r, engine.sample_rate, engine.hop_length) for r in requests]
    outcomes: list = [None] * len(requests)
    active = list(range(len(requests)))
    while active:
        results = engine.generate_each([windows[i].next_request() for i in active])
        still = []
        for i, result in zip(active, results):
            if isinstance(result, BaseException):
                outcomes[i] = result
                continue
            windows[i].accept(result)
            if windows[i].done:
                outcomes[i] = windows[i].result()
            else:
                still.append(i)
        active = still
    return outcomes


def _cancel_check(rt: runtime.Runtime, task_id: str):
    """``should_stop`` for one task: True once its client asked to cancel (checked at most every 0.25 s)."""
    state = {"checked": 0.0, "requested": False}

    def should_stop() -> bool:
        now = time.monotonic()
        if not state["requested"] and now - state["checked"] >= CANCEL_POLL_SECONDS:
            state["checked"] = now
            try:
                state["requested"] = cancellation.is_requested(rt.services.redis, task_id)
            except redis.RedisError as exc:  # a Redis blip must not fail the generation; ask again later
                log.warning("could not check task %s for a cancel request: %s", task_id, exc)
        return state["requested"]

    return should_stop


def _fail(rt: runtime.Runtime, run: TaskRun, timeout: int) -> None:
    if isinstance(run.error, GenerationCanceled):
        status, message = "canceled", "canceled by request"
    else:
        status, message = "failed", describe_failure(run.error, timeout)
    if rt.services.store.finish(run.task_id, status, {"error": message, "progress": run.reporter.value},
                                only_from=("processing",)):
        _after_task_ended(rt, run.task_id)
        _record_task(rt, run, status)
    run.done = True
    log.warning("task %s %s: %s", run.task_id, status, message,
                exc_info=run.error if not isinstance(run.error, (SegueError, GenerationCanceled)) else None)


def _after_task_ended(rt: runtime.Runtime, task_id: str) -> None:
    """What follows a task's end: its webhook, and a short life for its streamed chunks."""
    try:
        webhooks.schedule(rt.services.redis, task_id)
        chunks.ended(rt.services.redis, task_id)
    except Exception as exc:  # the task's outcome is stored; a lost callback must not undo it
        log.warning("could not schedule the webhook of task %s: %s", task_id, exc)


def _store_result(rt: runtime.Runtime, run: TaskRun, outcome: pipeline.Outcome) -> None:
    task_id, doc = run.task_id, run.doc
    fmt = doc["request"].get("output_format") or "wav"
    audio = audio_ops.prevent_clipping(outcome.audio)
    data = audio_ops.encode_mp3(audio, outcome.sample_rate) if fmt == "mp3" else \
        audio_ops.encode_wav(audio, outcome.sample_rate)
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
        "processing_time_ms": int((time.monotonic() - run.started) * 1000),
        "result_bytes": len(data),
        "batch_size": len(rt.current_tasks),
    }
    finished = store.finish(task_id, "completed", fields, only_from=("processing",))
    run.done = True
    if not finished:
        # Canceled (or reaped) while we worked: keep the outcome it already has.
        store.delete_audio(file_id)
        log.info("task %s ended elsewhere while running; result discarded", task_id)
        return
    rt.services.progress.raise_to(task_id, 100.0)
    _after_task_ended(rt, task_id)
    # New audio only: a /continue result also holds the input clip, a /generate one its prompt.
    given = doc["request"].get("input_seconds") if doc["kind"] == "continue" else outcome.prompt_seconds
    _record_task(rt, run, "completed", max(0.0, fields["duration_seconds"] - float(given or 0.0)))
    # The input of a /continue is no longer needed once its task has a result.
    if doc.get("input_file_id") is not None:
        store.extend_audio_expiry(doc["input_file_id"], utcnow())
    log.info("task %s completed in %.1f s (batch of %d)", task_id, time.monotonic() - run.started,
             len(rt.current_tasks))
