"""MelodyEngine against a real (tiny, random-weights) MusicGen melody model."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration
from transformers.feature_extraction_utils import FeatureExtractionMixin

from tests.conftest import CACHE, noise
from worker.engine import GenerationCanceled, GenerationRequest
from worker.models.melody_engine import ChromaExtractor, MelodyEngine
from worker.testing.random_model import RECIPE_FILE
from worker.testing.random_model_melody import build_tiny_melody

SR = 32000
HOP = 640


@pytest.fixture(scope="module")
def melody_model():
    return build_tiny_melody(CACHE / "tiny-melody")


@pytest.fixture(scope="module")
def melody(melody_model):
    engine = MelodyEngine(str(melody_model), device="cpu")
    yield engine
    engine.close()


def tone(frequencies: list[float], seconds: float, sample_rate: int = SR) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (0.2 * sum(np.sin(2 * np.pi * f * t) for f in frequencies))[None].astype(np.float32)


# -- the tiny model folder ---------------------------------------------------


def test_tiny_melody_folder_loads_like_a_hub_checkpoint(melody_model):
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(melody_model)
    assert model.config.model_type == "musicgen_melody"
    assert (model.config.num_chroma, model.config.chroma_length) == (12, 235)
    assert model.config.decoder.num_codebooks == 4
    # As in the hub checkpoints, text and chroma are both projected to the decoder width.
    assert model.enc_to_dec_proj.in_features == model.config.text_encoder.hidden_size
    assert model.audio_enc_to_dec_proj.in_features == 12
    tokenizer = AutoTokenizer.from_pretrained(melody_model)
    assert max(tokenizer(["happy jazz with drums"]).input_ids[0]) < model.config.text_encoder.vocab_size
    features, _ = FeatureExtractionMixin.get_feature_extractor_dict(str(melody_model))
    assert features["feature_extractor_type"] == "MusicgenMelodyFeatureExtractor"
    assert (features["n_fft"], features["hop_length"], features["sampling_rate"]) == (16384, 4096, SR)
    processor = json.loads((melody_model / "processor_config.json").read_text())
    assert processor["processor_class"] == "MusicgenMelodyProcessor"
    assert sum(f.stat().st_size for f in melody_model.iterdir()) < 8_000_000


def test_tiny_melody_build_is_reused_and_rebuilt_for_another_seed(melody_model, tmp_path):
    weights = melody_model / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert build_tiny_melody(melody_model) == melody_model
    assert weights.stat().st_mtime_ns == before  # reused, not rebuilt (judged by the file, not by speed)

    other = build_tiny_melody(tmp_path / "m", seed=1)
    assert (other / "model.safetensors").read_bytes() != weights.read_bytes()
    assert json.loads((other / RECIPE_FILE).read_text())["kind"] == "tiny-melody"


def test_tiny_melody_builder_never_touches_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        build_tiny_melody(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


# -- chroma --------------------------------------------------------------------


def test_chroma_of_a4_is_pitch_class_a():
    chroma = ChromaExtractor()(tone([440.0], 1.3), SR)
    # 1.3 s at a 4096 hop, centred frames: 11 frames, one-hot, C = 0 ... A = 9.
    assert chroma.shape == (1, 11, 12)
    assert torch.equal(chroma.sum(-1), torch.ones(1, 11))
    assert chroma.argmax(-1).unique().tolist() == [9]


def test_chroma_matches_librosa():
    # Six half-second two-note chords over noise, in stereo (mixed down).
    rng = np.random.default_rng(1)
    notes = [261.6, 293.7, 329.6, 349.2, 392.0, 440.0, 493.9]
    clip = np.concatenate([tone(list(rng.choice(notes, 2)), 0.5) for _ in range(6)], axis=-1)[0]
    clip += 0.05 * rng.standard_normal(clip.shape).astype(np.float32)
    ours = ChromaExtractor()(np.stack([clip, clip]), SR)[0].argmax(-1).numpy()

    # The reference in numpy (librosa.stft's first call takes seconds to compile):
    # centred frames with reflect padding, periodic Hann window, power spectrum.
    n_fft, hop = 16384, 4096
    padded = np.pad(clip.astype(np.float64), n_fft // 2, mode="reflect")
    window = np.hanning(n_fft + 1)[:-1]
    frames = np.stack([padded[i : i + n_fft] for i in range(0, len(padded) - n_fft + 1, hop)])
    power = (np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2).T
    reference = (librosa.filters.chroma(sr=SR, n_fft=n_fft, tuning=0.0, n_chroma=12) @ power).argmax(0)
    np.testing.assert_array_equal(ours, reference)
    assert len(set(reference.tolist())) >= 3  # the chords really vary


# -- the engine ----------------------------------------------------------------


def test_engine_describes_its_model(melody):
    assert (melody.sample_rate, melody.channels, melody.device) == (SR, 1, "cpu")
    assert melody.num_parameters > 100_000
    assert melody.model_ref.endswith("tiny-melody")
    assert not melody.closed


@pytest.mark.parametrize(
    ("channels", "prompt_sr", "prompt_seconds", "total_seconds", "melody_conditioning"),
    [
        (1, SR, 0.5, 1.0, False),
        (1, SR, 0.5, 1.0, True),
        (2, 44100, 0.63, 1.37, True),  # stereo 44.1 kHz into a mono model, partial frames
    ],
)
def test_output_length_is_exact(melody, channels, prompt_sr, prompt_seconds, total_seconds, melody_conditioning):
    request = GenerationRequest(noise(channels, prompt_seconds, prompt_sr), prompt_sr, total_seconds,
                                text="warm piano", melody_conditioning=melody_conditioning)
    (result,) = melody.generate([request])
    assert result.sample_rate == SR
    assert result.audio.dtype == np.float32
    assert result.audio.shape == (1, round(total_seconds * SR))
    assert np.all(np.isfinite(result.audio))


def test_output_starts_with_the_prompt_as_encodec_reconstructs_it(melody):
    prompt = noise(1, 0.5, SR)  # 25 whole frames
    (result,) = melody.generate([GenerationRequest(prompt, SR, 1.2, seed=1, melody_conditioning=True)])
    with torch.inference_mode():
        encoded = melody.model.audio_encoder.encode(torch.from_numpy(prompt)[None])
        alone = melody.model.audio_encoder.decode(encoded.audio_codes, encoded.audio_scales).audio_values[0].numpy()
    # EnCodec's decoder looks a few frames ahead, so only the prompt's last
    # frames depend on what follows them.
    kept = prompt.shape[1] - 4 * HOP
    np.testing.assert_allclose(result.audio[:, :kept], alone[:, :kept], atol=1e-5)


@pytest.mark.parametrize("melody_conditioning", [False, True])
def test_continuation_matches_transformers_own_guided_sampling(melody, melody_conditioning):
    # transformers builds the prefix (text + chroma, and the unconditional half)
    # itself and samples a one-row batch from the global RNG with the same
    # formulas: seeded alike, the audio must be the same.
    prompt = noise(1, 0.5, SR, seed=4)
    request = GenerationRequest(prompt, SR, 1.0, text="jazz drums", seed=11, top_k=250, cfg_coef=3.0,
                                melody_conditioning=melody_conditioning)
    (ours,) = melody.generate([request])
    new_frames = 25
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the engine runs a tiny model; more threads only contend
    try:
        with torch.inference_mode():
            codes = melody.model.audio_encoder.encode(torch.from_numpy(prompt)[None]).audio_codes[0, 0]
            tokens = melody.tokenizer(["jazz drums"], return_tensors="pt")
            chroma = {"input_features": ChromaExtractor()(prompt, SR)} if melody_conditioning else {}
            torch.manual_seed(11)
            reference = melody.model.generate(
                input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, decoder_input_ids=codes,
                do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=melody.max_new_tokens(new_frames),
                **chroma,
            )[0].numpy()
    finally:
        torch.set_num_threads(threads)
    assert reference.shape == ours.audio.shape
    np.testing.assert_allclose(ours.audio, reference, atol=1e-5)


def test_melody_conditioning_changes_the_continuation(melody):
    # A and E: a prompt whose chroma is C throughout would equal the "no melody" chroma.
    prompt = tone([440.0, 329.6], 0.6)

    def run(melody_conditioning: bool) -> np.ndarray:
        request = GenerationRequest(prompt, SR, 1.2, seed=5, melody_conditioning=melody_conditioning)
        return melody.generate([request])[0].audio

    plain, conditioned = run(False), run(True)
    kept = prompt.shape[1] - 4 * HOP
    np.testing.assert_array_equal(plain[:, :kept], conditioned[:, :kept])  # same prompt either way
    assert not np.array_equal(plain[:, prompt.shape[1]:], conditioned[:, prompt.shape[1]:])


def test_seed_reproducible_with_or_without_other_rows(melody):
    def request(seed: int, **extra) -> GenerationRequest:
        return GenerationRequest(noise(1, 0.5, SR, seed=2), SR, 1.0, text="lofi", seed=seed,
                                 melody_conditioning=True, **extra)

    alone = melody.generate([request(7)])[0].audio
    neighbour = GenerationRequest(noise(2, 0.3, 44100, seed=9), 44100, 0.8, seed=1, cfg_coef=1.0)
    together = melody.generate([neighbour, request(7), request(8)])
    np.testing.assert_array_equal(together[1].audio, alone)
    assert not np.array_equal(together[2].audio, alone)
    assert together[0].audio.shape == (1, round(0.8 * SR))


def test_should_stop_cancels_its_row_only_and_progress_is_monotonic(melody):
    progress: dict[str, list[tuple[int, int]]] = {"canceled": [], "kept": []}

    def request(name: str, **extra) -> GenerationRequest:
        return GenerationRequest(noise(1, 0.5, SR), SR, 1.5, melody_conditioning=True,
                                 on_progress=lambda step, total: progress[name].append((step, total)), **extra)

    canceled = request("canceled", should_stop=lambda: len(progress["canceled"]) >= 5)
    steps: list[tuple[int, int]] = []
    outcomes = melody.generate_each([canceled, request("kept")], on_step=lambda s, t: steps.append((s, t)))

    assert isinstance(outcomes[0], GenerationCanceled)
    assert outcomes[1].audio.shape == (1, round(1.5 * SR))
    total = melody.max_new_tokens(50)
    assert progress["canceled"] == [(step, total) for step in range(1, 6)]
    assert progress["kept"] == [(step, total) for step in range(1, total + 1)]
    # The tasks run side by side: on_step follows the furthest one, never backwards, up to its total.
    counted = [s for s, _ in steps]
    assert counted == sorted(set(counted)) and counted[-1] == total
    assert {t for _, t in steps} == {total}


def test_on_step_returning_true_cancels_every_row(melody):
    calls: list[int] = []

    def cancel_at_third_step(step: int, total: int) -> bool:
        calls.append(step)
        return step == 3

    rows = [GenerationRequest(noise(1, 0.5, SR), SR, 2.0) for _ in range(2)]
    outcomes = melody.generate_each(rows, on_step=cancel_at_third_step)
    assert all(isinstance(o, GenerationCanceled) for o in outcomes)
    assert calls == [1, 2, 3]
    with pytest.raises(GenerationCanceled):
        melody.generate(rows[:1], on_step=cancel_at_third_step)


def test_invalid_input_fails_only_its_own_slot(melody):
    good = GenerationRequest(noise(1, 0.5, SR), SR, 0.8)
    too_short = GenerationRequest(noise(1, 1.0, SR), SR, 0.9)
    bad_temperature = GenerationRequest(noise(1, 0.5, SR), SR, 0.8, temperature=0)
    outcomes = melody.generate_each([too_short, good, bad_temperature])
    assert isinstance(outcomes[0], ValueError) and "total_seconds" in str(outcomes[0])
    assert outcomes[1].audio.shape == (1, round(0.8 * SR))
    assert isinstance(outcomes[2], ValueError) and "temperature" in str(outcomes[2])
    with pytest.raises(ValueError, match="frame"):
        melody.generate([GenerationRequest(noise(1, 0.01, SR), SR, 1.0)])


def test_on_audio_streams_the_continuation(melody):
    chunks: list[tuple[int, np.ndarray]] = []
    request = GenerationRequest(noise(1, 0.5, SR), SR, 2.0, seed=3, melody_conditioning=True,
                                on_audio=lambda audio, offset: chunks.append((offset, audio.copy())))
    (result,) = melody.generate([request])
    continuation = result.audio[:, round(0.5 * SR):]
    assert len(chunks) >= 2  # at least one chunk before the end
    offsets = [offset for offset, _ in chunks]
    assert offsets == list(np.cumsum([0] + [a.shape[-1] for _, a in chunks[:-1]]))
    streamed = np.concatenate([audio for _, audio in chunks], axis=-1)
    assert streamed.shape == continuation.shape
    # Windowed decodes differ from the full decode only slightly at their edges.
    assert np.abs(streamed - continuation).max() < 0.05 * max(np.abs(continuation).max(), 1e-3) + 1e-3


def test_stereo_melody_model_returns_two_channels():
    engine = MelodyEngine(str(build_tiny_melody(CACHE / "tiny-stereo-melody", stereo=True)), device="cpu")
    try:
        assert (engine.channels, engine.num_codebooks, engine.codebooks_per_channel) == (2, 8, 4)
        steps: list[int] = []
        (result,) = engine.generate([GenerationRequest(noise(2, 0.4, SR), SR, 0.9, text="rock",
                                                       melody_conditioning=True)],
                                    on_step=lambda step, total: steps.append(total))
        assert result.audio.shape == (2, round(0.9 * SR))
        assert steps[-1] == 25 + 3  # the stereo interleave does not lengthen the delay
    finally:
        engine.close()


def test_closed_engine_refuses_to_generate(melody_model):
    engine = MelodyEngine(str(melody_model), device="cpu")
    engine.close()
    engine.close()
    assert engine.closed
    with pytest.raises(RuntimeError, match="closed"):
        engine.generate([GenerationRequest(noise(1, 0.5, SR), SR, 1.0)])
