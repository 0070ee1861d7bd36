"""The worker process: load models once, then run queued tasks in-process.

RQ's default ``Worker`` forks a child per job, which would throw the loaded
model away each time; ``ContinuousWorker`` (a ``SimpleWorker``) runs jobs in
this process, so the models loaded before the loop stay warm, and keeps
taking waiting tasks for the running model into its engine as slots free up. A heartbeat thread tells ``/health``
what this worker runs on; a housekeeping thread of its own (so a slow MongoDB call can never delay a heartbeat
past its expiry) requeues tasks of dead workers; another thread sends due webhooks. SIGTERM drains (see
``worker.serving.continuous_worker``).

Start with ``python -m worker``.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading
import time


from backend.core import heartbeat, webhooks
from backend.core.maintenance import housekeeping, prune
from backend.core.settings import Settings

from . import runtime
from .continuous_worker import ContinuousWorker
from ..models.model_cache import ModelUnavailable
from ..pipeline import ytdlp_runtime

log = logging.getLogger("worker")

PRUNE_EVERY_SECONDS = 3600
RETRY_CHECK_SECONDS = 5.0


class Heartbeat(threading.Thread):
    """Writes this worker's heartbeat every period, and nothing else: nothing slow may delay it."""

    def __init__(self, rt: runtime.Runtime, info: dict):
        super().__init__(name="segue-heartbeat", daemon=True)
        self.rt = rt
        self.info = info
        self.stopped = threading.Event()
        # False until the default model's first load attempt ended (loaded or failed): /health counts
        # the worker live only then, so "live" still means "ready to run the default model".
        self.ready = False

    def beat(self) -> None:
        rt = self.rt
        heartbeat.write(rt.services.redis, rt.worker_id,
                        dict(self.info, models_loaded=rt.models.loaded(), models_failed=rt.models.failures(),
                             current_tasks=rt.current_tasks, tasks_done=rt.tasks_done, ready=self.ready,
                             draining=rt.draining),
                        rt.settings.heartbeat_seconds)

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.beat()
            except Exception as exc:  # a Redis blip must not kill the thread
                log.warning("heartbeat failed: %s", exc)
            self.stopped.wait(self.rt.settings.heartbeat_seconds)

    def stop(self) -> None:
        self.stopped.set()
        try:
            heartbeat.remove(self.rt.services.redis, self.rt.worker_id)
        except Exception:
            pass


class Housekeeping(threading.Thread):
    """Requeues what dead workers left, schedules lost webhooks, prunes expired audio (twice a period)."""

    def __init__(self, rt: runtime.Runtime, info: dict, stopped: threading.Event):
        super().__init__(name="segue-housekeeping", daemon=True)
        self.rt = rt
        self.info = info
        self.stopped = stopped
        self._pruned_at = 0.0

    def once(self) -> None:
        housekeeping(self.rt.services)
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_SECONDS:
            prune(self.rt.services)
            self._pruned_at = time.monotonic()
            stale = ytdlp_runtime.stale_warning(self.info.get("yt_dlp"))
            if stale:  # a worker that runs for months outlives its yt-dlp
                log.warning(stale)

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.once()
            except Exception as exc:  # Redis/Mongo blips must not kill the thread
                log.warning("housekeeping failed: %s", exc)
            self.stopped.wait(self.rt.settings.heartbeat_seconds / 2)


def torch_info(device: str) -> dict:
    import torch

    # A real operation on the device proves torch works there, not just imports.
    ok = bool((torch.ones(2, device=device) * 2).sum().item() == 4)
    return {"torch_ok": ok, "torch_version": torch.__version__, "device": device,
            "host": platform.node(), "cuda": torch.cuda.is_available()}


def load_model(rt: runtime.Runtime, model: str) -> bool:
    """Load ``model`` into the cache; a failure is logged (one line) and remembered, never raised."""
    log.info("worker %s loading model %s", rt.worker_id, model)
    started = time.monotonic()
    try:
        engine = rt.models.get(model)
    except ModelUnavailable:
        return False  # the cache logged which model, why, and when it tries again
    log.info("model %s loaded on %s in %.1f s", model, engine.device, time.monotonic() - started)
    return True


def retry_failed_loads(rt: runtime.Runtime, beat: Heartbeat) -> None:
    """Retry the default model while it fails; other models are retried when a task asks for them."""
    default = rt.settings.default_model
    while not beat.stopped.wait(RETRY_CHECK_SECONDS):
        if default in rt.models.retry_due() and load_model(rt, default):
            beat.beat()


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    # yt-dlp hands this process's environment to ffmpeg, and ffmpeg bypasses
    # the egress proxy for hosts named in no_proxy: media fetches must not.
    for name in ("no_proxy", "NO_PROXY"):
        if os.environ.pop(name, None) is not None:
            print(f"worker: ignoring {name}: media downloads always go through the address guard", flush=True)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rt = runtime.init(settings)
    from ..device import pick_device

    # Heartbeat first: /health sees this worker (and any model that fails to load) from the start.
    info = dict(torch_info(str(pick_device(settings.device, settings.half_precision)[0])), pid=os.getpid(),
                **ytdlp_runtime.report())
    log.info("worker %s: yt-dlp %s, JS runtime %s, EJS scripts %s", rt.worker_id, info["yt_dlp"],
             info["js_runtime"] or "NONE (YouTube links will fail)", info["ejs"] or "NONE")
    stale = ytdlp_runtime.stale_warning(info["yt_dlp"])
    if stale:
        log.warning(stale)
    beat = Heartbeat(rt, info)
    beat.beat()
    beat.start()
    Housekeeping(rt, info, beat.stopped).start()
    load_model(rt, settings.default_model)
    beat.ready = True
    beat.beat()

    # librosa compiles its numba kernels on first use (tens of seconds on a
    # fresh install); do it now rather than inside the first task.
    from ..pipeline.tempo import warm_up

    warm_up()
    # A default model that failed to load is tried again in the background, with back-off.
    threading.Thread(target=retry_failed_loads, args=(rt, beat), name="segue-model-retry", daemon=True).start()
    # Webhook deliveries wait in Redis; every worker sends due ones, each delivery made by one of them.
    webhook_sender = threading.Thread(target=webhooks.run_delivery_loop, args=(rt.services, beat.stopped),
                                      name="segue-webhooks", daemon=True)
    webhook_sender.start()

    worker = ContinuousWorker([rt.services.queue.queue], connection=rt.services.redis, name=rt.worker_id,
                              max_tasks=settings.max_batch, recycle_after_tasks=settings.recycle_after_tasks,
                              recycle_above_mb=settings.recycle_above_mb, drain_seconds=settings.drain_seconds)
    try:
        worker.work(logging_level=settings.log_level, with_scheduler=False)
    finally:
        beat.stop()
        # Let a webhook attempt in flight record its outcome: cut off after the
        # receiver's 2xx, it would be sent a second time once its lease ran out.
        webhook_sender.join(webhooks.attempt_seconds(settings))
        if webhook_sender.is_alive():
            log.warning("worker %s exits with a webhook attempt unfinished; another worker repeats it "
                        "under the same webhook-id", rt.worker_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
