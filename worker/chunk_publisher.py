"""Hands a task's audio chunks to Redis (``backend.chunks``) as the engine decodes them."""

from __future__ import annotations

import numpy as np
import redis

from backend import chunks


class ChunkPublisher:
    """The engine's ``on_audio`` callback for one task."""

    def __init__(self, connection: redis.Redis, task_id: str, sample_rate: int, *, offset: int = 0):
        self.connection = connection
        self.task_id = task_id
        self.sample_rate = sample_rate
        self.offset = offset  # samples already streamed by earlier windows of the same task
        self.seq = 0

    def __call__(self, audio: np.ndarray, offset: int) -> None:
        interleaved = np.ascontiguousarray(audio.T, dtype="<f4")  # (samples, channels)
        chunks.publish(self.connection, self.task_id,
                       chunks.Chunk(self.seq, self.offset + offset, self.sample_rate, int(audio.shape[0]),
                                    interleaved.tobytes()))
        self.seq += 1

    def next_window(self, samples: int) -> None:
        """A windowed continuation moves on: later chunks start ``samples`` further on."""
        self.offset += samples
