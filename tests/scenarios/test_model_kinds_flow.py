"""Stereo and melody models through the whole API -> queue -> worker path (issue 8)."""

import base64

from tests.conftest import CACHE, noise
from worker.pipeline.audio import encode_wav
from worker.testing.random_model_melody import build_tiny_melody


def _app(settings, *models):
    from backend.api.app import create_app

    return create_app(settings=settings.with_(models=tuple(str(m) for m in models))).test_client()


def test_melody_model_with_and_without_chroma(settings, run_worker, media_server):
    melody = build_tiny_melody(CACHE / "tiny-melody")
    client = _app(settings, melody)
    body = {"url": media_server.url("/click120.wav"), "promptLength": 3, "duration": "6-8", "seed": 4}
    ids = [client.post("/generate", json=dict(body, melody=flag)).get_json()["task_id"] for flag in (True, "false")]
    run_worker(settings.with_(models=(str(melody),)))
    docs = [client.get(f"/tasks/{t}").get_json() for t in ids]
    assert [d["status"] for d in docs] == ["completed", "completed"], [d["error"] for d in docs]
    assert docs[0]["request"]["melody"] is True and docs[1]["request"]["melody"] is False
    with_chroma, without = (client.get(f"/tasks/{t}/audio").data for t in ids)
    assert with_chroma != without
    listed = client.get("/models").get_json()["models"][0]
    assert listed["kind"] == "musicgen_melody"


def test_melody_flag_needs_a_melody_model(client, media_server):
    response = client.post("/generate", json={"url": media_server.url("/click120.wav"), "melody": True})
    assert response.status_code == 400 and response.get_json()["code"] == "melody_unsupported"
    bad = client.post("/generate", json={"url": media_server.url("/click120.wav"), "melody": "maybe"})
    assert bad.status_code == 400 and "melody" in bad.get_json()["error"]


def test_stereo_model_continues_a_stereo_clip_in_stereo(settings, tiny_model, tiny_stereo_model, run_worker):
    client = _app(settings, tiny_model, tiny_stereo_model)
    clip = encode_wav(noise(2, 4.0, 32000), 32000)
    response = client.post("/continue", json={"audio": base64.b64encode(clip).decode(), "prompt_duration": 2,
                                              "duration": 6, "model": str(tiny_stereo_model)})
    task_id = response.get_json()["task_id"]
    run_worker(settings.with_(models=(str(tiny_model), str(tiny_stereo_model))))
    doc = client.get(f"/tasks/{task_id}").get_json()
    assert doc["status"] == "completed" and doc["channels"] == 2
    events = client.get(f"/tasks/{task_id}/events").get_data(as_text=True)
    assert '"channels":2' in events
