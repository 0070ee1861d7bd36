"""Convert audiocraft MusicGen checkpoints to transformers MusicGen folders.

Fine-tuned MusicGens (thepatch/vanya_ai_dnb_0.1, bleeps-medium, hoenn_lofi, ...)
are published the way audiocraft's ``export_lm`` writes them, which transformers
cannot load and audiocraft cannot be installed beside our torch:

- ``state_dict.bin``: ``{'best_state': <LM state dict>, 'xp.cfg': <YAML text>,
  'version': ..., 'exported': True}``. The LM state holds the decoder and the
  conditioner's projection of T5 states (``output_proj``), but not T5 itself
  unless the fine-tune trained T5 too (``finetune: true``).
- ``compression_state_dict.bin``: ``{'pretrained': 'facebook/encodec_32khz'}``
  (a full EnCodec state is not supported).

So the converter renames the LM's tensors to transformers' names and takes T5
(plus its tokenizer) and EnCodec from sources of their own: hub ids for users,
local ``save_pretrained`` folders in tests. The result is a ``save_pretrained``
folder (model, generation config, processor) written atomically.
``to_audiocraft_checkpoint`` goes the other way, for round-trip tests.

CLI: ``python -m worker.models.audiocraft_convert SRC DST [--text-encoder X] [--audio-encoder Y]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

LM_FILE = "state_dict.bin"
COMPRESSION_FILE = "compression_state_dict.bin"
DEFAULT_TEXT_ENCODER = "t5-base"
DEFAULT_AUDIO_ENCODER = "facebook/encodec_32khz"
# Part of the cache key of converted folders (worker.models.model_source): bump when
# the output of a conversion changes, so old conversions are redone.
CONVERTER_VERSION = 1

_CONDITIONER = "condition_provider.conditioners.description."
_PROJ = _CONDITIONER + "output_proj."
_T5 = _CONDITIONER + "t5."
_MAX_LISTED = 6  # keys named in an error message


@dataclass(frozen=True)
class LMSpec:
    """What the converter needs from an audiocraft LM config."""

    dim: int
    num_heads: int
    num_layers: int
    ffn_dim: int
    n_q: int
    card: int
    channels: int
    activation: str
    dropout: float
    guidance_scale: float
    sample_rate: int
    segment_seconds: float  # training segment length; the default generation length
    text_encoder_name: str

    def describe(self) -> str:
        kind = "stereo" if self.channels == 2 else "mono"
        return f"{kind}, {self.num_layers} layers x {self.dim}, {self.num_heads} heads, {self.n_q} codebooks"


# --- reading --------------------------------------------------------------------------


def is_audiocraft_folder(path: str | os.PathLike) -> bool:
    """A folder with an audiocraft ``state_dict.bin`` and no transformers ``config.json``."""
    path = Path(path)
    return path.is_dir() and (path / LM_FILE).is_file() and not (path / "config.json").exists()


def _load(path: Path, what: str) -> dict:
    # weights_only=True never runs code from the file: exported audiocraft
    # checkpoints hold only tensors, dicts, strings and bools, all of which the
    # restricted unpickler accepts, so no safe-globals list is needed. A file
    # that needs more (a training checkpoint with an OmegaConf object) is refused.
    if not path.is_file():
        raise ValueError(f"{what} not found: {path}")
    try:
        # mmap keeps multi-GB fp16 checkpoints out of RAM until copied; only
        # the zip format (torch >= 1.6) supports it.
        package = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # torch raises many types for bad files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in str(exc):
            reason = ("it holds Python objects beyond tensors and plain values (" + _unsupported_global(exc)
                      + "); export it with audiocraft.utils.export.export_lm first")
        raise ValueError(f"{path} is not a readable audiocraft {what}: {reason}") from None
    if not isinstance(package, dict):
        raise ValueError(f"{path} is not an audiocraft {what}: expected a dict, found {type(package).__name__}")
    return package


def _unsupported_global(exc: Exception) -> str:
    match = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return match.group(1) if match else "unknown class"


def read_lm_package(src: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The LM state dict and the parsed ``xp.cfg`` of an audiocraft folder."""
    package = _load(src / LM_FILE, "LM checkpoint (state_dict.bin)")
    if "best_state" not in package or "xp.cfg" not in package:
        raise ValueError(f"{src / LM_FILE} lacks 'best_state' or 'xp.cfg' (keys: {sorted(map(str, package))[:8]}); "
                         "is it an audiocraft export?")
    state = package["best_state"]
    if isinstance(state, dict) and set(state) == {"model"}:  # a solver's best_state, one level deeper
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{src / LM_FILE}: 'best_state' is not a state dict of tensors")
    text = package["xp.cfg"]
    if not isinstance(text, str):
        raise ValueError(f"{src / LM_FILE}: 'xp.cfg' must be the YAML text audiocraft's export writes")
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{src / LM_FILE}: 'xp.cfg' is not valid YAML: {exc}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{src / LM_FILE}: 'xp.cfg' is not a YAML mapping")
    return dict(state), cfg


def _compression_name(src: Path, cfg: dict) -> str:
    """The pretrained compression model the LM was trained with."""
    path = src / COMPRESSION_FILE
    if path.exists():
        package = _load(path, "compression checkpoint (compression_state_dict.bin)")
        if "pretrained" not in package:
            raise ValueError(f"{path} holds a custom compression model; only a reference to the pretrained "
                             f"{DEFAULT_AUDIO_ENCODER} is supported")
        name = str(package["pretrained"])
    else:
        name = str(_get(cfg, "compression_model_checkpoint", DEFAULT_AUDIO_ENCODER))
    return name.removeprefix("//pretrained/")


# --- config ---------------------------------------------------------------------------

_MISSING = object()


def _get(cfg: dict, dotted: str, default=_MISSING, _depth: int = 0):
    """``cfg['a']['b']`` for ``'a.b'``, following OmegaConf ``${x.y}`` references.

    ``OmegaConf.to_yaml`` keeps interpolations unresolved, so a value can be a
    reference to another key.
    """
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is _MISSING:
                raise ValueError(f"xp.cfg has no '{dotted}'")
            return default
        node = node[part]
    if isinstance(node, str):
        match = re.fullmatch(r"\$\{([\w.]+)\}", node.strip())
        if match:
            if _depth > 10:
                raise ValueError(f"xp.cfg: '{dotted}' has circular references")
            return _get(cfg, match.group(1), default, _depth + 1)
        if node == "???":  # OmegaConf's "mandatory, never set"
            if default is _MISSING:
                raise ValueError(f"xp.cfg leaves '{dotted}' unset")
            return default
    return node


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"unsupported audiocraft checkpoint: {message}")


def lm_spec(cfg: dict) -> LMSpec:
    """Check that transformers' MusicGen can represent this LM exactly, and read its shape."""
    lm = _get(cfg, "transformer_lm")
    _require(isinstance(lm, dict), "xp.cfg 'transformer_lm' is not a mapping")
    _require(_get(cfg, "lm_model", "transformer_lm") == "transformer_lm",
             "only audiocraft's transformer_lm is supported")

    conditioners = _get(cfg, "conditioners", {}) or {}
    prepend = _get(cfg, "fuser.prepend", []) or []
    if "self_wav" in conditioners or prepend:
        # transformers' MusicgenMelody prepends chroma instead of cross-attending: another layout, not mapped here.
        raise ValueError("unsupported audiocraft checkpoint: melody (chroma-conditioned) checkpoints are not "
                         "supported by this converter yet; only text-conditioned MusicGen (mono or stereo)")
    _require(set(conditioners) == {"description"} and _get(cfg, "conditioners.description.model") == "t5",
             f"conditioners must be a single T5 'description', found {sorted(conditioners)}")
    _require(list(_get(cfg, "fuser.cross", ["description"]) or []) == ["description"]
             and not (_get(cfg, "fuser.sum", []) or []) and not (_get(cfg, "fuser.input_interpolate", []) or []),
             "the text must reach the decoder through cross-attention only")
    _require(not _get(cfg, "fuser.cross_attention_pos_emb", False), "fuser.cross_attention_pos_emb is not supported")

    def flag(name: str, expected, default=None):
        value = _get(cfg, f"transformer_lm.{name}", default)
        _require(value == expected, f"transformer_lm.{name} = {value!r} (transformers' MusicGen needs {expected!r})")

    flag("norm_first", True, False)
    for name in ("bias_ff", "bias_attn", "bias_proj"):
        flag(name, False, True)
    flag("layer_scale", None)
    flag("positional_embedding", "sin", "sin")
    flag("positional_scale", 1.0, 1.0)
    flag("max_period", 10_000, 10_000)
    flag("norm", "layer_norm", "layer_norm")
    flag("causal", True, True)
    flag("past_context", None)
    flag("qk_layer_norm", False, False)
    flag("qk_layer_norm_cross", False, False)
    flag("kv_repeat", 1, 1)
    activation = _get(cfg, "transformer_lm.activation", "gelu")
    _require(activation in ("gelu", "relu"), f"transformer_lm.activation = {activation!r} (gelu or relu only)")

    dim = int(_get(cfg, "transformer_lm.dim"))
    num_heads = int(_get(cfg, "transformer_lm.num_heads"))
    n_q = int(_get(cfg, "transformer_lm.n_q"))
    card = int(_get(cfg, "transformer_lm.card"))
    _require(dim % num_heads == 0, f"dim {dim} is not a multiple of num_heads {num_heads}")

    stereo = bool(_get(cfg, "interleave_stereo_codebooks.use", False))
    channels = int(_get(cfg, "channels", 2 if stereo else 1))
    _require(channels in (1, 2), f"channels = {channels}")
    _require(stereo == (channels == 2), "stereo needs both channels: 2 and interleave_stereo_codebooks.use")
    _require(not _get(cfg, "interleave_stereo_codebooks.per_timestep", False),
             "interleave_stereo_codebooks.per_timestep is not supported")
    _require(n_q % channels == 0, f"n_q = {n_q} does not split into {channels} channels")
    per_channel = n_q // channels
    # transformers hard-codes the delay pattern: codebook k of each channel k steps late.
    expected_delays = [k for k in range(per_channel) for _ in range(channels)]
    modeling = _get(cfg, "codebooks_pattern.modeling", "delay")
    delays = list(_get(cfg, "codebooks_pattern.delay.delays", expected_delays))
    _require(modeling == "delay" and delays == expected_delays
             and not _get(cfg, "codebooks_pattern.delay.flatten_first", 0)
             and not _get(cfg, "codebooks_pattern.delay.empty_initial", 0),
             f"codebook pattern {modeling} {delays} (transformers supports delay {expected_delays} only)")

    sample_rate = int(_get(cfg, "sample_rate", 32_000))
    duration = float(_get(cfg, "dataset.segment_duration", 30) or 30)
    return LMSpec(
        dim=dim, num_heads=num_heads, num_layers=int(_get(cfg, "transformer_lm.num_layers")),
        ffn_dim=int(float(_get(cfg, "transformer_lm.hidden_scale", 4)) * dim), n_q=n_q, card=card,
        channels=channels, activation=activation, dropout=float(_get(cfg, "transformer_lm.dropout", 0.0) or 0.0),
        guidance_scale=float(_get(cfg, "classifier_free_guidance.inference_coef", 3.0)),
        sample_rate=sample_rate, segment_seconds=duration,
        text_encoder_name=str(_get(cfg, "conditioners.description.t5.name", DEFAULT_TEXT_ENCODER)),
    )


# --- tensor names ---------------------------------------------------------------------

_LAYER_PARTS = {
    # audiocraft (StreamingTransformerLayer) -> transformers (MusicgenDecoderLayer)
    "self_attn.out_proj.weight": "self_attn.out_proj.weight",
    "cross_attention.out_proj.weight": "encoder_attn.out_proj.weight",
    "norm1.weight": "self_attn_layer_norm.weight",
    "norm1.bias": "self_attn_layer_norm.bias",
    "norm_cross.weight": "encoder_attn_layer_norm.weight",
    "norm_cross.bias": "encoder_attn_layer_norm.bias",
    "norm2.weight": "final_layer_norm.weight",
    "norm2.bias": "final_layer_norm.bias",
    "linear1.weight": "fc1.weight",
    "linear2.weight": "fc2.weight",
}
# audiocraft fuses q, k, v into one (3*dim, dim) matrix, as torch's MultiheadAttention does.
_FUSED = {"self_attn.in_proj_weight": "self_attn", "cross_attention.in_proj_weight": "encoder_attn"}
_DECODER = "decoder.model.decoder."


def _name_map(spec: LMSpec) -> dict[str, str]:
    """audiocraft name -> transformers name, for every unfused LM tensor."""
    names = {}
    for k in range(spec.n_q):
        names[f"emb.{k}.weight"] = f"{_DECODER}embed_tokens.{k}.weight"
        names[f"linears.{k}.weight"] = f"decoder.lm_heads.{k}.weight"
    for i in range(spec.num_layers):
        for ours, theirs in _LAYER_PARTS.items():
            names[f"transformer.layers.{i}.{ours}"] = f"{_DECODER}layers.{i}.{theirs}"
    names["out_norm.weight"] = f"{_DECODER}layer_norm.weight"
    names["out_norm.bias"] = f"{_DECODER}layer_norm.bias"
    return names


def _fused_names(spec: LMSpec) -> dict[str, str]:
    return {f"transformer.layers.{i}.{ours}": f"{_DECODER}layers.{i}.{theirs}"
            for i in range(spec.num_layers) for ours, theirs in _FUSED.items()}


def _unknown_key_hint(key: str) -> str:
    if "self_wav" in key or "chroma" in key:
        return " (melody conditioning is not supported)"
    if "bias" in key:
        return " (biases in attention/feed-forward/heads are not supported)"
    if "layer_scale" in key:
        return " (layer_scale is not supported)"
    return ""


def _describe_keys(keys) -> str:
    keys = sorted(keys)
    listed = ", ".join(keys[:_MAX_LISTED])
    return listed + (f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


def split_lm_state(state: dict[str, torch.Tensor], spec: LMSpec
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The LM state renamed: (MusicGen tensors, enc_to_dec_proj tensors, fine-tuned T5 tensors)."""
    # A non-custom audiocraft attention keeps its weights under ".mha."; same tensors.
    state = {key.replace(".mha.", "."): value for key, value in state.items()}
    names, fused = _name_map(spec), _fused_names(spec)
    renamed: dict[str, torch.Tensor] = {}
    proj: dict[str, torch.Tensor] = {}
    t5: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key in names:
            renamed[names[key]] = value
        elif key in fused:
            if value.shape != (3 * spec.dim, spec.dim):
                raise ValueError(f"{key} has shape {tuple(value.shape)}, expected {(3 * spec.dim, spec.dim)}")
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                renamed[f"{fused[key]}.{part}.weight"] = chunk
        elif key.startswith(_PROJ) and key[len(_PROJ):] in ("weight", "bias"):
            proj[key[len(_PROJ):]] = value
        elif key.startswith(_T5):
            t5[key[len(_T5):]] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unexpected tensors in the LM checkpoint: {_describe_keys(unknown)}"
                         f"{_unknown_key_hint(unknown[0])}")
    missing = [k for k in names if k not in state] + [k for k in fused if k not in state]
    missing += [_PROJ + k for k in ("weight", "bias") if k not in proj]
    if missing:
        raise ValueError(f"tensors missing from the LM checkpoint (does xp.cfg match best_state?): "
                         f"{_describe_keys(missing)}")
    return renamed, proj, t5


# --- building the transformers folder -------------------------------------------------


def _load_text_encoder(source: str):
    from transformers import AutoTokenizer, T5EncoderModel

    try:
        encoder = T5EncoderModel.from_pretrained(source, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load the T5 text encoder and tokenizer from {source!r}: {exc}") from None
    return encoder, tokenizer


def _load_audio_encoder(source: str):
    from transformers import EncodecModel

    try:
        return EncodecModel.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load the EnCodec audio encoder from {source!r}: {exc}") from None


def _check_audio_encoder(audio_config, spec: LMSpec, source: str) -> None:
    per_channel = spec.n_q // spec.channels
    quantizers = int(audio_config.num_quantizers)
    problems = []
    if audio_config.sampling_rate != spec.sample_rate:
        problems.append(f"sampling rate {audio_config.sampling_rate} != the LM's {spec.sample_rate}")
    if audio_config.codebook_size != spec.card:
        problems.append(f"codebook size {audio_config.codebook_size} != LM card {spec.card}")
    if audio_config.audio_channels != 1:
        problems.append("it is not a mono EnCodec (stereo MusicGen encodes each channel separately)")
    if quantizers < per_channel:
        problems.append(f"{quantizers} codebooks per channel < {per_channel} the LM needs")
    if problems:
        raise ValueError(f"audio encoder {source!r} does not fit this checkpoint: {'; '.join(problems)}")


def _load_projection(model, proj: dict[str, torch.Tensor], spec: LMSpec) -> None:
    """Put audiocraft's T5 -> decoder projection where transformers keeps it."""
    if hasattr(model, "enc_to_dec_proj"):
        try:
            model.enc_to_dec_proj.load_state_dict(proj)
        except RuntimeError as exc:
            raise ValueError(f"conditioner output_proj does not fit the text encoder: {exc}") from None
        return
    # Same width on both sides: transformers then has no projection at all,
    # which is only exact if audiocraft's is the identity.
    weight, bias = proj["weight"], proj["bias"]
    identity = torch.eye(spec.dim, dtype=weight.dtype)
    if weight.shape != identity.shape or not torch.equal(weight, identity) or bool(bias.count_nonzero()):
        raise ValueError("unsupported audiocraft checkpoint: the text encoder is as wide as the decoder "
                         f"({spec.dim}) and output_proj is not the identity; transformers' MusicGen cannot hold it")


def _load_finetuned_t5(text_encoder, t5: dict[str, torch.Tensor]) -> None:
    if not t5:
        return
    result = text_encoder.load_state_dict(t5, strict=False)
    loaded = {p.data_ptr() for name, p in text_encoder.named_parameters() if name in t5}
    # Tied copies (embed_tokens shares shared.weight) count as loaded.
    missing = [k for k in result.missing_keys if text_encoder.get_parameter(k).data_ptr() not in loaded]
    if result.unexpected_keys or missing:
        unexpected = _describe_keys(result.unexpected_keys) or "none"
        raise ValueError("the checkpoint's fine-tuned T5 does not fit the text encoder: "
                         f"unexpected {unexpected}; missing {_describe_keys(missing) or 'none'}")


def build_model(state: dict[str, torch.Tensor], spec: LMSpec, text_encoder: str, audio_encoder: str):
    """A ``MusicgenForConditionalGeneration`` with the LM's weights and the given encoders, plus its processor."""
    from transformers import (
        EncodecFeatureExtractor,
        GenerationConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
    )
    from transformers.models.musicgen.modeling_musicgen import MusicgenForCausalLM

    renamed, proj, t5 = split_lm_state(state, spec)
    text_model, tokenizer = _load_text_encoder(text_encoder)
    audio_model = _load_audio_encoder(audio_encoder)
    _check_audio_encoder(audio_model.config, spec, audio_encoder)
    text_width = text_model.config.d_model
    if proj["weight"].shape != (spec.dim, text_width):
        raise ValueError(f"text encoder {text_encoder!r} is {text_width} wide but the checkpoint's output_proj "
                         f"expects {proj['weight'].shape[1]} (it was trained with {spec.text_encoder_name!r})")
    _load_finetuned_t5(text_model, t5)

    decoder_config = MusicgenDecoderConfig(
        vocab_size=spec.card, max_position_embeddings=2048, num_hidden_layers=spec.num_layers,
        ffn_dim=spec.ffn_dim, num_attention_heads=spec.num_heads, hidden_size=spec.dim,
        activation_function=spec.activation, dropout=spec.dropout, num_codebooks=spec.n_q,
        audio_channels=spec.channels, pad_token_id=spec.card, bos_token_id=spec.card,
        tie_word_embeddings=False,
    )
    decoder = MusicgenForCausalLM._from_config(decoder_config)
    model = MusicgenForConditionalGeneration(text_encoder=text_model, audio_encoder=audio_model, decoder=decoder)
    decoder_state = {key.removeprefix("decoder."): value for key, value in renamed.items()}
    try:
        model.decoder.load_state_dict(decoder_state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the LM tensors do not fit the shape xp.cfg describes: {exc}") from None
    _load_projection(model, proj, spec)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=spec.card, bos_token_id=spec.card, pad_token_id=spec.card,
        # As on the hub's checkpoints (1500 = 30 s at 50 frames/s).
        do_sample=True, guidance_scale=spec.guidance_scale, top_k=250,
        max_length=round(spec.segment_seconds * audio_model.config.frame_rate),
    )
    audio_config = audio_model.config
    feature_extractor = EncodecFeatureExtractor(
        feature_size=spec.channels, sampling_rate=audio_config.sampling_rate, padding_value=0.0,
        chunk_length_s=audio_config.chunk_length_s, overlap=audio_config.overlap,
        padding_side="left",  # as on the hub's MusicGen checkpoints
    )
    return model.eval(), MusicgenProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def _check_folder(folder: Path, spec: LMSpec) -> None:
    """Load what was written the way the worker will, and run one decoder step on dummy ids."""
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    model = MusicgenForConditionalGeneration.from_pretrained(folder).eval()
    AutoProcessor.from_pretrained(folder)
    ids = torch.zeros((1, 4), dtype=torch.long)
    decoder_ids = torch.full((spec.n_q, 1), spec.card, dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=ids, decoder_input_ids=decoder_ids).logits
    if tuple(logits.shape) != (spec.n_q, 1, spec.card):
        raise ValueError(f"converted model gives logits of shape {tuple(logits.shape)}")


def _staging_dir(dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dst.name}.converting-", dir=dst.parent))


def _publish(staging: Path, dst: Path) -> None:
    staging.chmod(0o755)  # mkdtemp makes it private; a model folder is not secret
    try:
        os.rename(staging, dst)  # atomic; fails if dst appeared meanwhile and is not empty
    except OSError:
        raise FileExistsError(f"{dst} already exists") from None


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *,
                       text_encoder: str = DEFAULT_TEXT_ENCODER,
                       audio_encoder: str = DEFAULT_AUDIO_ENCODER) -> Path:
    """Write a transformers MusicGen folder at ``dst`` from the audiocraft folder ``src``.

    ``text_encoder``: a hub id or folder with a T5 encoder and its tokenizer
    (audiocraft MusicGens use ``t5-base``). ``audio_encoder``: a hub id or
    folder with the 32 kHz EnCodec. ``dst`` must not exist (or be empty); it
    appears complete or not at all. Raises ``ValueError`` for input it cannot
    convert and ``FileExistsError`` when ``dst`` is taken.
    """
    _convert(Path(src), Path(dst), text_encoder, audio_encoder)
    return Path(dst)


def _convert(src: Path, dst: Path, text_encoder: str, audio_encoder: str) -> LMSpec:
    if not src.is_dir():
        raise ValueError(f"{src} is not a folder (expected one with {LM_FILE} and {COMPRESSION_FILE})")
    if (src / "config.json").exists():
        raise ValueError(f"{src} already is a transformers model folder (it has config.json)")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst} already exists")
    state, cfg = read_lm_package(src)
    spec = lm_spec(cfg)
    compression = _compression_name(src, cfg)
    if compression != DEFAULT_AUDIO_ENCODER:
        raise ValueError(f"unsupported audiocraft checkpoint: compression model {compression!r} "
                         f"(only {DEFAULT_AUDIO_ENCODER} is supported)")
    model, processor = build_model(state, spec, text_encoder, audio_encoder)
    del state
    staging = _staging_dir(dst)
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        del model  # a real MusicGen is GBs; the check loads its own copy
        _check_folder(staging, spec)
        if dst.is_dir():
            dst.rmdir()  # empty, checked above; rename cannot replace a directory otherwise
        _publish(staging, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return spec


# --- the other way: transformers -> audiocraft ----------------------------------------


def _audiocraft_cfg(model, include_text_encoder: bool, text_encoder_name: str) -> dict:
    decoder = model.config.decoder
    channels = int(decoder.audio_channels)
    per_channel = decoder.num_codebooks // channels
    hidden_scale = decoder.ffn_dim / decoder.hidden_size
    generation = model.generation_config
    frame_rate = model.config.audio_encoder.frame_rate
    return {
        "lm_model": "transformer_lm",
        "sample_rate": int(model.config.audio_encoder.sampling_rate),
        "channels": channels,
        "compression_model_checkpoint": f"//pretrained/{DEFAULT_AUDIO_ENCODER}",
        "dataset": {"segment_duration": round((generation.max_length or 1500) / frame_rate)},
        "codebooks_pattern": {"modeling": "delay", "delay": {
            "delays": [k for k in range(per_channel) for _ in range(channels)],
            "flatten_first": 0, "empty_initial": 0}},
        "interleave_stereo_codebooks": {"use": channels == 2, "per_timestep": False},
        "transformer_lm": {
            "dim": decoder.hidden_size, "num_heads": decoder.num_attention_heads,
            "num_layers": decoder.num_hidden_layers,
            "hidden_scale": int(hidden_scale) if hidden_scale.is_integer() else hidden_scale,
            "n_q": decoder.num_codebooks, "card": decoder.vocab_size, "dropout": float(decoder.dropout),
            "emb_lr": None, "activation": decoder.activation_function, "norm_first": True,
            "bias_ff": False, "bias_attn": False, "bias_proj": False, "past_context": None, "causal": True,
            "custom": False, "memory_efficient": True, "attention_as_float32": False, "layer_scale": None,
            "positional_embedding": "sin", "xpos": False, "checkpointing": "none", "weight_init": "gaussian",
            "depthwise_init": "current", "zero_bias_init": True, "norm": "layer_norm", "cross_attention": False,
            "qk_layer_norm": False, "qk_layer_norm_cross": False, "attention_dropout": None, "kv_repeat": 1,
            "two_step_cfg": False,
        },
        "classifier_free_guidance": {"training_dropout": 0.3,
                                     "inference_coef": float(generation.guidance_scale or 3.0)},
        "attribute_dropout": {},
        "fuser": {"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1, "sum": [], "prepend": [],
                  "cross": ["description"], "input_interpolate": []},
        "conditioners": {"description": {"model": "t5", "t5": {
            "name": text_encoder_name, "finetune": include_text_encoder,
            "word_dropout": 0.3, "normalize_text": False}}},
    }


def to_audiocraft_checkpoint(model_folder: str | os.PathLike, dst: str | os.PathLike, *,
                             include_text_encoder: bool = False,
                             text_encoder_name: str = DEFAULT_TEXT_ENCODER) -> Path:
    """Write a transformers MusicGen folder in audiocraft's exported layout (for round trips).

    ``include_text_encoder`` stores T5 in the LM state, as a fine-tune that
    trained T5 (``finetune: true``) does.
    """
    from transformers import MusicgenForConditionalGeneration

    model = MusicgenForConditionalGeneration.from_pretrained(model_folder, dtype=torch.float32)
    decoder = model.config.decoder
    spec = LMSpec(dim=decoder.hidden_size, num_heads=decoder.num_attention_heads,
                  num_layers=decoder.num_hidden_layers, ffn_dim=decoder.ffn_dim, n_q=decoder.num_codebooks,
                  card=decoder.vocab_size, channels=decoder.audio_channels, activation=decoder.activation_function,
                  dropout=decoder.dropout, guidance_scale=3.0, sample_rate=model.config.audio_encoder.sampling_rate,
                  segment_seconds=30.0, text_encoder_name=text_encoder_name)
    ours = model.state_dict()
    best_state: dict[str, torch.Tensor] = {}
    for theirs, name in _name_map(spec).items():
        best_state[theirs] = ours[name].clone()
    for theirs, name in _fused_names(spec).items():
        best_state[theirs] = torch.cat([ours[f"{name}.{p}_proj.weight"] for p in ("q", "k", "v")], dim=0)
    if hasattr(model, "enc_to_dec_proj"):
        best_state[_PROJ + "weight"] = ours["enc_to_dec_proj.weight"].clone()
        best_state[_PROJ + "bias"] = ours["enc_to_dec_proj.bias"].clone()
    else:  # same width: transformers applies no projection, audiocraft always has one
        best_state[_PROJ + "weight"] = torch.eye(spec.dim)
        best_state[_PROJ + "bias"] = torch.zeros(spec.dim)
    if include_text_encoder:
        for key, value in model.text_encoder.state_dict().items():
            best_state[_T5 + key] = value.clone()
    cfg = _audiocraft_cfg(model, include_text_encoder, text_encoder_name)

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    exported = {"exported": True, "version": f"segue-export-{CONVERTER_VERSION}"}
    torch.save({"best_state": best_state, "xp.cfg": yaml.safe_dump(cfg, sort_keys=False), **exported}, dst / LM_FILE)
    torch.save({"pretrained": DEFAULT_AUDIO_ENCODER, **exported}, dst / COMPRESSION_FILE)
    return dst


# --- CLI ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.models.audiocraft_convert",
        description="Convert an audiocraft MusicGen checkpoint folder (state_dict.bin + compression_state_dict.bin) "
                    "into a transformers MusicGen folder.")
    parser.add_argument("src", help="folder with the audiocraft checkpoint")
    parser.add_argument("dst", help="folder to create (must not exist)")
    parser.add_argument("--text-encoder", default=DEFAULT_TEXT_ENCODER,
                        help=f"hub id or folder with the T5 encoder and tokenizer (default {DEFAULT_TEXT_ENCODER})")
    parser.add_argument("--audio-encoder", default=DEFAULT_AUDIO_ENCODER,
                        help=f"hub id or folder with the 32 kHz EnCodec (default {DEFAULT_AUDIO_ENCODER})")
    args = parser.parse_args(argv)
    try:
        spec = _convert(Path(args.src), Path(args.dst), args.text_encoder, args.audio_encoder)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"converted {args.src} ({spec.describe()}) -> {args.dst}")
    print(f"text encoder: {args.text_encoder}; audio encoder: {args.audio_encoder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
