"""load_engine picks MelodyEngine or MusicGenEngine from the checkpoint's config."""

from __future__ import annotations

import json

import pytest

from tests.conftest import CACHE, noise
from worker.engine import GenerationRequest, MusicGenEngine
from worker.models.engine_loader import load_engine, model_type
from worker.models.melody_engine import MelodyEngine
from worker.testing.random_model_melody import build_tiny_melody


@pytest.fixture(scope="module")
def melody_model():
    return build_tiny_melody(CACHE / "tiny-melody")


def test_melody_checkpoint_gets_the_melody_engine(melody_model):
    assert model_type(str(melody_model)) == "musicgen_melody"
    engine = load_engine(str(melody_model), device="cpu", half_precision=False, cpu_threads=1)
    try:
        assert type(engine) is MelodyEngine
        assert (engine.device, engine.cpu_threads) == ("cpu", 1)
        (result,) = engine.generate([GenerationRequest(noise(1, 0.3, 32000), 32000, 0.6, melody_conditioning=True)])
        assert result.audio.shape == (1, round(0.6 * 32000))
    finally:
        engine.close()


def test_plain_checkpoint_gets_the_musicgen_engine(tiny_model):
    assert model_type(str(tiny_model)) == "musicgen"
    engine = load_engine(str(tiny_model), device="cpu")
    try:
        assert type(engine) is MusicGenEngine
        (result,) = engine.generate([GenerationRequest(noise(1, 0.3, 32000), 32000, 0.6)])
        assert result.audio.shape == (1, round(0.6 * 32000))
    finally:
        engine.close()


def test_unsupported_checkpoint_is_named_in_the_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert' checkpoint.*musicgen, musicgen_melody"):
        load_engine(str(tmp_path), device="cpu")


def test_folder_without_config_fails_clearly(tmp_path):
    with pytest.raises(OSError, match="config.json"):
        load_engine(str(tmp_path), device="cpu")
