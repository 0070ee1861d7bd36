"""Hands a task's audio chunks to Redis (``backend.core.chunks``) as the engine decodes them."""

from __future__ import annotations

import logging

import numpy as np
import redis

from backend.core import chunks

from . import side_calls

log = logging.getLogger(__name__)
LISTENING_CHECK_SECONDS = 0.5


class ChunkPublisher:
    """The engine's ``on_audio`` callback for one task (``worker.engine.windows`` shifts later windows' offsets)."""

    def __init__(self, connection: redis.Redis, task_id: str, sample_rate: int):
        self.connection = connection
        self.task_id = task_id
        self.sample_rate = sample_rate
        self.seq = 0
        # Unsure (Redis away): stream rather than leave a listener in silence.
        self._listened = side_calls.Polled(lambda: chunks.is_listened(connection, task_id), LISTENING_CHECK_SECONDS,
                                           initial=False, on_error=True, what=f"who follows task {task_id}")

    def wanted(self) -> bool:
        """Is anyone following the task now? (the engine decodes chunks only then; asked every 0.5 s on the
        side-call thread, never waited for)"""
        return self._listened.value()

    def __call__(self, audio: np.ndarray, offset: int) -> None:
        interleaved = np.ascontiguousarray(audio.T, dtype="<f4")  # (samples, channels)
        try:
            chunks.publish(self.connection, self.task_id,
                           chunks.Chunk(self.seq, offset, self.sample_rate, int(audio.shape[0]), interleaved.tobytes()))
        except redis.RedisError as exc:
            # Redis restarting: listeners lost their connection with it; the task goes on and its stored
            # result is whole. A chunk that could not be written is skipped (seq moves on).
            log.warning("could not publish an audio chunk of task %s: %s", self.task_id, exc)
        self.seq += 1
