"""Keep a bounded number of MusicGen engines loaded, least recently used out.

Loading a model takes seconds to minutes and the old backend reloaded it for
every job; a worker keeps engines here instead. Capacity bounds GPU memory:
an engine is closed (its memory released) when it falls out.

A model that cannot be loaded (offline without a local copy, a broken
folder) is remembered with its reason and a time before which no load is
tried again, doubling from ``RETRY_FIRST_SECONDS`` up to ``RETRY_MAX_SECONDS``:
tasks for it fail at once with that reason, heartbeats report it, and the
worker keeps serving every other model instead of crash-looping.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from backend.core.errors import TaskFailure
from worker.engine import MusicGenEngine

log = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 30.0
RETRY_MAX_SECONDS = 600.0


class ModelUnavailable(TaskFailure):
    code = "model_unavailable"

    def __init__(self, model: str, reason: str):
        super().__init__(f"model {model} could not be loaded: {reason}")
        self.model = model
        self.reason = reason


@dataclass
class LoadFailure:
    reason: str
    attempts: int
    retry_at: float  # time.monotonic()


def failure_reason(exc: BaseException) -> str:
    """One readable sentence for why a load failed (no traceback, no retry chatter)."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    lowered = text.lower()
    if ("couldn't connect" in lowered or "name or service not known" in lowered
            or "connecterror" in lowered or "temporary failure in name resolution" in lowered
            or "offline mode" in lowered or "network is unreachable" in lowered):
        return ("it is not in the local Hugging Face cache and the hub could not be reached; "
                "download it once with internet access, or point SEGUE_MODELS at a local folder "
                "(ID=PATH)")
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return first[:300]


class ModelCache:
    def __init__(self, capacity: int, factory: Callable[[str], MusicGenEngine], *,
                 clock: Callable[[], float] = time.monotonic):
        if capacity < 1:
            raise ValueError(f"model cache capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._factory = factory
        self._clock = clock
        self._engines: OrderedDict[str, MusicGenEngine] = OrderedDict()  # least recently used first
        self._failures: dict[str, LoadFailure] = {}
        # Held while loading too: two threads asking for the same model must not
        # load it twice, and loads must not overrun the capacity together.
        self._lock = threading.Lock()

    def get(self, model_ref: str) -> MusicGenEngine:
        """The loaded engine; raises ``ModelUnavailable`` while a failed load waits for its retry."""
        with self._lock:
            engine = self._engines.get(model_ref)
            if engine is not None:
                self._engines.move_to_end(model_ref)
                return engine
            failure = self._failures.get(model_ref)
            if failure is not None and self._clock() < failure.retry_at:
                raise ModelUnavailable(model_ref, failure.reason)
            return self._load(model_ref, failure)

    def _load(self, model_ref: str, previous: LoadFailure | None) -> MusicGenEngine:
        # Evict before loading, so memory never holds capacity + 1 models.
        while len(self._engines) >= self.capacity:
            _, oldest = self._engines.popitem(last=False)
            oldest.close()
        try:
            engine = self._factory(model_ref)
        except Exception as exc:  # any failure: remember it, report it, keep the worker up
            attempts = (previous.attempts if previous else 0) + 1
            wait = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (attempts - 1))
            reason = failure_reason(exc)
            self._failures[model_ref] = LoadFailure(reason, attempts, self._clock() + wait)
            log.error("model %s could not be loaded (attempt %d): %s; next try in %.0f s",
                      model_ref, attempts, reason, wait)
            log.debug("model %s load failure in full", model_ref, exc_info=True)
            raise ModelUnavailable(model_ref, reason) from None
        self._failures.pop(model_ref, None)
        self._engines[model_ref] = engine
        return engine

    def loaded(self) -> list[str]:
        """Model refs currently loaded, least recently used first."""
        with self._lock:
            return list(self._engines)

    def failures(self) -> dict[str, str]:
        """Models whose last load failed, with the reason."""
        return {ref: failure.reason for ref, failure in list(self._failures.items())}

    def retry_due(self) -> list[str]:
        """Failed models whose back-off has passed."""
        now = self._clock()
        return [ref for ref, failure in list(self._failures.items()) if now >= failure.retry_at]

    def close(self) -> None:
        """Close every engine (worker shutdown)."""
        with self._lock:
            while self._engines:
                _, engine = self._engines.popitem(last=False)
                engine.close()
