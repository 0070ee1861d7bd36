"""Refusals that only the HTTP API makes (keys, rate limits, open streams); rendered by ``errorhandlers``."""

from __future__ import annotations

from backend.core.errors import SegueError


class Unauthorized(SegueError):
    """No API key was presented while keys are on."""

    code = "unauthorized"


class Forbidden(SegueError):
    """An API key was presented but it is not one of the configured keys."""

    code = "forbidden"


class TooManyRequests(SegueError):
    """Rate limited, or too many tasks queued or streams open; ``retry_after`` is in seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = max(1, int(retry_after))
