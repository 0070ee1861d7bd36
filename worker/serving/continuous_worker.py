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

Nothing taken is ever lost: a job leaves the queue only into this worker's
entry in the ledger (``backend.core.taking``, one atomic script), and stays
there until its task has an outcome, so housekeeping finds the tasks of a
worker that died at any instant. A Redis or MongoDB outage pauses the
session (``backend.core.outage``) rather than failing what it holds.

Stopping (SIGTERM from compose, Kubernetes or Ctrl-C) drains: the session
takes nothing more, finishes what it holds for up to ``SEGUE_DRAIN_SECONDS``,
then hands whatever is left back to the front of the queue at once
(``jobs.hand_back``); a second SIGTERM ends the drain the same way. No task
ends ``failed`` because a worker stopped.

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

from backend.core import faults, outage, taking
from backend.core.errors import SegueError
from backend.core.jobqueue import JOB_FUNCTIONS
from backend.core.maintenance import queue_at_front

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
    handed_back: bool = False  # given back before its claim was made: the claim must not happen


class ContinuousWorker(SimpleWorker):
    def __init__(self, *args, max_tasks: int = 8, recycle_after_tasks: int = 0, recycle_above_mb: float = 0.0,
                 drain_seconds: float = 60.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_tasks = max(1, max_tasks)
        self.recycle_after_tasks = recycle_after_tasks
        self.recycle_above_mb = recycle_above_mb
        self.drain_seconds = drain_seconds
        self.sessions_run = 0
        self.recycled = False
        self.in_session = False
        self.drain_until: float | None = None  # monotonic deadline of the drain once a stop was asked
        self.hand_back_now = False  # a second stop signal: give back what is held without waiting

    # -- stopping: drain, then hand back ---------------------------------------

    def request_stop(self, signum, frame):
        if self.drain_until is None:
            self.drain_until = time.monotonic() + self.drain_seconds
            runtime.get().draining = True
            if self.in_session:
                self.log.warning("Worker %s: stopping: taking no more tasks, finishing what it holds for up "
                                 "to %.0f s, then handing the rest back (a second signal hands back now)",
                                 self.name, self.drain_seconds)
        super().request_stop(signum, frame)

    def _shutdown(self):
        # RQ raises StopRequested from the signal handler when it thinks the worker idle; inside a session that
        # would tear through the jobs it holds. A session drains instead and returns when done.
        if self.in_session:
            self._stop_requested = True
            self.set_shutdown_requested_date()
            return
        super()._shutdown()

    def request_force_stop(self, signum, frame):
        if self.in_session:
            if self._shutdown_requested_date is not None and \
                    (now() - self._shutdown_requested_date).total_seconds() < 1:
                return  # the same stop delivered twice (a process group and a supervisor)
            self.log.warning("Worker %s: second stop signal: handing back what it holds now", self.name)
            self.hand_back_now = True
            return
        super().request_force_stop(signum, frame)

    def must_hand_back(self) -> bool:
        return self.hand_back_now or (self.drain_until is not None and time.monotonic() >= self.drain_until)

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
        self.in_session = True
        try:
            session.run(job)
        finally:
            self.in_session = False
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
                if self.worker.must_hand_back():
                    self._hand_back_all("the worker was stopped before it finished this task; handed back")
                    break
                if not self.closed_to_new and self.worker.takes_more(len(self.members)):
                    try:
                        self._take_more()
                    except Exception as exc:  # Redis or MongoDB restarting: the held tasks go on; look again later
                        log.warning("session for %s could not look for more jobs: %s", self.model, exc)
                self._advance()
                self._enforce_time_limits()
                self._heartbeat()
                self._wait()
        except (SystemExit, KeyboardInterrupt):
            # Stopped hard: what is held goes back to the queue, not to `failed`.
            self._hand_back_all("the worker stopped abruptly while running this task; handed back")
            raise
        except BaseException:
            # The session itself broke (a bug): every job still held ends failed with the reason, and its
            # task too, so nothing is left behind.
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

    def _hand_back_all(self, reason: str) -> None:
        for member in list(self.members):
            member.handed_back = True
            run = member.run
            ended = run is not None and run.done
            if run is not None and not run.done:
                jobs.hand_back(self.rt, run, reason)
            elif run is None:
                # Taken but not yet claimed: its task is still `queued`; put a job for it back on the queue.
                task_id = member.job.args[0]
                try:
                    queue_at_front(self.rt.services, task_id, "h")
                    log.info("task %s (not yet claimed) handed back to the queue", task_id)
                except Exception as exc:  # housekeeping's requeue_lost finds it once this worker is gone
                    log.warning("could not hand task %s back now: %s", task_id, exc)
            self._finalize(member, None, result="done" if ended else "handed back")

    def _wait(self) -> None:
        pending = [m.future for m in self.members if m.future is not None and not m.future.done()]
        if pending and len(pending) == len(self.members):
            wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)

    # -- taking jobs -----------------------------------------------------------

    def _active(self) -> int:
        """Jobs that hold (or will hold) an engine slot: preparing or generating."""
        return sum(1 for m in self.members if m.stage in (PREPARING, GENERATING))

    def _add(self, job: Job, *, from_rq: bool) -> None:
        connection = self.worker.connection
        if from_rq:
            # Into this worker's ledger before it leaves RQ's intermediate list: always findable.
            outage.retry(f"record job {job.id}",
                         lambda: taking.hold(connection, self.queue.name, job.id, self.worker.name, job.args[0]))
        execution = outage.retry(f"register job {job.id}", lambda: self.worker.prepare_execution(job))
        # A job RQ handed us came through its intermediate queue; jobs we took came straight off the queue.
        outage.retry(f"start job {job.id}", lambda: self.worker.prepare_job_execution(
            job, remove_from_intermediate_queue=from_rq and len(self.worker.queues) == 1))
        job.started_at = now()
        timeout = int(job.timeout or self.queue.DEFAULT_TIMEOUT)
        member = Member(job, execution, time.monotonic() + timeout, timeout)
        self.members.append(member)
        member.future = self.pool.submit(self._claim_and_prepare, member)

    def _claim_and_prepare(self, member: Member) -> None:
        task_id = member.job.args[0]
        faults.hold("taken", task_id)
        if member.handed_back:
            return
        run = jobs.claim(self.rt, task_id)
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
            # One atomic script moves it off the queue into this worker's ledger: only one worker can take a
            # given job, and a worker killed right after still leaves it findable.
            if taking.take(connection, self.queue.key, self.queue.name, job_id, self.worker.name, job.args[0]):
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

    def _finalize(self, member: Member, exc_info, *, result: str = "done") -> None:
        if member in self.members:
            self.members.remove(member)
        job = member.job

        def record() -> None:
            if exc_info is None:
                self.worker._finalize_success(job, self.queue, member.execution, result)
            else:
                self.worker._finalize_failure(job, self.queue, member.execution, exc_info)

        # RQ's records first, then the ledger: a worker that dies in between leaves an entry for a task that
        # has its outcome, which housekeeping simply drops.
        outage.retry(f"record the end of job {job.id}", record)
        outage.retry(f"release job {job.id}", lambda: taking.release(self.worker.connection, self.queue.name, job.id))

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
