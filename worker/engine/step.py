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
        keys = torch.arange(end, device=device)
        mask = torch.zeros((chunk, end), dtype=hidden.dtype, device=device)
        mask.masked_fill_(keys[None, :] > positions[:, None], self.cache.masked)  # causal
        mask = mask[None, None]

        def write(layer: int, k: torch.Tensor, v: torch.Tensor):
            self.cache.write(layer, rows, start, k, v)
            return self.cache.keys[layer, rows, :, :end], self.cache.values[layer, rows, :, :end]

        hidden = self._layers(hidden, write, mask, rows)
        return self._logits(hidden[:, -1:])[:, :, 0]

    def decode(self, rows: slice, ids: torch.Tensor, positions: torch.Tensor, static: bool = False) -> torch.Tensor:
        """One new position for each row of ``rows`` (the running batch: the leading rows): ``ids``
        ``(rows, K)``, ``positions`` ``(rows,)``, each row's own. Returns logits ``(rows, K, vocab)``
        for the position after.

        ``static``: attend over the cache's whole length and text width, masked, instead of only as far
        as the longest row has got: more work, but every shape is fixed by the row count and nothing is
        read back to the host, so the pass can be captured as a CUDA graph (``graphs``)."""
        # Dynamic: attend only as far as the longest row has got (one host read per step).
        window = self.cache.max_positions if static else int(positions.max()) + 1
        hidden = self._embed(ids[:, :, None], positions[:, None])
        keys = torch.arange(window, device=ids.device)
        mask = torch.zeros((ids.shape[0], window), dtype=hidden.dtype, device=ids.device)
        mask.masked_fill_(keys[None, :] > positions[:, None], self.cache.masked)
        mask = mask[:, None, None]

        def write(layer: int, k: torch.Tensor, v: torch.Tensor):
            self.cache.write_at(layer, rows, positions, k, v)
            return self.cache.keys[layer, rows, :, :window], self.cache.values[layer, rows, :, :window]

        return self._logits(self._layers(hidden, write, mask, rows, static))[:, :, 0]

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

    def _layers(self, hidden: torch.Tensor, write, mask: torch.Tensor, rows: slice,
                static: bool = False) -> torch.Tensor:
        text = self.cache.max_text if static else max(self.cache.text_lengths[rows], default=0)
        cross_mask = self.cache.cross_mask[rows, None, None, :text]
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            x = layer.self_attn_layer_norm(hidden)
            if self.fused:  # one call for q, k and v (worker.engine.quantize.fuse_projections)
                query, key, value = (self._split(p) for p in attention.qkv_proj(x).split(self.width, dim=-1))
            else:
                query, key, value = (self._split(attention.q_proj(x)), self._split(attention.k_proj(x)),
                                     self._split(attention.v_proj(x)))
            keys, values = write(index, key, value)
            x = scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=attention.scaling)
            hidden = hidden + attention.out_proj(self._merge(x))

            if not self.cross_attention:
                x = layer.final_layer_norm(hidden)
                hidden = hidden + layer.fc2(layer.activation_fn(layer.fc1(x)))
                continue
            attention = layer.encoder_attn
            x = layer.encoder_attn_layer_norm(hidden)
            query = self._split(attention.q_proj(x))
            x = scaled_dot_product_attention(query, self.cache.cross_keys[index, rows, :, :text],
                                             self.cache.cross_values[index, rows, :, :text],
                                             attn_mask=cross_mask, scale=attention.scaling)
            hidden = hidden + attention.out_proj(self._merge(x))

            x = layer.final_layer_norm(hidden)
            hidden = hidden + layer.fc2(layer.activation_fn(layer.fc1(x)))
        return self.body.layer_norm(hidden)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # (rows, C, width) -> (rows, K, C, vocab), one head per codebook
        if self.fused:
            logits = self.decoder.fused_lm_head(hidden)
            return logits.view(*hidden.shape[:2], self.num_codebooks, -1).transpose(1, 2)
        return torch.stack([head(hidden) for head in self.decoder.lm_heads], dim=1)
