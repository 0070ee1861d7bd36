"""Housekeeping that replaces the old blind 12-hour restart.

- ``reap_orphans``: a task left ``processing`` by a worker that died (SIGKILL,
  OOM, power loss) is queued again once, then failed with a reason, so no
  task stays stuck. Workers run it every heartbeat; cron runs it too.
- ``requeue_lost``: a task ``queued`` in MongoDB whose job is on no RQ queue
  and held by no live worker (``backend.core.taking``'s ledger) is queued
  again, whatever RQ says of the old job (started, abandoned, failed).
- ``reschedule_webhooks``: an ended task whose webhook is neither delivered,
  given up, nor waiting in Redis (its worker died before scheduling it, or
  Redis lost it) gets it scheduled again.

Every state change names the run it belongs to (``TaskStore.requeue(run=)``),
so two housekeepers running at once, or a housekeeper racing a worker, change
a task at most once.
- ``prune``: deletes expired result/input audio (task documents expire
  through MongoDB's TTL index).
- ``check_ytdlp_age``: warns when a worker's yt-dlp (as its heartbeat
  reports it) or this machine's is old enough that YouTube may have broken it.

Run by hand or from cron: ``python -m backend.core.maintenance``.
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from importlib import metadata

from backend.core import chunks, faults, heartbeat, taking, webhooks
from backend.core.clock import utcnow
from backend.core.connections import Services
from backend.core.jobqueue import later_job_id, task_of_job
from backend.core.settings import Settings
from backend.core.ytdlp_age import stale_warning

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2


def restart_from_zero(services: Services, task_id: str) -> None:
    """A task starting an attempt again: its progress from 0 and its audio stream from the first chunk."""
    services.progress.clear(task_id)
    chunks.reset(services.redis, task_id)


def queue_at_front(services: Services, task_id: str, kind: str) -> str:
    """Queue a task just set back to ``queued`` ahead of newer work, under a fresh job id; returns the id."""
    restart_from_zero(services, task_id)
    job_id = services.queue.enqueue(task_id, job_id=later_job_id(task_id, kind), at_front=True)
    services.store.update(task_id, {"job_id": job_id})
    return job_id


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
        run = task.get("run")
        # Hand-backs by stopping workers are not crashes: only crashes use up the task's retries.
        crashes = int(task.get("attempts") or 1) - int(task.get("handbacks") or 0)
        if task.get("cancel_requested"):
            # Its client asked to stop it anyway: end it as asked rather than run it again.
            if services.store.finish(task_id, "canceled", {"error": "canceled by request"}, only_from=("processing",),
                                     run=run):
                webhooks.schedule(services.redis, task_id)
                log.info("task %s: worker gone after a cancel request; canceled", task_id)
            continue
        if crashes < MAX_ATTEMPTS:
            reason = f"worker {worker_id} stopped while running this task; retrying"
            if services.store.requeue(task_id, reason, run=run):
                faults.hold("requeue", task_id)
                queue_at_front(services, task_id, "r")
                counts["requeued"] += 1
                log.warning("requeued task %s: %s", task_id, reason)
        else:
            reason = (f"the worker running this task stopped unexpectedly ({crashes} attempts); "
                      "it was not retried again")
            if services.store.finish(task_id, "failed", {"error": reason}, only_from=("processing",), run=run):
                webhooks.schedule(services.redis, task_id)
                counts["failed"] += 1
                log.warning("failed task %s: %s", task_id, reason)
    return counts


def requeue_lost(services: Services, *, grace_seconds: float | None = None) -> int:
    """Queue again tasks that are ``queued`` in MongoDB but neither waiting on the queue nor held by a live worker.

    MongoDB is read first, then Redis in one atomic snapshot (queue, RQ's intermediate list, the ledger of
    taken jobs). A task that moves on between the two reads (taken, claimed, ended) at worst gets a second
    job, which finds it no longer queued and does nothing: a claim only takes a ``queued`` task.
    """
    grace = timedelta(seconds=grace_seconds if grace_seconds is not None else services.settings.heartbeat_seconds * 3)
    candidates = services.store.queued_before(utcnow() - grace)
    queue = services.queue.queue
    snap = taking.snapshot(services.redis, queue.key, queue.intermediate_queue_key, queue.name)
    alive = {beat.get("worker_id") for beat in heartbeat.read_all(services.redis)}
    findable = {task_of_job(j) for j in snap.waiting | snap.handing_over} | snap.held_task_ids(alive)
    requeued = 0
    for task in candidates:
        task_id = task["_id"]
        if task_id in findable:
            continue
        job_id = services.queue.enqueue(task_id, job_id=later_job_id(task_id, "q"))
        services.store.update(task_id, {"job_id": job_id})
        requeued += 1
        log.warning("task %s was queued but on no queue and held by no live worker; queued it again", task_id)
    # Entries of dead workers have served their purpose once their tasks were requeued above or are being
    # reaped (processing); drop them so the ledger does not grow.
    for holding in snap.held.values():
        if holding.worker_id not in alive:
            taking.release(services.redis, queue.name, holding.job_id)
    return requeued


def reschedule_webhooks(services: Services, *, settle_seconds: float = 30.0) -> int:
    """Schedule the webhook of every recently ended task that has one due but not waiting in Redis."""
    now = utcnow()
    window = timedelta(seconds=services.settings.webhook_retry_seconds + 3600)
    rescheduled = 0
    for task_id in services.store.ended_with_webhook_due(now - window, now - timedelta(seconds=settle_seconds)):
        if services.redis.zscore(webhooks.DUE_KEY, task_id) is None:
            webhooks.schedule(services.redis, task_id)
            rescheduled += 1
            log.warning("task %s ended with its webhook not scheduled; scheduled it", task_id)
    return rescheduled


def housekeeping(services: Services) -> dict[str, int]:
    """Everything a worker's housekeeping thread (and cron) runs each period, prune aside."""
    counts = reap_orphans(services)
    lost = requeue_lost(services)
    return {"requeued": counts["requeued"] + lost, "failed": counts["failed"],
            "webhooks": reschedule_webhooks(services)}


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
    settings = Settings.from_env()
    faults.configure(settings.fault_hold_dir or None)
    services = Services.from_settings(settings)
    counts = housekeeping(services)
    removed = prune(services)
    check_ytdlp_age(services)
    print(f"requeued={counts['requeued']} failed={counts['failed']} webhooks_rescheduled={counts['webhooks']} "
          f"pruned_audio={removed}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
