"""Domain errors: a machine-readable code and a sentence, no HTTP status.

Errors are split by who handles them. The API maps each class to its HTTP
status in one table (``backend.api.errorhandlers.STATUS``) and renders any
``SegueError`` as ``{"error": message, "code": code}``; the worker records
``message`` on the failed task.
"""

from __future__ import annotations


class SegueError(Exception):
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code

    def to_json(self) -> dict:
        return {"error": self.message, "code": self.code}


class BadRequest(SegueError):
    """The request itself is wrong (a field, the body, a URL): the client must change it."""

    code = "bad_request"


class NotFound(SegueError):
    code = "not_found"


class Conflict(SegueError):
    """The task is not in a state that allows this (audio before it completed, cancel after it ended)."""

    code = "conflict"


class PayloadTooLarge(SegueError):
    code = "payload_too_large"


class ServiceUnavailable(SegueError):
    code = "service_unavailable"


class RetryLater(SegueError):
    """Refused for now; the same request may succeed ``retry_after`` seconds (at least 1) from now."""

    def __init__(self, message: str, *, retry_after: int, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = max(1, int(retry_after))


class Busy(ServiceUnavailable, RetryLater):
    """A bounded resource (ffmpeg slots) stayed taken for the whole wait; the client should retry."""

    code = "busy"


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
