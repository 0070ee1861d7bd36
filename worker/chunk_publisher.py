"""Hands a task's audio chunks to Redis (``backend.chunks``) as the engine decodes them."""

from __future__ import annotations

import numpy as np
import redis

from backend.core import chunks


class ChunkPublisher:
    """The engine's ``on_audio`` callback for one task (``worker.windows`` shifts later windows' offsets)."""

    def __init__(self, connection: redis.Redis, task_id: str, sample_rate: int):
        self.connection = connection
        self.task_id = task_id
        self.sample_rate = sample_rate
        self.seq = 0

    def __call__(self, audio: np.ndarray, offset: int) -> None:
        interleaved = np.ascontiguousarray(audio.T, dtype="<f4")  # (samples, channels)
        chunks.publish(self.connection, self.task_id,
                       chunks.Chunk(self.seq, offset, self.sample_rate, int(audio.shape[0]), interleaved.tobytes()))
        self.seq += 1
