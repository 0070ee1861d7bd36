"""Segue's MusicGen engine.

Today's engine (``generate_engine``) steers transformers' ``generate`` with
hooks and batches statically. Engine v2 (issue 13) is being built beside it,
one part per module, over MusicGen's own modules but with a decode loop of
Segue's own:

- ``kv_cache``: a preallocated self-attention KV cache of fixed shape with
  slots, and per-slot cross-attention keys and values.
- ``step``: one decoder step (or a prefill chunk) over the rows of active
  slots, with per-row positions and masks.
- ``row_sampling``: per-task sampling with today's semantics (seeds, CFG,
  temperature, top-k, top-p).
- ``delay``: MusicGen's delay pattern, in one place.
- ``scheduler``: admits tasks into slots, steps them together, retires them.
- ``quantize``: opt-in int8 dynamic quantization of the decoder's Linear layers.

Every existing ``from worker.engine import ...`` keeps working: the names
below are today's engine.
"""

from worker.engine.generate_engine import (
    TINY_MODEL_PARAMETERS,
    GenerationCanceled,
    GenerationRequest,
    GenerationResult,
    MusicGenEngine,
    OnStep,
    _Plan,
)

__all__ = ["GenerationCanceled", "GenerationRequest", "GenerationResult", "MusicGenEngine", "OnStep",
           "TINY_MODEL_PARAMETERS", "_Plan"]
