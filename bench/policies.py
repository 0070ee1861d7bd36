"""What iteration-level scheduling and int8 buy, measured in-process on one engine.

Each figure compares two ways side by side in one run, on the same loaded
model (musicgen-small's architecture, random weights) and the same inputs:

- ``step``: one decoding step of the engine's own loop at 1 and 8 guided
  tasks, float32, ``SEGUE_QUANTIZE=int8`` and the CPU default (``openvino-int8``)
  at 150 cached positions (``step_8_vs_1``, ``int8_speedup``); the CPU
  default again at 550 positions, the middle of a musician's task (6 s
  prompt, 10 s new): ``step_ms_1``, ``step_ms_8``, and ``bandwidth_share_1``
  (the weight bytes one step reads, over the step's time, over the speed of
  a plain memory copy measured here too); each quantized mode's drift from
  float32 on the same tokens (``drift``: the CPU default's);
- ``poisson``: 24 tasks of mixed lengths (2 s prompts, 0.5 to 2 s of new
  audio, seeded) arriving at seeded Poisson times at about 80 % of the
  engine's capacity, served by the engine as it runs in the worker (a task
  joins at the next step) and by the same engine with the static policy
  (``Scheduler(admit_between_batches=True)``: new tasks wait until the whole
  running batch has left): p95 latency and makespan, v2 over static. Each
  policy is served twice, interleaved, and each figure is the median of its
  runs: with 24 tasks of 1-4 s the p95 was nearly the single slowest task
  and moved from 0.66 to 0.94 between runs;
- ``first chunk under load``: a 10 s continuation submitted while 7 tasks of
  6 s decode: seconds to its first audio chunk, both policies (the static
  policy waits for the whole batch: 12 s tasks made it the longest
  measurement of the run);
- ``streaming``: 8 tasks generated without streaming, with streaming on and
  nobody listening (the worker decodes chunks only while someone follows a
  task; the audio is published from the final decode), and with every task
  followed by a listener: the share of throughput lost in each case.

These run with the decoder in the CPU default, ``openvino-int8`` (the CPU path):
in float32 the Poisson and first-chunk workloads alone would take longer
than the whole of ``make bench`` may on 2 cores. The policies compare the
same engine, so precision does not favour either side.
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from .own_thread import on_own_thread
from .workload import CFG_COEF, SAMPLE_RATE, TOP_K, Workload

TASKS = 24
LENGTHS = (0.5, 1.0, 1.5, 2.0)  # seconds of new audio
POISSON_REPEATS = 2
LOAD = 0.8
MUSICIAN_POSITIONS = 550  # cached positions halfway through a 6 s prompt + 10 s task
LONG_TASKS = 7
PROBE_NEW_SECONDS = 10.0
LONG_NEW_SECONDS = 6.0
STREAM_TASKS = 8
STREAM_NEW_SECONDS = 2.0


def _request(prompt, new_seconds: float, seed: int, **callbacks):
    from worker.engine import GenerationRequest

    return GenerationRequest(prompt, SAMPLE_RATE, Workload().prompt_seconds + new_seconds, seed=seed, top_k=TOP_K,
                             cfg_coef=CFG_COEF, **callbacks)


def _loop(engine, *, static: bool, tasks: int = 8):
    from worker.engine.loop import EngineLoop
    from worker.engine.scheduler import Scheduler

    longest = max(LONG_NEW_SECONDS, PROBE_NEW_SECONDS, LENGTHS[-1], STREAM_NEW_SECONDS)
    scheduler = Scheduler(engine, max_rows=2 * tasks, max_seconds=Workload().prompt_seconds + longest + 1,
                          decoder=engine.decoder, admit_between_batches=static)
    return EngineLoop(scheduler)


def copy_bandwidth_gbs(megabytes: int = 512, repeats: int = 5) -> float:
    """GB/s of a plain memory copy with torch's threads, best of ``repeats``, counting the bytes read and the
    bytes written (as STREAM's Copy does; the issue's "about 30 GB/s" for copies is that count here)."""
    source = torch.ones(megabytes * 2 ** 18)  # float32
    target = torch.empty_like(source)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.numel() * 4 / best / 1e9


def step_figures(fp32_engine, chosen_engine, settler, log: Callable[[str], None], steps: int = 3,
                 positions: int = 150) -> dict:
    """ms per decoding step at 1 and 8 tasks: float32, int8 (a quantized copy of the float32 decoder: no
    third engine and cache in memory) and the CPU default; the CPU default's steps at a musician's
    positions and its share of the memory bandwidth; drift."""
    from worker.engine.openvino_graph import weight_bytes
    from worker.engine.quantize import CPU_DEFAULT, quantize_decoder, step_weight_bytes

    from .engine_v2 import drift_of, setup_for

    model = fp32_engine.model
    compiled = chosen_engine.compiled_decoder  # openvino-int8's graph, else None
    decoders = {"fp32": model.decoder, "int8": quantize_decoder(model.decoder, "int8"),
                CPU_DEFAULT: compiled if compiled is not None else chosen_engine.decoder}
    best: dict = {}
    # Each as a worker runs it: the CPU default over the chosen engine's KV cache (bfloat16; openvino-int8: its
    # own float16 paged cache), int8's over bfloat16 (SEGUE_KV_CACHE=auto gives any quantized torch decoder
    # that cache), float32 over float32.
    kv_dtypes = {"int8": torch.bfloat16, CPU_DEFAULT: chosen_engine.kv_dtype}
    setups = {(name, tasks, positions): setup_for(model, decoder, tasks, positions, kv_dtypes.get(name, torch.float32))
              for name, decoder in decoders.items() for tasks in (1, 8)}
    for tasks in (1, 8):
        setups[(CPU_DEFAULT, tasks, MUSICIAN_POSITIONS)] = setup_for(model, decoders[CPU_DEFAULT], tasks,
                                                                     MUSICIAN_POSITIONS, chosen_engine.kv_dtype)
    bandwidths = []
    for round_ in range(2):
        bandwidths.append(settler.measure("memory copy", copy_bandwidth_gbs))
        for key, setup in setups.items():
            setup.time_steps(1)  # warm
            ms = settler.measure(f"step {key[0]} x{key[1]} @{key[2]}", lambda setup=setup: setup.time_steps(steps))
            best[key] = min(best.get(key, ms), ms)
            log(f"step {key[0]} x{key[1]} at {key[2]} positions: {ms:.1f} ms (round {round_ + 1})")
    del setups
    bandwidth = max(bandwidths)
    weights = weight_bytes(model.decoder) if compiled is not None else step_weight_bytes(decoders[CPU_DEFAULT])
    config = model.decoder.config
    # What the step also reads from the cache for one guided task (two rows, keys and values, every layer).
    cache_bytes = (2 * 2 * config.num_hidden_layers * config.hidden_size * MUSICIAN_POSITIONS
                   * chosen_engine.kv_dtype.itemsize)
    step_1 = best[(CPU_DEFAULT, 1, MUSICIAN_POSITIONS)]
    drifts = drift_of(model, decoders, positions, kv_dtypes)
    del decoders["int8"]
    return {
        "step_ms": {f"{name}_x{tasks}": round(ms, 1) for (name, tasks, at), ms in best.items() if at == positions},
        "step_8_vs_1": round(best[("fp32", 8, positions)] / best[("fp32", 1, positions)], 3),
        "int8_speedup": round(best[("fp32", 1, positions)] / best[("int8", 1, positions)], 3),
        # The same for the mode a CPU worker serves (int8_speedup keeps its meaning: torch's per-call int8).
        "cpu_default_speedup": round(best[("fp32", 1, positions)] / best[(CPU_DEFAULT, 1, positions)], 3),
        "int8_drift": {k: round(v, 6) for k, v in drifts["int8"].items()},
        "quantize_mode": CPU_DEFAULT,
        "kv_cache": str(chosen_engine.kv_dtype).removeprefix("torch.") + (" (paged)" if compiled is not None else ""),
        "step_ms_1": round(step_1, 1),
        "step_ms_8": round(best[(CPU_DEFAULT, 8, MUSICIAN_POSITIONS)], 1),
        "step_positions": MUSICIAN_POSITIONS,
        "step_weight_bytes": weights,
        "copy_bandwidth_gbs": round(bandwidth, 1),
        "bandwidth_share_1": round(weights / (step_1 / 1000) / (bandwidth * 1e9), 3),
        "step_cache_bytes_1": cache_bytes,
        "bandwidth_share_1_with_cache": round((weights + cache_bytes) / (step_1 / 1000) / (bandwidth * 1e9), 3),
        "drift": {"mode": CPU_DEFAULT, **{k: round(v, 6) for k, v in drifts[CPU_DEFAULT].items()}},
        "drift_all": {name: {k: round(v, 6) for k, v in d.items()} for name, d in drifts.items()},
    }


def poisson(engine, settler, log: Callable[[str], None]) -> dict:
    """24 mixed tasks at seeded Poisson arrivals, ~80 % of capacity: v2 against the static policy."""
    rng = random.Random(7)
    lengths = [rng.choice(LENGTHS) for _ in range(TASKS)]
    prompt = Workload().prompt_array()[None]
    # Capacity, measured: 8 tasks of the mix (each length twice) submitted at once, everything included
    # (prompt encoding, prefill, decoding, the final audio decode).
    calibration = [length for length in LENGTHS for _ in range(2)]

    def burst() -> float:
        loop = _loop(engine, static=False)
        started = time.perf_counter()
        futures = [loop.submit(_request(prompt, length, seed=900 + i)) for i, length in enumerate(calibration)]
        for future in futures:
            future.result()
        loop.close()
        return time.perf_counter() - started

    burst_s = settler.measure("poisson calibration", burst)
    capacity = len(calibration) / burst_s  # tasks per second
    gap = 1 / (LOAD * capacity)
    arrivals = [0.0]
    for _ in range(TASKS - 1):
        arrivals.append(arrivals[-1] + rng.expovariate(1 / gap))
    log(f"poisson: {TASKS} tasks of {LENGTHS[0]:g}-{LENGTHS[-1]:g} s, mean gap {gap:.2f} s (capacity {capacity:.3f} tasks/s: 8 tasks at once "
        f"took {burst_s:.1f} s)")

    def serve(static: bool) -> dict:
        loop = _loop(engine, static=static)
        done: dict[int, float] = {}
        started = time.perf_counter()
        futures = []
        for i, at in enumerate(arrivals):
            time.sleep(max(0.0, at - (time.perf_counter() - started)))
            future = loop.submit(_request(prompt, lengths[i], seed=i))
            future.add_done_callback(lambda _, i=i: done.__setitem__(i, time.perf_counter() - started))
            futures.append(future)
        for future in futures:
            future.result()
        loop.close()
        latencies = sorted(done[i] - arrivals[i] for i in range(TASKS))
        return {"p50_s": round(statistics.median(latencies), 2),
                "p95_s": round(latencies[math.ceil(0.95 * TASKS) - 1], 2),
                "makespan_s": round(max(done.values()), 2)}

    runs: dict[str, list[dict]] = {"static": [], "v2": []}
    for repeat in range(POISSON_REPEATS):  # interleaved, so a slow spell of the machine hits both
        for name, static in (("static", True), ("v2", False)):
            runs[name].append(settler.measure(f"poisson {name}", lambda static=static: serve(static)))
            log(f"poisson {name} ({repeat + 1}/{POISSON_REPEATS}): {runs[name][-1]}")
    figures = {name: {key: round(statistics.median(run[key] for run in found), 2) for key in found[0]}
               for name, found in runs.items()}
    return {
        "poisson": {"tasks": TASKS, "load": LOAD, "mean_gap_s": round(gap, 3), "repeats": POISSON_REPEATS,
                    "capacity_tasks_per_s": round(capacity, 4), **figures,
                    "p95_vs_static_each": [round(v["p95_s"] / s["p95_s"], 3)
                                           for v, s in zip(runs["v2"], runs["static"])]},
        "poisson_p95_vs_static": round(figures["v2"]["p95_s"] / figures["static"]["p95_s"], 3),
        "poisson_makespan_vs_static": round(figures["v2"]["makespan_s"] / figures["static"]["makespan_s"], 3),
    }


def first_chunk_under_load(engine, settler, log: Callable[[str], None]) -> dict:
    """A 10 s continuation submitted while 7 tasks of 6 s decode: seconds to its first chunk."""
    prompt = Workload().prompt_array()[None]

    def serve(static: bool) -> float:
        loop = _loop(engine, static=static)
        running = threading.Event()
        stop = threading.Event()

        def on_progress(step: int, total: int) -> None:
            if step >= 20:
                running.set()

        longs = [loop.submit(_request(prompt, LONG_NEW_SECONDS, seed=100 + i, on_progress=on_progress,
                                      should_stop=stop.is_set)) for i in range(LONG_TASKS)]
        while not running.wait(1.0):
            for future in longs:
                if future.done():  # one failed before it got going: say why
                    future.result()
                    raise RuntimeError("a long task ended before the probe was sent")
        first = threading.Event()
        submitted = time.perf_counter()
        probe = loop.submit(_request(prompt, PROBE_NEW_SECONDS, seed=1, on_audio=lambda chunk, offset: first.set(),
                                     should_stop=stop.is_set))
        while not first.wait(1.0):
            if probe.done():  # failed before its first chunk: say why instead of waiting for ever
                probe.result()
                raise RuntimeError("the probe ended before its first chunk")
        seconds = time.perf_counter() - submitted
        stop.set()  # the rest is not measured: every task leaves at its next step
        for future in longs + [probe]:
            future.exception()
        loop.close()
        return seconds

    figures = {}
    for name, static in (("static", True), ("v2", False)):
        figures[name] = round(settler.measure(f"first chunk {name}", lambda static=static: serve(static)), 2)
        log(f"first chunk under load, {name}: {figures[name]:.2f} s")
    return {"first_chunk_under_load_s": figures,
            "first_chunk_under_load_vs_static": round(figures["v2"] / figures["static"], 3)}


class _Listener:
    """An ``on_audio`` whose ``wanted()`` says whether anyone follows the task (as the worker's does)."""

    def __init__(self, listening: bool):
        self.listening = listening
        self.chunks = 0

    def wanted(self) -> bool:
        return self.listening

    def __call__(self, chunk, offset) -> None:
        self.chunks += 1


def streaming_overhead(engine, settler, log: Callable[[str], None]) -> dict:
    """8 tasks three ways: without streaming, streaming with nobody listening, every task listened to."""
    prompt = Workload().prompt_array()[None]

    def serve(way: str) -> tuple[float, int]:
        loop = _loop(engine, static=False)
        listeners = [_Listener(way == "all listening") for _ in range(STREAM_TASKS)]
        started = time.perf_counter()
        futures = [loop.submit(_request(prompt, STREAM_NEW_SECONDS, seed=i,
                                        on_audio=None if way == "off" else listeners[i]))
                   for i in range(STREAM_TASKS)]
        for future in futures:
            future.result()
        seconds = time.perf_counter() - started
        loop.close()
        return seconds, sum(listener.chunks for listener in listeners)

    seconds, chunks = {}, {}
    for way in ("off", "nobody listening", "all listening"):
        seconds[way], chunks[way] = settler.measure(f"streaming {way}", lambda way=way: serve(way))
        log(f"streaming {way}: {STREAM_TASKS} tasks in {seconds[way]:.2f} s ({chunks[way]} chunks)")
    return {"streaming_s": {way: round(value, 2) for way, value in seconds.items()},
            "streaming_chunks": chunks,
            # The tax of having streaming on: chunks published for every task, decoded for nobody.
            "streaming_overhead": round(max(0.0, 1 - seconds["off"] / seconds["nobody listening"]), 3),
            # What listeners cost: every task's chunks EnCodec-decoded while it generates.
            "streaming_overhead_all_listening": round(max(0.0, 1 - seconds["off"] / seconds["all listening"]), 3)}


def measure(model: Path, settler, log: Callable[[str], None]) -> dict:
    from worker.engine import MusicGenEngine
    from worker.engine.quantize import CPU_DEFAULT

    threads = torch.get_num_threads()
    fp32 = MusicGenEngine(str(model), device="cpu")
    chosen = MusicGenEngine(str(model), device="cpu", quantize=CPU_DEFAULT)
    try:
        result = on_own_thread(lambda: step_figures(fp32, chosen, settler, log))
        fp32.close()
        result.update(poisson(chosen, settler, log))
        result.update(first_chunk_under_load(chosen, settler, log))
        result.update(streaming_overhead(chosen, settler, log))
    finally:
        fp32.close()
        chosen.close()
        torch.set_num_threads(threads)
    return result
