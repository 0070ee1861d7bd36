"""backend/api/services.py called directly (as the routes call it) on real Redis and MongoDB.

Values come from ``schemas.parse``, exactly what the routes hand over; tests/test_api_requests.py and
tests/test_live_routes.py cover the same functions through HTTP.
"""

import base64

import pytest
from rq.job import Job

from backend.api import schemas
from backend.api import services as svc
from backend.core import cancellation, heartbeat, webhooks
from backend.core.connections import Services
from backend.core.errors import BadRequest, Conflict, NotFound
from tests.media_server import make_click_track
from worker.pipeline.audio import encode_wav


@pytest.fixture
def services(settings):
    return Services.from_settings(settings)


def _generate(services, **body):
    values = schemas.parse(schemas.GenerateRequest, {"url": "http://127.0.0.1:9/a.wav", **body},
                           services.settings.model_ids)
    return svc.submit_generate(services, values)


def _clip(seconds, sr=22050, channels=2):
    return encode_wav(make_click_track(120, seconds, sr=sr, channels=channels), sr)


def _continue(services, audio, **body):
    values = schemas.parse(schemas.ContinueRequest, {"audio": base64.b64encode(audio).decode(), **body},
                           services.settings.model_ids)
    return svc.submit_continue(services, values)


def _webhooks_due(services):
    return {m.decode() for m in services.redis.zrange(webhooks.DUE_KEY, 0, -1)}


def test_submit_generate_stores_the_request_and_queues_the_task_id(services):
    answer = _generate(services, duration="16-18.5", currentTime="4", promptLength=6, prompt="jazz", seed=9)
    task_id = answer["task_id"]
    assert answer == {"task_id": task_id, "status": "queued", "queue_position": 1}
    doc = services.store.get_task(task_id)
    assert doc["kind"] == "generate" and doc["model"] == services.settings.default_model
    assert doc["job_id"] == task_id and doc["attempts"] == 0 and doc["parent_task_id"] is None
    assert doc["owner"] is None  # not inside a request: a script or a test
    request = doc["request"]
    assert request["duration"] == "16-18.5" and (request["duration_min"], request["duration_max"]) == (16, 18.5)
    assert request["currentTime"] == 4.0 and request["prompt"] == "jazz" and request["seed"] == 9
    assert "prompt_source" not in request  # the client's own prompt
    assert Job.fetch(task_id, connection=services.redis).args == (task_id,)
    assert _generate(services)["queue_position"] == 2


def test_melody_conditioning_on_a_plain_model_is_refused_before_anything_is_stored(services):
    with pytest.raises(BadRequest) as refused:
        _generate(services, melody=True)
    assert refused.value.code == "melody_unsupported"
    assert services.store.tasks.count_documents({}) == 0 and services.queue.depth() == 0


def test_submit_continue_stores_the_clip_and_what_it_is(services):
    audio = _clip(5.0, sr=22050, channels=2)
    answer = _continue(services, audio, prompt_duration=3, duration=20, task_id="parent-1")
    doc = services.store.get_task(answer["task_id"])
    assert doc["kind"] == "continue" and doc["parent_task_id"] == "parent-1"
    assert services.store.read_audio(doc["input_file_id"]) == audio  # the bytes as sent, in GridFS
    request = doc["request"]
    assert request["input_seconds"] == pytest.approx(5.0, abs=1e-3)
    assert (request["input_sample_rate"], request["input_channels"]) == (22050, 2)
    assert (request["prompt_duration"], request["duration"]) == (3, 20)
    assert services.queue.position(doc["job_id"]) == 1


def test_a_clip_past_the_limit_is_refused_and_nothing_is_stored(settings):
    services = Services.from_settings(settings.with_(max_clip_seconds=3.0))
    with pytest.raises(BadRequest) as refused:
        _continue(services, _clip(4.0))
    assert refused.value.code == "audio_too_long" and "limit is 3 s" in refused.value.message
    assert services.store.tasks.count_documents({}) == 0
    assert services.store.db["audio.files"].count_documents({}) == 0
    assert services.queue.depth() == 0


def test_result_file_only_once_completed(services):
    task_id = _generate(services, output_format="mp3")["task_id"]
    with pytest.raises(Conflict) as early:
        svc.result_file(services, services.store.get_task(task_id))
    assert early.value.code == "task_not_completed"
    file_id = services.store.put_audio(task_id, "result", b"ID3 not really an mp3", "audio/mpeg")
    services.store.finish(task_id, "completed", {"result_file_id": file_id})
    data, content_type, name = svc.result_file(services, services.store.get_task(task_id))
    assert data == b"ID3 not really an mp3" and content_type == "audio/mpeg"
    assert name == f"segue-{task_id[:8]}.mp3"


def test_cancel_a_queued_task_ends_it_once(services):
    keep = _generate(services)["task_id"]
    task_id = _generate(services)["task_id"]
    view = svc.cancel_task(services, task_id)
    assert view["status"] == "canceled" and view["error"] == "canceled by request"
    assert services.queue.queue.get_job_ids() == [keep]  # off the line; the other task keeps its place
    assert _webhooks_due(services) == {task_id}
    again = svc.cancel_task(services, task_id)  # a second cancel answers the same, changes nothing
    assert again["status"] == "canceled" and again["completed_at"] == view["completed_at"]


def test_cancel_a_running_task_asks_its_worker(services):
    task_id = _generate(services)["task_id"]
    services.store.claim(task_id, "w1", "run-w1")
    view = svc.cancel_task(services, task_id)
    assert view["status"] == "processing" and view["cancel_requested"] is True  # its worker ends it soon
    assert cancellation.is_requested(services.redis, task_id)
    assert services.store.get_task(task_id)["cancel_requested"] is True
    assert _webhooks_due(services) == set()


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_cancel_after_the_end_is_a_conflict(services, status):
    task_id = _generate(services)["task_id"]
    services.store.finish(task_id, status)
    with pytest.raises(Conflict) as refused:
        svc.cancel_task(services, task_id)
    assert refused.value.code == "task_finished"
    assert not cancellation.is_requested(services.redis, task_id)


def test_cancel_an_unknown_task_is_not_found(services):
    with pytest.raises(NotFound):
        svc.cancel_task(services, "no-such-task")


def test_models_failed_keeps_the_first_reason_per_model():
    beats = [{"models_failed": {"a": "offline"}}, {"models_failed": {"a": "no memory", "b": "bad folder"}},
             {"models_failed": None}, {}]
    assert svc.models_failed(beats) == {"a": "offline", "b": "bad folder"}


def test_health_counts_only_ready_workers_as_live(services):
    heartbeat.write(services.redis, "loading", {"torch_ok": True, "ready": False, "device": "cuda:0",
                                                "models_loaded": []}, period_seconds=600)
    report = svc.health(services)
    assert report["workers"] == 1 and report["pytorch"] == "down" and report["status"] == "degraded"
    assert report["device"] is None and report["torch_version"] is None
    assert [w["worker_id"] for w in report["worker_details"]] == ["loading"]
    heartbeat.write(services.redis, "ready", {"torch_ok": True, "device": "cpu", "torch_version": "2.13.0",
                                              "models_loaded": [services.settings.default_model]},
                    period_seconds=600)
    report = svc.health(services)
    assert report["status"] == "live" and report["pytorch"] == "live" and report["workers"] == 2
    assert report["device"] == "cpu" and report["torch_version"] == "2.13.0"
    assert report["mongodb"] == "live" and report["redis"] == "live" and report["queue_depth"] == 0


def test_health_lists_several_devices_and_degrades_without_the_default_model(services):
    default = services.settings.default_model
    heartbeat.write(services.redis, "w1", {"torch_ok": True, "device": "cuda:1", "models_loaded": ["other"],
                                           "models_failed": {default: "out of memory"}}, period_seconds=600)
    heartbeat.write(services.redis, "w2", {"torch_ok": True, "device": "cuda:0", "models_loaded": ["other"]},
                    period_seconds=600)
    report = svc.health(services)
    assert report["device"] == ["cuda:0", "cuda:1"]
    assert report["models_loaded"] == ["other"] and report["models_failed"] == {default: "out of memory"}
    # Every part is up, but a request that names no model cannot be served.
    assert report["pytorch"] == "live" and report["status"] == "degraded"
