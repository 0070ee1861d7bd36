"""The RQ queue: only task ids travel through Redis, inputs live in MongoDB.

Jobs are enqueued by dotted name so this module (and the API) never imports
the worker's torch code.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import redis
from rq import Queue
from rq.job import Job
from rq.exceptions import NoSuchJobError
from rq.intermediate_queue import IntermediateQueue
from rq.registry import StartedJobRegistry
from rq.utils import as_text, current_timestamp, parse_composite_key

from backend.core import taking

JOB_FUNCTION = "worker.serving.jobs.run_task"
# Jobs queued before worker/ was grouped into packages carry the old name; a Redis that persists its
# queue across an upgrade still holds them, so workers take those too (the job is only a task id).
LEGACY_JOB_FUNCTIONS = ("worker.jobs.run_task",)
JOB_FUNCTIONS = (JOB_FUNCTION,) + LEGACY_JOB_FUNCTIONS

# A task's first job has the task's id; each later job (a retry after a crash "r", a lost job queued again
# "q", a hand-back by a stopping worker "h") gets a fresh id so RQ's records of earlier runs stay apart.
_LATER_JOB = re.compile(r"^(?P<task>.+)-(?:[rqh][0-9a-f]{8}|r\d+|q\d+)$")


def later_job_id(task_id: str, kind: str) -> str:
    assert kind in ("r", "q", "h")
    return f"{task_id}-{kind}{uuid.uuid4().hex[:8]}"


def task_of_job(job_id: str) -> str:
    """The task a job id belongs to (task ids may contain dashes themselves)."""
    match = _LATER_JOB.match(job_id)
    return match.group("task") if match else job_id


def queue_key(name: str) -> str:
    """The Redis list RQ keeps a queue's waiting job ids in (what KEDA's redis trigger reads as listName)."""
    return Queue.redis_queue_namespace_prefix + name


@dataclass(frozen=True)
class Load:
    """The work on one queue: what waits, and what workers hold (what an autoscaler must keep workers for)."""

    queued: int  # job ids on RQ's list ``rq:queue:<name>``: the only part a list-length trigger sees
    running: int  # jobs workers hold: being handed over, in the ledger of taken jobs, or running in ``rq:wip``

    @property
    def total(self) -> int:
        return self.queued + self.running


class JobQueue:
    def __init__(self, connection: redis.Redis, name: str, job_timeout: int):
        self.queue = Queue(name, connection=connection)
        self.job_timeout = job_timeout

    @property
    def name(self) -> str:
        return self.queue.name

    def enqueue(self, task_id: str, *, job_id: str | None = None, at_front: bool = False) -> str:
        """Queue a task; a retry passes a fresh ``job_id`` so RQ's records of the lost run stay apart."""
        job_id = job_id or task_id
        self.queue.enqueue_call(
            JOB_FUNCTION,
            args=(task_id,),
            job_id=job_id,
            timeout=self.job_timeout,
            # The task document holds the outcome; RQ's copy is for `rq info` only.
            result_ttl=3600,
            failure_ttl=7 * 86400,
            description=f"segue task {task_id}",
            at_front=at_front,
        )
        return job_id

    def position(self, job_id: str) -> int | None:
        """1-based place in line (1 = next to run), or None when not waiting."""
        index = self.queue.get_job_position(job_id)
        return None if index is None else index + 1

    def depth(self) -> int:
        return self.queue.count

    def load(self) -> Load:
        """Queued and running jobs, read in one round trip without changing anything.

        Running jobs are not on the queue's list. RQ moves a job it hands out to its intermediate list
        (``<queue key>:intermediate``); a worker records every job it takes in the ledger of taken jobs
        (``backend.core.taking``: RQ's hand-overs, and the jobs a running session takes straight off the
        list); and each job it runs has an execution in RQ's StartedJobRegistry (``rq:wip:<name>``,
        ``job_id:execution_id`` members scored by heartbeat expiry). A job is counted once however many of
        these hold it at an instant. Ledger entries of a worker that died count until housekeeping requeues
        their tasks and drops them: that work still needs a worker. Nothing here cleans anything up.
        """
        registry = StartedJobRegistry(queue=self.queue)
        pipe = self.queue.connection.pipeline(transaction=False)
        pipe.llen(self.queue.key)
        pipe.lrange(IntermediateQueue.get_intermediate_queue_key(self.queue.key), 0, -1)
        pipe.hkeys(taking.ledger_key(self.queue.name))
        pipe.zrangebyscore(registry.key, f"({current_timestamp()}", "+inf")
        queued, handing_over, held, started = pipe.execute()
        running = {as_text(job_id) for job_id in (*handing_over, *held)}
        running.update(parse_composite_key(as_text(member))[0] for member in started)
        return Load(queued=int(queued), running=len(running))

    def remove(self, job_id: str) -> bool:
        """Take a waiting job off the queue; True when it was there."""
        return bool(self.queue.connection.lrem(self.queue.key, 0, job_id))

    def job_status(self, job_id: str) -> str | None:
        try:
            return Job.fetch(job_id, connection=self.queue.connection).get_status()
        except NoSuchJobError:
            return None
