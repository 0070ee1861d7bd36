"""GET /tasks/<id>/events (Server-Sent Events) and GET /tasks/<id>/stream (binary frames).

Both follow the task through the process's stream hub (``backend.api.hub``): one
reader and one read of the task document per task per process, whatever the
number of listeners. Under gunicorn's
gevent worker (the default) a listener costs a greenlet, not a thread, so open
streams never starve the other routes. Each caller may hold
``SEGUE_MAX_STREAMS_PER_CALLER`` streams open (``backend.api.streamcap``); beyond it
a 429 JSON error with ``Retry-After``.
"""

from __future__ import annotations

import base64
import json
import logging
import struct

import redis
from flask import Blueprint, Response, current_app, request
from pymongo.errors import PyMongoError

from backend.api import streamcap
from backend.api.auth import current_owner
from backend.api.context import services
from backend.api.errors import TooManyRequests
from backend.api.hub import Listening, hub_of
from backend.core.chunks import DTYPE
from backend.core.errors import BadRequest

log = logging.getLogger(__name__)

bp = Blueprint("live", __name__)

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering


def _flag(raw: str | None, name: str, *, default: bool) -> bool:
    if raw is None:
        return default
    if raw in ("1", "true"):
        return True
    if raw in ("0", "false"):
        return False
    raise BadRequest(f"query parameter '{name}' must be 1, 0, true or false, got {raw[:40]!r}", code="invalid_field")


class _Stream:
    """The response body of a stream: renews the caller's stream lease as it goes, frees it on close.

    WSGI servers call ``close()`` on the body when the client goes away or the
    stream ends, even if it was never iterated (a generator's ``finally`` would
    not run then).
    """

    def __init__(self, chunks, lease: streamcap.Lease | None, listening: Listening):
        self._chunks = chunks
        self._lease = lease
        self._listening = listening  # closed here too: ``chunks`` may never have started

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self._chunks)
        if self._lease is not None:
            self._lease.renew()
        return item

    def close(self) -> None:
        try:
            try:
                self._chunks.close()
            finally:
                self._listening.close()
        finally:
            if self._lease is not None:
                self._lease.release()
                self._lease = None


def _open(task_id: str, body, listening, mimetype: str) -> Response:
    """Admit one more stream for the caller (or answer 429), then serve ``body``, which iterates ``listening``."""
    s = services()
    cap = s.settings.max_streams_per_caller
    lease = None
    if cap > 0:
        owner = current_owner() or "unknown"
        try:
            lease, count = streamcap.acquire(s.redis, owner, cap)
        except BaseException:
            listening.close()
            raise
        if lease is None:
            listening.close()  # leaves the task's feed: this listener never started
            raise TooManyRequests(f"you already have {count} event streams open (the limit is {cap}); "
                                  "close one or retry later", code="too_many_streams",
                                  retry_after=streamcap.RETRY_AFTER_SECONDS)
    return Response(_Stream(body, lease, listening), mimetype=mimetype, headers=STREAM_HEADERS)


def _listen(task_id: str, *, with_audio: bool = True) -> Listening:
    """Join the task's feed in this process: an unknown task is a JSON 404 here, before the stream starts.
    The feed reads the task document once for all its listeners (``backend.api.hub``)."""
    s = services()
    return hub_of(current_app.extensions, s).open(task_id, with_audio=with_audio)


def _sse(event: str, data: dict, event_id: int | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


def _audio_event(chunk) -> str:
    """The SSE text of a chunk, encoded once per process: the hub hands the same chunk to every listener."""
    text = getattr(chunk, "_sse_text", None)
    if text is None:
        data = dict(chunk.header(), pcm=base64.b64encode(chunk.pcm).decode("ascii"))
        text = chunk._sse_text = _sse("audio", data, chunk.seq)
    return text


@bp.get("/tasks/<task_id>/events")
def events(task_id: str):
    # Progress-only listeners (a status badge, the extension) need not download the PCM.
    with_audio = _flag(request.args.get("audio"), "audio", default=True)
    events_of_task = _listen(task_id, with_audio=with_audio)  # unknown id: a JSON 404, not an empty stream

    def generate():
        yield "retry: 2000\n\n"
        try:
            for kind, payload in events_of_task:
                if kind == "keepalive":
                    yield ": keep-alive\n\n"
                elif kind == "audio":
                    if with_audio:
                        yield _audio_event(payload)
                else:
                    yield _sse(kind, payload)
        except (redis.RedisError, PyMongoError) as exc:
            log.warning("event stream of %s ended: %s", task_id, exc)
            yield _sse("error", {"error": "Redis or MongoDB became unavailable; reconnect to resume",
                                 "code": "service_unavailable"})
        finally:
            events_of_task.close()

    return _open(task_id, generate(), events_of_task, "text/event-stream")


def _frame(header: dict, payload: bytes = b"") -> bytes:
    """One frame: total length (these 4 bytes included), header length, JSON header, PCM."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">II", 8 + len(head) + len(payload), len(head)) + head + payload


@bp.get("/tasks/<task_id>/stream")
def stream(task_id: str):
    events_of_task = _listen(task_id)

    def generate():
        seq = 0
        status = "failed"
        try:
            for kind, payload in events_of_task:
                if kind == "audio":
                    seq = payload.seq + 1
                    yield _frame(payload.header(), payload.pcm)
                elif kind in ("completed", "failed", "canceled", "timeout"):
                    status = kind
                elif kind == "keepalive":  # lets the server notice a client that went away
                    yield _frame({"seq": None, "sample_rate": None, "channels": None, "dtype": DTYPE,
                                  "offset_samples": None, "final": False, "keepalive": True})
        except (redis.RedisError, PyMongoError) as exc:
            log.warning("audio stream of %s ended: %s", task_id, exc)
            status = "interrupted"
        finally:
            events_of_task.close()
        yield _frame({"seq": seq, "sample_rate": None, "channels": None, "dtype": DTYPE, "offset_samples": None,
                      "final": True, "status": status})

    return _open(task_id, generate(), events_of_task, "application/octet-stream")
