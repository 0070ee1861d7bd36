"""gunicorn's gevent worker, accepting pending connections in batches (the API's default worker class).

With more than one worker process, gunicorn's own gevent worker sets its
server's ``max_accept`` to 1: each worker takes one connection off the shared
listening socket per turn of gevent's loop, so that one process does not take
them all. A turn also runs every greenlet that became ready, so when many
connections arrive at once (a thousand ``/events`` listeners opening together)
each accept waits for the work of the listeners accepted before it. The kernel's
accept queue is first in, first out: a ``/health`` probe that connects behind the
flood waited until every listener ahead of it had been admitted (1.4 to 5.5 s on
a 2-core machine, measured; see ``bench/flood.py``). Here each worker takes up to
gevent's default of 100 waiting connections per turn, so a connection waits in
the kernel's queue for a few turns at most, whatever the flood; what each
admitted listener then costs is kept small and bounded elsewhere (one task read
per feed in ``backend.api.hub``; ``backend.api.admission``). An async worker
has no reason for gunicorn's one-at-a-time rule: a connection costs a greenlet.

Nothing here imports gevent's monkey-patched modules before gunicorn patches:
the arbiter imports this module only to find the class, as it would import
gunicorn's.
"""

from __future__ import annotations

from gevent.server import StreamServer
from gunicorn.workers import ggevent

#: Connections one worker accepts per turn of its loop: gevent's own default (gunicorn lowers it to 1).
ACCEPT_BATCH = StreamServer.max_accept


class BatchAcceptServer(StreamServer):
    """A ``StreamServer`` whose ``max_accept`` stays at ``ACCEPT_BATCH``: gunicorn's ``max_accept = 1``
    (set on every server it starts when it runs several workers) is ignored."""

    @property
    def max_accept(self) -> int:
        return ACCEPT_BATCH

    @max_accept.setter
    def max_accept(self, value: int) -> None:
        pass


class GeventWorker(ggevent.GeventWorker):
    """``gunicorn.workers.ggevent.GeventWorker`` with servers that accept connections in batches."""

    def run(self) -> None:
        # gunicorn's run() builds its servers from this module-level name; replacing it in this worker
        # process (forked, one per worker) changes nothing elsewhere.
        ggevent.StreamServer = BatchAcceptServer
        super().run()
