"""Raw ``model.generate``: the floor Segue's end-to-end numbers are held to.

The model is loaded the way Segue's engine loads it (float32 on CPU, SDPA
attention in the decoder and text encoder) and runs with the same torch
thread count as the worker, so the only difference left is Segue itself:
API, queue, store, per-row sampling and encoding.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import torch
from transformers import AutoProcessor, MusicgenForConditionalGeneration

from .workload import CFG_COEF, SAMPLE_RATE, TOP_K, Workload

# Same rule as worker.engine (which we must not import here: it is the thing measured).
TINY_MODEL_PARAMETERS = 50_000_000


def load(path: Path) -> tuple[MusicgenForConditionalGeneration, object]:
    model = MusicgenForConditionalGeneration.from_pretrained(
        path, dtype=torch.float32, attn_implementation={"decoder": "sdpa", "text_encoder": "sdpa"}
    ).eval()
    return model, AutoProcessor.from_pretrained(path)


def worker_threads(model: MusicgenForConditionalGeneration, configured: int) -> int:
    """The thread count Segue's worker uses for this model (SEGUE_TORCH_THREADS, else its automatic rule)."""
    if configured:
        return configured
    if sum(p.numel() for p in model.parameters()) < TINY_MODEL_PARAMETERS:
        return 1
    return torch.get_num_threads()


def generate(model, processor, work: Workload, batch: int, seed: int) -> float:
    """One ``generate`` call for ``batch`` copies of the work unit; returns its wall seconds."""
    prompt = work.prompt_array()
    torch.manual_seed(seed)
    started = time.perf_counter()
    with torch.inference_mode():
        inputs = processor(audio=[prompt] * batch, sampling_rate=SAMPLE_RATE, text=[""] * batch,
                           padding=True, return_tensors="pt")
        out = model.generate(**inputs, do_sample=True, top_k=TOP_K, guidance_scale=CFG_COEF,
                             max_new_tokens=work.max_new_tokens)
    elapsed = time.perf_counter() - started
    assert out.shape[0] == batch, out.shape  # the decoded audio, one row per prompt
    return elapsed


def measure(path: Path, work: Workload, *, repeats: int, batch: int, threads: int,
            timed=lambda label, fn: fn(), log=print) -> dict:
    """Warm up once at batch 1, then ``repeats`` calls at batch 1 and one at ``batch``."""
    started = time.perf_counter()
    model, processor = load(path)
    load_s = time.perf_counter() - started
    threads = worker_threads(model, threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        log(f"raw: model loaded in {load_s:.1f} s; torch threads {threads}; warming up")
        generate(model, processor, work, 1, seed=0)
        single = []
        for i in range(repeats):
            single.append(timed("raw batch 1", lambda: generate(model, processor, work, 1, seed=1 + i)))
            log(f"raw: batch 1 run {i + 1}/{repeats}: {single[-1]:.2f} s")
        batched = timed(f"raw batch {batch}", lambda: generate(model, processor, work, batch, seed=100))
        log(f"raw: batch {batch}: {batched:.2f} s")
    finally:
        torch.set_num_threads(before)
        del model, processor
        gc.collect()  # the stack's worker needs the memory next
    return {"load_s": load_s, "threads": threads, "single_s": single, "batched_s": batched}
