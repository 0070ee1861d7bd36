"""Run torch work on a thread of its own that ends with it.

torch's OpenMP runtime gives every thread that runs parallel operations a team
of its own, and a process with two teams runs each at about half speed on 2
cores (``worker.engine.threads``). An engine steps on the process's stepping
thread, so in-process measurements that run torch themselves (raw
``generate``, decoding steps) run here: their team goes away when the thread
ends, before the engines step.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")


def on_own_thread(work: Callable[[], T]) -> T:
    """``work()`` on a fresh thread; its result, or its exception raised here."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="bench-torch")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
