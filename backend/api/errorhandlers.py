"""Render every error as JSON ``{"error", "code"}``: one table from error class to HTTP status.

Domain errors (``backend.core.errors``) carry their machine code and sentence but no
status; which status each answers with is decided here and only here. Dependency
outages (Redis, MongoDB) carry neither, so the table gives them a code and a sentence too.
"""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, jsonify
from pymongo.errors import ConnectionFailure, PyMongoError
from werkzeug.exceptions import HTTPException

from backend.api.errors import Forbidden, TooManyRequests, Unauthorized
from backend.core.errors import (BadRequest, Conflict, NotFound, PayloadTooLarge, SegueError,
                                 ServiceUnavailable)

log = logging.getLogger(__name__)

#: Error class -> (HTTP status, code, sentence); ``None`` means the error's own code or sentence.
#: Looked up along the class's MRO, so a subclass answers like its nearest listed parent.
TABLE: dict[type[Exception], tuple[int, str | None, str | None]] = {
    SegueError: (500, None, None),
    BadRequest: (400, None, None),
    Unauthorized: (401, None, None),
    Forbidden: (403, None, None),
    NotFound: (404, None, None),
    Conflict: (409, None, None),
    PayloadTooLarge: (413, None, None),
    TooManyRequests: (429, None, None),
    ServiceUnavailable: (503, None, None),
    redis.RedisError: (503, "queue_unavailable", "the job queue (Redis) is unavailable; try again shortly"),
    ConnectionFailure: (503, "store_unavailable", "the task store (MongoDB) is unavailable; try again shortly"),
    PyMongoError: (503, "store_error", "the task store (MongoDB) failed to answer"),
}


def status_of(exc: Exception) -> tuple[int, str, str]:
    """The HTTP status, code and sentence ``exc`` answers with."""
    for cls in type(exc).__mro__:
        if cls in TABLE:
            status, code, message = TABLE[cls]
            return status, code or getattr(exc, "code", "internal_error"), message or getattr(exc, "message", str(exc))
    raise LookupError(f"{type(exc).__name__} is not in the error table")


def render(exc: Exception) -> Response:
    status, code, message = status_of(exc)
    response = jsonify({"error": message, "code": code})
    response.status_code = status
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="segue"'
    return response


def register(app: Flask) -> None:
    @app.errorhandler(SegueError)
    def _segue(exc: SegueError):
        return render(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                400: "bad_request"}.get(exc.code or 500, "http_error")
        message = exc.description or exc.name
        if exc.code == 413:
            limit_mb = app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024)
            message = f"the request body is larger than the {limit_mb:g} MB limit"
        return jsonify({"error": message, "code": code}), exc.code

    @app.errorhandler(redis.RedisError)
    def _redis_down(exc: redis.RedisError):
        log.warning("redis unavailable: %s", exc)
        return render(exc)

    @app.errorhandler(ConnectionFailure)
    def _mongo_down(exc: ConnectionFailure):
        log.warning("mongodb unavailable: %s", exc)
        return render(exc)

    @app.errorhandler(PyMongoError)
    def _mongo_error(exc: PyMongoError):
        log.exception("mongodb error")
        return render(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return jsonify({"error": "internal error; the server log has the details", "code": "internal_error"}), 500
