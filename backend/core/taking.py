"""Which worker holds which job: a ledger that keeps every taken job findable until its task ends.

RQ moves a job it hands a worker into its intermediate list (LMOVE), then
into its started registry. A worker that takes *more* jobs for its running
batch takes them straight off the queue. Either way there used to be a moment
(taken, not yet claimed in MongoDB) when a worker killed there left its task
``queued`` in MongoDB, on no queue, with an RQ job that says ``started`` and
later ``abandoned``: nobody ever ran it again.

The ledger closes that gap, in the manner of Sidekiq Pro's reliable fetch and
RQ's own intermediate queue: a Redis hash ``job id -> "worker|task id"``.

- ``take`` moves a waiting job off the queue and into the ledger in one Lua
  script: at every instant the job is on the queue or in the ledger.
- ``hold`` records a job RQ handed over (it is in RQ's intermediate list until
  then) before the worker removes it from that list.
- ``release`` drops the entry once the task has its outcome (or was handed back).
- ``snapshot`` reads the queue, the intermediate list and the ledger in one
  atomic step, for housekeeping: a ``queued`` task whose job is in none of
  them, or only in the entry of a dead worker, is lost and is queued again
  (``backend.core.maintenance.requeue_lost``).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

LEDGER_KEY = "segue:taken:{}"  # per queue name

_TAKE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  return 1
end
return 0
"""

_SNAPSHOT = """
return {redis.call('LRANGE', KEYS[1], 0, -1), redis.call('LRANGE', KEYS[2], 0, -1), redis.call('HGETALL', KEYS[3])}
"""


def ledger_key(queue_name: str) -> str:
    return LEDGER_KEY.format(queue_name)


def _entry(worker_id: str, task_id: str) -> str:
    return f"{worker_id}|{task_id}"


def take(connection: redis.Redis, queue_key: str, queue_name: str, job_id: str, worker_id: str,
         task_id: str) -> bool:
    """Move ``job_id`` off the queue into the ledger under ``worker_id``; False when another took it first."""
    script = connection.register_script(_TAKE)
    return bool(script(keys=[queue_key, ledger_key(queue_name)], args=[job_id, _entry(worker_id, task_id)]))


def hold(connection: redis.Redis, queue_name: str, job_id: str, worker_id: str, task_id: str) -> None:
    """Record a job RQ handed this worker (still in RQ's intermediate list while this runs)."""
    connection.hset(ledger_key(queue_name), job_id, _entry(worker_id, task_id))


def release(connection: redis.Redis, queue_name: str, job_id: str) -> None:
    connection.hdel(ledger_key(queue_name), job_id)


@dataclass
class Holding:
    job_id: str
    worker_id: str
    task_id: str


@dataclass
class Snapshot:
    waiting: set[str]  # job ids on the queue
    handing_over: set[str]  # job ids in RQ's intermediate list (dequeued, not yet recorded)
    held: dict[str, Holding]  # job id -> who holds it

    def held_task_ids(self, alive: set[str]) -> set[str]:
        return {h.task_id for h in self.held.values() if h.worker_id in alive}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def snapshot(connection: redis.Redis, queue_key: str, intermediate_key: str, queue_name: str) -> Snapshot:
    script = connection.register_script(_SNAPSHOT)
    waiting, handing, flat = script(keys=[queue_key, intermediate_key, ledger_key(queue_name)])
    held = {}
    for raw_job, raw_entry in zip(flat[::2], flat[1::2]):
        job_id = _text(raw_job)
        worker_id, _sep, task_id = _text(raw_entry).partition("|")
        held[job_id] = Holding(job_id, worker_id, task_id)
    return Snapshot({_text(j) for j in waiting}, {_text(j) for j in handing}, held)
