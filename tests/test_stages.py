"""worker/pipeline/stages.py: from a task's request to a GenerationRequest and back to delivered audio.

No model runs here: ``finish`` is fed a ``GenerationResult`` built by hand, as the engine would return it.
"""

import numpy as np
import pytest

from backend.core.audiofile import decode_audio_bytes
from backend.core.errors import AudioDecodeError
from backend.core.tasks import WINDOW_SECONDS
from tests.media_server import make_noise_track
from worker.engine import GenerationResult
from worker.pipeline import stages
from worker.pipeline.audio import encode_wav
from worker.pipeline.bars import bar_seconds

SR = 44100


def _clip(seconds=5.0, sr=SR, channels=2):
    data = encode_wav(make_noise_track(seconds, sr=sr, channels=channels), sr)
    return data, decode_audio_bytes(data)[0]


def _continue_request(**fields):
    return {"prompt_duration": 2, "duration": 4, "prompt": "lofi drums", "seed": 11, **fields}


def test_continue_prompts_with_the_clips_tail():
    data, clip = _clip()
    prepared = stages.prepare_continue(_continue_request(), data)
    request = prepared.request
    assert request.prompt_sr == SR
    assert request.prompt_audio.shape == (2, 2 * SR)
    np.testing.assert_array_equal(request.prompt_audio, clip[:, -2 * SR:])
    assert request.total_seconds == 4.0  # the output's length, prompt included
    assert request.text == "lofi drums" and request.seed == 11


def test_continue_finish_splices_the_model_output_onto_the_head():
    data, clip = _clip()  # 5 s stereo at 44.1 kHz; the last 2 s are the prompt
    prepared = stages.prepare_continue(_continue_request(), data)
    model_output = np.full((1, 4 * SR), 0.25, dtype=np.float32)  # mono, 4 s, at the clip's rate
    outcome = prepared.finish(GenerationResult(model_output, SR))
    assert outcome.sample_rate == SR and outcome.audio.dtype == np.float32
    assert outcome.audio.shape == (2, 3 * SR + 4 * SR)  # the head kept, the tail replaced
    np.testing.assert_array_equal(outcome.audio[:, :3 * SR], clip[:, :3 * SR])
    assert np.all(outcome.audio[:, 3 * SR:] == 0.25)  # mono output copied onto both channels
    assert outcome.seed == 11 and outcome.prompt_seconds == 2.0
    assert outcome.bpm is None and outcome.target_seconds is None


def test_continue_output_comes_back_at_the_clips_rate_and_channels():
    data, clip = _clip(seconds=3.0, sr=22050, channels=1)
    prepared = stages.prepare_continue(_continue_request(prompt_duration=1), data)
    model_output = np.zeros((2, 2 * 32000), dtype=np.float32)  # a stereo model at 32 kHz, 2 s
    outcome = prepared.finish(GenerationResult(model_output, 32000))
    assert outcome.sample_rate == 22050 and outcome.audio.shape[0] == 1
    assert abs(outcome.audio.shape[1] - (2 * 22050 + 2 * 22050)) <= 1
    np.testing.assert_array_equal(outcome.audio[:, :2 * 22050], clip[:, :2 * 22050])


def test_a_clip_shorter_than_the_prompt_is_the_whole_prompt():
    data, clip = _clip(seconds=1.5)
    prepared = stages.prepare_continue(_continue_request(prompt_duration=6), data)
    np.testing.assert_array_equal(prepared.request.prompt_audio, clip)
    outcome = prepared.finish(GenerationResult(np.zeros((2, 3 * SR), dtype=np.float32), SR))
    assert outcome.prompt_seconds == pytest.approx(1.5)
    assert outcome.audio.shape == (2, 3 * SR)  # nothing of the clip is left before the model's output


def test_a_continue_without_a_duration_generates_one_window():
    data, _ = _clip()
    for missing in ({"duration": None}, {"duration": 0}):
        assert stages.prepare_continue(_continue_request(**missing), data).request.total_seconds == WINDOW_SECONDS


def test_sampling_settings_pass_through_and_default():
    data, _ = _clip()
    given = stages.prepare_continue(_continue_request(top_k=50, top_p=0.9, temperature=0.7, cfg_coef=5.0,
                                                      melody=True), data).request
    assert (given.top_k, given.top_p, given.temperature, given.cfg_coef) == (50, 0.9, 0.7, 5.0)
    assert given.melody_conditioning is True
    plain = stages.prepare_continue({"prompt_duration": 2}, data).request
    assert (plain.top_k, plain.top_p, plain.temperature, plain.cfg_coef) == (250, 0.0, 1.0, 3.0)
    assert plain.melody_conditioning is False and plain.text is None


def test_seeds_are_kept_or_drawn_once_per_task():
    data, _ = _clip()
    assert stages.prepare_continue(_continue_request(seed=0), data).request.seed == 0  # 0 is a seed, not "none"
    drawn = [stages.prepare_continue(_continue_request(seed=None), data) for _ in range(3)]
    seeds = [p.request.seed for p in drawn]
    assert all(0 <= s < 2**31 for s in seeds) and len(set(seeds)) == 3
    # The drawn seed is the one reported with the result, so the task can be reproduced.
    outcome = drawn[0].finish(GenerationResult(np.zeros((1, SR), dtype=np.float32), SR))
    assert outcome.seed == seeds[0]


def test_an_undecodable_clip_fails_with_a_readable_reason():
    with pytest.raises(AudioDecodeError):
        stages.prepare_continue(_continue_request(), b"this is not audio at all" * 100)


def test_generate_fetches_the_section_and_ends_on_a_bar(media_server):
    request = {"url": media_server.url("/click120.wav"), "currentTime": 3, "promptLength": 4,
               "duration_min": 8, "duration_max": 10, "seed": 5, "prompt": "house"}
    prepared = stages.prepare_generate(request, fetch_timeout=20, allow_private=True)
    generation = prepared.request
    assert generation.seed == 5 and generation.text == "house"
    assert generation.prompt_audio.shape[1] == pytest.approx(4 * generation.prompt_sr, abs=2)
    assert 8 <= generation.total_seconds <= 10
    outcome = prepared.finish(GenerationResult(np.zeros((1, 32000), dtype=np.float32), 32000))
    assert outcome.bpm == pytest.approx(120, abs=2)
    bars = generation.total_seconds / bar_seconds(outcome.bpm)
    assert bars == pytest.approx(round(bars), abs=1e-6)  # a whole number of bars
    assert outcome.prompt_seconds == pytest.approx(4.0, abs=1e-3)
    assert outcome.target_seconds == generation.total_seconds and outcome.seed == 5

