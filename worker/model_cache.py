"""Keep a bounded number of MusicGen engines loaded, least recently used out.

Loading a model takes seconds to minutes and the old backend reloaded it for
every job; a worker keeps engines here instead. Capacity bounds GPU memory:
an engine is closed (its memory released) when it falls out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

from worker.engine import MusicGenEngine


class ModelCache:
    def __init__(self, capacity: int, factory: Callable[[str], MusicGenEngine]):
        if capacity < 1:
            raise ValueError(f"model cache capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._factory = factory
        self._engines: OrderedDict[str, MusicGenEngine] = OrderedDict()  # least recently used first
        # Held while loading too: two threads asking for the same model must not
        # load it twice, and loads must not overrun the capacity together.
        self._lock = threading.Lock()

    def get(self, model_ref: str) -> MusicGenEngine:
        with self._lock:
            engine = self._engines.get(model_ref)
            if engine is not None:
                self._engines.move_to_end(model_ref)
                return engine
            # Evict before loading, so memory never holds capacity + 1 models.
            while len(self._engines) >= self.capacity:
                _, oldest = self._engines.popitem(last=False)
                oldest.close()
            engine = self._factory(model_ref)
            self._engines[model_ref] = engine
            return engine

    def loaded(self) -> list[str]:
        """Model refs currently loaded, least recently used first."""
        with self._lock:
            return list(self._engines)

    def close(self) -> None:
        """Close every engine (worker shutdown)."""
        with self._lock:
            while self._engines:
                _, engine = self._engines.popitem(last=False)
                engine.close()
