"""The scheduler on a thread of its own, fed from any other: the worker's handle on engine v2.

The worker takes jobs off the queue while generation runs; ``submit`` hands a
request to the scheduler from any thread and returns a ``Future`` that
completes when the task leaves (its ``GenerationResult``, or the exception
that ended it: ``GenerationCanceled``, ``ValueError``, ...). The loop steps
while there is work and sleeps on a condition otherwise, so a request that
arrives mid-run is admitted at the next iteration. ``free_tasks`` says how
many more guided tasks fit now, for taking just that many jobs.

Only the stepping thread touches the scheduler's state (steps, admission,
the cache); ``submit`` only validates the request and appends it to the
scheduler's waiting deque under the loop's lock.

**One stepping thread per process.** Every loop is stepped by the same
thread (``_Stepper``), in turn when several models have work: a second
thread running torch would start a second OpenMP team and halve both
teams' speed on a small CPU (``worker.engine.threads``).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future

from worker.engine.requests import GenerationRequest
from worker.engine.scheduler import Scheduler, Task

log = logging.getLogger(__name__)


class _Stepper:
    """The process's one stepping thread: steps every registered loop that has work, in turn."""

    _instance: _Stepper | None = None
    _instance_lock = threading.Lock()

    @classmethod
    def shared(cls) -> _Stepper:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self):
        self.wake = threading.Condition()
        self.loops: list[EngineLoop] = []
        self.thread = threading.Thread(target=self._run, name="segue-engine", daemon=True)
        self.thread.start()

    def add(self, loop: EngineLoop) -> None:
        with self.wake:
            self.loops.append(loop)
            self.wake.notify()

    def _run(self) -> None:
        while True:
            with self.wake:
                while not any(loop.has_work for loop in self.loops):
                    self.wake.wait()
                ready = [loop for loop in self.loops if loop.has_work]
            for loop in ready:
                if not loop.step_once():
                    with self.wake:
                        self.loops.remove(loop)


class EngineLoop:
    def __init__(self, scheduler: Scheduler, name: str = "segue-engine"):
        self.scheduler = scheduler
        self.name = name
        self._futures: dict[int, Future] = {}
        self._stepper = _Stepper.shared()
        self._wake = self._stepper.wake  # one lock and condition for every loop and the stepping thread
        self._closing = False
        self._closed = threading.Event()
        self._error: BaseException | None = None
        scheduler.on_retired = self._retired
        self._stepper.add(self)

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
        """Finish what was submitted, then leave the stepping thread."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        self._closed.wait(timeout)

    @property
    def has_work(self) -> bool:
        """Under the stepper's lock: something to step, or a close to carry out."""
        return self._error is None and not self._closed.is_set() and (not self.scheduler.idle or self._closing)

    def _retired(self, task: Task) -> None:
        future = self._futures.pop(id(task), None)
        if future is None:
            return
        if isinstance(task.outcome, BaseException):
            future.set_exception(task.outcome)
        else:
            future.set_result(task.outcome)

    def step_once(self) -> bool:
        """One scheduler iteration, on the stepping thread; False once this loop is done (closed or broken)."""
        with self._wake:
            if self.scheduler.idle and self._closing:
                self._closed.set()
                return False
        try:
            self.scheduler.step()
            return True
        except BaseException as exc:  # noqa: BLE001 - a broken engine fails everything it holds, not the others
            log.exception("engine loop %s stopped", self.name)
            with self._wake:
                self._error = exc
                futures, self._futures = list(self._futures.values()), {}
            for future in futures:
                if not future.done():
                    future.set_exception(RuntimeError(f"the engine loop stopped: {exc!r}"))
            self._closed.set()
            return False
