"""MusicGen's decoder as one OpenVINO graph with int8 weights (``SEGUE_QUANTIZE=openvino-int8``).

One compiled graph runs a whole pass (a decoding step, or a prefill chunk):
the decoder layers (norms, fused q/k/v, attention, the GELU MLP, residuals),
the final norm and the codebook heads. Its weights are transformers' own,
int8 with one scale per output channel (``Convert(int8) * scale``, the
pattern OpenVINO's CPU plugin runs as compressed weights without expanding
them). Attention is OpenVINO's ``PagedAttention``: each row (a *sequence*)
brings its own length and block table (``worker.engine.paged_cache``), so
rows join, leave and sit at their own positions as in the eager step.
Cross-attention uses it too, over each row's text (see the cache).

Embeddings and the sinusoidal positions stay in torch (a lookup per row),
as do the text's keys and values (once per task).

Inputs: ``hidden`` ``(tokens, width)``; per attention kind (``self_``,
``cross_``) ``past_lens``, ``subsequence_begins``, ``block_indices``,
``block_indices_begins`` and ``max_context_len`` (``PagedAttention``'s own);
``cross_last`` ``(tokens, 2 * layers, width)`` (the text's last key and value
per layer); ``logit_rows``, the tokens whose logits come back; and the
caches, ``self_keys.{layer}`` and so on, bound once. Output: ``logits``
``(len(logit_rows), codebooks * vocab)``.

``PagedAttention`` is an internal operation of OpenVINO's (``_PagedAttentionExtension``,
built the way OpenVINO's own LLM pipelines build it); its 28 inputs are those
of openvino 2026.4, pinned in the worker's dependencies.
"""

from __future__ import annotations

import numpy as np
import torch

# transformers' activation names -> OpenVINO's GELU approximation
GELU_MODES = {"gelu": "erf", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
META = ("past_lens", "subsequence_begins", "block_indices", "block_indices_begins")


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float32).cpu().numpy()


class GraphBuilder:
    def __init__(self, decoder):
        import openvino as ov
        import openvino.opset13 as ops

        self.ov, self.ops = ov, ops
        self.decoder = decoder
        config = decoder.config
        self.width = config.hidden_size
        self.heads = config.num_attention_heads
        self.head_dim = self.width // self.heads
        self.layers = list(decoder.model.decoder.layers)
        self.cross = hasattr(self.layers[0], "encoder_attn")
        if config.activation_function not in GELU_MODES:
            raise ValueError(f"openvino-int8 runs GELU decoders; this one uses {config.activation_function}")
        self.gelu = GELU_MODES[config.activation_function]
        self.inputs = []

    # -- pieces ------------------------------------------------------------------

    def parameter(self, name: str, shape, element_type=None):
        node = self.ops.parameter(shape, element_type or self.ov.Type.f32, name=name)
        self.inputs.append(node)
        return node

    def constant(self, value):
        return self.ops.constant(value)

    def linear(self, x, *linears: torch.nn.Linear):
        """``x @ W.T (+ b)`` over one or more layers' weights side by side (a fused projection), int8 with one
        scale per output channel: fused layers share no scale, so each column is what its own layer gives."""
        weight = np.concatenate([_array(layer.weight) for layer in linears])
        scale = np.abs(weight).max(axis=1, keepdims=True) / 127
        scale[scale == 0] = 1.0
        levels = np.clip(np.round(weight / scale), -127, 127).astype(np.int8)
        ops = self.ops
        weight_node = ops.multiply(ops.convert(self.constant(levels), self.ov.Type.f32), self.constant(scale.astype(np.float32)))
        out = ops.matmul(x, weight_node, False, True)
        biases = [layer.bias for layer in linears]
        if any(b is not None for b in biases):
            bias = np.concatenate([_array(b) if b is not None else np.zeros(layer.out_features, np.float32)
                                   for b, layer in zip(biases, linears)])
            out = ops.add(out, self.constant(bias))
        return out

    def norm(self, x, layer_norm: torch.nn.LayerNorm):
        ops = self.ops
        normed = ops.mvn(x, self.constant(np.array([-1], np.int64)), True, float(layer_norm.eps), "inside_sqrt")
        if layer_norm.weight is not None:
            normed = ops.multiply(normed, self.constant(_array(layer_norm.weight)))
        if layer_norm.bias is not None:
            normed = ops.add(normed, self.constant(_array(layer_norm.bias)))
        return normed

    def part(self, x, index: int, count: int = 1):
        width = self.width
        return self.ops.slice(x, np.array([index * width]), np.array([(index + count) * width]), np.array([1]),
                              np.array([1]))

    def paged_attention(self, query, key, value, keys, values, meta, scale: float):
        from openvino.op import _PagedAttentionExtension

        c, f32, i32 = self.constant, np.float32, np.int32
        arguments = [query, key, value, keys, values, *meta[:4], c(f32(scale)), c(i32(0)),  # sliding window off
                     c(np.zeros([0], f32)), meta[4], c(np.zeros([0], i32)),  # no alibi; no score aggregation
                     c(np.zeros([0], i32)), c(np.zeros([0, 0], i32)), c(np.zeros([0, 0], f32)),  # no rotation
                     c(np.zeros([0], f32)), c(i32(0)), c(i32(0)),  # no xattention
                     c(np.zeros([0], f32)),  # no sinks
                     c(i32(0)), c(np.zeros([0], i32)), c(np.zeros([0], i32)), c(np.zeros([0], i32)),  # no eviction
                     c(np.zeros([0], i32)), c(np.zeros([0], np.uint8)), c(np.zeros([0], i32))]  # no token types, bias
        node = _PagedAttentionExtension([a.output(0) for a in arguments])
        info = node.get_rt_info()  # the CPU plugin reads the heads' geometry from here
        for name, value in (("k_head_size", self.head_dim), ("num_k_heads", self.heads),
                            ("v_head_size", self.head_dim), ("num_v_heads", self.heads)):
            info[name] = value
        return node.output(0)

    def meta(self, prefix: str):
        i32 = self.ov.Type.i32
        return [*(self.parameter(f"{prefix}{name}", [-1], i32) for name in META),
                self.parameter(f"{prefix}max_context_len", [], i32)]

    def cache(self, name: str):
        return self.parameter(name, self.ov.PartialShape.dynamic(4), self.ov.Type.dynamic)

    # -- the graph ---------------------------------------------------------------------

    def model(self):
        ops = self.ops
        hidden = self.parameter("hidden", [-1, self.width])
        logit_rows = self.parameter("logit_rows", [-1], self.ov.Type.i32)
        self_meta = self.meta("self_")
        if self.cross:
            cross_meta = self.meta("cross_")
            cross_last = self.parameter("cross_last", [-1, 2 * len(self.layers), self.width])
        x = hidden
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            qkv = self.linear(self.norm(x, layer.self_attn_layer_norm), attention.q_proj, attention.k_proj,
                              attention.v_proj)
            attended = self.paged_attention(self.part(qkv, 0), self.part(qkv, 1), self.part(qkv, 2),
                                            self.cache(f"self_keys.{index}"), self.cache(f"self_values.{index}"),
                                            self_meta, attention.scaling)
            x = ops.add(x, self.linear(attended, attention.out_proj))
            if self.cross:
                attention = layer.encoder_attn
                query = self.linear(self.norm(x, layer.encoder_attn_layer_norm), attention.q_proj)
                last = [ops.gather(cross_last, self.constant(np.int64(2 * index + k)), self.constant(np.int64(1)))
                        for k in (0, 1)]
                attended = self.paged_attention(query, *last, self.cache(f"cross_keys.{index}"),
                                                self.cache(f"cross_values.{index}"), cross_meta, attention.scaling)
                x = ops.add(x, self.linear(attended, attention.out_proj))
            inner = ops.gelu(self.linear(self.norm(x, layer.final_layer_norm), layer.fc1), self.gelu)
            x = ops.add(x, self.linear(inner, layer.fc2))
        x = ops.gather(x, logit_rows, self.constant(np.int64(0)))
        logits = self.linear(self.norm(x, self.decoder.model.decoder.layer_norm), *self.decoder.lm_heads)
        logits.get_output_tensor(0).set_names({"logits"})
        return self.ov.Model([logits.output(0)], self.inputs, "musicgen_decoder_step")


def compile_decoder(decoder, threads: int):
    """The decoder's graph compiled for this CPU: float32 activations, int8 weights, a float16 cache."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f16", "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(GraphBuilder(decoder).model(), "CPU", config)


def weight_bytes(decoder) -> int:
    """Bytes of int8 weights and float32 scales one pass of the graph reads (its linear layers: what
    ``quantize.step_weight_bytes`` counts for the eager modes)."""
    return sum(layer.in_features * layer.out_features + 4 * layer.out_features for layer in _graph_linears(decoder))


def _graph_linears(decoder) -> list[torch.nn.Linear]:
    """The linear layers the graph holds (in int8): all but cross-attention's keys and values (torch computes
    those once per task from the text)."""
    linears = list(decoder.lm_heads)
    for layer in decoder.model.decoder.layers:
        attention = layer.self_attn
        linears += [attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj, layer.fc1, layer.fc2]
        if hasattr(layer, "encoder_attn"):
            linears += [layer.encoder_attn.q_proj, layer.encoder_attn.out_proj]
    return linears


def release_float_weights(decoder) -> None:
    """Drop the float32 weights the compiled graph now holds in int8 (~1.4 GB for musicgen-small, ~6 GB for
    medium): the engine never calls those layers again; embeddings and cross-attention's keys and values stay."""
    for linear in _graph_linears(decoder):
        linear.weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)
