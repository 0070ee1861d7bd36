"""Issue 6 routes against a real worker: SSE events, binary stream, audio download, models, cancel, ETA, seeds."""

import base64
import io
import json
import struct
import threading

import numpy as np
import soundfile as sf

from backend.core import cancellation
from tests.conftest import noise, wait_for
from worker.pipeline.audio import encode_wav


def parse_sse(text: str) -> list[tuple[str, dict | None]]:
    events = []
    for block in text.split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if name:
            events.append((name, json.loads("\n".join(data)) if data else None))
    return events


def pcm_of(audio_events) -> np.ndarray:
    pieces = []
    for data in audio_events:
        samples = np.frombuffer(base64.b64decode(data["pcm"]), dtype="<f4")
        pieces.append(samples.reshape(-1, data["channels"]).T)
    return np.concatenate(pieces, axis=1)


def submit(client, media_server, **extra):
    body = {"url": media_server.url("/click120.wav"), "currentTime": 1, "promptLength": 3, "duration": "6-8",
            **extra}
    response = client.post("/generate", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["task_id"]


def test_late_client_gets_every_chunk_then_completed(client, run_worker, media_server):
    task_id = submit(client, media_server, seed=3)
    run_worker()
    response = client.get(f"/tasks/{task_id}/events")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events = parse_sse(response.get_data(as_text=True))
    names = [name for name, _ in events]
    assert names[-1] == "completed" and names.count("completed") == 1
    assert "progress" in names and names.count("audio") >= 3
    final = events[-1][1]
    assert final["status"] == "completed" and "audio" not in final
    assert final["audio_url"] == f"/tasks/{task_id}/audio"
    audio_events = [data for name, data in events if name == "audio"]
    assert [d["seq"] for d in audio_events] == list(range(len(audio_events)))
    assert {d["sample_rate"] for d in audio_events} == {32000} and {d["dtype"] for d in audio_events} == {"float32"}
    quiet = parse_sse(client.get(f"/tasks/{task_id}/events?audio=0").get_data(as_text=True))
    assert [n for n, _ in quiet if n == "audio"] == [] and quiet[-1][0] == "completed"
    streamed = pcm_of(audio_events)

    download = client.get(f"/tasks/{task_id}/audio")
    result, sr = sf.read(io.BytesIO(download.data), dtype="float32", always_2d=True)
    prompt_samples = result.shape[0] - streamed.shape[1]
    assert sr == 32000 and abs(prompt_samples / sr - final["request"]["promptLength"]) < 0.05
    # The WAV is 16-bit (and scaled down if it peaked above full scale): equal up to that.
    tail = result[prompt_samples:, 0]
    scale = max(1.0, float(np.abs(streamed).max()))
    np.testing.assert_allclose(tail, streamed[0] / scale, atol=2e-4)


def test_events_follow_a_running_task(app, client, run_worker, media_server):
    task_id = submit(client, media_server, duration="20-24")
    received = []

    def listen():
        response = app.test_client().get(f"/tasks/{task_id}/events", buffered=False)
        text = ""
        for piece in response.response:
            text += piece.decode() if isinstance(piece, bytes) else piece
            received[:] = parse_sse(text)
        response.close()

    listener = threading.Thread(target=listen)
    listener.start()
    wait_for(lambda: received, timeout=60, message="the first event of the queued task")  # the stream is open
    assert listener.is_alive(), "the stream must stay open while the task is queued"
    run_worker()
    listener.join(timeout=30)
    assert not listener.is_alive()
    names = [name for name, _ in received]
    assert names[-1] == "completed"
    progress = [data["progress"] for name, data in received if name == "progress"]
    assert progress == sorted(progress) and progress[0] == 0 and progress[-1] == 100
    assert len(progress) >= 3
    first_audio = names.index("audio")
    assert first_audio < len(names) - 1
    assert sum(1 for n in names if n == "audio") >= 10  # ~20 s of new audio in 1 s chunks


def read_frames(data: bytes) -> list[tuple[dict, bytes]]:
    frames, at = [], 0
    while at < len(data):
        total, head_len = struct.unpack(">II", data[at:at + 8])
        header = json.loads(data[at + 8:at + 8 + head_len])
        frames.append((header, data[at + 8 + head_len:at + total]))
        at += total
    return frames


def test_binary_stream_frames(client, run_worker, media_server):
    task_id = submit(client, media_server, seed=9)
    run_worker()
    response = client.get(f"/tasks/{task_id}/stream")
    assert response.status_code == 200 and response.mimetype == "application/octet-stream"
    frames = read_frames(response.data)
    assert frames[-1][0]["final"] is True and frames[-1][0]["status"] == "completed" and frames[-1][1] == b""
    audio = frames[:-1]
    assert len(audio) >= 3 and all(not h["final"] for h, _ in audio)
    offsets = [h["offset_samples"] for h, _ in audio]
    sizes = [len(pcm) // 4 // h["channels"] for h, pcm in audio]
    assert offsets == list(np.cumsum([0] + sizes[:-1]))
    events = parse_sse(client.get(f"/tasks/{task_id}/events").get_data(as_text=True))
    from_sse = pcm_of([d for n, d in events if n == "audio"])
    from_frames = np.concatenate([np.frombuffer(pcm, dtype="<f4") for _, pcm in audio])
    np.testing.assert_array_equal(from_sse[0], from_frames)


def test_audio_download_headers(client, run_worker, media_server):
    task_id = submit(client, media_server)
    early = client.get(f"/tasks/{task_id}/audio")
    assert early.status_code == 409 and early.get_json()["code"] == "task_not_completed"
    run_worker()
    response = client.get(f"/tasks/{task_id}/audio")
    assert response.status_code == 200 and response.mimetype == "audio/wav"
    assert response.headers["Content-Disposition"] == f'attachment; filename="segue-{task_id[:8]}.wav"'
    assert int(response.headers["X-Processing-Time-Ms"]) > 0
    audio, sr = sf.read(io.BytesIO(response.data))
    assert abs(float(response.headers["X-Audio-Duration-Seconds"]) - len(audio) / sr) < 1e-3
    assert client.get("/tasks/" + "x" * 32 + "/audio").status_code == 404


def test_models_lists_the_configured_folders(settings, tiny_model, tiny_stereo_model):
    from backend.api.app import create_app

    app = create_app(settings=settings.with_(models=(str(tiny_model), str(tiny_stereo_model)),
                                             model_descriptions=((str(tiny_stereo_model), "wide pads"),)))
    body = app.test_client().get("/models").get_json()
    assert body["default"] == str(tiny_model)
    mono, stereo = body["models"]
    assert (mono["id"], mono["channels"], mono["sample_rate"], mono["default"]) == (str(tiny_model), 1, 32000, True)
    assert (stereo["channels"], stereo["description"], stereo["loaded"]) == (2, "wide pads", False)


def test_model_default_description_conditions_requests_without_prompt(settings, tiny_model, media_server):
    from backend.api.app import create_app

    app = create_app(settings=settings.with_(model_descriptions=((str(tiny_model), "lofi keys"),)))
    c = app.test_client()
    without = submit(c, media_server)
    with_own = submit(c, media_server, prompt="jazz")
    assert c.get(f"/tasks/{without}").get_json()["request"]["prompt"] == "lofi keys"
    assert c.get(f"/tasks/{with_own}").get_json()["request"]["prompt"] == "jazz"


def test_cancel_a_queued_task(client, services, run_worker, media_server):
    task_id = submit(client, media_server)
    response = client.post(f"/tasks/{task_id}/cancel")
    assert response.status_code == 200 and response.get_json()["status"] == "canceled"
    assert services.queue.depth() == 0
    run_worker()
    doc = client.get(f"/tasks/{task_id}").get_json()
    assert doc["status"] == "canceled" and doc["progress"] == 0
    assert client.post(f"/tasks/{task_id}/cancel").status_code == 200  # again: nothing changes
    events = parse_sse(client.get(f"/tasks/{task_id}/events").get_data(as_text=True))
    assert events[-1][0] == "canceled"


def test_cancel_while_running_stops_only_that_task(app, client, services, run_worker, media_server):
    keep = submit(client, media_server, seed=1)
    stop = submit(client, media_server, seed=2, duration="24-28")
    answers = []

    def cancel_when_generating():  # the worker needs the main thread (signal handlers)
        other = app.test_client()
        wait_for(lambda: other.get(f"/progress/{stop}").get_json()["progress"] > 15, timeout=60,
                 message="the task to be generating")
        answers.append(other.post(f"/tasks/{stop}/cancel").get_json())

    canceler = threading.Thread(target=cancel_when_generating)
    canceler.start()
    run_worker()
    canceler.join(timeout=10)
    assert answers and answers[0]["cancel_requested"] is True, answers
    stopped = client.get(f"/tasks/{stop}").get_json()
    assert stopped["status"] == "canceled" and stopped["progress"] < 100
    assert client.get(f"/tasks/{keep}").get_json()["status"] == "completed"
    assert client.post(f"/tasks/{keep}/cancel").get_json()["code"] == "task_finished"


def test_cancel_flag_seen_by_the_worker_before_generation(client, services, run_worker, media_server):
    task_id = submit(client, media_server)
    cancellation.request_cancel(services.redis, task_id)  # as if it arrived while the worker downloads
    run_worker()
    doc = client.get(f"/tasks/{task_id}").get_json()
    assert doc["status"] == "canceled" and doc["error"] == "canceled by request"


def test_same_seed_same_audio_alone_and_batched(client, run_worker, media_server):
    alone = submit(client, media_server, seed=42, prompt="bass")
    run_worker()
    batched = [submit(client, media_server, seed=42, prompt="bass"),
               submit(client, media_server, seed=7, currentTime=4),
               submit(client, media_server, seed=42, prompt="drums", duration="10-12")]
    run_worker()
    docs = [client.get(f"/tasks/{t}").get_json() for t in batched]
    assert docs[0]["batch_size"] == 3
    assert client.get(f"/tasks/{alone}/audio").data == client.get(f"/tasks/{batched[0]}/audio").data
    assert client.get(f"/tasks/{alone}/audio").data != client.get(f"/tasks/{batched[2]}/audio").data


def test_queue_position_and_eta(client, run_worker, media_server):
    first = submit(client, media_server)
    assert client.get(f"/tasks/{first}").get_json()["eta_seconds"] is None  # no batch timed yet
    run_worker()
    tasks = [submit(client, media_server) for _ in range(3)]
    docs = [client.get(f"/tasks/{t}").get_json() for t in tasks]
    assert [d["queue_position"] for d in docs] == [1, 2, 3]
    assert all(d["eta_seconds"] is not None and d["eta_seconds"] > 0 for d in docs)
    assert client.get(f"/tasks/{first}").get_json()["eta_seconds"] is None  # ended


def test_continue_streams_too(client, run_worker):
    clip = encode_wav(noise(2, 4.0, 44100), 44100)
    response = client.post("/continue", json={"audio": base64.b64encode(clip).decode(), "prompt_duration": 2,
                                              "duration": 6})
    task_id = response.get_json()["task_id"]
    run_worker()
    events = parse_sse(client.get(f"/tasks/{task_id}/events").get_data(as_text=True))
    streamed = pcm_of([d for n, d in events if n == "audio"])
    assert events[-1][0] == "completed"
    assert abs(streamed.shape[1] / 32000 - 4.0) < 0.05  # 6 s window minus the 2 s prompt, at the model's rate


def test_a_stream_past_its_time_limit_ends_with_a_non_final_timeout(client, services, media_server):
    from backend.api import live

    task_id = submit(client, media_server)  # no worker: it stays queued
    events = list(live.follow(services, task_id, max_seconds=0.6))
    assert [kind for kind, _ in events] == ["progress", "timeout"]
    assert events[-1][1]["status"] == "queued"
    assert client.get(f"/tasks/{task_id}").get_json()["status"] == "queued"  # the task itself goes on
