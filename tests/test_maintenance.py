"""backend/core/maintenance.py on real Redis and MongoDB: reaping orphans, lost jobs, pruning, the cron entry.

tests/test_worker_lifecycle.py runs a reaped task through a real worker; these check each rule on its own.
"""

from datetime import timedelta

import pytest
from rq.job import Job, JobStatus

from backend.core import heartbeat, maintenance, taking, webhooks
from backend.core.clock import utcnow
from backend.core.connections import Services


@pytest.fixture
def services(settings):
    return Services.from_settings(settings)


def _running(services, task_id, *, attempts=1, worker="gone-worker", minutes_ago=5.0, **fields):
    """A task a worker claimed ``minutes_ago`` (its job taken off the queue, as a worker does)."""
    services.store.insert_task({"_id": task_id, "job_id": task_id, "status": "processing", "model": "m",
                                "attempts": attempts, "worker": worker,
                                "started_at": utcnow() - timedelta(minutes=minutes_ago), **fields})


def _queued(services, task_id, *, minutes_ago=5.0, enqueue=True):
    services.store.insert_task({"_id": task_id, "job_id": task_id, "status": "queued", "model": "m", "attempts": 0,
                                "created_at": utcnow() - timedelta(minutes=minutes_ago)})
    if enqueue:
        services.queue.enqueue(task_id)


def _webhooks_due(services):
    return {member.decode() for member in services.redis.zrange(webhooks.DUE_KEY, 0, -1)}


def test_a_first_orphan_is_queued_again_at_the_front_with_a_fresh_job_id(services):
    _queued(services, "waiting")
    _running(services, "orphan", attempts=1)
    assert maintenance.reap_orphans(services) == {"requeued": 1, "failed": 0}
    doc = services.store.get_task("orphan")
    assert doc["status"] == "queued" and doc["worker"] is None
    assert doc["job_id"].startswith("orphan-r") and doc["job_id"] != "orphan"  # RQ's record of the lost run stays apart
    assert "gone-worker" in doc["last_error"]
    assert services.queue.queue.get_job_ids() == [doc["job_id"], "waiting"]  # ahead of newer work
    assert Job.fetch(doc["job_id"], connection=services.redis).args == ("orphan",)
    assert _webhooks_due(services) == set()  # it has not ended


def test_an_orphan_out_of_attempts_fails_once_and_calls_its_webhook(services):
    _running(services, "orphan", attempts=maintenance.MAX_ATTEMPTS)
    assert maintenance.reap_orphans(services) == {"requeued": 0, "failed": 1}
    doc = services.store.get_task("orphan")
    assert doc["status"] == "failed"
    assert doc["error"] == (f"the worker running this task stopped unexpectedly ({maintenance.MAX_ATTEMPTS} "
                            "attempts); it was not retried again")
    assert services.queue.depth() == 0
    assert _webhooks_due(services) == {"orphan"}
    assert maintenance.reap_orphans(services) == {"requeued": 0, "failed": 0}  # nothing left to reap


def test_an_orphan_whose_cancel_was_asked_is_canceled_not_retried(services):
    _running(services, "orphan", attempts=1, cancel_requested=True)
    assert maintenance.reap_orphans(services) == {"requeued": 0, "failed": 0}
    doc = services.store.get_task("orphan")
    assert doc["status"] == "canceled" and doc["error"] == "canceled by request"
    assert services.queue.depth() == 0
    assert _webhooks_due(services) == {"orphan"}


def test_recently_started_tasks_and_live_workers_are_left_alone(services):
    # Started within the grace (three heartbeats): its worker may not have written one yet.
    _running(services, "young", minutes_ago=0.0)
    _running(services, "alive", worker="busy-worker")
    heartbeat.write(services.redis, "busy-worker", {"torch_ok": True}, period_seconds=60)
    assert maintenance.reap_orphans(services) == {"requeued": 0, "failed": 0}
    assert {t["_id"] for t in services.store.processing_tasks()} == {"young", "alive"}
    # With no grace the young one counts; the one whose worker beats still does not.
    assert maintenance.reap_orphans(services, grace_seconds=0) == {"requeued": 1, "failed": 0}
    assert services.store.get_task("alive")["status"] == "processing"
    assert services.store.get_task("young")["status"] == "queued"


def test_a_task_without_a_start_time_is_never_reaped(services):
    _running(services, "odd")
    services.store.update("odd", {"started_at": None})
    assert maintenance.reap_orphans(services, grace_seconds=0) == {"requeued": 0, "failed": 0}
    assert services.store.get_task("odd")["status"] == "processing"


def _take(services, task_id, worker):
    """Take a job off the queue into ``worker``'s ledger entry, as a worker's session does."""
    queue = services.queue.queue
    assert taking.take(services.redis, queue.key, queue.name, task_id, worker, task_id)


def test_requeue_lost_queues_tasks_findable_nowhere_whatever_rq_says(services):
    heartbeat.write(services.redis, "live-worker", {}, 60)
    _queued(services, "on-queue")
    _queued(services, "lost", enqueue=False)
    _queued(services, "young-lost", minutes_ago=0.0, enqueue=False)
    _queued(services, "held")
    _take(services, "held", "live-worker")  # taken by a live worker, not yet claimed
    _queued(services, "orphan")
    _take(services, "orphan", "dead-worker")  # taken by a worker that died before claiming it
    # RQ says "started" for both taken jobs: that must not hide the dead worker's one.
    for job_id in ("held", "orphan"):
        Job.fetch(job_id, connection=services.redis).set_status(JobStatus.STARTED)
    assert maintenance.requeue_lost(services, grace_seconds=60) == 2
    for task_id in ("lost", "orphan"):
        doc = services.store.get_task(task_id)
        assert doc["job_id"].startswith(f"{task_id}-q") and doc["status"] == "queued"
        assert Job.fetch(doc["job_id"], connection=services.redis).args == (task_id,)
    assert services.queue.queue.get_job_ids() == ["on-queue", services.store.get_task("lost")["job_id"],
                                                  services.store.get_task("orphan")["job_id"]]
    ledger = services.redis.hgetall(taking.ledger_key(services.queue.name))
    assert set(ledger) == {b"held"}  # the dead worker's entry is dropped, the live one's kept
    assert maintenance.requeue_lost(services, grace_seconds=60) == 0  # found them all this time


def test_requeue_lost_sees_a_job_in_rqs_intermediate_list(services):
    _queued(services, "handing-over")
    queue = services.queue.queue
    services.redis.lmove(queue.key, queue.intermediate_queue_key)  # dequeued by RQ, not yet recorded
    assert maintenance.requeue_lost(services, grace_seconds=60) == 0


def test_task_of_job_reads_every_job_id_form():
    from backend.core.jobqueue import later_job_id, task_of_job

    for task_id in ("abc", "a-b_c-d", "x-r1y"):
        assert task_of_job(task_id) in (task_id, task_id.rsplit("-", 1)[0])
        for kind in "rqh":
            assert task_of_job(later_job_id(task_id, kind)) == task_id
    assert task_of_job("plain") == "plain"
    assert task_of_job("t-r1") == "t" and task_of_job("t-q1733000000") == "t"  # earlier releases' ids


def test_reschedule_webhooks_schedules_only_ended_tasks_with_a_webhook_not_due(services):
    ended = utcnow() - timedelta(minutes=2)
    base = {"model": "m", "attempts": 1, "completed_at": ended}
    services.store.insert_task({"_id": "lost-hook", "status": "completed", "request": {"webhook": "http://x/"},
                                **base})
    services.store.insert_task({"_id": "due-hook", "status": "failed", "request": {"webhook": "http://x/"}, **base})
    webhooks.schedule(services.redis, "due-hook", at=123.0)
    services.store.insert_task({"_id": "sent", "status": "completed", "request": {"webhook": "http://x/"},
                                "webhook_delivery": {"status": "delivered"}, **base})
    services.store.insert_task({"_id": "no-hook", "status": "completed", "request": {}, **base})
    services.store.insert_task({"_id": "running", "status": "processing", "request": {"webhook": "http://x/"},
                                "model": "m", "attempts": 1})
    services.store.insert_task({"_id": "just-ended", "status": "completed", "request": {"webhook": "http://x/"},
                                "model": "m", "attempts": 1, "completed_at": utcnow()})
    assert maintenance.reschedule_webhooks(services) == 1
    assert _webhooks_due(services) == {"lost-hook", "due-hook"}
    assert services.redis.zscore(webhooks.DUE_KEY, "due-hook") == 123.0  # an entry already due is left alone
    assert maintenance.reschedule_webhooks(services) == 0


def test_prune_removes_expired_audio_only(services):
    now = utcnow()
    old = services.store.put_audio("t1", "input", b"a" * 1000, "audio/wav", expires_at=now - timedelta(minutes=1))
    new = services.store.put_audio("t2", "result", b"b" * 1000, "audio/wav")
    assert maintenance.prune(services) == 1
    assert services.store.read_audio(new) == b"b" * 1000
    assert services.store.db["audio.files"].find_one({"_id": old}) is None


def test_the_cron_entry_reports_what_it_did(settings, services, monkeypatch, capsys):
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    _running(services, "orphan", attempts=maintenance.MAX_ATTEMPTS)
    services.store.put_audio("t1", "input", b"a", "audio/wav", expires_at=utcnow() - timedelta(minutes=1))
    assert maintenance.main([]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "requeued=0 failed=1 webhooks_rescheduled=0 pruned_audio=1"
    assert services.store.get_task("orphan")["status"] == "failed"
