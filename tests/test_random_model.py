"""Offline random MusicGen folders load like hub checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, MusicgenForConditionalGeneration

from worker.testing import random_model
from worker.testing.random_model import RECIPE_FILE, build_tiny_musicgen, small_arch_config

CACHE = Path(os.environ.get("SEGUE_TEST_CACHE") or Path(__file__).resolve().parents[1] / ".cache" / "test-models")


@pytest.mark.parametrize(("stereo", "folder"), [(False, "tiny-mono"), (True, "tiny-stereo")])
def test_tiny_model_loads_with_from_pretrained(stereo, folder):
    path = build_tiny_musicgen(CACHE / folder, stereo=stereo)
    model = MusicgenForConditionalGeneration.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)

    channels = 2 if stereo else 1
    audio = model.config.audio_encoder
    assert (audio.sampling_rate, audio.frame_rate, audio.codebook_size) == (32000, 50, 2048)
    assert model.config.decoder.audio_channels == channels
    assert model.config.decoder.num_codebooks == 4 * channels  # stereo interleaves L/R codebooks
    assert model.audio_encoder.quantizer.get_num_quantizers_for_bandwidth(audio.target_bandwidths[-1]) == 4
    assert processor.feature_extractor.feature_size == channels
    assert processor.feature_extractor.sampling_rate == 32000
    ids = processor(text=["happy jazz with drums"], return_tensors="pt").input_ids
    assert ids.max() < model.config.text_encoder.vocab_size
    assert sum(f.stat().st_size for f in path.iterdir()) < 8_000_000


def test_tiny_codebooks_are_not_all_zero():
    # EnCodec initialises codebooks to zeros: every token would decode the same.
    model = MusicgenForConditionalGeneration.from_pretrained(build_tiny_musicgen(CACHE / "tiny-mono"))
    embed = model.audio_encoder.quantizer.layers[0].codebook.embed
    assert embed.std() > 0.5


def test_existing_build_is_reused():
    path = build_tiny_musicgen(CACHE / "tiny-mono")
    weights = path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert build_tiny_musicgen(CACHE / "tiny-mono") == path
    assert weights.stat().st_mtime_ns == before  # reused, not rebuilt (judged by the file, not by speed)


def test_different_recipe_rebuilds_in_place(tmp_path):
    path = build_tiny_musicgen(tmp_path / "model", seed=0)
    first = (path / "model.safetensors").read_bytes()
    build_tiny_musicgen(path, seed=1)
    assert (path / "model.safetensors").read_bytes() != first
    assert '"seed": 1' in (path / RECIPE_FILE).read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folders left behind


def test_foreign_folder_is_never_overwritten(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_tiny_musicgen(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_small_arch_matches_musicgen_small():
    config = small_arch_config()
    decoder, text, audio = config.decoder, config.text_encoder, config.audio_encoder
    assert (decoder.hidden_size, decoder.num_hidden_layers, decoder.num_attention_heads, decoder.ffn_dim) == (
        1024, 24, 16, 4096,
    )
    assert (text.d_model, text.num_layers, text.num_heads, text.d_ff, text.vocab_size) == (768, 12, 12, 3072, 32128)
    assert (audio.sampling_rate, audio.frame_rate, audio.num_quantizers) == (32000, 50, 4)
    with torch.device("meta"):  # count parameters without allocating 2.3 GB
        model = MusicgenForConditionalGeneration(config)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == 587


def test_cli(tmp_path, capsys):
    assert random_model.main(["bogus", str(tmp_path)]) == 2
    assert random_model.main(["tiny", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert (tmp_path / "cli" / "model.safetensors").is_file()
