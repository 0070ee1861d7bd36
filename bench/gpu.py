"""GPU benchmark of engine v2's decoding step (``python -m bench.gpu``; ``--dry`` on CPU for the tests).

On one GPU (meant to take well under 8 minutes on an H100/H200), for
musicgen-small's and musicgen-medium's architectures (random weights, built
in memory on the device; weights do not change speed) in half precision
(bfloat16 where the GPU supports it, else float16), at 1, 8 and 32 guided
tasks (2, 16 and 64 rows) over a 30 s cache:

- ``v2_graphs_steps_s``: engine v2's fixed-shape step replayed as a CUDA graph
  (``worker.engine.graphs.BucketedDecode``);
- ``v2_eager_steps_s``: the same step without graphs (``SEGUE_CUDA_GRAPHS=0``);
- ``v2_dynamic_steps_s``: the CPU path's step (attends only as far as needed,
  one host read per step);
- ``hf_generate_steps_s``: transformers' own ``generate`` with guidance 3.0
  and top-k 250 in the same precision, per step (the slope between two
  lengths, so text encoding, prefill and EnCodec decoding cancel out);
- ``graphs_vs_hf``: the ratio of the first to the last;
- ``bandwidth_share``: how close the graphed step comes to the memory
  bandwidth bound: bytes a step must read (decoder weights, and the whole
  fixed-shape KV cache) over the device's measured copy bandwidth, divided
  by the measured step time (1.0 = bandwidth-bound).

A step advances every task by one token, so steps/s is also each task's
tokens/s (50 tokens are one second of audio). Prints progress on stderr and
one JSON line on stdout. ``--dry`` runs the same code on CPU with the tiny
test architecture, float32, 1 and 2 tasks, two steps and no capture, so the
tests check that this script runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

WINDOW_POSITIONS = 1 + 1500 + 3 + 1  # 30 s: start token, frames, delay, scratch


def log(message: str) -> None:
    print(f"bench-gpu: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU, tiny architecture, a few steps (for tests)")
    parser.add_argument("--tasks", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    return parser.parse_args(argv)


def build(arch: str, device: torch.device, dtype: torch.dtype):
    from transformers import MusicgenForConditionalGeneration

    from worker.testing import random_model

    config = {"tiny": random_model.tiny_config, "small": random_model.small_arch_config,
              "medium": random_model.medium_arch_config}[arch]()
    config.decoder._attn_implementation = "sdpa"
    with torch.device(device):
        model = MusicgenForConditionalGeneration(config)
    model = model.to(dtype).eval()
    model.generation_config = random_model._generation_config()
    return model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device: torch.device, dtype: torch.dtype, megabytes: int) -> float:
    """Bytes per second of a plain device copy (read + write)."""
    x = torch.empty(megabytes * 2**20 // torch.finfo(dtype).bits * 8, dtype=dtype, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(5):
        y.copy_(x)
    synchronize(device)
    return 2 * x.numel() * x.element_size() * 5 / (time.perf_counter() - started)


def v2_steps_per_s(model, tasks: int, mode: str, steps: int, positions: int, device) -> tuple[float, int]:
    """Steps/s of engine v2's step for ``tasks`` guided tasks; also the bytes one fixed-shape step reads."""
    from worker.engine.graphs import BucketedDecode
    from worker.engine.kv_cache import KVCache
    from worker.engine.step import DecoderStep

    config = model.decoder.config
    rows = 2 * tasks
    dtype = next(model.decoder.parameters()).dtype
    cache = KVCache(layers=config.num_hidden_layers, rows=rows, heads=config.num_attention_heads,
                    head_dim=config.hidden_size // config.num_attention_heads, max_positions=positions,
                    max_text=16, dtype=dtype, device=device)
    projection = model.enc_to_dec_proj if model.text_encoder.config.hidden_size != config.hidden_size else None
    step = DecoderStep(model.decoder, cache, projection)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.inference_mode():
        states = model.text_encoder(input_ids=torch.tensor([[5, 6, 7, 1]], device=device)).last_hidden_state[0]
        for t in range(tasks):
            step.set_text(slice(2 * t, 2 * t + 2), states, guided=True)
        cache.keys.normal_(generator=generator)
        cache.values.normal_(generator=generator)
        ids = torch.randint(0, 2048, (rows, config.num_codebooks), device=device, generator=generator)
        at = torch.full((rows,), positions // 2, device=device)
        if mode == "dynamic":
            run = lambda: step.decode(slice(0, rows), ids, at)  # noqa: E731
        else:
            bucketed = BucketedDecode(step, capture=mode == "graphs")
            run = lambda: bucketed(slice(0, rows), ids, at)  # noqa: E731
        for _ in range(3):
            run()
        synchronize(device)
        started = time.perf_counter()
        for _ in range(steps):
            run()
        synchronize(device)
        elapsed = time.perf_counter() - started
    linear_bytes = sum(m.weight.numel() * m.weight.element_size() for m in model.decoder.modules()
                       if isinstance(m, torch.nn.Linear))
    read = linear_bytes + cache.keys.numel() * cache.keys.element_size() * 2
    return steps / elapsed, read


def hf_steps_per_s(model, tasks: int, lengths: tuple[int, int], device) -> float:
    """transformers' generate, per step: the slope between two generation lengths."""
    input_ids = torch.tensor([[5, 6, 7, 1]] * tasks, device=device)
    times = []
    for length in lengths:
        torch.manual_seed(0)
        synchronize(device)
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
                           top_k=250, guidance_scale=3.0, max_new_tokens=length)
        synchronize(device)
        times.append(time.perf_counter() - started)
    if times[1] > times[0]:
        return (lengths[1] - lengths[0]) / (times[1] - times[0])
    return lengths[1] / times[1]  # too fast to tell the fixed costs apart (the dry run): all of it



def _figure(value: float) -> float:
    """Three significant figures: a fixed number of decimals would print a tiny share (a dry run, a slow
    host) as 0."""
    return float(f"{value:.3g}")

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    if args.dry:
        device, dtype = torch.device("cpu"), torch.float32
        archs = {"small": "tiny", "medium": "tiny"}
        tasks, steps, positions, lengths, megabytes = args.tasks or [1, 2], args.steps or 2, 64, (4, 8), 16
        modes = ("eager", "dynamic")  # no capture without CUDA
    else:
        if not torch.cuda.is_available():
            log("no CUDA device; use --dry to check this script on CPU")
            return 2
        device = torch.device("cuda")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        archs = {"small": "small", "medium": "medium"}
        tasks, steps, positions, lengths, megabytes = args.tasks or [1, 8, 32], args.steps or 50, \
            WINDOW_POSITIONS, (32, 96), 1024
        modes = ("graphs", "eager", "dynamic")
    bandwidth = copy_bandwidth(device, dtype, megabytes)
    log(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), {dtype}, "
        f"copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    result: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "dtype": str(dtype).split(".")[-1],
        "dry": args.dry, "tasks": tasks, "positions": positions, "bandwidth_gb_s": _figure(bandwidth / 1e9),
    }
    for name, arch in archs.items():
        model = build(arch, device, dtype)
        figures: dict = {"arch": arch}
        shares = {}
        for mode in ("graphs", "eager", "dynamic"):
            figures[f"v2_{mode}_steps_s"] = {}
        for count in tasks:
            for mode in modes:
                rate, read = v2_steps_per_s(model, count, mode, steps, positions, device)
                figures[f"v2_{mode}_steps_s"][str(count)] = _figure(rate)
                if mode == modes[0]:
                    shares[str(count)] = _figure(read / bandwidth * rate)
                log(f"{name} ({arch}) x{count} v2 {mode}: {rate:.1f} steps/s")
        figures["hf_generate_steps_s"] = {}
        for count in tasks:
            rate = hf_steps_per_s(model, count, lengths, device)
            figures["hf_generate_steps_s"][str(count)] = _figure(rate)
            log(f"{name} ({arch}) x{count} transformers generate: {rate:.1f} steps/s")
        best = "v2_graphs_steps_s" if "graphs" in modes else "v2_eager_steps_s"
        figures["graphs_vs_hf"] = {c: _figure(figures[best][c] / figures["hf_generate_steps_s"][c])
                                   for c in figures[best]}
        figures["bandwidth_share"] = shares
        result[name] = figures
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["elapsed_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
