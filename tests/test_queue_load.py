"""GET /queue against a real Redis: queued plus running, what KEDA's list-length trigger cannot see.

Jobs are taken the two ways Segue's workers take them, with the calls the continuous worker makes (RQ's
own worker calls and ``backend.core.taking``): RQ hands one out (LMOVE into its intermediate list, then the
ledger of taken jobs, then an execution in ``rq:wip:<queue>``), and a running session takes more straight off
the list into the ledger, then an execution. Either way the job leaves the list that KEDA's ``redis``
trigger measures; ``/queue``'s ``total`` still counts it, once, at every step.
"""

from pathlib import Path

import pytest
import redis
import yaml
from rq import SimpleWorker
from rq.registry import StartedJobRegistry

from backend.api.auth import key_digest
from backend.core import taking
from backend.core.jobqueue import queue_key

SCALING = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "base" / "worker-scaling.yaml"


def redis_trigger_list_name() -> str:
    """The list KEDA's redis trigger measures, as the manifest names it."""
    scaled = next(d for d in yaml.safe_load_all(SCALING.read_text()) if d["kind"] == "ScaledObject")
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "redis"]
    return trigger["metadata"]["listName"]


@pytest.fixture
def connection(settings):
    conn = redis.Redis.from_url(settings.redis_url)
    yield conn
    conn.close()


def load(client) -> dict:
    response = client.get("/queue")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_running_jobs_count_though_the_trigger_list_no_longer_holds_them(client, services, connection):
    list_name = redis_trigger_list_name()
    assert list_name == queue_key(services.queue.name) == services.queue.queue.key
    for task_id in ("t1", "t2", "t3", "t4"):
        services.queue.enqueue(task_id)
    assert connection.llen(list_name) == 4
    assert load(client) == {"queue": "segue", "queued": 4, "running": 0, "total": 4}

    worker = SimpleWorker([services.queue.queue], connection=connection, name="test-worker")
    worker.register_birth()
    # RQ hands a job out: it moves to RQ's intermediate list (taken, not started yet)...
    job, _ = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert job.id == "t1"
    assert connection.llen(list_name) == 3
    assert load(client) == {"queue": "segue", "queued": 3, "running": 1, "total": 4}
    # ...then the session records it in the ledger and starts it (the continuous worker's ``_add``): for an
    # instant it is in the intermediate list, the ledger and the started registry, and still counts once.
    queue_name = services.queue.name
    taking.hold(connection, queue_name, job.id, worker.name, "t1")
    worker.prepare_execution(job)
    assert load(client) == {"queue": "segue", "queued": 3, "running": 1, "total": 4}
    worker.prepare_job_execution(job, remove_from_intermediate_queue=True)
    assert load(client) == {"queue": "segue", "queued": 3, "running": 1, "total": 4}

    # The session takes a second job straight off the list into the ledger (one atomic script), as slots
    # free up in its batch; it counts from that instant, before its execution is registered.
    assert taking.take(connection, list_name, queue_name, "t2", worker.name, "t2")
    assert load(client) == {"queue": "segue", "queued": 2, "running": 2, "total": 4}
    second = services.queue.queue.fetch_job("t2")
    worker.prepare_execution(second)
    worker.prepare_job_execution(second)
    assert StartedJobRegistry(queue=services.queue.queue).get_job_count(cleanup=False) == 2

    # KEDA's list trigger now sees 2 and would size the workers for 2 tasks; 4 need a worker.
    assert connection.llen(list_name) == 2
    assert load(client) == {"queue": "segue", "queued": 2, "running": 2, "total": 4}

    # A task ends: its ledger entry goes and its execution leaves the registry.
    taking.release(connection, queue_name, "t2")
    connection.zrem(StartedJobRegistry(queue=services.queue.queue).key,
                    *[m for m in connection.zrange(StartedJobRegistry(queue=services.queue.queue).key, 0, -1)
                      if m.startswith(b"t2:")])
    assert load(client) == {"queue": "segue", "queued": 2, "running": 1, "total": 3}


def test_an_execution_whose_heartbeat_expired_is_not_running(client, services, connection):
    services.queue.enqueue("t1")
    worker = SimpleWorker([services.queue.queue], connection=connection, name="dead-worker")
    worker.register_birth()
    job, _ = worker.dequeue_job_and_maintain_ttl(timeout=1)
    worker.prepare_execution(job)
    worker.prepare_job_execution(job, remove_from_intermediate_queue=True)
    assert load(client)["running"] == 1
    # The worker died: its execution's heartbeat expiry (the registry's score) lies in the past.
    registry = StartedJobRegistry(queue=services.queue.queue)
    (entry,) = connection.zrange(registry.key, 0, -1)
    connection.zadd(registry.key, {entry: 1})
    assert load(client) == {"queue": "segue", "queued": 0, "running": 0, "total": 0}
    # Reading the counts changed nothing: cleaning up abandoned jobs stays the workers' job.
    assert connection.zcard(registry.key) == 1


def test_queue_needs_no_api_key_and_is_not_rate_limited(settings):
    from backend.api.app import create_app

    app = create_app(settings=settings.with_(api_keys=(key_digest("secret"),), read_rate_limit="2/minute"))
    client = app.test_client()
    assert client.get("/tasks/nope").status_code == 401  # keys are on
    for _ in range(5):  # KEDA polls without a key, and more often than a client would
        assert client.get("/queue").status_code == 200
        assert client.get("/ready").status_code == 200
    # The read limit is real: a keyed client polling a task gets 429 on its third read.
    keyed = {"Authorization": "Bearer secret"}
    assert [client.get("/tasks/nope", headers=keyed).status_code for _ in range(3)] == [404, 404, 429]


def test_ready_says_whether_requests_can_be_taken(client, settings):
    from backend.api.app import create_app

    response = client.get("/ready")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "redis": "live", "mongodb": "live"}
    # No worker is running: /health is 503, yet the API can take requests (workers scaled to zero).
    assert client.get("/health").status_code == 503

    # Redis gone (a port where nothing listens): not ready, and /queue answers the JSON 503.
    down = create_app(settings=settings.with_(redis_url="redis://127.0.0.1:1/0")).test_client()
    response = down.get("/ready")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "redis": "down", "mongodb": "live"}
    response = down.get("/queue")
    assert response.status_code == 503
    assert set(response.get_json()) >= {"error", "code"}
