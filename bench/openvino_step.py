"""OpenVINO as a candidate for the CPU decoding step (not a test): ``docs/cpu-engine.md``, fourth round.

Builds the dense parts of a musicgen-small decoding step (24 layers: norms, q/k/v, output, cross
query and output, the MLP, residuals; the four heads) as OpenVINO graphs with int8 weights, one scale
per output channel (or ``--weights int4``: 4-bit, one scale per group of 128), random values, and times
them for 2 and 16 rows:

- as one graph, attention left out (what a whole-step graph's dense parts cost);
- as 49 graphs cut where attention goes (what a hybrid with torch's attention calls);
- those 49 graphs with torch's attention over a bfloat16 cache of 550 positions between them, torch on
  2 and on 1 thread (2 rows);
- ``--whole-step``: the whole step as one graph, attention over cache inputs;
- ``--stateful``: the whole step with the cache held in the runtime, as OpenVINO runs LLMs;
- ``--check-rows``: whether a row's result depends on its neighbours, in the dense layers and in the
  stateful attention (a row alone, beside another, and joined late behind a masked prefix).

    make bootstrap                # openvino is a worker dependency since the fifth round
    python -m bench.openvino_step --threads 2

Prints one JSON line of wall ms (best of ``--repeats``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

WIDTH, FFN, LAYERS, HEADS_OUT, HEADS, HEAD_DIM, POSITIONS, TEXT = 1024, 4096, 24, 8192, 16, 64, 550, 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--check-rows", action="store_true",
                        help="also check that a row's result does not depend on its neighbours (dense layers, stateful attention)")
    parser.add_argument("--stateful", action="store_true",
                        help="also time the whole step with the cache held in the runtime (all rows one length)")
    parser.add_argument("--whole-step", action="store_true",
                        help="also time the whole step (attention too) as one graph, over float32 and float16 caches")
    parser.add_argument("--weights", choices=["int8", "int4"], default="int8",
                        help="int8: one scale per output channel; int4: asymmetric, one scale per group of 128")
    args = parser.parse_args()
    import openvino as ov
    import openvino.opset13 as ops
    import openvino.opset6 as opset6
    import torch

    rng = np.random.default_rng(0)
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}

    def linear(x, out_features, in_features):
        if args.weights == "int4":  # random packed nibbles: the values do not change the speed
            groups = in_features // 128
            nibbles = ov.Tensor(ov.Type.u4, ov.Shape([out_features, groups, 128]))
            nibbles.data[:] = rng.integers(0, 256, nibbles.data.shape, dtype=np.uint8)
            zero_points = ov.Tensor(ov.Type.u4, ov.Shape([out_features, groups, 1]))
            zero_points.data[:] = 0x88
            grouped = ops.multiply(
                ops.subtract(ops.convert(ov.op.Constant(nibbles), ov.Type.f32),
                             ops.convert(ov.op.Constant(zero_points), ov.Type.f32)),
                ops.constant(rng.random((out_features, groups, 1), dtype=np.float32) * 0.003))
            weight = ops.reshape(grouped, ops.constant(np.array([out_features, in_features], np.int64)), False)
            return ops.matmul(x, weight, False, True)
        weight = rng.standard_normal((out_features, in_features), dtype=np.float32) * 0.02
        scale = np.abs(weight).max(axis=1, keepdims=True) / 127
        weight_int8 = np.round(weight / scale).astype(np.int8)  # the pattern OpenVINO runs as int8 weights
        decompressed = ops.multiply(ops.convert(ops.constant(weight_int8), ov.Type.f32), ops.constant(scale))
        return ops.matmul(x, decompressed, False, True)

    def norm(x):
        return ops.mvn(x, ops.constant(np.array([-1], np.int64)), True, 1e-5, "inside_sqrt")

    def parameter(name):
        return ops.parameter([-1, WIDTH], ov.Type.f32, name=name)

    def mlp(x):  # the residual MLP
        return ops.add(x, linear(ops.gelu(linear(norm(x), FFN, WIDTH), "erf"), WIDTH, FFN))

    def mlp_then(x, next_out):  # the residual MLP, then the next layer's q/k/v (or the heads)
        x = mlp(x)
        return x, linear(norm(x), next_out, WIDTH)

    def part(qkv, index):  # q, k or v of a fused projection
        return ops.slice(qkv, np.array([index * WIDTH]), np.array([(index + 1) * WIDTH]), np.array([1]), np.array([1]))

    def heads(projected):  # (rows, width) -> (rows, heads, 1, head_dim)
        split = ops.reshape(projected, ops.constant(np.array([0, 1, HEADS, HEAD_DIM], np.int64)), True)
        return ops.transpose(split, ops.constant(np.array([0, 2, 1, 3], np.int64)))

    def merged(out):  # (rows, heads, 1, head_dim) -> (rows, width)
        out = ops.transpose(out, ops.constant(np.array([0, 2, 1, 3], np.int64)))
        return ops.reshape(out, ops.constant(np.array([0, WIDTH], np.int64)), True)

    def appended(new, name, beams, first_input):
        """A stateful cache: the state kept so far (rows picked by ``beams``) with ``new`` appended, and the
        Assign that keeps it; the state starts empty, as many rows as ``first_input`` has."""
        from openvino.op.util import Variable, VariableInfo

        rows = ops.gather(ops.shape_of(first_input), ops.constant(np.array([0], np.int64)), ops.constant(np.int64(0)))
        empty = ops.broadcast(ops.constant(np.float32(0)),
                              ops.concat([rows, ops.constant(np.array([HEADS, 0, HEAD_DIM], np.int64))], 0))
        info = VariableInfo()
        info.data_shape, info.data_type = ov.PartialShape([-1, HEADS, -1, HEAD_DIM]), ov.Type.f32
        info.variable_id = name
        variable = Variable(info)
        past = ops.gather(opset6.read_value(empty, variable), beams, ops.constant(np.int64(0)))
        everything = ops.concat([past, new], 2)
        return everything, opset6.assign(everything, variable)

    def compiled(outputs, inputs):
        return core.compile_model(ov.Model(outputs, inputs), "CPU", config).create_infer_request()

    def whole():
        x = parameter("x")
        hidden = x
        for _ in range(LAYERS):
            qkv = linear(norm(hidden), 3 * WIDTH, WIDTH)
            hidden = ops.add(hidden, linear(part(qkv, 0), WIDTH, WIDTH))
            hidden = mlp(ops.add(hidden, linear(linear(norm(hidden), WIDTH, WIDTH), WIDTH, WIDTH)))
        return compiled([linear(norm(hidden), HEADS_OUT, WIDTH)], [x])

    started = time.perf_counter()
    one_graph = whole()
    x = parameter("x")
    first = compiled([linear(norm(x), 3 * WIDTH, WIDTH)], [x])
    after_self, after_cross = [], []
    for layer in range(LAYERS):
        attended, x = parameter("attended"), parameter("x")
        x2 = ops.add(x, linear(attended, WIDTH, WIDTH))
        after_self.append(compiled([x2, linear(norm(x2), WIDTH, WIDTH)], [attended, x]))
        attended, x = parameter("attended"), parameter("x")
        x3 = ops.add(x, linear(attended, WIDTH, WIDTH))
        after_cross.append(compiled(list(mlp_then(x3, HEADS_OUT if layer == LAYERS - 1 else 3 * WIDTH)),
                                    [attended, x]))
    compile_s = time.perf_counter() - started

    cache = [[torch.randn(2, HEADS, length, HEAD_DIM).bfloat16() for _ in range(2)]
             for length in (POSITIONS, TEXT) for _ in range(LAYERS)]

    def attention(projected, layer, cross):
        query = torch.from_numpy(np.ascontiguousarray(projected[:, :WIDTH])).view(2, 1, HEADS, HEAD_DIM)
        keys, values = cache[LAYERS * cross + layer]
        out = torch.nn.functional.scaled_dot_product_attention(query.transpose(1, 2).bfloat16(), keys, values)
        return out.transpose(1, 2).reshape(2, WIDTH).float().numpy()

    def split_step(rows, with_attention):
        hidden = np.full((rows, WIDTH), 0.1, np.float32)
        projected = first.infer([hidden])[0]
        for layer in range(LAYERS):
            attended = attention(projected, layer, 0) if with_attention else np.ascontiguousarray(projected[:, :WIDTH])
            out = after_self[layer].infer([attended, hidden])
            hidden, query = out[0], out[1]
            attended = attention(query, layer, 1) if with_attention else query
            out = after_cross[layer].infer([attended, hidden])
            hidden, projected = out[0], out[1]

    def best_ms(run):
        run()
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        return round(1000 * min(times), 1)

    def whole_step(cache_type):
        """The whole decoding step as one graph: attention too, over cache inputs of POSITIONS (self) and
        TEXT (cross) positions per row, shared with numpy (no copy). What a whole-step design would cost;
        new keys and values are not written back (a few kB)."""
        hidden = parameter("x")
        inputs, x = [hidden], hidden
        shape = [-1, HEADS, -1, HEAD_DIM]

        def attend(query, name):
            keys = ops.parameter(shape, cache_type, name=f"{name}_keys")
            values = ops.parameter(shape, cache_type, name=f"{name}_values")
            inputs.extend([keys, values])
            if cache_type != ov.Type.f32:
                keys, values = ops.convert(keys, ov.Type.f32), ops.convert(values, ov.Type.f32)
            return merged(ops.scaled_dot_product_attention(heads(query), keys, values, scale=np.float32(HEAD_DIM ** -0.5)))

        for layer in range(LAYERS):
            qkv = linear(norm(x), 3 * WIDTH, WIDTH)
            x = ops.add(x, linear(attend(part(qkv, 0), f"self{layer}"), WIDTH, WIDTH))
            x = mlp(ops.add(x, linear(attend(linear(norm(x), WIDTH, WIDTH), f"cross{layer}"), WIDTH, WIDTH)))
        return compiled([linear(norm(x), HEADS_OUT, WIDTH)], inputs)

    def whole_step_ms(request, rows, numpy_type):
        feeds = [np.full((rows, WIDTH), 0.1, np.float32)]
        for _ in range(LAYERS):
            for length in (POSITIONS, TEXT):
                feeds += [rng.standard_normal((rows, HEADS, length, HEAD_DIM)).astype(numpy_type) for _ in range(2)]
        return best_ms(lambda: request.infer(feeds, share_inputs=True))

    def stateful_step():
        """The whole step as one graph with the self-attention cache held in the runtime, as OpenVINO runs
        LLMs: per layer, state -> Gather(beam_idx) -> Concat(new key) -> attention, and the Concat assigned
        back (its CPU plugin fuses this into one attention node with an in-place cache, u8 by default).
        Every row has the same length: the LLM way, not Segue's rows at their own positions."""
        hidden = parameter("x")
        beams = ops.parameter([-1], ov.Type.i32, name="beam_idx")
        inputs, x, sinks = [hidden, beams], hidden, []
        no_mask, scale = ops.constant(np.zeros((1, 1, 1, 1), np.float32)), np.float32(HEAD_DIM ** -0.5)
        for layer in range(LAYERS):
            qkv = linear(norm(x), 3 * WIDTH, WIDTH)
            cached = []
            for index, name in ((1, "keys"), (2, "values")):
                everything, sink = appended(heads(part(qkv, index)), f"{name}{layer}", beams, hidden)
                cached.append(everything)
                sinks.append(sink)
            attended = ops.scaled_dot_product_attention(heads(part(qkv, 0)), *cached, no_mask, scale)
            x = ops.add(x, linear(merged(attended), WIDTH, WIDTH))
            keys = ops.parameter([-1, HEADS, TEXT, HEAD_DIM], ov.Type.f32, name=f"cross_keys{layer}")
            values = ops.parameter([-1, HEADS, TEXT, HEAD_DIM], ov.Type.f32, name=f"cross_values{layer}")
            inputs += [keys, values]
            crossed = ops.scaled_dot_product_attention(heads(linear(norm(x), WIDTH, WIDTH)), keys, values, no_mask, scale)
            x = mlp(ops.add(x, linear(merged(crossed), WIDTH, WIDTH)))
        model = ov.Model([linear(norm(x), HEADS_OUT, WIDTH).output(0)], sinks, inputs, "step")
        return core.compile_model(model, "CPU", config).create_infer_request(), len(inputs) - 2

    def stateful_ms(request, crosses, rows):
        feeds = [np.full((rows, WIDTH), 0.1, np.float32), np.arange(rows, dtype=np.int32)]
        feeds += [rng.standard_normal((rows, HEADS, TEXT, HEAD_DIM)).astype(np.float32) for _ in range(crosses)]
        times = []
        for _ in range(2):
            request.reset_state()
            for _ in range(POSITIONS):  # fill the cache to POSITIONS, as a musician's task is halfway through
                request.infer(feeds, share_inputs=True)
            for _ in range(args.repeats):
                started = time.perf_counter()
                request.infer(feeds, share_inputs=True)
                times.append(time.perf_counter() - started)
        return round(1000 * min(times), 1)

    def rows_kept_apart() -> dict:
        """Whether a row's result depends on its neighbours (what Segue's seed guarantees need):
        three dense layers at 1..33 rows against one call of 33; and the stateful attention, a row
        alone against the same row beside another and joined 37 steps late behind a masked prefix."""
        x = parameter("x")
        out = x
        for _ in range(3):
            out = ops.add(out, linear(ops.gelu(linear(out, FFN, WIDTH), "erf"), WIDTH, FFN))
        dense = compiled([out], [x])
        rows = rng.standard_normal((33, WIDTH)).astype(np.float32)
        everyone = dense.infer([rows])[0].copy()
        dense_apart = all(np.array_equal(dense.infer([rows[:n].copy()])[0], everyone[:n])
                          for n in (1, 2, 3, 5, 8, 16, 17, 32))

        shape = [-1, HEADS, 1, HEAD_DIM]
        query, key, value = (ops.parameter(shape, ov.Type.f32, name=n) for n in ("q", "k", "v"))
        beams = ops.parameter([-1], ov.Type.i32, name="beam_idx")
        mask = ops.parameter([-1, 1, 1, -1], ov.Type.f32, name="mask")
        (keys, keep_keys), (values, keep_values) = (appended(new, name, beams, query)
                                                    for name, new in (("keys", key), ("values", value)))
        cached, sinks = [keys, values], [keep_keys, keep_values]
        attention = ops.scaled_dot_product_attention(query, *cached, mask, np.float32(HEAD_DIM ** -0.5))
        model = ov.Model([attention.output(0)], sinks, [query, key, value, beams, mask], "attention")
        request = core.compile_model(model, "CPU", config).create_infer_request()
        steps, late = 300, 37

        def token():
            return [rng.standard_normal((1, HEADS, 1, HEAD_DIM)).astype(np.float32) for _ in range(3)]

        mine, theirs = [token() for _ in range(steps)], [token() for _ in range(late + steps)]

        def run(lead: int, neighbour: bool):
            request.reset_state()
            for step in range(lead + steps):
                own = mine[step - lead] if step >= lead else [t * 5 for t in token()]  # junk before it joins
                feeds = [np.concatenate([own[i], theirs[step][i]]) if neighbour else own[i] for i in range(3)]
                rows = 2 if neighbour else 1
                masks = np.zeros((rows, 1, 1, step + 1), np.float32)
                if step >= lead:
                    masks[0, :, :, :lead] = np.finfo(np.float32).min
                out = request.infer(feeds + [np.arange(rows, dtype=np.int32), masks])[0]
            return out[:1].copy()

        alone = run(0, False)
        return {"dense_rows_apart": dense_apart, "stateful_attention_beside_another": bool(np.array_equal(run(0, True), alone)),
                "stateful_attention_joined_late": bool(np.array_equal(run(late, True), alone))}

    result = {"weights": args.weights, "compile_s": round(compile_s, 1), "threads": args.threads}
    if args.check_rows:
        result["rows_kept_apart"] = rows_kept_apart()
    if args.stateful:
        request, crosses = stateful_step()
        for rows in (2, 16):
            result[f"stateful_step_ms_{rows}"] = stateful_ms(request, crosses, rows)
    if args.whole_step:
        for name, cache_type, numpy_type in (("f32", ov.Type.f32, np.float32), ("f16", ov.Type.f16, np.float16)):
            request = whole_step(cache_type)
            for rows in (2, 16):
                result[f"whole_step_{name}_cache_ms_{rows}"] = whole_step_ms(request, rows, numpy_type)
    for rows in (2, 16):
        hidden = np.full((rows, WIDTH), 0.1, np.float32)
        result[f"one_graph_ms_{rows}"] = best_ms(lambda: one_graph.infer([hidden]))
        result[f"split_49_graphs_ms_{rows}"] = best_ms(lambda: split_step(rows, False))
    for torch_threads in (args.threads, 1):
        torch.set_num_threads(torch_threads)
        result[f"split_with_torch_attention_ms_2_torch_threads_{torch_threads}"] = best_ms(lambda: split_step(2, True))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
