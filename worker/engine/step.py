"""One forward pass of MusicGen's decoder over cached rows: a prefill chunk or a decoding step.

The weights and layers are transformers' own (``MusicgenForCausalLM``: the
per-codebook embeddings, the sinusoidal positions, the decoder layers, the
final norm and the per-codebook LM heads); only the loop around them is
ours, so each row can sit at its own position in a ``KVCache`` and rows can
join and leave between steps. The layer arithmetic follows
``MusicgenDecoderLayer.forward`` in transformers 5.23 (pre-norm self-
attention, cross-attention, GELU MLP; no embedding scale, no biases in
attention), and ``tests/test_engine_v2_step`` checks the logits against
``MusicgenForConditionalGeneration``'s own forward pass.

Melody models (``MusicgenMelodyForCausalLM``) have no cross-attention: their
conditioning (chroma, then text) is a prefix of the decoder's input, so a
task's cache rows start with those prefix positions (``prefill`` takes
embeddings as well as token ids) and its tokens sit after them.

The layers' submodules are called one by one (``q_proj``, ``fc1``, ...), so a
decoder whose ``Linear`` layers were swapped for int8 ones (``quantize``)
runs unchanged; when it carries fused ``qkv_proj`` and ``fused_lm_head``
(quantized decoders do) those run instead, fewer and larger calls.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.functional import scaled_dot_product_attention

from worker.engine.kv_cache import KVCache


class DecoderStep:
    def __init__(self, decoder, cache: KVCache, text_projection=None):
        """``decoder``: a ``MusicgenForCausalLM``; ``text_projection``: the parent model's ``enc_to_dec_proj``
        when the text encoder's width differs from the decoder's (else None)."""
        self.decoder = decoder
        self.body = decoder.model.decoder  # MusicgenDecoder
        self.layers = list(self.body.layers)
        self.heads = decoder.config.num_attention_heads
        self.width = decoder.config.hidden_size
        self.head_dim = self.width // self.heads
        self.num_codebooks = decoder.config.num_codebooks
        self.cache = cache
        self.text_projection = text_projection
        self.cross_attention = hasattr(self.layers[0], "encoder_attn")  # melody models have none
        # Quantized decoders carry fused q/k/v projections and heads (worker.engine.quantize).
        self.fused = hasattr(self.layers[0].self_attn, "qkv_proj") and hasattr(decoder, "fused_lm_head")
        positions = self.body.embed_positions
        if positions.weights.shape[0] < cache.max_positions:
            positions.make_weights(cache.max_positions, positions.embedding_dim)
        self.position_table = positions.weights

    # -- text ----------------------------------------------------------------

    def set_text(self, rows: slice, states: torch.Tensor | None, guided: bool) -> None:
        """Cross-attention keys/values of one task, once: ``states`` ``(text, width)`` from the text encoder.

        With guidance the second row is the unconditional one: no text at all (zero states, fully
        masked), as transformers builds it for ``guidance_scale > 1``."""
        if self.text_projection is not None:
            states = self.text_projection(states)
        batch = torch.stack([states, torch.zeros_like(states)]) if guided else states[None]
        keys, values = [], []
        for layer in self.layers:
            attention = layer.encoder_attn
            keys.append(self._split(attention.k_proj(batch)))
            values.append(self._split(attention.v_proj(batch)))
        self.cache.set_cross(rows, keys, values, [True, False] if guided else [True])

    # -- forward passes --------------------------------------------------------

    def prefill(self, rows: slice, inputs: torch.Tensor, start: int) -> torch.Tensor:
        """Positions ``[start, start + C)`` of one task's rows: token ``ids`` ``(rows, K, C)``, or input
        embeddings ``(rows, C, width)`` (a melody model's prefix; ``embed_tokens`` for its tokens).

        Returns the logits of the chunk's last position, ``(rows, K, vocab)``."""
        embedded = inputs.is_floating_point()
        chunk = inputs.shape[1] if embedded else inputs.shape[-1]
        end = start + chunk
        device = inputs.device
        positions = torch.arange(start, end, device=device)
        if embedded:
            hidden = inputs + self.position_table[positions].to(inputs.dtype)
        else:
            hidden = self._embed(inputs, positions[None].expand(inputs.shape[0], -1))
        mask = self._causal_mask(positions, end)[None, None]

        def attend_self(layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float):
            self.cache.write(layer, rows, start, key, value)
            return self._attend(query, self.cache.keys[layer, rows, :, :end], self.cache.values[layer, rows, :, :end],
                                mask, scale)

        text = max(self.cache.text_lengths[rows], default=0)
        hidden = self._layers(hidden, attend_self, self._cross_attention(rows, text))
        return self._logits(hidden[:, -1:])[:, :, 0]

    def decode(self, rows: slice, ids: torch.Tensor, positions: torch.Tensor, static: bool = False) -> torch.Tensor:
        """One new position for each row of ``rows`` (the running batch: the leading rows): ``ids``
        ``(rows, K)``, ``positions`` ``(rows,)``, each row's own. Returns logits ``(rows, K, vocab)``
        for the position after.

        Self-attention runs per run of neighbouring rows at the same position (a task's rows, or
        several tasks that happen to be level), over exactly the positions they have: the same call,
        on the same shapes, as each would get alone, so a row's result never depends on how far its
        neighbours have got (one masked call over the longest row's length did: attention kernels sum
        differently over a longer, masked window, measured in bfloat16). It also reads no more of the
        cache than the rows have filled. Cross-attention runs per run of neighbouring rows with the
        same text length, whatever their positions: its window is the text, and the kernel computes
        each row and head alone whatever the batch (tested), so eight tasks with texts of one length
        make one call per layer instead of eight.

        ``static``: one call for all rows over the cache's whole length and text width, masked: more
        work, but every shape is fixed by the row count and nothing is read back to the host, so the
        pass can be captured as a CUDA graph (``graphs``)."""
        hidden = self._embed(ids[:, :, None], positions[:, None])
        if static:
            return self._logits(self._layers(hidden, *self._static_attention(rows, positions)))[:, :, 0]
        first = rows.indices(self.cache.rows)[0]
        levels = positions.tolist()
        runs = self._runs(levels, first)

        def attend_self(layer: int, query: torch.Tensor, key: torch.Tensor | None, value: torch.Tensor | None,
                        scale: float):
            if key is not None:  # None: the layer wrote them into the cache itself (_qkv_into_cache)
                self.cache.write_at(layer, rows, positions, key, value)
            outs = [self._attend(query[run], self.cache.keys[layer, span, :, :position + 1],
                                 self.cache.values[layer, span, :, :position + 1], None, scale)
                    for run, span, position in runs]
            return outs[0] if len(outs) == 1 else torch.cat(outs)

        texts = self._runs(self.cache.text_lengths[first:first + len(levels)], first)
        crosses = [(run, self._cross_attention(span, text)) for run, span, text in texts]

        def attend_cross(layer: int, query: torch.Tensor, scale: float):
            outs = [cross(layer, query[run], scale) for run, cross in crosses]
            return outs[0] if len(outs) == 1 else torch.cat(outs)

        return self._logits(self._layers(hidden, attend_self, attend_cross,
                                         self._qkv_into_cache(rows, positions)))[:, :, 0]

    def _qkv_into_cache(self, rows: slice, positions: torch.Tensor):
        """Where the fused q/k/v layers can write their keys and values into a bfloat16 cache themselves
        (``int8-rows`` on oneDNN, a CPU cache in bfloat16): ``project(index, layer, hidden)``, returning
        the queries in bfloat16 ``(rows, 1, width)`` or None for a layer that cannot; else None.

        One compiled pass per layer instead of the split, three casts and two scattered writes; the
        same bits (``tests/test_engine_v2_into_cache``). Measured here, the writes alone took ~2 ms of a
        one-task step and ~5 ms of an eight-task one: each small operation costs several times its
        arithmetic once the layer's weights have streamed through the caches."""
        bits = self.cache.host_bits() if self.fused else None
        if bits is None:
            return None
        keys, values = bits
        first = rows.indices(self.cache.rows)[0]
        where = np.ascontiguousarray(positions.numpy(), dtype=np.int64)

        def project(index: int, layer, hidden: torch.Tensor) -> torch.Tensor | None:
            into_cache = getattr(layer.self_attn.qkv_proj, "normed_into_cache", None)
            if into_cache is None:
                return None
            query = into_cache(hidden, layer.self_attn_layer_norm, keys[index], values[index], first, where)
            return None if query is None else query.view(*hidden.shape[:-1], self.width)

        return project

    @staticmethod
    def _runs(values: list[int], first: int) -> list[tuple[slice, slice, int]]:
        """Runs of neighbouring rows with one value (a position, a text length): (rows within the batch,
        rows of the cache, the value); ``values`` are the batch's rows', from cache row ``first`` on."""
        runs, begin = [], 0
        for row in range(1, len(values) + 1):
            if row == len(values) or values[row] != values[begin]:
                runs.append((slice(begin, row), slice(first + begin, first + row), values[begin]))
                begin = row
        return runs

    def _static_attention(self, rows: slice, positions: torch.Tensor):
        """Self- and cross-attention over the whole cache and text width, masked (fixed shapes)."""
        mask = self._causal_mask(positions, self.cache.max_positions)[:, None, None]

        def attend_self(layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float):
            self.cache.write_at(layer, rows, positions, key, value)
            return self._attend(query, self.cache.keys[layer, rows], self.cache.values[layer, rows], mask, scale)

        return attend_self, self._cross_attention(rows, self.cache.max_text)

    def _causal_mask(self, positions: torch.Tensor, length: int) -> torch.Tensor:
        """Additive ``(len(positions), length)`` mask in the cache's dtype: each query attends up to its position."""
        mask = torch.zeros((positions.shape[0], length), dtype=self.cache.dtype, device=positions.device)
        keys = torch.arange(length, device=positions.device)
        return mask.masked_fill_(keys[None, :] > positions[:, None], self.cache.masked)

    def _cross_attention(self, rows: slice, text: int):
        mask = self.cache.cross_mask[rows, None, None, :text]

        def attend_cross(layer: int, query: torch.Tensor, scale: float):
            return self._attend(query, self.cache.cross_keys[layer, rows, :, :text],
                                self.cache.cross_values[layer, rows, :, :text], mask, scale)

        return attend_cross

    # -- parts -----------------------------------------------------------------

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """``(rows, K, C)`` token ids -> ``(rows, C, width)``: the sum of the codebooks' embeddings, in
        transformers' order (no position yet)."""
        return sum(self.body.embed_tokens[c](ids[:, c]) for c in range(self.num_codebooks))

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        tokens = self.embed_tokens(ids)
        return tokens + self.position_table[positions].to(tokens.dtype)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, length, width) -> (batch, heads, length, head_dim)
        return x.view(*x.shape[:-1], self.heads, self.head_dim).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], self.width)

    def _layers(self, hidden: torch.Tensor, attend_self, attend_cross, qkv_into_cache=None) -> torch.Tensor:
        """The decoder layers; ``attend_self(layer, query, key, value, scale)`` stores the new keys and values
        (unless they are None: ``qkv_into_cache`` wrote them) and attends over the cache,
        ``attend_cross(layer, query, scale)`` over the text."""
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            query = None if qkv_into_cache is None else qkv_into_cache(index, layer, hidden)
            if query is not None:
                query, key, value = self._split(query), None, None
            elif self.fused:  # one call for q, k and v (worker.engine.quantize.fuse_projections)
                qkv = _norm_then(layer.self_attn_layer_norm, attention.qkv_proj, hidden)
                query, key, value = (self._split(p) for p in qkv.split(self.width, dim=-1))
            else:
                x = layer.self_attn_layer_norm(hidden)
                query, key, value = (self._split(attention.q_proj(x)), self._split(attention.k_proj(x)),
                                     self._split(attention.v_proj(x)))
            x = attend_self(index, query, key, value, attention.scaling)
            hidden = _plus(attention.out_proj, self._merge(x), hidden)

            if self.cross_attention:
                attention = layer.encoder_attn
                query = _norm_then(layer.encoder_attn_layer_norm, attention.q_proj, hidden)
                x = attend_cross(index, self._split(query), attention.scaling)
                hidden = _plus(attention.out_proj, self._merge(x), hidden)

            x = layer.activation_fn(_norm_then(layer.final_layer_norm, layer.fc1, hidden))
            hidden = _plus(layer.fc2, x, hidden)
        return self.body.layer_norm(hidden)

    def _attend(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
                scale: float) -> torch.Tensor:
        # In the cache's precision (bfloat16 on quantized CPU workers: half the bytes a step reads from the
        # cache), and left in it: the output projection takes it (_plus), int8-rows' without a cast. Each
        # row and head is still computed on its own.
        return scaled_dot_product_attention(query.to(keys.dtype), keys, values, attn_mask=mask, scale=scale)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # (rows, C, width) -> (rows, K, C, vocab), one head per codebook
        if self.fused:
            logits = self.decoder.fused_lm_head(hidden)
            return logits.view(*hidden.shape[:2], self.num_codebooks, -1).transpose(1, 2)
        return torch.stack([head(hidden) for head in self.decoder.lm_heads], dim=1)


def _norm_then(norm: torch.nn.Module, linear: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``linear(norm(hidden))``, in one pass where the layer takes the norm in (int8-rows on oneDNN)."""
    normed = getattr(linear, "normed", None)
    return normed(hidden, norm) if normed is not None else linear(norm(hidden))


def _plus(linear: torch.nn.Module, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``residual + linear(x)``, the sum made in the layer's own pass where it can (the same bits); ``x``
    (an attention output) may still be in the cache's precision: it is taken as ``x.to(residual.dtype)``."""
    plus = getattr(linear, "plus", None)
    return plus(x, residual) if plus is not None else residual + linear(x.to(residual.dtype))
