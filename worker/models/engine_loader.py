"""Pick the engine class for a checkpoint: MusicGen melody or plain MusicGen.

The checkpoint's ``config.json`` says which it is (``model_type``); reading
it costs a small file (from the folder, or from the Hugging Face cache/hub),
not a model load, and an unsupported checkpoint fails with its type named
instead of with a weight-loading error.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from worker.engine import MusicGenEngine
from worker.models.melody_engine import MelodyEngine

ENGINES: dict[str, type[MusicGenEngine]] = {
    "musicgen": MusicGenEngine,
    "musicgen_melody": MelodyEngine,
}


def model_type(model_ref: str) -> str:
    """``model_type`` from the checkpoint's config.json (a local folder or a hub id)."""
    config, _ = PretrainedConfig.get_config_dict(model_ref)
    if not config:  # transformers returns {} for a folder without config.json
        raise OSError(f"{model_ref} has no config.json: not a save_pretrained model folder")
    return str(config.get("model_type", ""))


def load_engine(model_ref: str, **kwargs) -> MusicGenEngine:
    """The engine for ``model_ref``; ``kwargs`` go to its constructor (device, half_precision, cpu_threads)."""
    kind = model_type(model_ref)
    engine_class = ENGINES.get(kind)
    if engine_class is None:
        raise ValueError(f"{model_ref} is a {kind or 'untyped'!r} checkpoint; "
                         f"supported model types: {', '.join(sorted(ENGINES))}")
    return engine_class(model_ref, **kwargs)
