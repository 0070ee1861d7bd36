"""Process-wide worker state: service handles and the warm model cache.

The worker process builds this once before its job loop, so jobs reuse
loaded models (the old backend loaded MusicGen inside every job). Should a
job ever run in a process that did not set it up (a forking RQ worker), it
is built lazily from the environment: slower, but still correct.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass, field

from backend.core import faults
from backend.core.connections import Services
from backend.core.settings import Settings

from ..models.model_cache import ModelCache


@dataclass
class Runtime:
    settings: Settings
    services: Services
    models: ModelCache
    worker_id: str
    current_tasks: list[str] = field(default_factory=list)
    tasks_done: int = 0
    draining: bool = False  # told to stop: takes no more tasks (reported in the heartbeat and /health)
    lock: threading.Lock = field(default_factory=threading.Lock)


_runtime: Runtime | None = None


def new_worker_id() -> str:
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


def init(settings: Settings, worker_id: str | None = None) -> Runtime:
    global _runtime
    from ..engine import MusicGenEngine  # torch is imported here, in the worker only
    from ..models.engine_loader import load_engine
    from ..models.model_source import resolve_model

    def load(model_ref: str) -> MusicGenEngine:
        # An audiocraft checkpoint is converted once (cached under SEGUE_DATA_DIR); the cache keeps
        # the configured id as its key (an alias's ID, not its PATH), so /health and /models report
        # the name users chose.
        source = settings.model_source(model_ref)
        return load_engine(resolve_model(source, settings.data_dir), device=settings.device,
                           half_precision=settings.half_precision, cpu_threads=settings.torch_threads,
                           max_tasks=settings.max_batch, quantize=settings.quantize, kv_cache=settings.kv_cache,
                           cuda_graphs=settings.cuda_graphs)

    faults.configure(settings.fault_hold_dir or None)
    _runtime = Runtime(settings=settings, services=Services.from_settings(settings, blocking_reads=True),
                       models=ModelCache(settings.model_cache_size, load),
                       worker_id=worker_id or new_worker_id())
    return _runtime


def get() -> Runtime:
    return _runtime or init(Settings.from_env())
