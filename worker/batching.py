"""Per-row bookkeeping and model hooks for one batched MusicGen ``generate`` call.

- ``RowState``: one request's progress, cancellation and outcome.
- ``StepMonitor``: the stopping criterion, called once per decoding step.
  It reports each row's progress, polls its ``should_stop`` and ends the
  call (by raising ``BatchOver``) once no row is still running.
- ``PaddedRows``: hooks that let left-padded rows of one call behave as if
  each ran alone (see the engine docstring for why each is needed).
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from transformers import StoppingCriteria

from worker.sampling import RowSampler

log = logging.getLogger(__name__)

RUNNING, DONE, CANCELED, FAILED = "running", "done", "canceled", "failed"


class GenerationCanceled(Exception):
    """A request was canceled (its ``should_stop`` or the caller's ``on_step`` said so)."""


class BatchOver(Exception):
    """Raised from the stopping criterion when no row needs another step."""


class RowState:
    """One request inside a generate call: its steps, callbacks and outcome."""

    def __init__(self, index: int, total_steps: int, on_progress: Callable[[int, int], None] | None,
                 should_stop: Callable[[], bool] | None):
        self.index = index
        self.total_steps = total_steps
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.status = RUNNING
        self.error: BaseException | None = None
        self.reported = 0  # highest step passed to on_progress; a retry never goes back
        self.streamer = None  # worker.streaming.RowStreamer when the request wants audio chunks

    def report(self, step: int) -> None:
        step = min(step, self.total_steps)
        if self.on_progress is not None and step > self.reported:
            self._guard(self.on_progress, step, self.total_steps)
        self.reported = max(self.reported, step)

    def poll_stop(self, step: int) -> None:
        if self.should_stop is not None and self.status == RUNNING and self._guard(self.should_stop):
            self.cancel(step)

    def cancel(self, step: int) -> None:
        if self.status == RUNNING:
            self.status = CANCELED
            self.error = GenerationCanceled(f"canceled at step {step} of {self.total_steps}")

    def fail(self, error: BaseException) -> None:
        self.status = FAILED
        self.error = error

    def _guard(self, callback: Callable, *args):
        # A failing callback fails its own row, never the batch.
        try:
            return callback(*args)
        except Exception as exc:  # noqa: BLE001 - any callback error belongs to this row
            log.warning("row %d: callback %r failed: %r", self.index, callback, exc)
            exc.__traceback__ = None  # its frames hold the batch's tensors
            self.fail(exc)
            return None


class StepMonitor(StoppingCriteria):
    """Per-step progress and cancellation for the rows of one generate call.

    ``on_step(step, total)`` is the caller-wide hook: ``step`` counts from
    ``steps_before``; True cancels every row. When no row is running any more
    the final token ids are kept in ``final_ids`` and ``BatchOver`` is raised:
    that also skips transformers' own un-delay and EnCodec decoding, which
    would decode the padding of every row (the engine decodes each row itself).
    """

    def __init__(self, rows: list[RowState], sampler: RowSampler,
                 on_step: Callable[[int, int], "bool | None"] | None, steps_before: int, steps_overall: int,
                 on_ids: Callable[[int, torch.Tensor], None] | None = None):
        self.rows = rows
        self.on_ids = on_ids  # sees the token ids after each step (audio streaming)
        self.sampler = sampler
        self.on_step = on_step
        self.steps_before = steps_before
        self.steps_overall = steps_overall
        self.step = 0
        self.final_ids: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        self.step += 1
        kept = input_ids[: self.sampler.last_tokens.shape[0], -1]
        if not torch.equal(kept, self.sampler.last_tokens):
            raise RuntimeError("generate did not keep the tokens RowSampler drew (is another processor after it?)")
        if self.on_ids is not None:
            self.on_ids(self.step, input_ids)
        if self.on_step is not None and self.on_step(self.steps_before + self.step, self.steps_overall):
            for row in self.rows:
                row.cancel(self.step)
        for r, row in enumerate(self.rows):
            if row.status == RUNNING:
                row.report(self.step)
            if row.status == RUNNING and self.step >= row.total_steps:
                row.status = DONE
            row.poll_stop(self.step)
            self.sampler.active[r] = row.status == RUNNING
        if not any(row.status == RUNNING for row in self.rows):
            self.final_ids = input_ids
            raise BatchOver()
        return torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)


class PaddedRows:
    """Context manager: per-row positions and per-row ends inside one generate call.

    ``left_pad[r]``: padding positions in front of row ``r``'s sequence; its
    sinusoidal positions are shifted back so its first real token is at
    position 0, as when it runs alone. ``pad_from[r*K + k]``: the first
    sequence position where codebook ``k`` of row ``r`` would be the delay
    pattern's end padding had the row run alone with its own length; the
    decoder sees the pad token there, as it would alone. Rows of a CFG-doubled
    batch repeat in the same order, so both tensors are tiled to the batch.
    """

    def __init__(self, decoder, left_pad: list[int], pad_from: list[int], pad_token: int):
        self.decoder = decoder  # MusicgenForCausalLM
        device = decoder.device
        self.left_pad = torch.tensor(left_pad, dtype=torch.long, device=device)
        self.pad_from = torch.tensor(pad_from, dtype=torch.long, device=device)
        self.pad_token = pad_token
        self.handles: list = []

    def __enter__(self) -> "PaddedRows":
        if bool(self.left_pad.any()):
            positions = self.decoder.model.decoder.embed_positions
            self.handles.append(positions.register_forward_hook(self._shift_positions))
        self.handles.append(self.decoder.register_forward_pre_hook(self._pad_row_ends, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _shift_positions(self, module, args, output: torch.Tensor) -> torch.Tensor:
        codes, past_length = args[0], (args[1] if len(args) > 1 else 0)
        batch, _, length = codes.shape
        offsets = self.left_pad.repeat(batch // self.left_pad.shape[0])
        positions = torch.arange(length, device=codes.device) + past_length
        positions = (positions[None, :] - offsets[:, None]).clamp(min=0)  # padding: masked anyway
        return module.weights.index_select(0, positions.view(-1)).view(batch, length, -1).to(output.dtype)

    def _pad_row_ends(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        mask = kwargs.get("attention_mask")
        if ids is None or mask is None:
            return None
        total, length = mask.shape[-1], ids.shape[-1]
        positions = torch.arange(total - length, total, device=ids.device)
        pad_from = self.pad_from.repeat(ids.shape[0] // self.pad_from.shape[0])
        kwargs["input_ids"] = ids.masked_fill(positions[None, :] >= pad_from[:, None], self.pad_token)
        return args, kwargs
