"""What each offered model is: channels, sample rate, size, default description.

The API process answers ``GET /models`` without loading anything: a local
folder describes itself (its ``config.json``, weight files and an optional
``segue.json`` with ``{"description": ...}``); hub ids Segue knows come from
the table below; anything else is reported with what can be known offline.
``loaded`` and ``load_error`` come from the workers' heartbeats. An alias
(``SEGUE_MODELS`` entry ``ID=PATH``) is listed as ``ID`` and described from
the folder ``PATH``, keeping what the table knows about ``ID``.

Default descriptions condition a request that brings no ``prompt`` of its
own, as the old backend did for its community fine-tunes.
SEGUE_MODEL_DESCRIPTIONS overrides or adds descriptions per model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

SAMPLE_RATE = 32000


@dataclass
class ModelInfo:
    id: str
    description: str | None = None  # default text prompt for requests without one
    sample_rate: int | None = SAMPLE_RATE
    channels: int | None = 1
    size: str | None = None  # parameters, e.g. "300M"
    kind: str = "musicgen"  # musicgen | musicgen_melody | audiocraft_checkpoint
    summary: str | None = None  # what the model is, for people choosing one
    loaded: bool = False
    load_error: str | None = None  # why a worker could not load it, while that lasts
    default: bool = False

    def to_json(self) -> dict:
        return asdict(self)


# Meta's checkpoints (no default description: they follow the prompt audio) and
# community fine-tunes gary4web users pick, with the style each was tuned on.
KNOWN: dict[str, ModelInfo] = {m.id: m for m in (
    ModelInfo("facebook/musicgen-small", size="300M", summary="Meta's MusicGen, small (fastest)"),
    ModelInfo("facebook/musicgen-medium", size="1.5B", summary="Meta's MusicGen, medium"),
    ModelInfo("facebook/musicgen-large", size="3.3B", summary="Meta's MusicGen, large"),
    ModelInfo("facebook/musicgen-melody", size="1.5B", kind="musicgen_melody",
              summary="Meta's MusicGen with chroma (melody) conditioning"),
    ModelInfo("facebook/musicgen-stereo-small", size="300M", channels=2, summary="Meta's MusicGen, stereo, small"),
    ModelInfo("facebook/musicgen-stereo-medium", size="1.5B", channels=2, summary="Meta's MusicGen, stereo, medium"),
    ModelInfo("facebook/musicgen-stereo-large", size="3.3B", channels=2, summary="Meta's MusicGen, stereo, large"),
    ModelInfo("facebook/musicgen-stereo-melody", size="1.5B", channels=2, kind="musicgen_melody",
              summary="Meta's MusicGen, stereo, with chroma conditioning"),
    ModelInfo("thepatch/vanya_ai_dnb_0.1", size="300M", kind="audiocraft_checkpoint",
              description="drum and bass, fast breakbeats, heavy sub bass", summary="community fine-tune: drum and bass"),
    ModelInfo("thepatch/bleeps-medium", size="1.5B", kind="audiocraft_checkpoint",
              description="bleepy electronic melodies, synth arpeggios", summary="community fine-tune: bleeps"),
    ModelInfo("thepatch/hoenn_lofi", size="1.5B", kind="audiocraft_checkpoint",
              description="lofi hip hop, nostalgic video game melodies, mellow keys", summary="community fine-tune: lofi"),
    # Sizes of these two are not published with them; "300M" is the small architecture the
    # gary4web fine-tunes without a size in their name were trained from. A local copy reports its real size.
    ModelInfo("thepatch/budots_remix", size="300M", kind="audiocraft_checkpoint",
              description="budots, filipino dance remix, bouncy synths, heavy kicks",
              summary="community fine-tune: budots / dance remix"),
    ModelInfo("thepatch/PhonkV2", size="300M", kind="audiocraft_checkpoint",
              description="phonk, memphis rap beat, cowbell melodies, distorted 808 bass",
              summary="community fine-tune: phonk"),
    ModelInfo("thepatch/keygen-gary-v2-small-8", size="300M", kind="audiocraft_checkpoint",
              description="keygen music, chiptune, tracker synths", summary="community fine-tune: keygen / chiptune"),
    ModelInfo("thepatch/keygen-gary-v2-small-12", size="300M", kind="audiocraft_checkpoint",
              description="keygen music, chiptune, tracker synths", summary="community fine-tune: keygen / chiptune"),
)}


def _size_from_bytes(weight_bytes: int) -> str | None:
    if weight_bytes <= 0:
        return None
    params = weight_bytes / 4  # float32 checkpoints
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if params >= scale:
            return f"{params / scale:.3g}{unit}"
    return f"{params:.0f}"


def _from_folder(model_id: str, folder: Path) -> ModelInfo:
    info = ModelInfo(model_id, summary="local folder")
    config_file = folder / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        info.kind = config.get("model_type", "musicgen")
        info.sample_rate = int(config.get("audio_encoder", {}).get("sampling_rate", SAMPLE_RATE))
        info.channels = int(config.get("decoder", {}).get("audio_channels", 1))
        weights = sum(f.stat().st_size for f in folder.glob("*.safetensors")) or \
            sum(f.stat().st_size for f in folder.glob("pytorch_model*.bin"))
        info.size = _size_from_bytes(weights)
    elif (folder / "state_dict.bin").is_file():
        info.kind = "audiocraft_checkpoint"
        info.summary = "local audiocraft checkpoint (converted on first load)"
        info.size = _size_from_bytes((folder / "state_dict.bin").stat().st_size)
    extra = folder / "segue.json"
    if extra.is_file():
        meta = json.loads(extra.read_text())
        info.description = meta.get("description") or info.description
        info.summary = meta.get("summary") or info.summary
    return info


def describe(model_id: str, source: str | None = None) -> ModelInfo:
    """What ``model_id`` is; ``source`` is the folder an alias loads (default: the id itself)."""
    known = KNOWN.get(model_id)
    folder = Path(source or model_id)
    if folder.is_dir():
        try:
            info = _from_folder(model_id, folder)
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # unreadable or malformed: say so, keep serving
            return ModelInfo(model_id, summary=f"local folder (unreadable: {exc})", sample_rate=None,
                             channels=None)
        if known is not None:  # an alias of a known id keeps its default description
            info.description = info.description or known.description
            info.summary = f"{known.summary} (local copy)"
        return info
    if known is not None:
        return ModelInfo(**asdict(known))
    return ModelInfo(model_id, summary="Hugging Face model", channels=2 if "stereo" in model_id else 1)


def catalogue(models: list[tuple[str, str]], descriptions: dict[str, str], loaded: set[str],
              load_errors: dict[str, str] | None = None) -> list[ModelInfo]:
    """``models``: (id, source) pairs, the default first."""
    out = []
    for i, (model_id, source) in enumerate(models):
        info = describe(model_id, source)
        if model_id in descriptions:
            info.description = descriptions[model_id] or None
        info.loaded = model_id in loaded
        info.load_error = None if info.loaded else (load_errors or {}).get(model_id)
        info.default = i == 0
        out.append(info)
    return out


def default_description(model_id: str, descriptions: dict[str, str], source: str | None = None) -> str | None:
    if model_id in descriptions:
        return descriptions[model_id] or None
    return describe(model_id, source).description
