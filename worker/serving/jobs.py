"""Task execution: the boundary where every task gets its outcome.

A task goes through four stages, each a function here:

1. ``claim``: its document moves ``queued`` -> ``processing`` for this worker
   (a task canceled or taken meanwhile is skipped);
2. ``prepare``: download or decode the input, detect the tempo, choose the
   length (I/O-bound: the worker runs it on a thread);
3. ``start``: hand the request to the model's engine, where it joins the
   running decode at the next step (``worker.engine``), with its progress,
   cancel checks and audio chunks wired to Redis;
4. ``complete``: encode and store the result; then the webhook.

Whatever happens at any stage (bad media, a model error, its time limit, a
crash), ``end`` leaves the document ``completed``, ``failed`` or
``canceled`` with a readable reason, and one task's failure never touches
another's. ``worker.serving.continuous_worker`` drives many tasks through these
stages at once; ``run_task(task_id)`` is the RQ job function that runs one
on its own (any RQ worker), re-raising its failure so RQ's registries stay
truthful.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field

from rq import get_current_job
from rq.timeouts import JobTimeoutException

from backend.core import cancellation, chunks, eta, faults, metrics, outage, webhooks
from backend.core.clock import utcnow
from backend.core.errors import SegueError, TaskFailure
from backend.core.maintenance import queue_at_front, restart_from_zero
from backend.core.tasks import CONTENT_TYPES

from . import runtime, side_calls
from ..pipeline import audio as audio_ops
from ..pipeline import stages as pipeline
from .chunk_publisher import ChunkPublisher
from ..engine import GenerationCanceled, MusicGenEngine
from ..models.model_cache import ModelUnavailable
from .progress_reporter import ProgressReporter

log = logging.getLogger(__name__)

# Where each stage sits on the 0-100 progress bar.
PREPARED_AT, GENERATED_AT = 10.0, 96.0
CANCEL_POLL_SECONDS = 0.25  # how often a running task checks for a cancel request (one Redis EXISTS)


class TaskTimedOut(JobTimeoutException):
    """The task's time limit passed (its job's timeout); it was stopped."""


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
    """One task on its way through the stages."""

    task_id: str
    doc: dict
    reporter: ProgressReporter
    run_id: str  # this attempt's token on the task document: writes of a stale run are refused
    started: float = field(default_factory=time.monotonic)
    prepared: pipeline.Prepared | None = None
    error: BaseException | None = None
    done: bool = False  # its document has its final status
    batch_size: int = 1  # the most tasks the engine decoded beside it (itself included)
    stop: threading.Event = field(default_factory=threading.Event)  # set: the engine drops it at its next step
    # Set when the worker hands the task back (stopping): waits for a service outage end, nothing is stored.
    abandon: threading.Event = field(default_factory=threading.Event)

    @property
    def model(self) -> str:
        return self.doc["model"]


def run_task(task_id: str) -> str:
    """The RQ job function: one task through every stage, on its own."""
    rt = runtime.get()
    job = get_current_job()
    timeout = int(job.timeout) if job and job.timeout else rt.settings.job_timeout
    run = claim(rt, task_id)
    if run is None:
        return "skipped"
    rt.current_tasks.append(task_id)
    try:
        prepare(rt, run)
        engine = engine_for(rt, run)
        if engine is not None:
            future = start(rt, run, engine)
            try:
                result = future.result()
            except BaseException:
                run.stop.set()  # RQ's time limit (or a stop): the engine drops the task at its next step
                raise
            complete(rt, run, result)
    except BaseException as exc:
        run.error = run.error or exc
        raise
    finally:
        rt.current_tasks.remove(task_id)
        end(rt, run, timeout)
    if run.error is not None:
        raise run.error
    return "done"


def claim(rt: runtime.Runtime, task_id: str) -> TaskRun | None:
    """Take a queued task for this worker; None when it is no longer queued (canceled or taken).

    Waits out a MongoDB or Redis outage rather than failing: the job is in this worker's ledger
    (``backend.core.taking``) meanwhile, so a worker that dies while waiting loses nothing.
    """
    run_id = uuid.uuid4().hex
    faults.hold("claim", task_id)
    store = rt.services.store
    doc = outage.retry(f"claim task {task_id}", lambda: store.claim(task_id, rt.worker_id, run_id))
    if doc is None:
        log.info("task %s is no longer queued (canceled or taken); skipping", task_id)
        return None

    # A retry's progress starts again from 0, and its audio stream from the start.
    outage.retry(f"reset the progress of task {task_id}", lambda: restart_from_zero(rt.services, task_id))
    reporter = ProgressReporter(rt.services.progress, task_id)
    reporter.report(0.5, force=True)
    return TaskRun(task_id, doc, reporter, run_id)


def prepare(rt: runtime.Runtime, run: TaskRun) -> None:
    """Everything before the model: download or decode, tempo, length; a failure is kept in ``run.error``."""
    faults.hold("preparing", run.task_id)
    try:
        request = run.doc["request"]
        if run.doc["kind"] == "generate":
            run.prepared = pipeline.prepare_generate(request, fetch_timeout=rt.settings.fetch_timeout,
                                                     allow_private=rt.settings.allow_private_urls,
                                                     cookies_file=rt.settings.ytdlp_cookies or None,
                                                     upstream_proxy=rt.settings.ytdlp_proxy or None)
        else:
            clip = outage.retry(f"read the input of task {run.task_id}",
                                lambda: rt.services.store.read_audio(run.doc["input_file_id"]), give_up=run.abandon)
            run.prepared = pipeline.prepare_continue(request, clip)
        run.reporter.report(PREPARED_AT)
    except Exception as exc:
        run.error = exc


def engine_for(rt: runtime.Runtime, run: TaskRun) -> MusicGenEngine | None:
    """The loaded engine for the task's model (loading it if need be); None, with ``run.error``, when it
    cannot run (it failed to prepare, or the model cannot be loaded)."""
    if run.error is not None or run.prepared is None:
        return None
    try:
        return rt.models.get(run.model)
    except ModelUnavailable as exc:  # already says which model and why
        run.error = exc
    except Exception as exc:
        run.error = TaskFailure(f"model {run.model} could not be loaded: {exc}")
    return None


def start(rt: runtime.Runtime, run: TaskRun, engine: MusicGenEngine) -> Future:
    """Hand the prepared request to the engine; the future completes when the task leaves it."""
    request = run.prepared.request
    report = run.reporter.stage(PREPARED_AT, GENERATED_AT, in_background=True)

    def on_progress(step: int, total: int) -> None:
        run.batch_size = max(run.batch_size, engine.running_tasks)  # called on the engine's thread
        if step >= 1:
            faults.hold("generating", run.task_id)
        report(step, total)  # written to Redis on the side-call thread (worker.serving.side_calls)

    request.on_progress = on_progress
    request.should_stop = _stop_check(rt, run)
    request.on_audio = ChunkPublisher(rt.services.redis, run.task_id, engine.sample_rate)
    return engine.submit(request)


def complete(rt: runtime.Runtime, run: TaskRun, result) -> None:
    """Finish the audio (splice, trim) and store it; a failure is kept in ``run.error``."""
    try:
        _store_result(rt, run, run.prepared.finish(result))
    except Exception as exc:
        run.error = exc
    finally:
        run.prepared = None  # drop the prompt and result arrays as soon as possible


def end(rt: runtime.Runtime, run: TaskRun, timeout: int) -> None:
    """The task's last word: a failure is stored with its reason; statistics are counted."""
    if run.error is not None and not run.done:
        _fail(rt, run, timeout)
    run.prepared = None
    rt.tasks_done += 1
    try:
        eta.record_batch_seconds(rt.services.redis, time.monotonic() - run.started)
        metrics.record_batch(rt.services.redis, run.batch_size)
    except Exception as exc:  # statistics must never fail a task
        log.warning("could not record task statistics: %s", exc)


def hand_back(rt: runtime.Runtime, run: TaskRun, reason: str) -> bool:
    """Give an unfinished task back to the queue, at its front (the worker is stopping).

    Only while this run still holds it; its listeners see it ``queued`` again with progress 0, its audio
    stream restarts, and the hand-back does not count against its retries. True when it was handed back.
    """
    run.abandon.set()
    run.stop.set()  # generating: the engine drops it at its next step
    run.done = True  # whatever happens below, this run stores nothing more (never `failed` for a stop)
    services = rt.services
    try:
        if not services.store.requeue(run.task_id, reason, run=run.run_id, handed_back=True):
            return False  # it ended meanwhile (completed, canceled): nothing to give back
    except Exception as exc:  # MongoDB down: the task stays processing; housekeeping requeues it later
        log.warning("could not hand task %s back now (%s); housekeeping will requeue it", run.task_id, exc)
        return False
    try:
        queue_at_front(services, run.task_id, "h")
    except Exception as exc:  # queued in MongoDB but on no queue: housekeeping's requeue_lost finds it
        log.warning("task %s handed back but not queued again (%s); housekeeping will", run.task_id, exc)
    log.info("task %s handed back to the queue: %s", run.task_id, reason)
    return True


def _record_task(rt: runtime.Runtime, run: TaskRun, status: str, audio_seconds: float = 0.0) -> None:
    try:
        metrics.record_task(rt.services.redis, status=status, model=run.model,
                            seconds=time.monotonic() - run.started, audio_seconds=audio_seconds)
    except Exception as exc:  # statistics must never fail a task
        log.warning("could not record task statistics: %s", exc)


def _stop_check(rt: runtime.Runtime, run: TaskRun):
    """``should_stop`` for one task: True once the worker stops it (``run.stop``: its time limit) or its
    client asked to cancel (asked every 0.25 s on the side-call thread, never waited for)."""
    task_id = run.task_id
    requested = side_calls.Polled(lambda: cancellation.is_requested(rt.services.redis, task_id),
                                  CANCEL_POLL_SECONDS, initial=False, on_error=None,
                                  what=f"task {task_id} for a cancel request")

    def should_stop() -> bool:
        return run.stop.is_set() or requested.value()

    return should_stop


def _fail(rt: runtime.Runtime, run: TaskRun, timeout: int) -> None:
    if isinstance(run.error, GenerationCanceled) and not run.stop.is_set():
        status, message = "canceled", "canceled by request"
    else:
        status, message = "failed", describe_failure(run.error, timeout)
    store = rt.services.store
    try:
        ended = outage.retry(f"store the outcome of task {run.task_id}",
                             lambda: store.finish(run.task_id, status, {"error": message,
                                                                       "progress": run.reporter.value},
                                                  only_from=("processing",), run=run.run_id),
                             give_up=run.abandon)
    except outage.GaveUp:
        ended = False
    if ended:
        _after_task_ended(rt, run)
        _record_task(rt, run, status)
    run.done = True
    log.warning("task %s %s: %s", run.task_id, status, message,
                exc_info=run.error if not isinstance(run.error, (SegueError, GenerationCanceled)) else None)


def _after_task_ended(rt: runtime.Runtime, run: TaskRun) -> None:
    """What follows a task's end: its webhook, and a short life for its streamed chunks.

    Waits out a Redis outage. Should the worker die first, housekeeping schedules the webhook of an ended
    task that has none pending (``backend.core.maintenance.reschedule_webhooks``), so it is never lost.
    """
    task_id = run.task_id

    def schedule() -> None:
        webhooks.schedule(rt.services.redis, task_id)
        chunks.ended(rt.services.redis, task_id)

    try:
        outage.retry(f"schedule the webhook of task {task_id}", schedule, give_up=run.abandon)
    except outage.GaveUp:
        log.warning("task %s: its webhook is left to housekeeping (the worker stopped during an outage)", task_id)


def _store_result(rt: runtime.Runtime, run: TaskRun, outcome: pipeline.Outcome) -> None:
    task_id, doc = run.task_id, run.doc
    fmt = doc["request"].get("output_format") or "wav"
    audio = audio_ops.prevent_clipping(outcome.audio)
    data = audio_ops.encode_mp3(audio, outcome.sample_rate) if fmt == "mp3" else \
        audio_ops.encode_wav(audio, outcome.sample_rate)
    store = rt.services.store
    # A retried upload whose first reply was lost leaves an orphan file; it expires with its metadata.
    file_id = outage.retry(f"store the result of task {task_id}",
                           lambda: store.put_audio(task_id, "result", data, CONTENT_TYPES[fmt]), give_up=run.abandon)
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
        "batch_size": run.batch_size,
    }
    faults.hold("storing", task_id)
    finished = outage.retry(f"mark task {task_id} completed",
                            lambda: store.finish(task_id, "completed", fields, only_from=("processing",),
                                                 run=run.run_id), give_up=run.abandon)
    run.done = True
    if not finished:
        # Canceled (or reaped) while we worked: keep the outcome it already has.
        store.delete_audio(file_id)
        log.info("task %s ended elsewhere while running; result discarded", task_id)
        return
    try:  # a run that died after uploading (its task retried) left a file nobody will read
        store.discard_other_results(task_id, file_id)
    except Exception as exc:  # it expires with its metadata anyway
        log.warning("could not delete earlier runs' results of task %s: %s", task_id, exc)
    try:
        rt.services.progress.raise_to(task_id, 100.0)
    except Exception as exc:  # the document says 100 already (completed); the key is a cache of it
        log.warning("could not write the final progress of task %s: %s", task_id, exc)
    _after_task_ended(rt, run)
    # New audio only: a /continue result also holds the input clip, a /generate one its prompt.
    given = doc["request"].get("input_seconds") if doc["kind"] == "continue" else outcome.prompt_seconds
    _record_task(rt, run, "completed", max(0.0, fields["duration_seconds"] - float(given or 0.0)))
    # The input of a /continue is no longer needed once its task has a result.
    if doc.get("input_file_id") is not None:
        try:
            store.extend_audio_expiry(doc["input_file_id"], utcnow())
        except Exception as exc:  # housekeeping: the input still expires with the task
            log.warning("could not shorten the life of task %s's input: %s", task_id, exc)
    log.info("task %s completed in %.1f s (beside up to %d tasks)", task_id, time.monotonic() - run.started,
             run.batch_size - 1)
