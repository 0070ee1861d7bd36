"""The low-precision candidates for the CPU decoding step, side by side: what ``SEGUE_QUANTIZE`` was chosen from.

``python -m bench.step_candidates [--rounds R] [--threads T] [--only a,b] [--onnx] [--compile]``

The model is the decoder's linear layers only, at musicgen-small's shapes
(24 blocks of q, k, v, out, cross-q, cross-out 1024x1024 and fc1/fc2
1024x4096: 352M parameters), with cheap non-linear ops between the layers so
nothing folds; random weights (speed does not depend on them). Each
candidate runs one forward pass for 2 rows (one guided task) and 16 rows
(8 tasks); all candidates are measured interleaved, ``--rounds`` times, and
each reports its median and its fastest round. Also, per candidate:

- ``relerr``: relative error of the 16-row output against float32;
- ``rows_independent``: whether the first two rows come out bit for bit the
  same alone as in the 16-row batch (what the engine's seed guarantee needs);
- ``cpu_ms_*``: the process's CPU time per pass. With ``--threads 1`` it is
  the figure least disturbed by other processes on a shared machine (time
  slicing does not count; contention for caches and memory still does).

Candidates: ``fp32``; ``int8`` (torch dynamic int8, one activation scale per
call); ``int8-rows`` (one activation range per row:
``worker.engine.quantize.RowScaledInt8Linear`` on oneDNN's int8 kernel, as
the engine runs it on x86); ``int8-rows-fbgemm`` (the same on torch's
dynamic int8 kernel with an anchor row, the fallback); ``int8-weight-only``
(``_weight_int8pack_mm``, bfloat16 activations); ``int4-weight-only``
(``_weight_int4pack_mm_for_cpu``, groups of 128, bfloat16 activations);
``bf16`` (the layers in bfloat16); ``fp16-weights`` (torch dynamic fp16).
``--onnx``: ONNX Runtime float32, its dynamic int8 and its 4/8-bit
``MatMulNBits`` (needs ``onnxruntime``, ``onnx`` and ``onnx_ir``).
``--compile``: torchao's int8 weight-only and int8 dynamic-activation
configs under ``torch.compile`` (needs ``torchao``; minutes of compiling,
measured on ``--compile-blocks`` blocks and scaled to 24).

Prints progress on stderr and one JSON line on stdout. Not a test.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

WIDTH, FFN, BLOCKS = 1024, 4096, 24


def log(message: str) -> None:
    print(f"step_candidates: {message}", file=sys.stderr, flush=True)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        linear = lambda i, o: torch.nn.Linear(i, o, bias=False)  # noqa: E731
        self.q, self.k, self.v, self.o = (linear(WIDTH, WIDTH) for _ in range(4))
        self.cq, self.co = linear(WIDTH, WIDTH), linear(WIDTH, WIDTH)
        self.fc1, self.fc2 = linear(WIDTH, FFN), linear(FFN, WIDTH)

    def forward(self, x):
        x = x + self.o(torch.tanh(self.q(x) + self.k(x) * self.v(x)))
        x = x + self.co(torch.tanh(self.cq(x)))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


class Linears(torch.nn.Module):
    def __init__(self, blocks: int = BLOCKS):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block() for _ in range(blocks))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def swapped(model: torch.nn.Module, make) -> torch.nn.Module:
    out = copy.deepcopy(model)
    for module in list(out.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, make(child))
    return out


class Int4WeightOnly(torch.nn.Module):
    """4-bit weights (asymmetric, groups of 128 along the input), bfloat16 activations, torch's CPU kernel."""

    def __init__(self, linear: torch.nn.Linear, group: int = 128):
        super().__init__()
        weight = linear.weight.detach().float()
        out_features, in_features = weight.shape
        groups = weight.view(out_features, in_features // group, group)
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        scale = ((high - low) / 15).clamp(min=1e-6)
        codes = torch.round((groups - low) / scale).clamp(0, 15).to(torch.int32).view(out_features, in_features)
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))
        zeros = low + scale * 8  # the kernel computes (code - 8) * scale + zero
        self.register_buffer("scale_zeros", torch.stack([scale.squeeze(-1), zeros.squeeze(-1)], -1)
                             .transpose(0, 1).contiguous().to(torch.bfloat16))
        self.group, self.out_features = group, out_features

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group, self.scale_zeros)
        return out.float().view(*x.shape[:-1], self.out_features)


class Cast(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def forward(self, x):
        return self.inner(x.to(self.dtype)).float()


def torch_candidates(reference: torch.nn.Module) -> dict:
    from torch.ao.quantization import quantize_dynamic

    from worker.engine.quantize import Int8Linear, RowScaledInt8Linear

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "fp32": reference,
            "int8": quantize_dynamic(copy.deepcopy(reference), {torch.nn.Linear}, dtype=torch.qint8),
            "int8-rows": swapped(reference, RowScaledInt8Linear),  # oneDNN's kernel where torch has it
            "int8-rows-fbgemm": swapped(reference, lambda linear: RowScaledInt8Linear(linear, "dynamic")),
            "int8-weight-only": swapped(reference, Int8Linear),
            "int4-weight-only": swapped(reference, Int4WeightOnly),
            "bf16": Cast(copy.deepcopy(reference).to(torch.bfloat16), torch.bfloat16),
            "fp16-weights": quantize_dynamic(copy.deepcopy(reference), {torch.nn.Linear}, dtype=torch.float16),
        }


class OnnxSession:
    def __init__(self, path: Path, threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"x": x.numpy()})[0])


def onnx_candidates(reference: torch.nn.Module, threads: int, folder: Path) -> dict:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    plain = folder / "linears.onnx"
    torch.onnx.export(reference, (torch.randn(2, 1, WIDTH),), plain, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "rows"}}, dynamo=False, external_data=True)
    paths = {"onnxruntime-fp32": plain}
    quantize_dynamic(plain, folder / "int8.onnx", weight_type=QuantType.QInt8, use_external_data_format=True)
    paths["onnxruntime-int8"] = folder / "int8.onnx"
    for bits in (8, 4):
        # accuracy_level 4: int8 activations, quantized per block of each row.
        config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, bits=bits, accuracy_level=4)
        quantizer = MatMulNBitsQuantizer(onnx.load(plain), algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(str(folder / f"nbits{bits}.onnx"), True)
        paths[f"onnxruntime-matmulnbits{bits}"] = folder / f"nbits{bits}.onnx"
    return {name: OnnxSession(path, threads) for name, path in paths.items()}


def compiled_candidates(blocks: int) -> tuple[torch.nn.Module, dict]:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    import torch._inductor.config as inductor

    inductor.freezing = True
    small = Linears(blocks).eval()
    for parameter in small.parameters():
        parameter.data.normal_(0, 0.02)
    out = {}
    for name, config in (("torchao-int8-weight-only-compiled", Int8WeightOnlyConfig()),
                         ("torchao-int8-dynamic-compiled", Int8DynamicActivationInt8WeightConfig())):
        model = copy.deepcopy(small)
        quantize_(model, config)
        out[name] = torch.compile(model, dynamic=False)
    return small, out


def timed(model, x: torch.Tensor, passes: int) -> tuple[float, float]:
    """Wall ms and process CPU ms per pass."""
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(passes):
        model(x)
    return (time.perf_counter() - started) / passes * 1000, (time.process_time() - cpu) / passes * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--passes", type=int, default=3, help="forward passes per timing")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--only", default="", help="comma-separated candidate names")
    parser.add_argument("--onnx", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile-blocks", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    reference = Linears().eval()
    for parameter in reference.parameters():
        parameter.data.normal_(0, 0.02)
    candidates = torch_candidates(reference)
    scale = {name: 1.0 for name in candidates}
    references = {name: reference for name in candidates}
    with tempfile.TemporaryDirectory(prefix="segue-candidates-") as tmp:
        if args.onnx:
            found = onnx_candidates(reference, args.threads, Path(tmp))
            candidates.update(found)
            scale.update({name: 1.0 for name in found})
            references.update({name: reference for name in found})
        if args.compile:
            small, found = compiled_candidates(args.compile_blocks)
            candidates.update(found)
            scale.update({name: BLOCKS / args.compile_blocks for name in found})
            references.update({name: small for name in found})
        if args.only:
            keep = set(args.only.split(","))
            candidates = {k: v for k, v in candidates.items() if k in keep}
        inputs = {rows: torch.randn(rows, 1, WIDTH, generator=torch.Generator().manual_seed(rows)) for rows in (2, 16)}
        result: dict = {"threads": args.threads, "rounds": args.rounds, "candidates": {}}
        times: dict = {}
        cpu_times: dict = {}
        with torch.inference_mode():
            for name, model in candidates.items():
                started = time.perf_counter()
                full = model(inputs[16])  # warm (and compile)
                expected = references[name](inputs[16])
                alone = model(inputs[16][:2].clone())
                result["candidates"][name] = {
                    "relerr": round(float((full.float() - expected).norm() / expected.norm()), 4),
                    "rows_independent": bool(torch.equal(alone, full[:2])),
                    "first_call_s": round(time.perf_counter() - started, 1)}
                model(inputs[2])
            for round_ in range(args.rounds):
                for name, model in candidates.items():
                    for rows, x in inputs.items():
                        wall, cpu = timed(model, x, args.passes)
                        times.setdefault((name, rows), []).append(wall * scale[name])
                        cpu_times.setdefault((name, rows), []).append(cpu * scale[name])
                log(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
                    f"{name} {times[(name, 2)][-1]:.0f}/{times[(name, 16)][-1]:.0f}" for name in candidates))
    for name in candidates:
        entry = result["candidates"][name]
        for rows in (2, 16):
            entry[f"ms_{rows}_rows_median"] = round(statistics.median(times[(name, rows)]), 1)
            entry[f"ms_{rows}_rows_min"] = round(min(times[(name, rows)]), 1)
            entry[f"cpu_ms_{rows}_rows_median"] = round(statistics.median(cpu_times[(name, rows)]), 1)
        if scale[name] != 1.0:
            entry["scaled_from_blocks"] = args.compile_blocks
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
