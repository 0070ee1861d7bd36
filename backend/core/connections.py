"""The handles every process holds: Redis, MongoDB (the task store), the job queue, progress.

Built once per process from the settings (``Services.from_settings``): by the API's app factory,
the worker's runtime and ``python -m backend.core.maintenance``.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from pymongo import MongoClient

from backend.core.jobqueue import JobQueue
from backend.core.progress import ProgressStore
from backend.core.settings import Settings
from backend.core.store import TaskStore, connect


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    mongo: MongoClient
    store: TaskStore
    queue: JobQueue
    progress: ProgressStore

    @classmethod
    def from_settings(cls, settings: Settings, *, blocking_reads: bool = False) -> "Services":
        """``blocking_reads``: for RQ workers, whose BLPOP waits longer than any read timeout we would set."""
        if not settings.redis_url or not settings.mongo_url:
            raise RuntimeError("REDIS_URL and MONGO_URL must be set (make run sets them for embedded servers)")
        connection = redis.Redis.from_url(settings.redis_url, socket_timeout=None if blocking_reads else 5,
                                          socket_connect_timeout=3, health_check_interval=30)
        mongo = connect(settings.mongo_url)
        store = TaskStore(mongo[settings.mongo_db], settings.result_ttl_seconds)
        return cls(settings, connection, mongo, store,
                   JobQueue(connection, settings.queue_name, settings.job_timeout), ProgressStore(connection))
