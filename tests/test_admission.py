"""Stream admissions go through a few slots per process; every other request passes (backend.api.admission)."""

from __future__ import annotations

import threading

from backend.api.admission import StreamAdmission
from tests.conftest import wait_for


class _HeldApp:
    """A WSGI app whose stream requests wait until released: what is inside the gate stays there."""

    def __init__(self):
        self.release = threading.Event()
        self.inside = 0
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            self.inside += 1
        try:
            if environ["PATH_INFO"].endswith(("/events", "/stream")):
                assert self.release.wait(60), "never released"
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [environ["PATH_INFO"].encode()]
        finally:
            with self._lock:
                self.inside -= 1


def _call(app, path: str, out: list) -> None:
    out.append(b"".join(app({"PATH_INFO": path}, lambda status, headers: None)))


def test_stream_requests_wait_for_a_slot_and_other_routes_do_not():
    inner = _HeldApp()
    gate = StreamAdmission(inner, slots=2)
    answers: list[bytes] = []
    threads = [threading.Thread(target=_call, args=(gate, f"/tasks/t{i}/{'events' if i % 2 else 'stream'}", answers))
               for i in range(6)]
    for thread in threads:
        thread.start()
    wait_for(lambda: gate.admitting == 2 and inner.inside == 2, timeout=30, message="two streams admitted")
    # The four others wait outside the app; /health and the other routes go straight through meanwhile.
    for path in ("/health", "/tasks/t1", "/tasks/t1/audio", "/generate"):
        other: list[bytes] = []
        _call(gate, path, other)
        assert other == [path.encode()]
    assert gate.admitting == 2 and inner.inside == 2 and gate.admitted == 2
    inner.release.set()
    for thread in threads:
        thread.join(30)
    assert sorted(answers) == sorted(f"/tasks/t{i}/{'events' if i % 2 else 'stream'}".encode() for i in range(6))
    assert gate.admitted == 6 and gate.most_at_once == 2 and gate.admitting == 0


def test_zero_slots_means_no_gate():
    inner = _HeldApp()
    inner.release.set()
    gate = StreamAdmission(inner, slots=0)
    out: list[bytes] = []
    _call(gate, "/tasks/t/events", out)
    assert out == [b"/tasks/t/events"] and gate.admitted == 0


def test_a_failing_admission_frees_its_slot():
    def failing(environ, start_response):
        raise RuntimeError("the route failed")

    gate = StreamAdmission(failing, slots=1)
    try:
        gate({"PATH_INFO": "/tasks/t/events"}, lambda status, headers: None)
    except RuntimeError:
        pass
    assert gate.admitting == 0 and gate.admitted == 1
    assert gate._slots.acquire(timeout=10), "the failed admission kept its slot"
    gate._slots.release()
