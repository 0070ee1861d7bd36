"""Housekeeping that replaces the old blind 12-hour restart.

- ``reap_orphans``: a task left ``processing`` by a worker that died (SIGKILL,
  OOM, power loss) is queued again once, then failed with a reason, so no
  task stays stuck. Workers run it every heartbeat; cron runs it too.
- ``requeue_lost``: a task ``queued`` in MongoDB but on no RQ queue (its
  job was lost) is queued again.
- ``prune``: deletes expired result/input audio (task documents expire
  through MongoDB's TTL index).
- ``check_ytdlp_age``: warns when a worker's yt-dlp (as its heartbeat
  reports it) or this machine's is old enough that YouTube may have broken it.

Run by hand or from cron: ``python -m backend.core.maintenance``.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta
from importlib import metadata

from backend.core import heartbeat, webhooks
from backend.core.clock import utcnow
from backend.core.connections import Services
from backend.core.settings import Settings
from backend.core.ytdlp_age import stale_warning

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2


def reap_orphans(services: Services, *, grace_seconds: float | None = None) -> dict[str, int]:
    """Requeue or fail tasks whose worker no longer sends heartbeats."""
    grace = timedelta(seconds=grace_seconds if grace_seconds is not None else services.settings.heartbeat_seconds * 3)
    now = utcnow()
    counts = {"requeued": 0, "failed": 0}
    for task in services.store.processing_tasks():
        worker_id = task.get("worker")
        started = task.get("started_at")
        if started is None or now - started < grace:
            continue  # its worker may not have written a heartbeat yet
        if worker_id and heartbeat.is_alive(services.redis, worker_id):
            continue
        task_id = task["_id"]
        attempts = int(task.get("attempts") or 1)
        if task.get("cancel_requested"):
            # Its client asked to stop it anyway: end it as asked rather than run it again.
            if services.store.finish(task_id, "canceled", {"error": "canceled by request"}, only_from=("processing",)):
                webhooks.schedule(services.redis, task_id)
                log.info("task %s: worker gone after a cancel request; canceled", task_id)
            continue
        if attempts < MAX_ATTEMPTS:
            reason = f"worker {worker_id} stopped while running this task; retrying"
            if services.store.requeue(task_id, reason):
                job_id = services.queue.enqueue(task_id, job_id=f"{task_id}-r{attempts}", at_front=True)
                services.store.update(task_id, {"job_id": job_id})
                counts["requeued"] += 1
                log.warning("requeued task %s: %s", task_id, reason)
        else:
            reason = (f"the worker running this task stopped unexpectedly ({attempts} attempts); "
                      "it was not retried again")
            if services.store.finish(task_id, "failed", {"error": reason}, only_from=("processing",)):
                webhooks.schedule(services.redis, task_id)
                counts["failed"] += 1
                log.warning("failed task %s: %s", task_id, reason)
    return counts


def _lost_tasks(services: Services, cutoff) -> list[dict]:
    """``queued`` tasks older than ``cutoff`` whose RQ job is on no queue and not running."""
    # One snapshot of the queue instead of a position look-up per task: with
    # hundreds queued, per-task LPOS would scan the list hundreds of times.
    waiting = set(services.queue.queue.get_job_ids())
    lost = []
    for task in services.store.queued_before(cutoff):
        job_id = task.get("job_id") or task["_id"]
        if job_id not in waiting and services.queue.job_status(job_id) in (None, "queued", "canceled", "stopped"):
            lost.append(task)
    return lost


def requeue_lost(services: Services, *, grace_seconds: float | None = None, recheck_after: float = 2.0) -> int:
    """Queue again tasks that are ``queued`` in MongoDB but on no RQ queue.

    A batching worker takes companion jobs off the queue a moment before it
    registers them as started; if it dies in between (or Redis lost its data
    without persistence), the task would wait forever. Checked twice, a few
    seconds apart, so a worker caught in that moment is not mistaken for lost.
    """
    grace = timedelta(seconds=grace_seconds if grace_seconds is not None else services.settings.heartbeat_seconds * 3)
    cutoff = utcnow() - grace
    if not _lost_tasks(services, cutoff):
        return 0
    time.sleep(recheck_after)
    requeued = 0
    for task in _lost_tasks(services, cutoff):
        job_id = services.queue.enqueue(task["_id"], job_id=f"{task['_id']}-q{int(time.time())}")
        services.store.update(task["_id"], {"job_id": job_id})
        requeued += 1
        log.warning("task %s was queued but on no queue; queued it again", task["_id"])
    return requeued


def prune(services: Services) -> int:
    removed = services.store.prune_expired()
    if removed:
        log.info("pruned %d expired audio files", removed)
    return removed


def check_ytdlp_age(services: Services) -> list[str]:
    """Log (and return) a warning for each stale yt-dlp: every worker's, and this machine's if installed."""
    where: dict[str, list[str]] = {}
    for beat in heartbeat.read_all(services.redis):
        if beat.get("yt_dlp"):
            where.setdefault(str(beat["yt_dlp"]), []).append(f"worker {beat.get('worker_id', '?')}")
    try:
        where.setdefault(metadata.version("yt-dlp"), []).append("this machine")
    except metadata.PackageNotFoundError:
        pass  # the API image has no yt-dlp; its workers report theirs
    warnings = []
    for version, places in sorted(where.items()):
        warning = stale_warning(version)
        if warning:
            warnings.append(f"{warning} [{', '.join(places)}]")
            log.warning(warnings[-1])
    return warnings


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    services = Services.from_settings(Settings.from_env())
    counts = reap_orphans(services)
    lost = requeue_lost(services)
    removed = prune(services)
    check_ytdlp_age(services)
    print(f"requeued={counts['requeued'] + lost} failed={counts['failed']} pruned_audio={removed}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
