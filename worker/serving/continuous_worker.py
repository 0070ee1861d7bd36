"""An RQ worker that keeps its engine full: jobs join the running decode as slots free up.

MusicGen decoding at batch 1 leaves the hardware mostly idle: a step for 8
tasks costs little more than a step for 1. The engine (``worker.engine``)
batches per step: a task joins the running batch at the next step and
leaves the moment it is done. This worker feeds it: when RQ hands it a job,
it opens a *session* for that job's model and, for as long as the session
has tasks, keeps taking more waiting jobs for that model off the queue, up
to the engine's task slots, while the running ones decode. Each job goes
through the stages of ``worker.serving.jobs`` on its own: preparation (downloads,
tempo) and storing on a small thread pool, generation in the engine.

RQ stays truthful: every extra job is taken off the queue with an atomic
LREM (so two workers, on one machine or many, never take the same job), gets
its own execution in the StartedJobRegistry with heartbeats while it runs,
and ends FINISHED or FAILED on its own, exactly as if RQ had run it alone,
so ``rq info`` shows what runs. Each job keeps its own time limit: past it,
the engine drops the task at its next step and it ends ``failed``. A worker
killed mid-session loses nothing: its tasks' documents still say
``processing`` for a worker whose heartbeat stops, and every other worker's
housekeeping (``backend.maintenance.reap_orphans``) requeues them.

Fairness between models: a session stops taking jobs once a job for another
model has waited longer than ``FAIR_WAIT_SECONDS``; it then finishes what it
holds and RQ's order decides what runs next.

Like ``SimpleWorker`` it runs jobs in this process, so loaded models stay
warm; it also recycles itself (exits cleanly between sessions) after
``recycle_after_tasks`` tasks or above ``recycle_above_mb`` of resident
memory, and the supervisor (``make run``, compose) starts a fresh one.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from rq import SimpleWorker
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers
from rq.queue import Queue
from rq.utils import now
from rq.worker.base import WorkerStatus

from backend.core.errors import SegueError
from backend.core.jobqueue import JOB_FUNCTIONS

from . import jobs, runtime
from ..engine import GenerationCanceled

log = logging.getLogger(__name__)

EXPECTED_FAILURES = (SegueError, GenerationCanceled, jobs.TaskTimedOut)

SCAN_DEPTH = 200  # how far down the queue to look for jobs of the session's model
POLL_SECONDS = 0.05  # how often the session looks at the queue while nothing else happens
HEARTBEAT_SECONDS = 5.0  # RQ heartbeats of the worker and of each job it holds
FAIR_WAIT_SECONDS = 30.0
STOP_GRACE_SECONDS = 60.0  # a task told to stop that the engine has not let go of by then is ended anyway
PREPARE_THREADS = 4  # downloads are I/O-bound; tempo detection releases the GIL in numba

PREPARING, GENERATING, STORING = "preparing", "generating", "storing"


def resident_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * resource.getpagesize() / (1024 * 1024)
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass(eq=False)
class Member:
    """One job of a session, on its way through ``worker.serving.jobs``' stages."""

    job: Job
    execution: object  # rq.executions.Execution
    deadline: float  # time.monotonic() past which it is stopped
    timeout: int
    run: jobs.TaskRun | None = None
    stage: str = PREPARING
    future: Future | None = None  # of the stage running now (pool or engine)


class ContinuousWorker(SimpleWorker):
    def __init__(self, *args, max_tasks: int = 8, recycle_after_tasks: int = 0, recycle_above_mb: float = 0.0,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.max_tasks = max(1, max_tasks)
        self.recycle_after_tasks = recycle_after_tasks
        self.recycle_above_mb = recycle_above_mb
        self.sessions_run = 0
        self.recycled = False

    def handle_exception(self, job: Job, *exc_info):
        # A task failure the job already recorded and logged in a sentence (a fetch refused,
        # a model that cannot be loaded, a cancel, its time limit) is not a bug: no traceback for it.
        if isinstance(exc_info[1], EXPECTED_FAILURES):
            self.log.info("Worker %s: job %s ended failed: %s", self.name, job.id, exc_info[1])
            call_exception_handlers(self._exc_handlers, job, *exc_info)
            return
        super().handle_exception(job, *exc_info)

    def execute_job(self, job: Job, queue: Queue):
        if job.func_name not in JOB_FUNCTIONS:
            return super().execute_job(job, queue)
        session = Session(self, queue)
        try:
            session.run(job)
        finally:
            self.set_state(WorkerStatus.IDLE)
            self.sessions_run += 1
            self._maybe_recycle()

    def takes_more(self, held: int) -> bool:
        """May a session holding ``held`` jobs take another? Not when stopping, nor past the recycle limit."""
        if self._stop_requested:
            return False
        if self.recycle_after_tasks and runtime.get().tasks_done + held >= self.recycle_after_tasks:
            return False
        return not (self.recycle_above_mb and resident_mb() > self.recycle_above_mb)

    def _maybe_recycle(self) -> None:
        done = runtime.get().tasks_done
        rss = resident_mb()
        reason = None
        if self.recycle_after_tasks and done >= self.recycle_after_tasks:
            reason = f"{done} tasks done (limit {self.recycle_after_tasks})"
        elif self.recycle_above_mb and rss > self.recycle_above_mb:
            reason = f"resident memory {rss:.0f} MB above {self.recycle_above_mb:g} MB"
        if reason:
            log.info("recycling worker %s: %s", self.name, reason)
            self.recycled = True
            self._stop_requested = True


class Session:
    """The jobs one worker runs for one model, from the job RQ handed it until none is left."""

    def __init__(self, worker: ContinuousWorker, queue: Queue):
        self.worker = worker
        self.queue = queue
        self.rt = runtime.get()
        self.pool = ThreadPoolExecutor(max_workers=PREPARE_THREADS, thread_name_prefix="segue-task")
        self.members: list[Member] = []
        self.model: str | None = None
        # job id -> (model if still queued, enqueued at, the job) of every queued job looked at
        self.seen: dict[str, tuple[str | None, float, Job | None]] = {}
        self.closed_to_new = False
        self._beat_at = 0.0

    # -- the loop --------------------------------------------------------------

    def run(self, primary: Job) -> None:
        try:
            self._add(primary, from_rq=True)
            while self.members:
                if not self.closed_to_new and self.worker.takes_more(len(self.members)):
                    self._take_more()
                self._advance()
                self._enforce_time_limits()
                self._heartbeat()
                self._wait()
        except BaseException:
            # The worker is stopping hard (SIGINT twice, SystemExit) or the session itself broke: every job
            # still held ends failed with the reason, and its task too, so nothing is left behind.
            exc_info = sys.exc_info()
            for member in list(self.members):
                if member.run is not None:
                    member.run.stop.set()
                    member.run.error = member.run.error or exc_info[1]
                    jobs.end(self.rt, member.run, member.timeout)
                self._finalize(member, exc_info)
            raise
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.rt.current_tasks = []

    def _wait(self) -> None:
        pending = [m.future for m in self.members if m.future is not None and not m.future.done()]
        if pending and len(pending) == len(self.members):
            wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)

    # -- taking jobs -----------------------------------------------------------

    def _active(self) -> int:
        """Jobs that hold (or will hold) an engine slot: preparing or generating."""
        return sum(1 for m in self.members if m.stage in (PREPARING, GENERATING))

    def _add(self, job: Job, *, from_rq: bool) -> None:
        execution = self.worker.prepare_execution(job)
        # A job RQ handed us came through its intermediate queue; jobs we took came straight off the queue.
        self.worker.prepare_job_execution(job, remove_from_intermediate_queue=from_rq and len(self.worker.queues) == 1)
        job.started_at = now()
        timeout = int(job.timeout or self.queue.DEFAULT_TIMEOUT)
        member = Member(job, execution, time.monotonic() + timeout, timeout)
        self.members.append(member)
        member.future = self.pool.submit(self._claim_and_prepare, member)

    def _claim_and_prepare(self, member: Member) -> None:
        run = jobs.claim(self.rt, member.job.args[0])
        member.run = run
        if run is None:
            return
        if self.model is None:
            self.model = run.model
        jobs.prepare(self.rt, run)

    def _take_more(self) -> None:
        if self.model is None or self._active() >= self.worker.max_tasks:
            return
        connection = self.worker.connection
        ids = self.queue.get_job_ids(0, SCAN_DEPTH)
        new = [i for i in ids if i not in self.seen]
        if new:
            found = [j for j in Job.fetch_many(new, connection=connection)
                     if j is not None and j.func_name in JOB_FUNCTIONS and j.args]
            models = self.rt.services.store.queued_models([j.args[0] for j in found])
            for job in found:
                enqueued = job.enqueued_at.timestamp() if job.enqueued_at else time.time()
                self.seen[job.id] = (models.get(job.args[0]), enqueued, job)
            for job_id in new:
                self.seen.setdefault(job_id, (None, 0.0, None))  # gone, not ours, or no longer queued
        for job_id in ids:
            model, enqueued, job = self.seen.get(job_id, (None, 0.0, None))
            if model is None:
                continue
            if model != self.model:
                if time.time() - enqueued > FAIR_WAIT_SECONDS:
                    log.info("session for %s takes no more jobs: a job for %s has waited %.0f s",
                             self.model, model, time.time() - enqueued)
                    self.closed_to_new = True
                    return
                continue
            if self._active() >= self.worker.max_tasks or not self.worker.takes_more(len(self.members)):
                return
            # LREM is atomic: only one worker can take a given job off the queue.
            if connection.lrem(self.queue.key, 1, job_id):
                self._add(job, from_rq=False)
                log.info("task %s joins the running session for %s", job.args[0], self.model)
            self.seen.pop(job_id, None)

    # -- moving jobs along -----------------------------------------------------

    def _advance(self) -> None:
        for member in list(self.members):
            future = member.future
            if future is None or not future.done():
                continue
            member.future = None
            error = future.exception()
            run = member.run
            if run is None:
                # Claimed by nobody (canceled or taken before it started) or the claim itself broke.
                self._finalize(member, None if error is None else (type(error), error, error.__traceback__))
                continue
            if member.stage == PREPARING:
                run.error = run.error or error
                engine = jobs.engine_for(self.rt, run)
                if engine is None:
                    self._end(member)
                    continue
                member.stage = GENERATING
                self.rt.current_tasks.append(run.task_id)
                try:
                    member.future = jobs.start(self.rt, run, engine)
                except Exception as exc:  # the engine refused it (closed, stopped)
                    run.error = exc
                    self._end(member)
            elif member.stage == GENERATING:
                if error is not None:
                    run.error = run.error or error
                    self._end(member)
                else:
                    member.stage = STORING
                    member.future = self.pool.submit(jobs.complete, self.rt, run, future.result())
            else:  # STORING
                run.error = run.error or error
                self._end(member)

    def _end(self, member: Member) -> None:
        run = member.run
        if run.task_id in self.rt.current_tasks:
            self.rt.current_tasks.remove(run.task_id)
        jobs.end(self.rt, run, member.timeout)
        error = run.error
        self._finalize(member, None if error is None else (type(error), error, error.__traceback__))

    def _finalize(self, member: Member, exc_info) -> None:
        if member in self.members:
            self.members.remove(member)
        if exc_info is None:
            self.worker._finalize_success(member.job, self.queue, member.execution, "done")
        else:
            self.worker._finalize_failure(member.job, self.queue, member.execution, exc_info)

    # -- limits and liveness ---------------------------------------------------

    def _enforce_time_limits(self) -> None:
        moment = time.monotonic()
        for member in list(self.members):
            if moment < member.deadline or member.run is None:
                continue
            if member.run.stop.is_set():
                if member.stage == GENERATING and moment > member.deadline + STOP_GRACE_SECONDS:
                    log.error("task %s: the engine did not let go of it %.0f s after its time limit; ending it",
                              member.run.task_id, STOP_GRACE_SECONDS)
                    member.future = None
                    self._end(member)
                continue
            run = member.run
            run.error = jobs.TaskTimedOut(f"task {run.task_id} passed its {member.timeout} s limit")
            run.stop.set()  # generating: the engine drops it at its next step
            if member.stage == PREPARING:
                # A download cannot be interrupted: end the task now; the thread's outcome is discarded
                # when its socket timeout ends it.
                member.future = None
                self._end(member)

    def _heartbeat(self) -> None:
        moment = time.monotonic()
        if moment - self._beat_at < HEARTBEAT_SECONDS:
            return
        self._beat_at = moment
        for member in self.members:
            try:
                self.worker.maintain_heartbeats(member.job, member.execution)
            except Exception as exc:  # a Redis blip: the next beat tries again
                log.warning("could not send the heartbeat of job %s: %s", member.job.id, exc)
