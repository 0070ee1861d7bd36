"""Iteration-level scheduling: tasks join and leave the running batch at every step.

Each iteration (``step``) does, in order:

1. **Admit.** When no task is being prefilled and rows are free, the oldest
   waiting task is prepared: its prompt EnCodec-encoded, its text T5-encoded
   and turned into cross-attention keys/values once (``DecoderStep.set_text``),
   its whole delayed sequence laid out (``delay.build_sequence``). It takes
   the next free rows: one, or two with guidance (conditional, unconditional).
2. **Prefill one chunk** of that task's prompt positions (``prefill_chunk``
   of them), so a long prompt delays the running tasks by a chunk's time per
   step, not by the whole prompt. The chunk that completes the prompt yields
   the task's first draw; from the next iteration it decodes with the others.
3. **Decode** one position for every decoding task in one batched forward
   pass, each row at its own position, then draw each task's tokens with its
   own settings and generator (``worker.engine.sampling.draw``), so a seed
   means the same audio whether a task runs alone, beside others or joins
   mid-run. Progress, ``should_stop`` and streaming are per task
   (``worker.engine.task_state.RowState``, ``worker.engine.streaming.RowStreamer``).
4. **Retire** every task that finished (its audio decoded now), was canceled
   or failed, and compact the cache so the rows in use stay leading.

**Melody models** condition through a prefix of the decoder's input (chroma,
then text; see ``worker.models.melody_engine``) instead of cross-attention: a
task's rows start with its prefix positions (``Task.offset`` of them,
prefilled like the prompt) and its token sequence follows.

**Past 30 s.** MusicGen attends over at most 30 s, so a longer request runs
in windows (``worker.engine.windows.WindowedGeneration``: each
later window continues the last 12 s with a seed derived from the task's).
Between windows the task keeps its rows: its next window is prepared and
prefilled in place (while the others keep decoding) instead of queueing
again behind newer tasks.

A failure is its task's alone: invalid input fails at ``submit``; preparing,
sampling, callbacks and the final decode fail only their task; if a batched
forward pass raises, each task's rows are stepped alone and only the tasks
that still fail are failed.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from worker.engine import delay
from worker.engine.graphs import BucketedDecode
from worker.engine.kv_cache import KVCache
from worker.engine.requests import GenerationRequest, GenerationResult, Plan, formatted
from worker.engine.openvino_step import OpenVinoStep, paged_cache_for
from worker.engine.step import DecoderStep
from worker.engine.task_state import CANCELED, DONE, FAILED, RUNNING, RowState
from worker.engine.sampling import SamplingSettings, draw
from worker.engine.streaming import RowStreamer
from worker.engine.windows import WINDOW_SECONDS, WindowedGeneration

log = logging.getLogger(__name__)

WAITING, PREFILLING, DECODING, RETIRED = "waiting", "prefilling", "decoding", "retired"


@dataclass(eq=False)
class Task:
    """One request inside the scheduler."""

    plan: Plan
    state: RowState
    settings: SamplingSettings
    generator: torch.Generator
    rows: int  # 1, or 2 with guidance
    phase: str = WAITING
    first_row: int = -1
    ids: torch.Tensor | None = None  # (K, sequence length) delayed, -1 where still to be drawn
    prompt_codes: torch.Tensor | None = None
    scales: list = field(default_factory=list)
    length: int = 0  # positions in the cache (the melody prefix included)
    offset: int = 0  # melody models: prefix positions in front of the token sequence
    prefix: torch.Tensor | None = None  # melody models: prefix + prompt input embeddings, for the prefill
    drawn: int = 0  # steps drawn so far
    outcome: GenerationResult | BaseException | None = None
    windows: WindowedGeneration | None = None  # results past 30 s, one window at a time

    @property
    def span(self) -> slice:
        return slice(self.first_row, self.first_row + self.rows)

    @property
    def prompt_frames(self) -> int:
        return self.prompt_codes.shape[-1]

    @property
    def prefill_end(self) -> int:
        return self.offset + 1 + self.prompt_frames

    @property
    def next_token(self) -> int:
        """Sequence position (delay-pattern coordinates) of the next token to feed."""
        return self.length - self.offset

    @property
    def done(self) -> bool:
        return self.phase == RETIRED


class Scheduler:
    """Continuous batching of one loaded MusicGen.

    ``engine`` is the ``worker.engine.musicgen.MusicGenEngine`` that owns this scheduler (its model,
    processor, EnCodec and T5 helpers); not imported here, since the engine imports the scheduler."""

    def __init__(self, engine, *, max_rows: int = 16, max_seconds: float = WINDOW_SECONDS,
                 max_text: int = 256, prefill_chunk: int = 64, decoder=None, static_steps: bool | None = None,
                 cuda_graphs: bool = True, admit_between_batches: bool = False):
        """``decoder``: the ``MusicgenForCausalLM`` to step (default the engine's; ``quantize`` makes others).
        ``max_seconds``: the longest window (prompt included) the cache holds; longer requests run in
        windows of ``WINDOW_SECONDS``. ``static_steps`` (default: on GPUs) steps the batch in fixed-shape
        buckets, captured as CUDA graphs unless ``cuda_graphs`` is False. ``admit_between_batches``: the
        static policy (new tasks wait until every running task has left), kept as the benchmarks'
        reference for what iteration-level scheduling gains."""
        self.engine = engine
        model = engine.model
        decoder = decoder if decoder is not None else model.decoder
        config = decoder.config
        self.delays = delay.delays(engine.num_codebooks, engine.channels)
        self.melody = hasattr(engine, "chroma_length")
        self.max_positions = delay.sequence_length(math.ceil(max_seconds * engine.frame_rate) + 1, 0,
                                                   max(self.delays))
        self.max_prefix = engine.chroma_length + max_text if self.melody else 0
        cache_positions = self.max_prefix + self.max_positions + 1  # + scratch
        cache_text = 0 if self.melody else max_text
        projection = None  # melody engines project the text themselves (it is part of their prefix)
        if (not self.melody and model.text_encoder.config.hidden_size != config.hidden_size
                and config.cross_attention_hidden_size is None):
            projection = model.enc_to_dec_proj
        compiled = getattr(engine, "compiled_decoder", None)
        if compiled is not None:  # SEGUE_QUANTIZE=openvino-int8: the compiled graph over a paged cache
            self.cache = paged_cache_for(compiled, layers=config.num_hidden_layers, rows=max_rows,
                                         width=config.hidden_size, max_positions=cache_positions,
                                         max_text=cache_text)
            self.step_fn = OpenVinoStep(decoder, self.cache, compiled, projection)
        else:
            self.cache = KVCache(layers=config.num_hidden_layers, rows=max_rows, heads=config.num_attention_heads,
                                 head_dim=config.hidden_size // config.num_attention_heads,
                                 max_positions=cache_positions, max_text=cache_text,
                                 dtype=engine.kv_dtype, device=engine._torch_device)
            self.step_fn = DecoderStep(decoder, self.cache, projection)
        self._start_ids = torch.full((engine.num_codebooks,), delay.START, dtype=torch.long,
                                     device=engine._torch_device)
        # Fixed-shape steps per row-count bucket (CUDA graphs on GPUs): see worker.engine.graphs.
        on_gpu = engine._torch_device.type == "cuda"
        static = on_gpu if static_steps is None else static_steps
        self.bucketed = BucketedDecode(self.step_fn, capture=on_gpu and cuda_graphs) if static else None
        self.prefill_chunk = prefill_chunk
        self.admit_between_batches = admit_between_batches
        self.waiting: deque[Task] = deque()  # appended from any thread (EngineLoop.submit), taken here
        self.on_retired: Callable[[Task], None] | None = None  # called once per task as it leaves
        # In row order. A new task prefills after all others; a task between windows prefills in place.
        self.active: list[Task] = []
        self.iterations = 0

    # -- the outside -------------------------------------------------------------

    @property
    def rows_in_use(self) -> int:
        return sum(t.rows for t in self.active)

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.active

    def submit(self, request: GenerationRequest, index: int = 0) -> Task:
        """Queue a request; invalid input comes back as a task already failed with ``ValueError``."""
        try:
            plan = self.engine._plan(index, request)  # validates the whole request
            windows = None
            if request.total_seconds > WINDOW_SECONDS:
                windows = WindowedGeneration(request, self.engine.sample_rate, self.engine.hop_length)
                plan = self.engine._plan(index, windows.next_request())
        except Exception as exc:  # noqa: BLE001 - bad input fails its own task
            plan = Plan(index, request, None, 0, 0, 0)  # type: ignore[arg-type]
            task = Task(plan, RowState(index, 0, None, None), None, None, 0)  # type: ignore[arg-type]
            task.state.fail(exc)
            task.outcome, task.phase = exc, RETIRED
            return task
        task = Task(plan, None, None, None, rows=2 if plan.guided else 1, windows=windows)  # type: ignore[arg-type]
        self._start_window(task, plan)
        self.waiting.append(task)
        return task

    def _start_window(self, task: Task, plan: Plan) -> None:
        """Fresh per-window state: steps, callbacks, streamer, the window's own seeded generator."""
        request = plan.request
        task.plan, task.settings = plan, plan.sampling()
        task.state = RowState(plan.index, plan.max_new_tokens, request.on_progress, request.should_stop)
        if request.on_audio is not None:
            task.state.streamer = RowStreamer(request.on_audio, plan.new_frames,
                                              plan.total_samples - plan.prompt.shape[1], self.engine.hop_length)
        task.generator = torch.Generator(device=self.engine._torch_device).manual_seed(task.settings.seed)
        task.length = task.drawn = task.offset = 0

    def run(self, requests: list[GenerationRequest]) -> list[GenerationResult | BaseException]:
        """Submit all, step until they are done; outcomes in request order (like ``generate_each``)."""
        tasks = [self.submit(r, i) for i, r in enumerate(requests)]
        self.run_until_idle()
        return [t.outcome for t in tasks]

    def run_until_idle(self) -> None:
        while not self.idle:
            self.step()

    def step(self) -> None:
        """One iteration: admit, prefill a chunk, decode one position for all, retire."""
        threads = torch.get_num_threads()
        if self.engine.cpu_threads:
            torch.set_num_threads(self.engine.cpu_threads)
        try:
            with torch.inference_mode():
                self._admit()
                self._prefill()
                self._decode()
                self._retire()
        finally:
            torch.set_num_threads(threads)
        self.iterations += 1

    # -- the four parts ----------------------------------------------------------

    def _admit(self) -> None:
        if self.admit_between_batches:
            if any(t.phase == DECODING for t in self.active):
                return  # the static policy: a batch runs to its end before anyone joins
            one_at_a_time = False  # everything waiting joins this batch; they prefill one by one
        else:
            one_at_a_time = True  # one task prefills at a time, beside the running decode
        while self.waiting and not (one_at_a_time and any(t.phase == PREFILLING for t in self.active)):
            task = self.waiting[0]
            task.state.poll_stop(0)
            if task.state.status != RUNNING:
                self.waiting.popleft()
                self._end(task)
                continue
            if self.rows_in_use + task.rows > self.cache.rows:
                return
            self.waiting.popleft()
            try:
                self._prepare(task)
            except Exception as exc:  # noqa: BLE001 - this task's own failure
                self._fail(task, exc)
                self._end(task)

    def _prepare(self, task: Task, in_place: bool = False) -> None:
        """Encode the prompt and text, lay out the sequence; new tasks take the next free rows."""
        engine, plan = self.engine, task.plan
        task.prompt_codes, task.scales = engine._encode_prompt(plan.prompt)
        task.ids = delay.build_sequence(task.prompt_codes, plan.new_frames, self.delays)
        if task.ids.shape[1] > self.max_positions:
            raise ValueError(f"this scheduler holds {self.max_positions} positions per task, "
                             f"the request needs {task.ids.shape[1]}")
        if self.melody:  # the prefix: chroma of this window's prompt (or none), then the text
            prefix = engine._conditioning(plan)
            if prefix.shape[1] > self.max_prefix:
                raise ValueError(f"the conditioning is {prefix.shape[1]} positions; this scheduler holds "
                                 f"{self.max_prefix}")
            prompt = task.ids[None, :, : 1 + task.prompt_frames].expand(task.rows, -1, -1)
            task.prefix = torch.cat([prefix, self.step_fn.embed_tokens(prompt)], dim=1)
            task.offset = prefix.shape[1]
        if not in_place:
            task.first_row = self.rows_in_use
            if not self.melody:  # a later window keeps the same text
                self.step_fn.set_text(task.span, engine._encode_text(plan.request.text or ""), plan.guided)
        if task.state.streamer is not None:
            scales = task.scales
            task.state.streamer.bind(task.prompt_codes, lambda codes: engine._decode(codes, scales))
        task.phase = PREFILLING
        if not in_place:
            self.active.append(task)

    def _prefill(self) -> None:
        task = next((t for t in self.active if t.phase == PREFILLING), None)
        if task is None:
            return
        task.state.poll_stop(0)
        if task.state.status != RUNNING:
            return
        prompt_end = task.prefill_end
        start, end = task.length, min(task.length + self.prefill_chunk, prompt_end)
        try:
            if task.prefix is not None:
                inputs = task.prefix[:, start:end]
            else:
                inputs = task.ids[None, :, start:end].expand(task.rows, -1, -1)
            logits = self.step_fn.prefill(task.span, inputs, start)
        except Exception as exc:  # noqa: BLE001 - only this task's rows were in the pass
            self._fail(task, exc)
            return
        task.length = end
        if end == prompt_end:
            task.phase = DECODING
            task.prefix = None
            self._draw(task, logits)

    def _decode(self) -> None:
        tasks = [t for t in self.active if t.phase == DECODING and t.state.status == RUNNING]
        if not tasks:
            return
        # The batch is a plain slice of leading rows, up to the last decoding task. Rows among them that
        # do not decode now (a task prefilling its next window, one canceled at its first draw) are
        # stepped too, harmlessly (see _forward).
        last = max(i for i, t in enumerate(self.active) if t.phase == DECODING)
        batch = self.active[: last + 1]
        try:
            logits = self._forward(batch)
        except Exception as exc:  # noqa: BLE001 - find out whose rows break the pass
            log.warning("decoding step of %d tasks failed; stepping them one by one:\n%s", len(batch),
                        formatted(exc))
            exc.__traceback__ = None
            for task in tasks:
                try:
                    self._draw(task, self._forward([task]), advance=True)
                except Exception as own:  # noqa: BLE001 - this task's own failure
                    self._fail(task, own)
            return
        row = 0
        for task in batch:
            if task.phase == DECODING and task.state.status == RUNNING:
                self._draw(task, logits[row : row + task.rows], advance=True)
            row += task.rows

    def _forward(self, tasks: list[Task]) -> torch.Tensor:
        """One decoding position for the given tasks' rows (contiguous, in row order).

        Rows of a task that does not decode now are fed the start token at the cache's scratch position,
        which no task uses: its cached prompt stays intact and its logits are ignored."""
        feeds = [(t.ids[:, t.next_token], t.length) if t.phase == DECODING and t.state.status == RUNNING
                 else (self._start_ids, self.cache.scratch) for t in tasks]
        ids = torch.cat([i[None].expand(t.rows, -1) for t, (i, _) in zip(tasks, feeds)])
        positions = torch.tensor([p for t, (_, p) in zip(tasks, feeds) for _ in range(t.rows)], device=ids.device)
        span = slice(tasks[0].first_row, tasks[-1].first_row + tasks[-1].rows)
        if self.bucketed is not None and span.start == 0:
            return self.bucketed(span, ids, positions)
        return self.step_fn.decode(span, ids, positions)

    def _draw(self, task: Task, logits: torch.Tensor, advance: bool = False) -> None:
        """Sample the next position of one task from its rows' logits; progress, stop, streaming."""
        if advance:
            task.length += 1  # the position fed in this pass is now cached
        state = task.state
        try:
            uncond = logits[1] if task.rows == 2 else None
            tokens = draw(logits[0].float(), None if uncond is None else uncond.float(), task.settings,
                          task.generator)
        except Exception as exc:  # noqa: BLE001 - e.g. settings that only fail when used
            self._fail(task, exc)
            return
        delay.place(task.ids, task.next_token, tokens)
        task.drawn += 1
        if state.streamer is not None:
            state.streamer.advance(
                lambda a, b: delay.new_frames(task.ids, task.prompt_frames, self.delays, a, b),
                task.drawn - max(self.delays))
        if state.status == RUNNING:
            state.report(task.drawn)
        if state.status == RUNNING and task.drawn >= state.total_steps:
            state.status = DONE
        state.poll_stop(task.drawn)

    def _retire(self) -> None:
        for task in self.active:
            if task.windows is not None and task.state.status == DONE:
                self._next_window(task)
        leaving = [t for t in self.active if t.state.status != RUNNING]
        if not leaving:
            return
        self.active = [t for t in self.active if t.state.status == RUNNING]
        for task in leaving:
            self._end(task)
        row = 0
        for task in self.active:  # compact: the rows in use stay leading
            if task.first_row != row:
                self.cache.move(task.first_row, row, task.rows, task.length)
                task.first_row = row
            row += task.rows

    def _next_window(self, task: Task) -> None:
        """A window is done: keep its audio; unless that was the last, prepare the next in the same rows."""
        windows = task.windows
        try:
            windows.accept(self._finish(task))
            if windows.done:
                return  # retired with the whole result (see _end)
            if task.state.streamer is not None:
                task.state.streamer.unbind()
            self._start_window(task, self.engine._plan(task.plan.index, windows.next_request()))
            self._prepare(task, in_place=True)
        except Exception as exc:  # noqa: BLE001 - this task's own failure
            self._fail(task, exc)

    def _end(self, task: Task) -> None:
        state = task.state
        if state.status == DONE:
            try:
                task.outcome = task.windows.result() if task.windows is not None else self._finish(task)
            except Exception as exc:  # noqa: BLE001 - decoding its audio failed: this task only
                self._fail(task, exc)
        if state.status != DONE:
            task.outcome = state.error
        if state.streamer is not None:
            state.streamer.unbind()
        task.phase = RETIRED
        task.ids = task.prompt_codes = task.prefix = None
        task.scales = []
        if self.on_retired is not None:
            self.on_retired(task)

    def _finish(self, task: Task) -> GenerationResult:
        engine, plan = self.engine, task.plan
        new = delay.new_frames(task.ids, task.prompt_frames, self.delays, 0, plan.new_frames)
        audio = engine._fit_length(engine._decode(torch.cat([task.prompt_codes, new], -1), task.scales),
                                   plan.total_samples)
        if task.state.streamer is not None:
            task.state.streamer.finish(audio[:, plan.prompt.shape[1]:])
        return GenerationResult(audio=audio, sample_rate=engine.sample_rate)

    @staticmethod
    def _fail(task: Task, exc: Exception) -> None:
        if task.state.status in (CANCELED, FAILED):
            return
        log.warning("task %d failed:\n%s", task.state.index, formatted(exc))
        chained: BaseException | None = exc
        while chained is not None:  # keep the message, not the frames (they hold tensors)
            chained.__traceback__ = None
            chained = chained.__cause__ or chained.__context__
        task.state.fail(exc)
