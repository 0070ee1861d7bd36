"""Segue's MusicGen engine.

Today's engine (``generate_engine``) steers transformers' ``generate`` with
hooks and batches statically; the worker runs it. Engine v2 (issue 13) is
built beside it, one part per module: a decode loop of Segue's own over
MusicGen's modules (weights and layers from transformers, not ``generate``),
tested to give today's audio token for token:

- ``delay``: MusicGen's delay pattern and prompt-in-output layout, in one place.
- ``kv_cache``: a preallocated self-attention KV cache of fixed shape in
  rows that tasks hold, plus per-row cross-attention keys and values.
- ``step``: one decoder pass over cached rows (a prefill chunk, or a
  decoding step with each row at its own position).
- ``graphs``: fixed-shape steps per row-count bucket, CUDA graphs on GPUs.
- ``scheduler``: iteration-level scheduling (admit, chunked prefill, batched
  decode, retire), per-task sampling (``worker.sampling.draw``, shared with
  today's engine), progress, cancel, failures, streaming, windows past 30 s,
  melody models.
- ``quantize``: opt-in int8 decoder weights for CPU workers, and drift.

Model loading and the EnCodec/T5 helpers are still today's engine's
(``MusicGenEngine``, which the scheduler takes). Every existing
``from worker.engine import ...`` keeps working: the names below are today's
engine.
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
