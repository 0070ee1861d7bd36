"""Riding out a Redis or MongoDB outage: the work waits for the service instead of failing.

A restart of either service (an upgrade, a failover, a frozen VM) lasts
seconds to minutes. A task that happened to write its progress or its result
in that window used to end ``failed``; here the worker retries the write until
the service answers again, and the task carries on where it was. Only
*connection* trouble is retried: a query MongoDB rejects, or a Redis command
error, is a bug or bad data and surfaces at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

import pymongo.errors
import redis

log = logging.getLogger(__name__)

T = TypeVar("T")

# Connection trouble only. pymongo's AutoReconnect covers NotPrimary and NetworkTimeout; a lost reply of a
# write is one of these too, so every call retried here must be safe to repeat (see TaskStore.claim/finish).
TRANSIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    pymongo.errors.AutoReconnect,
    pymongo.errors.ConnectionFailure,
    pymongo.errors.ServerSelectionTimeoutError,
    pymongo.errors.NetworkTimeout,
)

FIRST_WAIT_SECONDS = 0.5
LONGEST_WAIT_SECONDS = 5.0


class GaveUp(Exception):
    """The caller stopped waiting for the service (``give_up`` was set)."""


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


def retry(what: str, call: Callable[[], T], *, give_up: threading.Event | None = None) -> T:
    """``call()`` until it gets through a service outage; logs once per outage, not per try.

    ``give_up``: set by whoever no longer needs the answer (a worker handing its tasks back); the wait then
    ends with ``GaveUp``.
    """
    wait = FIRST_WAIT_SECONDS
    since = None
    while True:
        try:
            result = call()
        except TRANSIENT as exc:
            if since is None:
                since = time.monotonic()
                log.warning("%s: service unavailable (%s); waiting for it to return", what, exc)
            if give_up is not None and give_up.wait(wait):
                raise GaveUp(what) from exc
            if give_up is None:
                time.sleep(wait)
            wait = min(LONGEST_WAIT_SECONDS, wait * 2)
            continue
        if since is not None:
            log.warning("%s: service back after %.1f s", what, time.monotonic() - since)
        return result
