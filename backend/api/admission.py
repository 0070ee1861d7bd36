"""At most ``SEGUE_STREAM_ADMISSIONS`` stream requests per API process are being admitted at once.

Admitting an ``/events`` or ``/stream`` listener (the request up to the moment
its stream starts: authentication, the caller's stream cap in Redis, joining
the task's feed) is short, but a flood of them arriving together used to run
all at once: a thousand greenlets, each with a Redis round trip, made every
other request wait its turn behind them, and took more Redis connections than
the process's pool holds (redis-py's 100: "Too many connections", a 503 for
the listeners beyond). This WSGI middleware puts those requests through a few
slots, first come first served; the ones waiting cost nothing but a parked
greenlet (or thread), so ``/health``, submissions and polling go straight
through. Only the admission is gated: an open stream holds no slot.

Two slots by default. Admitting is CPU-bound here, so more slots do not admit
a flood faster (1,000 listeners on two processes were all held after 2.8 to
4.5 s with 1, 2 or 8 slots); each greenlet holding a slot only lengthens the
turns of gevent's loop that a ``/health`` request waits through. Measured with
``bench/flood.py`` on our shared 2-core machine (load average 7 to 10), the
worst of 20 probes: 73 to 160 ms with 1 slot, 86 to 231 ms with 2, 96 to 369 ms
with 8. Two rather than one, so that one slow admission (the first read of a
task, a Redis hiccup) does not hold up every other.
"""

from __future__ import annotations

import re
import threading

#: The two stream routes; their admission is what a flood of listeners repeats.
STREAM_PATH = re.compile(r"^/tasks/[^/]+/(events|stream)/?$")


class StreamAdmission:
    """WSGI middleware: stream requests wait for one of ``slots`` slots; every other request passes."""

    def __init__(self, app, slots: int):
        self.app = app
        self.slots = slots
        # Under gunicorn's gevent worker ``threading`` is patched: waiting parks a greenlet.
        self._slots = threading.BoundedSemaphore(slots) if slots > 0 else None
        self._lock = threading.Lock()
        self.admitting = 0  # stream requests holding a slot now
        self.admitted = 0  # stream requests that held a slot, since start
        self.most_at_once = 0  # the most that held slots at the same time

    def __call__(self, environ, start_response):
        if self._slots is None or not STREAM_PATH.match(environ.get("PATH_INFO") or ""):
            return self.app(environ, start_response)
        with self._slots:
            with self._lock:
                self.admitting += 1
                self.admitted += 1
                self.most_at_once = max(self.most_at_once, self.admitting)
            try:
                # A stream's response returns as soon as the route does; its body is sent after the slot is free.
                return self.app(environ, start_response)
            finally:
                with self._lock:
                    self.admitting -= 1
