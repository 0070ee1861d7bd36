"""One OpenMP team per process: torch work off the stepping thread runs on one CPU thread.

torch's OpenMP runtime gives every thread that runs parallel operations a
team of threads of its own. As soon as a process holds two teams (the
stepping thread's and, say, the one that loaded the model), libgomp counts
more threads than cores and lets idle team threads sleep after every
parallel region, and each of a decoding step's hundreds of regions then
waits for one to wake: a step took 89-95 ms from a second thread against
48 ms with one team (musicgen-small's architecture, ``int8-rows``, 2 cores;
measured). So every engine is stepped by one thread (``worker.engine.loop``)
and whatever else touches large tensors (loading a model, allocating a
cache) does it here, on one thread, which starts no team.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def single_threaded():
    """Torch work on the calling thread on one CPU thread (no OpenMP team), the count restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
