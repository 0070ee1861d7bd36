"""Random-weights MusicGen *melody* folders, built offline.

The melody sibling of ``worker.testing.random_model``: ``build_tiny_melody`` writes a
complete ``save_pretrained`` folder of a tiny random
``MusicgenMelodyForConditionalGeneration`` (the same tiny T5, EnCodec and
decoder sizes as the tiny MusicGen, plus the chroma projection) that loads
like ``facebook/musicgen-melody``. Same recipe/idempotence rules as
``worker.testing.random_model`` (whose helpers it uses): a finished folder is reused
when built with the same recipe, rebuilt otherwise, never half-written.

The processor is written as a file, not by ``MusicgenMelodyProcessor``:
transformers only lets that class (and its feature extractor) be constructed
when torchaudio is installed, and no torchaudio release matches this
project's torch. ``processor_config.json`` holds exactly what
``MusicgenMelodyProcessor.save_pretrained`` writes, so a machine with
torchaudio loads the folder with ``AutoProcessor``; ``worker.models.melody_engine``
needs only the tokenizer and the feature extractor's numbers.

CLI: ``python -m worker.testing.random_model_melody tiny|tiny-stereo PATH``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from transformers import MusicgenMelodyConfig, MusicgenMelodyDecoderConfig, MusicgenMelodyForConditionalGeneration

from worker.testing.random_model import (
    CODEBOOK_SIZE,
    RECIPE_VERSION,
    SAMPLE_RATE,
    SPECIAL_AUDIO_TOKEN,
    _encodec_32khz,
    _generation_config,
    _randomize_codebooks,
    _t5_tokenizer,
    build_folder,
    run_cli,
    tiny_config,
)

NUM_CHROMA = 12
# facebook/musicgen-melody's chroma settings: 30 s of chroma frames at a hop of
# 4096 samples (235 frames at 32 kHz), from a 16384-point STFT.
CHROMA_LENGTH = 235
CHROMA_HOP = 4096
CHROMA_N_FFT = 16384
CHUNK_LENGTH_S = 30
# Bump when this builder changes (independently of worker.testing.random_model's RECIPE_VERSION).
MELODY_RECIPE_VERSION = 2


def tiny_melody_config(stereo: bool = False) -> MusicgenMelodyConfig:
    """The tiny MusicGen's sizes, as a melody model (4 codebooks of 2048 per channel, 12 chroma bins).

    The decoder is wider than the text encoder (48 vs 32), as in the hub
    checkpoints, so the text projection exists and is exercised too.
    """
    plain = tiny_config(stereo)
    channels = 2 if stereo else 1
    decoder = MusicgenMelodyDecoderConfig(
        vocab_size=CODEBOOK_SIZE, max_position_embeddings=2048, num_hidden_layers=2,
        ffn_dim=64, num_attention_heads=4, hidden_size=48, dropout=0.0,
        num_codebooks=4 * channels, audio_channels=channels,
        pad_token_id=SPECIAL_AUDIO_TOKEN, bos_token_id=SPECIAL_AUDIO_TOKEN,
    )
    return MusicgenMelodyConfig(
        text_encoder=plain.text_encoder, audio_encoder=_encodec_32khz(tiny=True), decoder=decoder,
        num_chroma=NUM_CHROMA, chroma_length=CHROMA_LENGTH,
    )


def processor_config() -> dict:
    """What ``MusicgenMelodyProcessor.save_pretrained`` writes for the hub checkpoints' feature extractor."""
    return {
        "feature_extractor": {
            "chunk_length": CHUNK_LENGTH_S,
            "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
            "feature_size": NUM_CHROMA,
            "hop_length": CHROMA_HOP,
            "n_fft": CHROMA_N_FFT,
            "n_samples": CHUNK_LENGTH_S * SAMPLE_RATE,
            "num_chroma": NUM_CHROMA,
            "padding_side": "right",
            "padding_value": 0.0,
            "return_attention_mask": False,
            "sampling_rate": SAMPLE_RATE,
            "stem_indices": [3, 2],
        },
        "processor_class": "MusicgenMelodyProcessor",
    }


def build_tiny_melody(path: str | os.PathLike, *, seed: int = 0, stereo: bool = False) -> Path:
    """A ~4 MB random MusicGen melody model (mono: 4 codebooks; stereo: 8 interleaved) at ``path``."""
    path = Path(path)
    recipe = {"kind": "tiny-stereo-melody" if stereo else "tiny-melody", "seed": seed,
              "version": RECIPE_VERSION, "melody_version": MELODY_RECIPE_VERSION}

    def write(staging: Path) -> None:
        config = tiny_melody_config(stereo)
        torch.manual_seed(seed)
        model = MusicgenMelodyForConditionalGeneration(config).eval()
        with torch.no_grad():
            _randomize_codebooks(model)
            # Initialised at std 0.02, the chroma projection adds ~1e-3 to
            # logits: the melody would not matter and tests could not tell
            # whether it reached the model. Give it a trained model's weight.
            model.audio_enc_to_dec_proj.weight.normal_(std=1.0)
        model.generation_config = _generation_config()
        model.save_pretrained(staging)
        _t5_tokenizer(config.text_encoder.vocab_size).save_pretrained(staging)
        (staging / "processor_config.json").write_text(json.dumps(processor_config(), indent=2) + "\n")

    return build_folder(path, recipe, write)


_BUILDERS = {
    "tiny": lambda path: build_tiny_melody(path),
    "tiny-stereo": lambda path: build_tiny_melody(path, stereo=True),
}


def main(argv: list[str] | None = None) -> int:
    return run_cli(_BUILDERS, "worker.testing.random_model_melody", argv)


if __name__ == "__main__":
    sys.exit(main())
