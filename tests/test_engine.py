"""MusicGenEngine against a real (tiny, random-weights) MusicGen."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.engine import GenerationCanceled, GenerationRequest, MusicGenEngine
from tests.conftest import noise

def test_engine_describes_its_model(engine):
    assert engine.sample_rate == 32000
    assert engine.channels == 1
    assert engine.device == "cpu"
    assert engine.num_parameters > 100_000
    assert engine.model.dtype == torch.float32


@pytest.mark.parametrize(
    ("channels", "prompt_sr", "prompt_seconds", "total_seconds"),
    [
        (1, 32000, 1.0, 2.0),  # whole frames throughout
        (2, 44100, 1.3, 2.37),  # stereo 44.1 kHz into a mono model, partial frames
        (1, 16000, 0.5, 0.53),  # continuation shorter than two frames
        (3, 48000, 0.71, 1.25),
    ],
)
def test_output_length_is_exact(engine, channels, prompt_sr, prompt_seconds, total_seconds):
    request = GenerationRequest(noise(channels, prompt_seconds, prompt_sr), prompt_sr, total_seconds)
    (result,) = engine.generate([request])
    assert result.sample_rate == 32000
    assert result.audio.dtype == np.float32
    assert result.audio.shape == (1, round(total_seconds * 32000))
    assert np.all(np.isfinite(result.audio))


def test_max_new_tokens_formula_matches_raw_model_output(engine):
    # The raw output holds prompt frames + new frames, where
    # new frames = max_new_tokens - (codebooks per channel - 1).
    prompt = noise(1, 1.0, 32000)[0]
    inputs = engine.processor(audio=[prompt], sampling_rate=32000, text=[""], padding=True, return_tensors="pt")
    for new_frames in (1, 7, 50):
        with torch.inference_mode():
            audio = engine.model.generate(**inputs, do_sample=True, max_new_tokens=engine.max_new_tokens(new_frames))
        assert audio.shape[-1] == (50 + new_frames) * 640
    assert engine.max_new_tokens(50) == 53


def test_stereo_model_returns_two_channels(stereo_engine):
    assert stereo_engine.channels == 2
    assert stereo_engine.codebooks_per_channel == 4
    mono_prompt = GenerationRequest(noise(1, 0.5, 22050), 22050, 1.1)
    stereo_prompt = GenerationRequest(noise(2, 0.5, 32000), 32000, 1.1, text="warm piano")
    steps = []
    results = stereo_engine.generate([mono_prompt], on_step=lambda step, total: steps.append(total))
    results += stereo_engine.generate([stereo_prompt])
    for result in results:
        assert result.audio.shape == (2, round(1.1 * 32000))
    # Stereo interleaves 8 codebooks but the delay is still 3 steps per channel.
    assert steps[-1] == 30 + 3


def test_same_seed_same_audio_different_seed_different_audio(engine):
    def run(seed: int) -> np.ndarray:
        request = GenerationRequest(noise(1, 0.6, 32000), 32000, 1.2, text="lofi beat", seed=seed)
        return engine.generate([request])[0].audio

    first, again, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_on_step_counts_every_step_up_to_the_total(engine):
    calls: list[tuple[int, int]] = []
    request = GenerationRequest(noise(1, 1.0, 32000), 32000, 1.5)
    engine.generate([request], on_step=lambda step, total: calls.append((step, total)))
    total = engine.max_new_tokens(25)
    assert calls == [(step, total) for step in range(1, total + 1)]


def test_returning_true_from_on_step_cancels(engine):
    calls = []

    def cancel_at_third_step(step: int, total: int) -> bool:
        calls.append(step)
        return step == 3

    with pytest.raises(GenerationCanceled):
        engine.generate([GenerationRequest(noise(1, 1.0, 32000), 32000, 3.0)], on_step=cancel_at_third_step)
    assert calls == [1, 2, 3]


@pytest.mark.parametrize("total_seconds", [0.5, 1.0])
def test_prompt_not_shorter_than_total_is_rejected(engine, total_seconds):
    with pytest.raises(ValueError, match="total_seconds"):
        engine.generate([GenerationRequest(noise(1, 1.0, 32000), 32000, total_seconds)])


def test_prompt_shorter_than_a_frame_is_rejected(engine):
    with pytest.raises(ValueError, match="frame"):
        engine.generate([GenerationRequest(noise(1, 0.01, 32000), 32000, 1.0)])


def test_invalid_sampling_settings_are_rejected(engine):
    with pytest.raises(ValueError, match="temperature"):
        engine.generate([GenerationRequest(noise(1, 0.5, 32000), 32000, 1.0, temperature=0)])


def test_batch_keeps_order_lengths_and_counts_steps_up_to_the_longest_request(engine):
    same_a = GenerationRequest(noise(1, 0.5, 32000, seed=1), 32000, 1.0, text="rock")
    other = GenerationRequest(noise(2, 0.7, 44100, seed=2), 44100, 1.4)
    same_b = GenerationRequest(noise(1, 0.5, 32000, seed=3), 32000, 1.0, text="a much longer jazz description")
    calls: list[tuple[int, int]] = []
    results = engine.generate([same_a, other, same_b], on_step=lambda step, total: calls.append((step, total)))

    assert [r.audio.shape[-1] for r in results] == [32000, round(1.4 * 32000), 32000]
    # The tasks run side by side; on_step follows the furthest one on the longest one's scale
    # (0.7 s -> 35 whole frames, 35 new), never backwards, and ends at that total.
    total = engine.max_new_tokens(35)
    steps = [step for step, _ in calls]
    assert {t for _, t in calls} == {total}
    assert steps == sorted(set(steps)) and steps[-1] == total
    # The same batch again gives the same audio.
    again = engine.generate([same_a, other, same_b])
    for first, second in zip(results, again):
        np.testing.assert_array_equal(first.audio, second.audio)


def test_closed_engine_refuses_to_generate(tiny_model):
    engine = MusicGenEngine(str(tiny_model), device="cpu")
    engine.close()
    engine.close()  # idempotent
    assert engine.closed
    with pytest.raises(RuntimeError, match="closed"):
        engine.generate([GenerationRequest(noise(1, 0.5, 32000), 32000, 1.0)])


@pytest.mark.parametrize("cfg_coef", [3.0, 1.0])
def test_continuation_matches_transformers_own_sampling(engine, cfg_coef):
    # The anchor of the engine's own decode loop: transformers' MusicGen, given the same prompt codes
    # and text and seeded alike, samples (guidance, top-k, the global RNG) exactly what the engine's
    # cache, step and per-task generator produce, so the audio is the same to float rounding.
    prompt = noise(1, 0.5, 32000, seed=4)
    request = GenerationRequest(prompt, 32000, 1.0, text="jazz drums", seed=11, top_k=250, cfg_coef=cfg_coef)
    (ours,) = engine.generate([request])
    new_frames = 25
    threads = torch.get_num_threads()
    torch.set_num_threads(engine.cpu_threads or threads)
    try:
        with torch.inference_mode():
            codes = engine.model.audio_encoder.encode(torch.from_numpy(prompt)[None]).audio_codes[0, 0]
            tokens = engine.processor.tokenizer(["jazz drums"], return_tensors="pt")
            decoder_ids = torch.cat([torch.full((codes.shape[0], 1), engine.pad_token), codes], dim=-1)
            torch.manual_seed(11)
            reference = engine.model.generate(
                input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, decoder_input_ids=decoder_ids,
                do_sample=True, top_k=250, guidance_scale=cfg_coef if cfg_coef > 1 else None,
                max_new_tokens=engine.max_new_tokens(new_frames),
            )[0].numpy()
    finally:
        torch.set_num_threads(threads)
    assert reference.shape == ours.audio.shape
    np.testing.assert_allclose(ours.audio, reference, atol=1e-5)


def test_the_apis_longest_prompt_and_a_very_long_text_still_generate(engine):
    # The API accepts prompts up to 30 s: the first window is then 31 s long (a second of new audio), which the
    # cache holds. A text that T5 spells one token per character (past the cache's 256 text tokens) is cut.
    prompt = noise(1, 30.0, 32000, seed=9)
    text = "\u2603" * 400  # 400 unknown-to-T5 characters
    (result,) = engine.generate([GenerationRequest(prompt, 32000, 31.0, seed=2, text=text)])
    assert result.audio.shape == (1, 31 * 32000)


def test_closing_an_engine_while_it_runs_finishes_what_it_holds_then_refuses(tiny_model):
    import threading

    engine = MusicGenEngine(str(tiny_model), device="cpu")
    started = threading.Event()
    running = engine.submit(GenerationRequest(noise(1, 1.0, 32000), 32000, 6.0, seed=3,
                                              on_progress=lambda step, total: started.set()))
    assert started.wait(60)
    engine.close()  # while the task decodes
    assert running.result().audio.shape == (1, 6 * 32000)
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(GenerationRequest(noise(1, 1.0, 32000), 32000, 2.0))
