"""The cap on open ``/events`` and ``/stream`` connections per caller (``SEGUE_MAX_STREAMS_PER_CALLER``).

A caller is the API key when keys are on, else the client IP (``auth.current_owner``).
The count lives in Redis, so it holds across gunicorn workers and API hosts:
one sorted set per caller whose members are the open streams, scored with the
time their lease runs out. An open stream renews its lease while it runs
(``Lease.renew``, called at least once per keep-alive period); a stream whose
process crashed is not renewed and stops counting after ``LEASE_SECONDS``, so a
crash never leaks a caller's allowance for long. Adding the new member and
counting happen in one transaction, so two processes cannot both admit the
last slot.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from dataclasses import dataclass

import redis

KEY = "segue:streams:{}"
LEASE_SECONDS = 60.0
RENEW_SECONDS = 20.0
#: Retry-After of the 429: streams end at unknown times; a listener that waits a little finds a slot or not.
RETRY_AFTER_SECONDS = 5

_ids = itertools.count()
_PROCESS = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Lease:
    connection: redis.Redis
    key: str
    member: str
    renewed: float

    def renew(self) -> None:
        now = time.time()
        if now - self.renewed < RENEW_SECONDS:
            return
        self.renewed = now
        try:
            pipe = self.connection.pipeline(transaction=False)
            pipe.zadd(self.key, {self.member: now + LEASE_SECONDS}, xx=True)
            pipe.expire(self.key, int(LEASE_SECONDS) + 1)
            pipe.execute()
        except redis.RedisError:
            pass  # the stream itself will notice Redis trouble; the lease simply ages

    def release(self) -> None:
        try:
            self.connection.zrem(self.key, self.member)
        except redis.RedisError:
            pass  # it expires with its lease


def acquire(connection: redis.Redis, owner: str, cap: int) -> tuple[Lease | None, int]:
    """A lease on one of the caller's ``cap`` stream slots, or (None, open count) when all are taken."""
    key = KEY.format(owner)
    member = f"{_PROCESS}:{next(_ids)}"
    now = time.time()
    pipe = connection.pipeline(transaction=True)
    pipe.zremrangebyscore(key, "-inf", now)
    pipe.zadd(key, {member: now + LEASE_SECONDS})
    pipe.zcard(key)
    pipe.expire(key, int(LEASE_SECONDS) + 1)
    _, _, count, _ = pipe.execute()
    lease = Lease(connection, key, member, now)
    if count > cap:
        lease.release()
        return None, count - 1
    return lease, count


def open_streams(connection: redis.Redis, owner: str) -> int:
    key = KEY.format(owner)
    connection.zremrangebyscore(key, "-inf", time.time())
    return int(connection.zcard(key))
