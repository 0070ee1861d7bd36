"""Random-weights MusicGen folders, built offline.

Tests and benchmarks need a real ``MusicgenForConditionalGeneration`` that
loads with ``from_pretrained`` like a hub checkpoint, but nothing may be
downloaded. These builders write a complete ``save_pretrained`` folder (model,
generation config, feature extractor and tokenizer) from configs alone:

- ``build_tiny_musicgen``: a ~4 MB model that generates a second of audio in a
  fraction of a second on CPU: the fixture for tests.
- ``build_small_arch_musicgen``: musicgen-small's exact architecture (t5-base
  text encoder, EnCodec 32 kHz, 24-layer decoder, ~587M parameters). Weights do
  not change speed, so this is the benchmark model.

Both are idempotent: a folder is built in a sibling temporary directory and
renamed into place, so an existing folder is always complete; it is reused
when it was built with the same recipe (kind, seed, builder version) and
replaced otherwise. A folder that these builders did not write is never touched.

CLI: ``python -m worker.testing.random_model tiny|tiny-stereo|small-arch PATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch
from transformers import (
    EncodecConfig,
    EncodecFeatureExtractor,
    GenerationConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    MusicgenProcessor,
    T5Config,
    T5Tokenizer,
)
from transformers.models.encodec.modeling_encodec import EncodecEuclideanCodebook

# Written last into a finished folder; records what was built there.
RECIPE_FILE = "segue_random_model.json"
# Bump when the builders change, so cached folders from older builders are rebuilt.
RECIPE_VERSION = 2

SAMPLE_RATE = 32_000
# MusicGen's special token: one past the codebook, used as BOS and as padding
# in the delay pattern.
CODEBOOK_SIZE = 2048
SPECIAL_AUDIO_TOKEN = CODEBOOK_SIZE

_WORDS = (
    "music song beat drum drums bass guitar piano synth vocal voice jazz rock pop "
    "electronic ambient hip hop lofi chill happy sad dark bright slow fast tempo "
    "bpm loop melody chord chords groove funk soul house techno trap orchestra "
    "strings violin cello acoustic electric distorted clean warm cold epic calm "
    "energetic retro modern 80s 90s dance cinematic with and a the of in"
).split()


def _t5_tokenizer(vocab_size: int) -> T5Tokenizer:
    """A T5 (Unigram) tokenizer from an in-memory vocabulary, no sentencepiece file.

    Lowercase words and single characters are enough to make any text
    tokenizable; the ids must only stay below the text encoder's vocab size.
    """
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{word}", -5.0) for word in _WORDS]
    pieces += [(char, -10.0) for char in "abcdefghijklmnopqrstuvwxyz0123456789.,'-!?"]
    pieces += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    if len(pieces) > vocab_size:
        raise ValueError(f"tokenizer needs {len(pieces)} ids but the text encoder has {vocab_size}")
    return T5Tokenizer(vocab=pieces, extra_ids=100, model_max_length=512)


def _encodec_32khz(*, tiny: bool) -> EncodecConfig:
    # target_bandwidths=[2.2] with 50 Hz frames and 11-bit codebooks gives
    # 2200 // (50 * 11) = 4 quantizers: MusicGen's 4 codebooks per channel.
    # That is why codebook_size has to stay 2048 even in the tiny model.
    common = dict(
        sampling_rate=SAMPLE_RATE,
        audio_channels=1,  # stereo MusicGen encodes each channel separately
        target_bandwidths=[2.2],
        upsampling_ratios=[8, 5, 4, 4],  # hop 640 samples = 50 frames/s
        codebook_size=CODEBOOK_SIZE,
        chunk_length_s=None,
        overlap=None,
        normalize=False,
        norm_type="weight_norm",
        use_causal_conv=False,
        pad_mode="reflect",
        trim_right_ratio=1.0,
        use_conv_shortcut=False,
    )
    # codebook_dim must equal hidden_size: this EnCodec has no projection between them.
    if tiny:
        return EncodecConfig(**common, hidden_size=16, num_filters=4, num_lstm_layers=1, codebook_dim=16)
    return EncodecConfig(**common, hidden_size=128, num_filters=64, num_lstm_layers=2, codebook_dim=128)


def _musicgen_config(text: T5Config, audio: EncodecConfig, decoder: MusicgenDecoderConfig) -> MusicgenConfig:
    return MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)


def _generation_config(max_length: int = 1500) -> GenerationConfig:
    # The hub checkpoints ship these defaults; generate() needs the start token.
    return GenerationConfig(
        decoder_start_token_id=SPECIAL_AUDIO_TOKEN,
        bos_token_id=SPECIAL_AUDIO_TOKEN,
        pad_token_id=SPECIAL_AUDIO_TOKEN,
        do_sample=True,
        guidance_scale=3.0,
        top_k=250,
        max_length=max_length,
    )


def tiny_config(stereo: bool = False) -> MusicgenConfig:
    """Smallest MusicGen that still has the real token layout (4 codebooks of 2048 per channel)."""
    text = T5Config(
        vocab_size=256, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
    )
    channels = 2 if stereo else 1
    decoder = MusicgenDecoderConfig(
        vocab_size=CODEBOOK_SIZE, max_position_embeddings=2048, num_hidden_layers=2,
        ffn_dim=64, num_attention_heads=4, hidden_size=32, dropout=0.0,
        num_codebooks=4 * channels, audio_channels=channels,
        pad_token_id=SPECIAL_AUDIO_TOKEN, bos_token_id=SPECIAL_AUDIO_TOKEN,
    )
    return _musicgen_config(text, _encodec_32khz(tiny=True), decoder)


def small_arch_config() -> MusicgenConfig:
    """facebook/musicgen-small's configuration: t5-base encoder, EnCodec 32 kHz, 24x1024 decoder."""
    text = T5Config(
        vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12,
        num_heads=12, relative_attention_num_buckets=32, dropout_rate=0.1,
        layer_norm_epsilon=1e-6, feed_forward_proj="relu",
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=CODEBOOK_SIZE, max_position_embeddings=2048, num_hidden_layers=24,
        ffn_dim=4096, num_attention_heads=16, hidden_size=1024, dropout=0.1,
        activation_function="gelu", num_codebooks=4, audio_channels=1,
        pad_token_id=SPECIAL_AUDIO_TOKEN, bos_token_id=SPECIAL_AUDIO_TOKEN,
    )
    return _musicgen_config(text, _encodec_32khz(tiny=False), decoder)


def medium_arch_config() -> MusicgenConfig:
    """facebook/musicgen-medium's configuration: musicgen-small's, with a 48x1536 decoder (24 heads)."""
    config = small_arch_config()
    decoder = MusicgenDecoderConfig(**{
        **config.decoder.to_dict(), "num_hidden_layers": 48, "hidden_size": 1536, "num_attention_heads": 24,
        "ffn_dim": 6144,
    })
    return _musicgen_config(config.text_encoder, config.audio_encoder, decoder)


def _built_recipe(path: Path) -> dict | None:
    """The recipe of the model built at ``path``, or None when there is none yet."""
    marker = path / RECIPE_FILE
    if marker.is_file():
        return json.loads(marker.read_text())
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not a model built by worker.testing.random_model")
    return None


def _randomize_codebooks(model: MusicgenForConditionalGeneration) -> None:
    # EnCodec initialises its codebooks to zeros (real ones are learned), which
    # would decode every token to the same audio and make seeds meaningless.
    for module in model.audio_encoder.modules():
        if isinstance(module, EncodecEuclideanCodebook):
            module.embed.normal_()
            module.embed_avg.copy_(module.embed)
            module.cluster_size.fill_(1.0)


def build_folder(path: Path, recipe: dict, write: Callable[[Path], None]) -> Path:
    """The folder at ``path`` as ``write(staging)`` fills it, built once per ``recipe`` (see the module docstring)."""
    path = Path(path)
    if _built_recipe(path) == recipe:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.building-", dir=path.parent))
    try:
        write(staging)
        (staging / RECIPE_FILE).write_text(json.dumps(recipe))
        staging.chmod(0o755)  # mkdtemp makes it private; a model folder is not secret
        _move_into_place(staging, path, recipe)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _build(path: Path, recipe: dict, config: MusicgenConfig, seed: int) -> Path:
    def write(staging: Path) -> None:
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config).eval()
        with torch.no_grad():
            _randomize_codebooks(model)
        model.generation_config = _generation_config()
        model.save_pretrained(staging)
        channels = config.decoder.audio_channels
        feature_extractor = EncodecFeatureExtractor(
            feature_size=channels, sampling_rate=SAMPLE_RATE, padding_value=0.0,
            chunk_length_s=None, overlap=None,
        )
        MusicgenProcessor(feature_extractor, _t5_tokenizer(config.text_encoder.vocab_size)).save_pretrained(staging)

    return build_folder(path, {**recipe, "version": RECIPE_VERSION}, write)


def _move_into_place(staging: Path, path: Path, recipe: dict) -> None:
    if path.exists():
        if _built_recipe(path) is None:
            path.rmdir()  # an empty folder
        else:
            # An older build of ours (other recipe or version): swap it out.
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, retired / path.name)
            shutil.rmtree(retired, ignore_errors=True)
    try:
        os.rename(staging, path)
    except OSError:
        # Another process finished the same build first; keep theirs.
        if _built_recipe(path) != recipe:
            raise


def build_tiny_musicgen(path: str | os.PathLike, *, stereo: bool = False, seed: int = 0) -> Path:
    """A ~4 MB random MusicGen (mono: 4 codebooks; stereo: 8 interleaved) at ``path``."""
    recipe = {"kind": "tiny-stereo" if stereo else "tiny", "seed": seed}
    return _build(Path(path), recipe, tiny_config(stereo), seed)


def build_small_arch_musicgen(path: str | os.PathLike, *, seed: int = 0) -> Path:
    """musicgen-small's architecture with random weights (~587M params, ~2.4 GB)."""
    return _build(Path(path), {"kind": "small-arch", "seed": seed}, small_arch_config(), seed)


_BUILDERS = {
    "tiny": lambda path: build_tiny_musicgen(path),
    "tiny-stereo": lambda path: build_tiny_musicgen(path, stereo=True),
    "small-arch": build_small_arch_musicgen,
}


def run_cli(builders: dict[str, Callable[[str], Path]], module: str, argv: list[str] | None) -> int:
    """``python -m <module> KIND PATH``: build (or reuse) the folder and print its path."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in builders:
        print(f"usage: python -m {module} {'|'.join(builders)} PATH", file=sys.stderr)
        return 2
    print(builders[argv[0]](argv[1]))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_BUILDERS, "worker.testing.random_model", argv)


if __name__ == "__main__":
    sys.exit(main())
