"""Refusals that only the HTTP API makes (keys, rate limits, open streams); rendered by ``errorhandlers``."""

from __future__ import annotations

from backend.core.errors import RetryLater, SegueError


class Unauthorized(SegueError):
    """No API key was presented while keys are on."""

    code = "unauthorized"


class Forbidden(SegueError):
    """An API key was presented but it is not one of the configured keys."""

    code = "forbidden"


class TooManyRequests(RetryLater):
    """Rate limited, or too many tasks queued or streams open."""

    code = "rate_limited"
