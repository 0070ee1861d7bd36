"""Results longer than MusicGen's 30 s window (worker.engine.windows), in the engine and through the API."""

import base64
import io

import numpy as np
import soundfile as sf

from tests.conftest import noise
from worker.engine import GenerationRequest
from worker.pipeline.audio import encode_wav
from worker.engine.windows import WindowedGeneration


def test_fifty_seconds_in_three_windows_with_continuous_chunks_and_progress(engine):
    progress, chunks = [], []
    request = GenerationRequest(noise(1, 3.0, 32000), 32000, 50.0, seed=8,
                                on_progress=lambda done, total: progress.append(done / total),
                                on_audio=lambda audio, offset: chunks.append((offset, audio.copy())))
    assert WindowedGeneration(request, engine.sample_rate, engine.hop_length).windows_needed == 3
    (result,) = engine.generate([request])  # the engine runs the windows itself
    assert result.audio.shape == (1, 50 * 32000)
    assert progress == sorted(progress) and progress[-1] == 1.0
    offsets = [o for o, _ in chunks]
    assert offsets == list(np.cumsum([0] + [c.shape[1] for _, c in chunks[:-1]]))
    joined = np.concatenate([c for _, c in chunks], axis=1)
    np.testing.assert_allclose(joined, result.audio[:, 3 * 32000:], atol=1e-4)


def test_windowed_results_are_reproducible_and_batched_rows_differ(engine):
    def request(seed, total):
        return GenerationRequest(noise(1, 2.0, 32000, seed=1), 32000, total, seed=seed)

    (first,) = engine.generate([request(5, 36.0)])
    batch = engine.generate([request(5, 36.0), request(6, 10.0), request(5, 50.0)])
    np.testing.assert_array_equal(first.audio, batch[0].audio)
    assert batch[1].audio.shape[1] == 10 * 32000 and batch[2].audio.shape[1] == 50 * 32000
    # The same seed and prompt: identical until the shorter one's first window ends.
    np.testing.assert_array_equal(batch[0].audio[:, :30 * 32000], batch[2].audio[:, :30 * 32000])


def test_a_sixty_second_generate_is_bar_exact(client, run_worker, media_server):
    response = client.post("/generate", json={"url": media_server.url("/click120.wav"), "promptLength": 4,
                                              "duration": "58-62"})
    assert response.status_code == 202, response.get_json()
    task_id = response.get_json()["task_id"]
    run_worker()
    doc = client.get(f"/tasks/{task_id}").get_json()
    assert doc["status"] == "completed", doc["error"]
    assert doc["bpm"] == 120 or abs(doc["bpm"] - 120) < 1.5
    bar = 240.0 / doc["bpm"]
    assert 58 <= doc["duration_seconds"] <= 62
    assert abs(doc["duration_seconds"] / bar - round(doc["duration_seconds"] / bar)) < 0.01
    audio, sr = sf.read(io.BytesIO(client.get(f"/tasks/{task_id}/audio").data))
    assert abs(len(audio) / sr - doc["duration_seconds"]) < 1e-3


def test_continue_with_a_long_duration(client, run_worker):
    clip = encode_wav(noise(2, 5.0, 44100), 44100)
    response = client.post("/continue", json={"audio": base64.b64encode(clip).decode(), "prompt_duration": 3,
                                              "duration": 36})
    assert response.status_code == 202, response.get_json()
    run_worker()
    doc = client.get(f"/tasks/{response.get_json()['task_id']}").get_json()
    assert doc["status"] == "completed", doc["error"]
    assert abs(doc["duration_seconds"] - (5 - 3 + 36)) < 0.05 and doc["channels"] == 2


def test_limits_are_120_seconds(client, media_server):
    too_long = client.post("/generate", json={"url": media_server.url("/click120.wav"), "duration": "100-121"})
    assert too_long.status_code == 400 and "1-120" in too_long.get_json()["error"]
    clip = base64.b64encode(encode_wav(noise(1, 2.0, 32000), 32000)).decode()
    assert client.post("/continue", json={"audio": clip, "duration": 121}).status_code == 400
