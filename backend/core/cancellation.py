"""Cancel requests for running tasks: a Redis flag the worker polls while generating.

A queued task is canceled on the spot (its job is taken off the queue and its
document ends ``canceled``). A running one cannot be stopped from the API
process, so the API raises this flag and the worker, which checks it every
few decoding steps, stops that task's row only, leaving its batch-mates alone.
"""

from __future__ import annotations

import redis

KEY = "segue:cancel:{}"
TTL_SECONDS = 2 * 86400


def request_cancel(connection: redis.Redis, task_id: str) -> None:
    connection.set(KEY.format(task_id), "1", ex=TTL_SECONDS)


def is_requested(connection: redis.Redis, task_id: str) -> bool:
    return bool(connection.exists(KEY.format(task_id)))
