"""The scheduler on a thread of its own, fed from any other: the worker's handle on engine v2.

The worker takes jobs off the queue while generation runs; ``submit`` hands a
request to the scheduler from any thread and returns a ``Future`` that
completes when the task leaves (its ``GenerationResult``, or the exception
that ended it: ``GenerationCanceled``, ``ValueError``, ...). The loop steps
while there is work and sleeps on a condition otherwise, so a request that
arrives mid-run is admitted at the next iteration. ``free_tasks`` says how
many more guided tasks fit now, for taking just that many jobs.

Only this thread touches the scheduler's state (steps, admission, the
cache); ``submit`` only validates the request and appends it to the
scheduler's waiting deque under the loop's lock.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future

from worker.engine.requests import GenerationRequest
from worker.engine.scheduler import Scheduler, Task

log = logging.getLogger(__name__)


class EngineLoop:
    def __init__(self, scheduler: Scheduler, name: str = "segue-engine"):
        self.scheduler = scheduler
        self._futures: dict[int, Future] = {}
        self._wake = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        scheduler.on_retired = self._retired
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest) -> Future:
        future: Future = Future()
        with self._wake:
            if self._closing:
                raise RuntimeError("the engine loop is closed")
            if self._error is not None:
                raise RuntimeError("the engine loop stopped") from self._error
            task = self.scheduler.submit(request)
            if task.done:  # invalid input: failed at once
                future.set_exception(task.outcome)
                return future
            self._futures[id(task)] = future
            self._wake.notify()
        return future

    @property
    def free_tasks(self) -> int:
        """Guided tasks (two rows each) that would be admitted now, beyond those already waiting."""
        s = self.scheduler
        with self._wake:
            waiting = sum(t.rows for t in s.waiting)
            return max(0, (s.cache.rows - s.rows_in_use - waiting) // 2)

    @property
    def running_tasks(self) -> int:
        """Tasks holding rows now (decoding, or prefilling to join)."""
        return len(self.scheduler.active)

    def close(self, timeout: float | None = None) -> None:
        """Finish what was submitted, then stop the thread."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)

    def _retired(self, task: Task) -> None:
        future = self._futures.pop(id(task), None)
        if future is None:
            return
        if isinstance(task.outcome, BaseException):
            future.set_exception(task.outcome)
        else:
            future.set_result(task.outcome)

    def _run(self) -> None:
        try:
            while True:
                with self._wake:
                    while self.scheduler.idle and not self._closing:
                        self._wake.wait()
                    if self.scheduler.idle and self._closing:
                        return
                self.scheduler.step()
        except BaseException as exc:  # noqa: BLE001 - a broken engine fails everything it holds
            log.exception("engine loop stopped")
            with self._wake:
                self._error = exc
                futures, self._futures = list(self._futures.values()), {}
            for future in futures:
                if not future.done():
                    future.set_exception(RuntimeError(f"the engine loop stopped: {exc!r}"))
