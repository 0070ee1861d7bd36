"""``DecoderStep`` on the compiled OpenVINO graph (``SEGUE_QUANTIZE=openvino-int8``, CPU workers).

The same calls as the eager step (``set_text``, ``prefill``, ``decode``,
``embed_tokens``), so the scheduler, its joining and leaving, windows,
melody prefixes and streaming run unchanged; the pass itself is one
inference of ``openvino_graph``'s graph over the paged cache
(``paged_cache``), which the runtime reads and writes in place.

How a row stays independent of its neighbours (the seed guarantees): the
dense layers compute each row alone whatever the row count (measured at 1
to 33 rows), and ``PagedAttention`` computes each sequence alone whenever a
call has at least two sequences; with one, on more than one thread, it
splits the sequence's positions across threads and sums in another order
(measured: 1 to 16 threads, 1 to 32 sequences). So a step never runs one
sequence alone: a lone row gets a dummy neighbour on the scratch block.
``tests/test_engine_openvino.py`` checks the bits.
"""

from __future__ import annotations

import numpy as np
import torch

from worker.engine.openvino_graph import compile_decoder
from worker.engine.paged_cache import PagedKVCache
from worker.engine.step import DecoderStep


def paged_cache_for(compiled, *, layers: int, rows: int, width: int, max_positions: int,
                    max_text: int) -> PagedKVCache:
    """A cache with the block shapes the compiled graph asks for."""
    def block(name: str) -> tuple[int, ...]:
        return tuple(d.get_length() for d in list(compiled.input(name).get_partial_shape())[1:])

    return PagedKVCache(layers=layers, rows=rows, width=width, max_positions=max_positions, max_text=max_text,
                        key_block=block("self_keys.0"), value_block=block("self_values.0"))


class OpenVinoStep(DecoderStep):
    def __init__(self, decoder, cache: PagedKVCache, compiled, text_projection=None):
        super().__init__(decoder, cache, text_projection)
        import openvino as ov

        self.request = compiled.create_infer_request()
        for layer in range(cache.layers):  # bound once: the runtime writes new keys and values into them
            self.request.set_tensor(f"self_keys.{layer}", ov.Tensor(cache.keys[layer], shared_memory=True))
            self.request.set_tensor(f"self_values.{layer}", ov.Tensor(cache.values[layer], shared_memory=True))
            if self.cross_attention:
                self.request.set_tensor(f"cross_keys.{layer}", ov.Tensor(cache.cross_keys[layer], shared_memory=True))
                self.request.set_tensor(f"cross_values.{layer}",
                                        ov.Tensor(cache.cross_values[layer], shared_memory=True))

    @classmethod
    def compiled(cls, decoder, threads: int):
        return compile_decoder(decoder, threads)

    # -- text ----------------------------------------------------------------

    @torch.no_grad()
    def set_text(self, rows: slice, states: torch.Tensor | None, guided: bool) -> None:
        """The text's keys and values per layer into the cache, once per task; the unconditional row of
        guidance gets one position of the projections of zeros (see ``paged_cache``)."""
        if self.text_projection is not None:
            states = self.text_projection(states)
        length = max(states.shape[0], 1)
        batch = torch.zeros((2 if guided else 1, length, states.shape[-1]), dtype=torch.float32)
        batch[0, :states.shape[0]] = states.float()
        keys, values = [], []
        for layer in self.layers:
            attention = layer.encoder_attn
            keys.append(attention.k_proj(batch).numpy())
            values.append(attention.v_proj(batch).numpy())
        self.cache.set_cross(rows, keys, values, [length, 1] if guided else [length])

    # -- forward passes --------------------------------------------------------

    @torch.no_grad()
    def prefill(self, rows: slice, inputs: torch.Tensor, start: int) -> torch.Tensor:
        embedded = inputs.is_floating_point()
        chunk = inputs.shape[1] if embedded else inputs.shape[-1]
        positions = torch.arange(start, start + chunk)
        if embedded:
            hidden = inputs + self.position_table[positions].to(inputs.dtype)
        else:
            hidden = self._embed(inputs, positions[None].expand(inputs.shape[0], -1))
        cache_rows = list(range(*rows.indices(self.cache.rows)))
        count = len(cache_rows)
        feeds = {"hidden": _host(hidden.reshape(count * chunk, self.width)),
                 "logit_rows": np.arange(1, count + 1, dtype=np.int32) * chunk - 1}
        feeds.update(self._self_meta([(row, start, chunk) for row in cache_rows], start + chunk))
        if self.cross_attention:  # every token of the chunk is a sequence of its own over its row's text
            feeds.update(self._cross_meta([row for row in cache_rows for _ in range(chunk)]))
            feeds["cross_last"] = np.repeat(self.cache.last_text[cache_rows], chunk, axis=0)
        return self._run(feeds, count)

    @torch.no_grad()
    def decode(self, rows: slice, ids: torch.Tensor, positions: torch.Tensor, static: bool = False) -> torch.Tensor:
        hidden = _host(self._embed(ids[:, :, None], positions[:, None])[:, 0])
        first = rows.indices(self.cache.rows)[0]
        count = hidden.shape[0]
        cache_rows = list(range(first, first + count))
        levels = positions.tolist()
        # A row fed at the scratch position must not touch its cache: it runs on the scratch block.
        sequences = [(None, 0, 1) if p == self.cache.scratch else (row, p, 1) for row, p in zip(cache_rows, levels)]
        texts: list[int | None] = list(cache_rows)
        if count == 1:  # never one sequence alone (see the module's docstring)
            hidden = np.concatenate([hidden, np.zeros_like(hidden)])
            sequences.append((None, 0, 1))
            texts.append(None)
        feeds = {"hidden": hidden, "logit_rows": np.arange(count, dtype=np.int32)}
        feeds.update(self._self_meta(sequences, max(p for _, p, _ in sequences) + 1))
        if self.cross_attention:
            feeds.update(self._cross_meta(texts))
            last = self.cache.last_text[first:first + count]
            feeds["cross_last"] = last if len(texts) == count else np.concatenate([last, np.zeros_like(last)])
        return self._run(feeds, count)

    # -- parts -----------------------------------------------------------------

    def _self_meta(self, sequences: list[tuple[int | None, int, int]], longest: int) -> dict:
        """``sequences``: (cache row or None for scratch, position of the first token, tokens)."""
        cache = self.cache
        tables = [cache.self_blocks(row, start + tokens) if row is not None
                  else np.array([cache.scratch_block], np.int32) for row, start, tokens in sequences]
        return _paged_inputs("self_", [s for _, s, _ in sequences], [t for _, _, t in sequences], tables, longest)

    def _cross_meta(self, rows: list[int | None]) -> dict:
        """One token per sequence, each over its row's text (None: the scratch text block)."""
        cache = self.cache
        lengths = [cache.text_lengths[row] if row is not None else 1 for row in rows]
        tables = [cache.text_blocks_of(row) if row is not None else np.array([cache.scratch_text_block], np.int32)
                  for row in rows]
        return _paged_inputs("cross_", [length - 1 for length in lengths], [1] * len(rows), tables, max(lengths))

    def _run(self, feeds: dict, rows: int) -> torch.Tensor:
        logits = self.request.infer(feeds, share_inputs=True)["logits"]
        return torch.from_numpy(np.array(logits[:rows])).view(rows, self.num_codebooks, -1)


def _host(tensor: torch.Tensor) -> np.ndarray:
    """A float32 copy owned by numpy: the request keeps its last inputs, which must not keep torch tensors."""
    return np.array(tensor.float().numpy(), dtype=np.float32, order="C")


def _paged_inputs(prefix: str, past: list[int], tokens: list[int], tables: list[np.ndarray], longest: int) -> dict:
    """One attention kind's ``PagedAttention`` inputs: per sequence, the positions it has cached, the tokens it
    brings and its block table; ``longest``: the longest sequence, those tokens included."""
    return {f"{prefix}past_lens": np.array(past, np.int32),
            f"{prefix}subsequence_begins": np.concatenate([[0], np.cumsum(tokens)]).astype(np.int32),
            f"{prefix}block_indices": np.concatenate(tables).astype(np.int32),
            f"{prefix}block_indices_begins": np.concatenate([[0], np.cumsum([len(t) for t in tables])]).astype(np.int32),
            f"{prefix}max_context_len": np.array(longest, np.int32)}
