"""The RQ queue: only task ids travel through Redis, inputs live in MongoDB.

Jobs are enqueued by dotted name so this module (and the API) never imports
the worker's torch code.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from rq import Queue
from rq.job import Job
from rq.exceptions import NoSuchJobError
from rq.intermediate_queue import IntermediateQueue
from rq.registry import StartedJobRegistry
from rq.utils import as_text, current_timestamp, parse_composite_key

JOB_FUNCTION = "worker.jobs.run_task"


def queue_key(name: str) -> str:
    """The Redis list RQ keeps a queue's waiting job ids in (what KEDA's redis trigger reads as listName)."""
    return Queue.redis_queue_namespace_prefix + name


@dataclass(frozen=True)
class Load:
    """The work on one queue: what waits, and what workers hold (what an autoscaler must keep workers for)."""

    queued: int  # job ids on RQ's list ``rq:queue:<name>``: the only part a list-length trigger sees
    running: int  # jobs workers hold: live executions in ``rq:wip:<name>`` plus jobs taken but not yet started

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

        Running jobs are not on the queue's list: RQ moves a job it hands out to an intermediate list
        (``<queue key>:intermediate``) and then records its execution in the StartedJobRegistry
        (``rq:wip:<name>``, ``job_id:execution_id`` members scored by heartbeat expiry), and Segue's sessions
        take waiting jobs off the list straight into that registry. A job is counted once even in the instant
        it is in both; only executions whose heartbeat has not expired count, and RQ's own cleanup (which
        moves expired ones to the failed registry) is left to the workers.
        """
        registry = StartedJobRegistry(queue=self.queue)
        pipe = self.queue.connection.pipeline(transaction=False)
        pipe.llen(self.queue.key)
        pipe.lrange(IntermediateQueue.get_intermediate_queue_key(self.queue.key), 0, -1)
        pipe.zrangebyscore(registry.key, f"({current_timestamp()}", "+inf")
        queued, taken, started = pipe.execute()
        running = {as_text(job_id) for job_id in taken}
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
