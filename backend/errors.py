"""Exceptions that carry their HTTP status and machine-readable code.

The API renders any ``SegueError`` as ``{"error": message, "code": code}``;
the worker records ``message`` on the failed task.
"""

from __future__ import annotations


class SegueError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status

    def to_json(self) -> dict:
        return {"error": self.message, "code": self.code}


class BadRequest(SegueError):
    status = 400
    code = "bad_request"


class NotFound(SegueError):
    status = 404
    code = "not_found"


class PayloadTooLarge(SegueError):
    status = 413
    code = "payload_too_large"


class ServiceUnavailable(SegueError):
    status = 503
    code = "service_unavailable"


class Busy(ServiceUnavailable):
    """A bounded resource (ffmpeg slots) stayed taken for the whole wait; the client should retry."""

    code = "busy"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = max(1, int(retry_after))


class UrlRefused(BadRequest):
    """A URL the server will not fetch (scheme, private address, malformed)."""

    code = "url_refused"


class AudioDecodeError(BadRequest):
    code = "undecodable_audio"


class TaskFailure(SegueError):
    """Raised inside the worker for failures that should read well on the task."""

    code = "task_failed"


class FetchError(TaskFailure):
    code = "fetch_failed"
