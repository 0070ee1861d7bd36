"""GET /metrics: numbers kept in Redis, read at scrape time, the same from every API process."""

import base64

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.api.app import create_app
from backend.core import heartbeat, metrics
from backend.core.ids import new_task_id
from backend.dev.embedded import free_port
from tests.media_server import make_click_track, wav_bytes


def scrape(client) -> dict:
    """{(sample name, frozenset(labels)): value} of one scrape."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def insert(services, status: str) -> str:
    task_id = new_task_id()
    services.store.insert_task({"_id": task_id, "job_id": task_id, "kind": "generate", "status": status,
                                "model": "m", "request": {}})
    return task_id


def test_recorded_tasks_and_batches_show_up_as_histograms_and_counters(client, services):
    r = services.redis
    metrics.record_task(r, status="completed", model="small", seconds=3.2, audio_seconds=17.5)
    metrics.record_task(r, status="completed", model="small", seconds=45.0, audio_seconds=12.5)
    metrics.record_task(r, status="failed", model="small", seconds=0.2, audio_seconds=0)
    metrics.record_task(r, status="completed", model="/models/my folder|x", seconds=5000, audio_seconds=1)
    for size in (1, 4, 4, 40):
        metrics.record_batch(r, size)

    s = scrape(client)
    done = dict(model="small", status="completed")
    assert value(s, "segue_task_seconds_count", **done) == 2
    assert value(s, "segue_task_seconds_sum", **done) == pytest.approx(48.2)
    assert value(s, "segue_task_seconds_bucket", le="2.5", **done) == 0
    assert value(s, "segue_task_seconds_bucket", le="5", **done) == 1
    assert value(s, "segue_task_seconds_bucket", le="60", **done) == 2
    assert value(s, "segue_task_seconds_bucket", le="+Inf", **done) == 2
    assert value(s, "segue_task_seconds_bucket", le="0.5", model="small", status="failed") == 1
    # A value past the largest bound counts only in +Inf; odd characters in a model id survive.
    odd = dict(model="/models/my folder|x", status="completed")
    assert value(s, "segue_task_seconds_bucket", le="1800", **odd) == 0
    assert value(s, "segue_task_seconds_bucket", le="+Inf", **odd) == 1
    assert value(s, "segue_generated_audio_seconds_total", model="small") == pytest.approx(30.0)
    # The failed task produced no audio, so only models with audio have a series.
    assert {dict(k[1])["model"] for k in s if k[0] == "segue_generated_audio_seconds_total"} == \
        {"small", "/models/my folder|x"}
    assert value(s, "segue_batch_size_count") == 4
    assert value(s, "segue_batch_size_sum") == 49
    assert value(s, "segue_batch_size_bucket", le="1") == 1
    assert value(s, "segue_batch_size_bucket", le="4") == 3
    assert value(s, "segue_batch_size_bucket", le="32") == 3
    assert value(s, "segue_batch_size_bucket", le="+Inf") == 4


def test_live_gauges_follow_queue_store_and_heartbeats(client, services):
    for status in ("completed", "completed", "failed", "processing"):
        insert(services, status)
    for _ in range(3):
        services.queue.enqueue(insert(services, "queued"))
    heartbeat.write(services.redis, "w1", {"current_tasks": ["a", "b"]}, 10)
    heartbeat.write(services.redis, "w2", {"current_tasks": []}, 10)

    s = scrape(client)
    assert value(s, "segue_queue_depth") == 3
    assert value(s, "segue_tasks", status="queued") == 3
    assert value(s, "segue_tasks", status="completed") == 2
    assert value(s, "segue_tasks", status="failed") == 1
    assert value(s, "segue_tasks", status="processing") == 1
    assert value(s, "segue_tasks", status="canceled") == 0
    assert value(s, "segue_workers") == 2
    assert value(s, "segue_worker_current_tasks", worker_id="w1") == 2

    heartbeat.remove(services.redis, "w1")
    assert value(scrape(client), "segue_workers") == 1


def test_two_api_processes_report_the_same_numbers(settings, services):
    """Two apps (as two gunicorn workers would be) share nothing but Redis and MongoDB."""
    first, second = create_app(settings=settings).test_client(), create_app(settings=settings).test_client()
    metrics.record_task(services.redis, status="completed", model="small", seconds=7, audio_seconds=10)
    metrics.record_batch(services.redis, 2)
    insert(services, "completed")
    a, b = scrape(first), scrape(second)
    assert a == b
    assert value(a, "segue_task_seconds_count", model="small", status="completed") == 1
    assert value(a, "segue_tasks", status="completed") == 1
    # A number recorded after one scrape is seen by the other process too.
    metrics.record_task(services.redis, status="completed", model="small", seconds=7, audio_seconds=10)
    assert value(scrape(second), "segue_generated_audio_seconds_total", model="small") == 20


def test_redis_down_is_a_json_503(settings):
    app = create_app(settings=settings.with_(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    response = app.test_client().get("/metrics")
    assert response.status_code == 503
    assert response.get_json()["code"] == "queue_unavailable"


def test_a_worker_run_is_counted(client, services, run_worker):
    clip = make_click_track(100, 3.0, sr=32000)
    for seed in (1, 2):
        body = {"audio": base64.b64encode(wav_bytes(clip, 32000)).decode(), "prompt_duration": 2, "duration": 4,
                "seed": seed}
        assert client.post("/continue", json=body).status_code == 202
    assert value(scrape(client), "segue_queue_depth") == 2
    run_worker()
    s = scrape(client)
    model = services.settings.default_model
    assert value(s, "segue_task_seconds_count", model=model, status="completed") == 2
    assert value(s, "segue_tasks", status="completed") == 2
    assert value(s, "segue_queue_depth") == 0
    # Each task counts the most tasks it decoded beside (itself included): 1 or 2 here, whatever the timing.
    assert value(s, "segue_batch_size_count") == 2
    assert 2 <= value(s, "segue_batch_size_sum") <= 4
    # Each task added the 2 s it generated beyond its 2 s prompt (4 s window).
    assert value(s, "segue_generated_audio_seconds_total", model=model) == pytest.approx(4.0, abs=0.1)
