"""An RQ worker that runs queued tasks for the same model as one batch.

MusicGen decoding at batch 1 leaves the hardware mostly idle: a step at
batch 8 costs little more than at batch 1. So when this worker dequeues a
task, it also takes up to ``max_batch - 1`` other waiting tasks for the same
model (waiting while more keep arriving, see ``_take_companions``) and runs them through one
batched generate call (``worker.jobs.run_tasks``).

RQ stays truthful: every companion job is taken off the queue with an
atomic LREM (so two workers can never take the same job), gets its own
execution in the StartedJobRegistry and ends FINISHED or FAILED on its own,
exactly as if RQ had run it, so ``rq info`` shows what runs. Timeouts still
apply (the batch runs under the longest timeout of its jobs).

Like ``SimpleWorker`` it runs jobs in this process, so loaded models stay
warm; it also recycles itself (exits cleanly between batches) after
``recycle_after_tasks`` tasks or above ``recycle_above_mb`` of resident
memory, and the supervisor (``make run``, compose) starts a fresh one.
"""

from __future__ import annotations

import logging
import resource
import sys
import time

from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.job_lifecycle import call_exception_handlers
from rq.worker.base import WorkerStatus

from backend.core.errors import SegueError
from backend.core.jobqueue import JOB_FUNCTION

from . import jobs, runtime
from .engine import GenerationCanceled

log = logging.getLogger(__name__)

EXPECTED_FAILURES = (SegueError, GenerationCanceled)

SCAN_DEPTH = 200  # how far down the queue to look for companions
MAX_WAIT_FACTOR = 10  # a batch waits at most this many batch_wait periods for companions


def resident_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * resource.getpagesize() / (1024 * 1024)
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class BatchingWorker(SimpleWorker):
    def __init__(self, *args, max_batch: int = 8, batch_wait: float = 0.05, recycle_after_tasks: int = 0,
                 recycle_above_mb: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_batch = max(1, max_batch)
        self.batch_wait = max(0.0, batch_wait)
        self.recycle_after_tasks = recycle_after_tasks
        self.recycle_above_mb = recycle_above_mb
        self.batches_run = 0
        self.recycled = False

    def handle_exception(self, job: Job, *exc_info):
        # A task failure the job already recorded and logged in a sentence (a fetch refused,
        # a model that cannot be loaded, a cancel) is not a bug: no traceback for it.
        if isinstance(exc_info[1], EXPECTED_FAILURES):
            self.log.info("Worker %s: job %s ended failed: %s", self.name, job.id, exc_info[1])
            call_exception_handlers(self._exc_handlers, job, *exc_info)
            return
        super().handle_exception(job, *exc_info)

    def execute_job(self, job: Job, queue: Queue):
        if job.func_name != JOB_FUNCTION:
            return super().execute_job(job, queue)
        batch = [job] + self._take_companions(job, queue)
        executions = [self.prepare_execution(j) for j in batch]
        try:
            self._run_batch(batch, executions, queue)
        finally:
            self.set_state(WorkerStatus.IDLE)
            self.batches_run += 1
            self._maybe_recycle()

    # -- collecting companions ------------------------------------------------
    def _take_companions(self, primary: Job, queue: Queue) -> list[Job]:
        if self.max_batch <= 1:
            return []
        store = runtime.get().services.store
        doc = store.get_task(primary.args[0])
        if doc is None:
            return []
        model = doc["model"]
        taken: list[Job] = []
        seen: set[str] = {primary.id}
        # Wait while tasks keep arriving: clients of one burst reach the API a
        # few ms apart, so each new companion extends the wait by batch_wait,
        # up to MAX_WAIT_FACTOR * batch_wait in all. A lone task waits batch_wait.
        started = time.monotonic()
        deadline = started + self.batch_wait
        while len(taken) < self.max_batch - 1:
            candidates = [j for j in Job.fetch_many([i for i in queue.get_job_ids(0, SCAN_DEPTH) if i not in seen],
                                                    connection=self.connection)
                          if j is not None and j.func_name == JOB_FUNCTION]
            # Only new arrivals are looked up, and MongoDB only when there are some.
            wanted = {d["_id"] for d in store.tasks.find(
                {"_id": {"$in": [j.args[0] for j in candidates]}, "status": "queued", "model": model},
                {"_id": 1})} if candidates else set()
            for candidate in candidates:
                seen.add(candidate.id)
                if candidate.args[0] not in wanted or len(taken) >= self.max_batch - 1:
                    continue
                # LREM is atomic: only one worker can take a given job off the queue.
                if self.connection.lrem(queue.key, 1, candidate.id):
                    taken.append(candidate)
                    deadline = min(time.monotonic() + self.batch_wait,
                                   started + MAX_WAIT_FACTOR * self.batch_wait)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if taken:
            log.info("batching %d tasks for %s", len(taken) + 1, model)
        return taken

    # -- running ---------------------------------------------------------------
    def _run_batch(self, batch: list[Job], executions: list, queue: Queue) -> None:
        for index, job in enumerate(batch):
            # The primary came through RQ's intermediate queue; companions were taken directly.
            self.prepare_job_execution(job, remove_from_intermediate_queue=index == 0 and len(self.queues) == 1)
            job.started_at = now()
        timeout = max(int(j.timeout or queue.DEFAULT_TIMEOUT) for j in batch)
        task_ids = list(dict.fromkeys(j.args[0] for j in batch))
        try:
            with self.death_penalty_class(timeout, JobTimeoutException, job_id=batch[0].id):
                outcomes = jobs.run_tasks(task_ids, timeout=timeout)
        except BaseException:  # the batch was cut short (timeout, crash): unfinished tasks failed
            exc_info = sys.exc_info()
            store = runtime.get().services.store
            for job, execution in zip(batch, executions):
                doc = store.get_task(job.args[0]) or {}
                if doc.get("status") == "completed":
                    self._finalize_success(job, queue, execution, "done")
                else:
                    self._finalize_failure(job, queue, execution, exc_info)
            if not isinstance(exc_info[1], Exception):
                raise  # SystemExit / KeyboardInterrupt must still stop the worker
            return
        for job, execution in zip(batch, executions):
            error = outcomes.get(job.args[0])
            if error is None:
                self._finalize_success(job, queue, execution, "done")
            else:
                self._finalize_failure(job, queue, execution, (type(error), error, error.__traceback__))

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
