"""The request path against real Redis and MongoDB: validation, storage, queueing, reads."""

import base64

import pytest

from tests.media_server import make_click_track
from worker.pipeline.audio import encode_wav


def wav_b64(seconds=8.0, sr=44100, channels=2):
    return base64.b64encode(encode_wav(make_click_track(120, seconds, sr=sr, channels=channels), sr)).decode()


def test_generate_is_queued_with_only_the_task_id_in_redis(client, services, media_server):
    response = client.post("/generate", json={"url": media_server.url("/click120.wav"), "promptLength": "6",
                                              "duration": "16-18", "currentTime": "4"})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued" and body["queue_position"] == 1
    task_id = body["task_id"]
    assert len(task_id) >= 22  # >= 128 random bits, URL-safe
    job = services.queue.queue.fetch_job(task_id)
    assert job.args == (task_id,) and job.func_name == "worker.serving.jobs.run_task"
    doc = services.store.get_task(task_id)
    assert doc["status"] == "queued" and doc["request"]["currentTime"] == 4.0
    assert doc["request"]["duration_min"] == 16.0 and doc["request"]["duration_max"] == 18.0


def test_queue_positions_count_up(client, media_server):
    ids = [client.post("/generate", json={"url": media_server.url("/click120.wav")}).get_json() for _ in range(3)]
    assert [b["queue_position"] for b in ids] == [1, 2, 3]
    assert client.get(f"/tasks/{ids[2]['task_id']}").get_json()["queue_position"] == 3


def test_task_ids_are_unique_and_unguessable(client, media_server):
    ids = {client.post("/generate", json={"url": media_server.url("/click120.wav")}).get_json()["task_id"]
           for _ in range(5)}
    assert len(ids) == 5


def test_queued_task_reads(client, media_server):
    task_id = client.post("/generate", json={"url": media_server.url("/click120.wav")}).get_json()["task_id"]
    task = client.get(f"/tasks/{task_id}").get_json()
    assert task["status"] == "queued" and task["progress"] == 0 and "audio" not in task
    for key in ("task_id", "status", "progress", "model", "created_at", "started_at", "completed_at", "error",
                "queue_position", "parent_task_id", "request", "duration_seconds", "sample_rate", "bpm"):
        assert key in task
    assert client.get(f"/progress/{task_id}").get_json() == {"progress": 0.0}
    assert client.get(f"/fetch-result/{task_id}").get_json() == {"status": "queued"}


@pytest.mark.parametrize("path", ["/tasks/{}", "/progress/{}", "/fetch-result/{}"])
def test_unknown_ids_are_404_json(client, path):
    for task_id in ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "x", "../../etc"):
        response = client.get(path.format(task_id))
        assert response.status_code == 404
        assert response.get_json()["code"] in ("task_not_found", "not_found")


def test_continue_stores_input_in_gridfs(client, services):
    response = client.post("/continue", json={"audio": wav_b64(), "prompt_duration": "6", "task_id": "parent123"})
    assert response.status_code == 202
    doc = services.store.get_task(response.get_json()["task_id"])
    assert doc["parent_task_id"] == "parent123"
    assert doc["request"]["input_sample_rate"] == 44100 and doc["request"]["input_channels"] == 2
    assert "audio" not in doc["request"]
    assert services.store.read_audio(doc["input_file_id"])[:4] == b"RIFF"


@pytest.mark.parametrize("body, status, code", [
    ({"audio": base64.b64encode(b"definitely not audio" * 50).decode()}, 400, "undecodable_audio"),
    ({"audio": "%%%"}, 400, "invalid_base64"),
    ({}, 400, "missing_field"),
    ({"audio": wav_b64(0.5)}, 400, "audio_too_short"),
])
def test_continue_rejects_bad_audio_and_stores_nothing(client, services, body, status, code):
    response = client.post("/continue", json=body)
    assert response.status_code == status
    assert response.get_json()["code"] == code
    assert services.store.tasks.count_documents({}) == 0
    assert services.queue.depth() == 0


@pytest.mark.parametrize("path", ["/generate", "/continue"])
def test_body_that_is_not_json_is_400(client, services, path):
    response = client.post(path, data=b"{not json", content_type="application/json")
    assert response.status_code == 400 and response.get_json()["code"] == "invalid_json"
    response = client.post(path, data=b"url=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert services.store.tasks.count_documents({}) == 0


def test_bad_generate_fields_store_nothing(client, services):
    for body in ({"url": "ftp://x/y"}, {"url": "https://e.com/a", "duration": "20-10"}, {"currentTime": 3},
                 {"url": "https://e.com/a", "model": "facebook/musicgen-large"}):
        response = client.post("/generate", json=body)
        assert response.status_code == 400, body
        assert set(response.get_json()) == {"error", "code"}
    assert services.store.tasks.count_documents({}) == 0
    assert services.queue.depth() == 0


def test_private_urls_refused_unless_allowed(app, settings, media_server):
    from backend.api.app import create_app

    strict = create_app(settings=settings.with_(allow_private_urls=False)).test_client()
    response = strict.post("/generate", json={"url": media_server.url("/click120.wav")})
    assert response.status_code == 400 and response.get_json()["code"] == "url_refused"
    response = strict.post("/generate", json={"url": "http://169.254.169.254/latest/meta-data"})
    assert response.status_code == 400


def test_oversized_body_is_413(settings):
    from backend.api.app import create_app

    small = create_app(settings=settings.with_(max_body_mb=0.01)).test_client()
    response = small.post("/continue", json={"audio": "A" * 20000})
    assert response.status_code == 413 and response.get_json()["code"] == "payload_too_large"


def test_health_without_workers_is_503_with_parts(client):
    response = client.get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["mongodb"] == "live" and body["redis"] == "live" and body["pytorch"] == "down"
    assert body["workers"] == 0 and body["queue_depth"] == 0 and body["status"] != "live"


def test_cors_is_open(client):
    response = client.options("/generate", headers={"Origin": "https://example.org",
                                                    "Access-Control-Request-Method": "POST"})
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", "https://example.org")


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").get_json()["code"] == "not_found"
    response = client.get("/generate")
    assert response.status_code == 405 and response.get_json()["code"] == "method_not_allowed"
