"""Segue's MusicGen engine (engine v2): a decode loop of its own over MusicGen's modules.

The weights and layers come from transformers; ``generate`` is not used.
One part per module:

- ``musicgen``: the model, loaded once (``MusicGenEngine``): preparing
  requests, EnCodec and T5 encoding, decoding audio; the entry points
  ``submit`` (any thread) and ``generate`` / ``generate_each`` (in-process).
- ``requests``: what goes in and comes out (request, plan, result).
- ``delay``: MusicGen's delay pattern and prompt-in-output layout, in one place.
- ``kv_cache``: a preallocated self-attention KV cache of fixed shape in
  rows that tasks hold, plus per-row cross-attention keys and values.
- ``step``: one decoder pass over cached rows (a prefill chunk, or a
  decoding step with each row at its own position).
- ``graphs``: fixed-shape steps per row-count bucket, CUDA graphs on GPUs.
- ``scheduler``: iteration-level scheduling (admit, chunked prefill, batched
  decode, retire), per-task sampling (``worker.engine.sampling.draw``), progress,
  cancel, failures, streaming, windows past 30 s, melody models.
- ``task_state``: one task's progress, cancellation and outcome.
- ``loop``: the scheduler on a thread of its own, fed from any other.
- ``quantize``: the CPU workers' precision modes (``SEGUE_QUANTIZE``), torch's int8 decoders, and drift.
- ``openvino_graph``, ``openvino_step``, ``paged_cache``: ``openvino-int8`` (the x86-64 CPU default): the
  decoder pass as one compiled OpenVINO graph over a float16 cache in blocks, the same calls as ``step``.
"""

from worker.engine.musicgen import TINY_MODEL_PARAMETERS, MusicGenEngine
from worker.engine.requests import GenerationRequest, GenerationResult, OnStep, Plan
from worker.engine.task_state import GenerationCanceled

__all__ = ["GenerationCanceled", "GenerationRequest", "GenerationResult", "MusicGenEngine", "OnStep", "Plan",
           "TINY_MODEL_PARAMETERS"]
