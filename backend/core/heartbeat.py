"""Worker heartbeats in Redis: what each worker runs on and which models it holds.

A heartbeat is a key with a TTL of three periods, so a dead worker's entry
disappears by itself and ``/health`` reports torch down within that time.
"""

from __future__ import annotations

import json
import time

import redis

PREFIX = "segue:worker:"


def write(connection: redis.Redis, worker_id: str, info: dict, period_seconds: float) -> None:
    payload = dict(info, worker_id=worker_id, at=time.time())
    connection.set(PREFIX + worker_id, json.dumps(payload), ex=max(1, int(period_seconds * 3)))


def remove(connection: redis.Redis, worker_id: str) -> None:
    connection.delete(PREFIX + worker_id)


def read_all(connection: redis.Redis) -> list[dict]:
    keys = list(connection.scan_iter(match=PREFIX + "*", count=500))
    if not keys:
        return []
    beats = []
    for raw in connection.mget(keys):
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            beats.append(json.loads(raw))
        except ValueError:
            continue
    return sorted(beats, key=lambda b: b.get("worker_id", ""))


def is_alive(connection: redis.Redis, worker_id: str) -> bool:
    return bool(connection.exists(PREFIX + worker_id))
