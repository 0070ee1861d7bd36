"""GET /tasks/<id>/events (Server-Sent Events) and GET /tasks/<id>/stream (binary frames).

Both follow the task with ``backend.live.follow``. A stream holds one gunicorn
thread (gthread workers) for as long as the client listens, so the API's
``SEGUE_API_WORKERS * SEGUE_API_THREADS`` bounds concurrent listeners.
"""

from __future__ import annotations

import base64
import json
import logging
import struct

import redis
from flask import Blueprint, Response, request, stream_with_context
from pymongo.errors import PyMongoError

from .. import live
from ..chunks import DTYPE
from ..context import services
from ..errors import BadRequest
from ..services import load_task

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


def _sse(event: str, data: dict, event_id: int | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


@bp.get("/tasks/<task_id>/events")
def events(task_id: str):
    s = services()
    load_task(s, task_id)  # unknown id: a JSON 404, not an empty stream
    # Progress-only listeners (a status badge, the extension) need not download the PCM.
    with_audio = _flag(request.args.get("audio"), "audio", default=True)

    def generate():
        yield "retry: 2000\n\n"
        try:
            for kind, payload in live.follow(s, task_id):
                if kind == "keepalive":
                    yield ": keep-alive\n\n"
                elif kind == "audio":
                    if with_audio:
                        data = dict(payload.header(), pcm=base64.b64encode(payload.pcm).decode("ascii"))
                        yield _sse("audio", data, payload.seq)
                else:
                    yield _sse(kind, payload)
        except (redis.RedisError, PyMongoError) as exc:
            log.warning("event stream of %s ended: %s", task_id, exc)
            yield _sse("error", {"error": "Redis or MongoDB became unavailable; reconnect to resume",
                                 "code": "service_unavailable"})

    return Response(stream_with_context(generate()), mimetype="text/event-stream", headers=STREAM_HEADERS)


def _frame(header: dict, payload: bytes = b"") -> bytes:
    """One frame: total length (these 4 bytes included), header length, JSON header, PCM."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">II", 8 + len(head) + len(payload), len(head)) + head + payload


@bp.get("/tasks/<task_id>/stream")
def stream(task_id: str):
    s = services()
    load_task(s, task_id)

    def generate():
        seq = 0
        status = "failed"
        try:
            for kind, payload in live.follow(s, task_id):
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
        yield _frame({"seq": seq, "sample_rate": None, "channels": None, "dtype": DTYPE, "offset_samples": None,
                      "final": True, "status": status})

    return Response(stream_with_context(generate()), mimetype="application/octet-stream", headers=STREAM_HEADERS)
