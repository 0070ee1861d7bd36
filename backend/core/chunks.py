"""Audio chunks of a running task, in a Redis stream per task.

The worker appends each chunk of a continuation as it is decoded (see
``worker.engine.streaming``); ``GET /tasks/<id>/events`` and ``/stream`` read the
stream from its start, so a client that connects late first receives
everything generated so far, then blocks for more. A Redis stream rather than
pub/sub because pub/sub forgets what was sent before a client subscribed.
Chunks are float32 PCM, channels interleaved per sample, at the model's rate.

Decoding chunks while generating costs the worker EnCodec passes, so it does
so only while someone follows the task: every API process following a task
(``backend.live.follow``) keeps its *listening* key alive, and the worker
checks it before decoding a chunk. Unfollowed, the task's audio is published
from the final decode when it ends, in chunks of the same size, so a client
that connects late still receives every chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

KEY = "segue:chunks:{}"
# While a task runs its stream lives an hour past the latest chunk; once the task
# ended, long enough for a late client to catch up (the finished result is
# downloadable from /tasks/<id>/audio anyway). Chunks are raw PCM: keeping them
# longer would only fill Redis's memory.
TTL_SECONDS = 3600
ENDED_TTL_SECONDS = 600
DTYPE = "float32"
LISTENING_KEY = "segue:listening:{}"
LISTENING_TTL_SECONDS = 5  # followers refresh it twice as often


@dataclass
class Chunk:
    seq: int
    offset_samples: int  # of the first sample, counted from the start of the continuation
    sample_rate: int
    channels: int
    pcm: bytes  # little-endian float32, interleaved

    def header(self) -> dict:
        return {"seq": self.seq, "sample_rate": self.sample_rate, "channels": self.channels, "dtype": DTYPE,
                "offset_samples": self.offset_samples, "final": False}


def publish(connection: redis.Redis, task_id: str, chunk: Chunk) -> None:
    key = KEY.format(task_id)
    pipe = connection.pipeline(transaction=False)
    pipe.xadd(key, {"seq": chunk.seq, "offset": chunk.offset_samples, "sr": chunk.sample_rate,
                    "ch": chunk.channels, "pcm": chunk.pcm})
    pipe.expire(key, TTL_SECONDS)
    pipe.execute()


def ended(connection: redis.Redis, task_id: str) -> None:
    """The task ended: its chunks go after ``ENDED_TTL_SECONDS``."""
    connection.expire(KEY.format(task_id), ENDED_TTL_SECONDS)


def mark_listening(connection: redis.Redis, task_id: str) -> None:
    """Someone follows the task: the worker decodes chunks while it generates."""
    connection.set(LISTENING_KEY.format(task_id), 1, ex=LISTENING_TTL_SECONDS)


def is_listened(connection: redis.Redis, task_id: str) -> bool:
    return bool(connection.exists(LISTENING_KEY.format(task_id)))


def reset(connection: redis.Redis, task_id: str) -> None:
    """Forget the chunks of an earlier attempt (a retried task starts its stream again)."""
    connection.delete(KEY.format(task_id))


def _decode(fields: dict) -> Chunk:
    return Chunk(int(fields[b"seq"]), int(fields[b"offset"]), int(fields[b"sr"]), int(fields[b"ch"]),
                 bytes(fields[b"pcm"]))


def read(connection: redis.Redis, task_id: str, after: str = "0-0", *, block_ms: int | None = None,
         count: int = 64) -> list[tuple[str, Chunk]]:
    """Chunks after stream id ``after`` (oldest first), waiting up to ``block_ms`` for the first one."""
    key = KEY.format(task_id)
    answer = connection.xread({key: after}, count=count, block=block_ms)
    out = []
    for _key, entries in answer or []:
        for entry_id, fields in entries:
            out.append((entry_id.decode() if isinstance(entry_id, bytes) else entry_id, _decode(fields)))
    return out
