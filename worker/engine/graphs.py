"""Decoding steps of fixed shape, one per row-count bucket; captured as CUDA graphs on GPUs.

At small batch on a big GPU, a MusicGen step is bound by the CPU launching
its ~500 kernels, not by the GPU (audiocraft issue 192; fast-musicgen's
CUDA-graph step runs musicgen-medium ~3x faster). A CUDA graph replays a
captured step with one launch, but only for the exact shapes and memory it
was captured with. So the running batch (the leading ``n`` rows of the
cache) is padded up to a bucket of ``1, 2, 4, ... rows`` and stepped with
``DecoderStep.decode(static=True)``: inputs copied into fixed buffers,
attention over the cache's whole length under a mask computed on the
device, nothing read back to the host. One graph per bucket, captured the
first time the bucket is used.

Padding rows must not disturb the rows they overlap (free rows, or a task
still prefilling at the end of the batch): they are fed at the cache's
*scratch* position, the last one, which no task ever reads or writes
(``KVCache.scratch``).

Without CUDA (or with ``capture=False``, ``SEGUE_CUDA_GRAPHS=0``) the same
bucketed static step runs eagerly, so the logic is tested on CPU; only the
capture itself needs a GPU.
"""

from __future__ import annotations

import torch

from worker.engine.delay import START
from worker.engine.step import DecoderStep

BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # rows: 1..32 guided tasks (two rows each)


class BucketedDecode:
    def __init__(self, step: DecoderStep, *, capture: bool | None = None):
        cache = step.cache
        self.step = step
        device = cache.keys.device
        self.capture = device.type == "cuda" if capture is None else capture
        self.buckets = sorted({b for b in BUCKETS if b < cache.rows} | {cache.rows})
        self.ids = torch.full((cache.rows, step.num_codebooks), START, dtype=torch.long, device=device)
        self.positions = torch.full((cache.rows,), cache.scratch, dtype=torch.long, device=device)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def bucket(self, rows: int) -> int:
        return next(b for b in self.buckets if b >= rows)

    def __call__(self, rows: slice, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Like ``DecoderStep.decode`` for the leading ``rows``; returns their logits ``(n, K, vocab)``."""
        if rows.start != 0:
            raise ValueError("bucketed steps run the leading rows of the cache")
        n = ids.shape[0]
        size = self.bucket(n)
        self.ids[:n].copy_(ids)
        self.ids[n:size].fill_(START)
        self.positions[:n].copy_(positions)
        self.positions[n:size].fill_(self.step.cache.scratch)
        if not self.capture:
            return self._step(size)[:n]
        graph, logits = self.graphs.get(size) or self._captured(size)
        graph.replay()
        return logits[:n]

    def _step(self, size: int) -> torch.Tensor:
        return self.step.decode(slice(0, size), self.ids[:size], self.positions[:size], static=True)

    def _captured(self, size: int) -> tuple:
        # Warm up on a side stream first, as PyTorch's CUDA-graph notes require.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step(size)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self._step(size)
        self.graphs[size] = (graph, logits)
        return graph, logits
