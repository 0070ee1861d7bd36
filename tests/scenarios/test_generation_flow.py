"""/generate and /continue end to end: API -> Redis/RQ -> real worker -> MongoDB, with the tiny model."""

import base64
import io

import numpy as np
import pytest
import soundfile as sf

from backend.core.audiofile import decode_audio_bytes
from tests.media_server import make_click_track
from worker.pipeline.audio import encode_wav
from worker.pipeline.bars import target_length


def submit(client, path, body):
    response = client.post(path, json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["task_id"]


def result_audio(task):
    data = base64.b64decode(task["audio"])
    audio, sr = decode_audio_bytes(data)
    return data, audio, sr


def test_generate_detects_tempo_and_ends_on_a_bar(client, run_worker, media_server):
    task_id = submit(client, "/generate", {"url": media_server.url("/click120.wav"), "currentTime": "3",
                                           "promptLength": "6", "duration": "16-18", "seed": 7})
    run_worker()
    task = client.get(f"/tasks/{task_id}").get_json()
    assert task["status"] == "completed", task["error"]
    assert task["progress"] == 100
    assert abs(task["bpm"] - 120) <= 2
    data, audio, sr = result_audio(task)
    assert data[:4] == b"RIFF" and sf.info(io.BytesIO(data)).subtype == "PCM_16"
    assert sr == 32000 and audio.shape[0] == 1
    # 120 BPM: a 4/4 bar is 2 s, so 16-18 s means 9 bars = 18 s (within one EnCodec frame).
    expected = target_length(task["bpm"], 16, 18, 6.0)
    assert 16 <= expected <= 18
    assert abs(audio.shape[1] / sr - expected) <= 1 / 50
    assert abs(task["duration_seconds"] - expected) <= 1 / 50
    assert task["sample_rate"] == 32000 and task["seed"] == 7
    assert task["started_at"] and task["completed_at"] and task["error"] is None
    assert client.get(f"/progress/{task_id}").get_json() == {"progress": 100.0}
    fetched = client.get(f"/fetch-result/{task_id}").get_json()
    assert fetched["status"] == "completed" and base64.b64decode(fetched["audio"]) == data


@pytest.mark.parametrize("bpm", [100, 128])
def test_bar_length_follows_the_tempo(client, run_worker, media_server, bpm):
    task_id = submit(client, "/generate", {"url": media_server.url(f"/click{bpm}.wav"), "duration": "10-14",
                                           "promptLength": 4})
    run_worker()
    task = client.get(f"/tasks/{task_id}").get_json()
    assert task["status"] == "completed", task["error"]
    assert abs(task["bpm"] - bpm) <= 2
    bars = task["duration_seconds"] / (240.0 / task["bpm"])
    assert abs(bars - round(bars)) * (240.0 / task["bpm"]) <= 1 / 50
    assert 10 - 1 / 50 <= task["duration_seconds"] <= 14 + 1 / 50


def test_mp3_output(client, run_worker, media_server):
    task_id = submit(client, "/generate", {"url": media_server.url("/click120.mp3"), "duration": "8-10",
                                           "promptLength": 3, "output_format": "mp3"})
    run_worker()
    task = client.get(f"/tasks/{task_id}").get_json()
    assert task["status"] == "completed", task["error"]
    data = base64.b64decode(task["audio"])
    assert data[:3] == b"ID3" or data[0] == 0xFF
    audio, sr = decode_audio_bytes(data)
    assert abs(audio.shape[1] / sr - task["duration_seconds"]) < 0.1


def test_progress_is_monotonic_and_reaches_100(client, services, settings, run_worker, media_server):
    import threading

    import redis

    task_id = submit(client, "/generate", {"url": media_server.url("/click120.wav"), "duration": "16-18"})
    seen, done = [], threading.Event()
    key = f"progress:{task_id}"

    def poll():
        while not done.is_set():
            seen.append(services.progress.get(task_id) or 0.0)
            done.wait(0.01)

    # Every progress report the worker makes is recorded by Redis's MONITOR, so whether intermediate values
    # were reported does not depend on a poller being scheduled at the right moments.
    reported: list[float] = []
    monitor = redis.Redis.from_url(settings.redis_url).monitor()
    monitor.connection.send_command("MONITOR")
    assert monitor.connection.read_response() in (b"OK", "OK")

    def watch():
        while not done.is_set():
            try:
                command = monitor.next_command()["command"]
            except Exception:
                return
            parts = command.split()
            if len(parts) >= 5 and parts[0].upper() in ("EVALSHA", "EVAL") and parts[3].endswith(key):
                reported.append(float(parts[4]))

    poller, watcher = threading.Thread(target=poll), threading.Thread(target=watch, daemon=True)
    poller.start()
    watcher.start()
    run_worker()
    done.set()
    poller.join()
    services.redis.ping()  # one more command wakes the watcher up to see `done`
    watcher.join(30)
    monitor.connection.disconnect()
    assert seen == sorted(seen)
    assert any(0 < p < 100 for p in reported), f"no intermediate progress was reported: {reported}"
    assert client.get(f"/progress/{task_id}").get_json()["progress"] == 100


def test_a_new_task_does_not_inherit_progress(client, run_worker, media_server):
    first = submit(client, "/generate", {"url": media_server.url("/click120.wav"), "duration": "8-10",
                                         "promptLength": 3})
    run_worker()
    second = submit(client, "/generate", {"url": media_server.url("/click120.wav")})
    assert client.get(f"/progress/{first}").get_json()["progress"] == 100
    assert client.get(f"/progress/{second}").get_json()["progress"] == 0


@pytest.mark.parametrize("sr, channels, seconds", [(44100, 2, 12.0), (22050, 1, 9.5)])
def test_continue_length_arithmetic_and_format(client, run_worker, sr, channels, seconds):
    clip = make_click_track(120, seconds, sr=sr, channels=channels)
    task_id = submit(client, "/continue", {"audio": base64.b64encode(encode_wav(clip, sr)).decode(),
                                           "prompt_duration": "6", "seed": 3})
    run_worker()
    task = client.get(f"/tasks/{task_id}").get_json()
    assert task["status"] == "completed", task["error"]
    _, audio, out_sr = result_audio(task)
    assert out_sr == sr and audio.shape[0] == channels
    # result = clip[:-6 s] + 30 s generated (prompt included)
    expected = seconds - 6.0 + 30.0
    assert abs(audio.shape[1] / sr - expected) <= 1 / 50
    # The untouched head of the clip survives exactly (16-bit quantisation aside).
    head = int((seconds - 6.0) * sr)
    assert np.allclose(audio[:, :head], clip[:, :head], atol=2 / 32768)


def test_continue_makes_a_new_task_and_leaves_the_parent_alone(client, services, run_worker, media_server):
    parent = submit(client, "/generate", {"url": media_server.url("/click120.wav"), "duration": "8-10",
                                          "promptLength": 3})
    run_worker()
    parent_task = client.get(f"/tasks/{parent}").get_json()
    parent_doc = services.store.get_task(parent)
    child = submit(client, "/continue", {"audio": parent_task["audio"], "task_id": parent,
                                         "prompt_duration": "6"})
    assert child != parent
    run_worker()
    child_task = client.get(f"/tasks/{child}").get_json()
    assert child_task["status"] == "completed", child_task["error"]
    assert child_task["parent_task_id"] == parent
    after = client.get(f"/tasks/{parent}").get_json()
    assert after["audio"] == parent_task["audio"]
    assert services.store.get_task(parent)["result_file_id"] == parent_doc["result_file_id"]
    assert child_task["duration_seconds"] > parent_task["duration_seconds"] + 20


def test_continue_clip_shorter_than_prompt_uses_it_whole(client, run_worker):
    clip = make_click_track(120, 3.0, sr=32000)
    task_id = submit(client, "/continue", {"audio": base64.b64encode(encode_wav(clip, 32000)).decode(),
                                           "prompt_duration": 6})
    run_worker()
    task = client.get(f"/tasks/{task_id}").get_json()
    assert task["status"] == "completed", task["error"]
    assert abs(task["duration_seconds"] - 30.0) <= 1 / 50


def test_same_seed_same_audio(client, run_worker, media_server):
    body = {"url": media_server.url("/click120.wav"), "duration": "8-10", "promptLength": 3, "seed": 1234}
    first, second = submit(client, "/generate", body), submit(client, "/generate", body)
    other = submit(client, "/generate", dict(body, seed=99))
    run_worker()
    audio = [client.get(f"/tasks/{t}").get_json()["audio"] for t in (first, second, other)]
    assert audio[0] == audio[1]
    assert audio[0] != audio[2]


@pytest.mark.parametrize("path, fragment", [
    ("/missing", "404"),
    ("/page.html", "no audio"),
])
def test_fetch_failures_end_failed_with_a_reason(client, run_worker, media_server, path, fragment):
    task_id = submit(client, "/generate", {"url": media_server.url(path)})
    run_worker()
    task = client.get(f"/tasks/{task_id}").get_json()
    assert task["status"] == "failed"
    assert fragment in task["error"]
    assert client.get(f"/fetch-result/{task_id}").get_json() == {"status": "failed", "error": task["error"]}


def test_timestamp_past_the_end_fails_with_a_reason(client, run_worker, media_server):
    task_id = submit(client, "/generate", {"url": media_server.url("/click120.wav"), "currentTime": 500})
    run_worker()
    task = client.get(f"/tasks/{task_id}").get_json()
    assert task["status"] == "failed" and "past the end" in task["error"]


def test_worker_refuses_private_urls_when_not_allowed(client, services, run_worker, settings, media_server):
    # Submitted while allowed, run by a worker that is not: the worker checks again.
    task_id = submit(client, "/generate", {"url": media_server.url("/click120.wav")})
    run_worker(settings.with_(allow_private_urls=False))
    task = client.get(f"/tasks/{task_id}").get_json()
    assert task["status"] == "failed"
    assert any(word in task["error"].lower() for word in ("private", "non-public", "loopback"))


def test_stereo_model_folder_gives_two_channels(settings, tiny_model, tiny_stereo_model, run_worker, media_server):
    from backend.api.app import create_app

    stereo = settings.with_(models=(str(tiny_model), str(tiny_stereo_model)))
    client = create_app(settings=stereo).test_client()
    models = [str(tiny_stereo_model), str(tiny_model)]
    generate = submit(client, "/generate", {"url": media_server.url("/click120.wav"), "duration": "8-10",
                                            "promptLength": 3, "model": models[0]})
    clip = make_click_track(120, 8.0, sr=48000, channels=1)
    cont = submit(client, "/continue", {"audio": base64.b64encode(encode_wav(clip, 48000)).decode(),
                                        "model": models[0], "prompt_duration": 4})
    run_worker(stereo)
    task = client.get(f"/tasks/{generate}").get_json()
    assert task["status"] == "completed", task["error"]
    _, audio, sr = result_audio(task)
    assert audio.shape[0] == 2 and sr == 32000 and task["channels"] == 2 and task["model"] == models[0]
    # /continue answers in the input's format: a mono 48 kHz clip stays mono 48 kHz.
    task = client.get(f"/tasks/{cont}").get_json()
    assert task["status"] == "completed", task["error"]
    _, audio, sr = result_audio(task)
    assert audio.shape[0] == 1 and sr == 48000
    assert abs(audio.shape[1] / sr - (8.0 - 4 + 30)) <= 1 / 50
