"""Rate limits (flask-limiter, counters in Redis) and the cap on queued tasks per caller.

- Submissions (``POST /generate``, ``POST /continue``) count against
  ``SEGUE_RATE_LIMIT``; every other request except the exempt ones (``/health``,
  ``/ping``, CORS preflight, docs) against ``SEGUE_READ_RATE_LIMIT``. Both are
  per caller: the API key when keys are on, else the client IP (see
  ``auth.current_owner``).
- Counters live in the app's Redis, so every gunicorn worker and every API
  process shares them. If Redis is unreachable the limiter falls back to
  per-process in-memory counters and swallows its own errors: a Redis outage
  never turns a request into a 500 (the routes that need Redis answer their own
  503), and the Redis counters are used again once it is back.
- ``SEGUE_MAX_QUEUED_PER_KEY``: a submission is refused while the caller already
  has that many tasks ``queued`` or ``processing`` (counted in MongoDB by the
  task's ``owner`` field).

Both refusals are 429 JSON errors with a ``Retry-After`` header in seconds.
"""

from __future__ import annotations

import logging
import math
import time

from flask import Flask, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded

from backend.api import auth
from backend.api.errorhandlers import render
from backend.api.errors import TooManyRequests
from backend.core.settings import RATE_LIMIT_OFF, Settings

log = logging.getLogger(__name__)

SUBMISSION_PATHS = frozenset({"/generate", "/continue"})
#: Retry-After for the queued-task cap: tasks end at unknown times, so ask to retry soon.
QUEUED_RETRY_AFTER_SECONDS = 15
REDIS_KEY_PREFIX = "segue-ratelimit"


def is_submission() -> bool:
    return request.method == "POST" and request.path in SUBMISSION_PATHS


def _enabled(limit: str) -> bool:
    return limit.strip().lower() not in RATE_LIMIT_OFF


def _owner_key() -> str:
    return auth.current_owner() or "unknown"


def build_limiter(app: Flask, settings: Settings) -> Limiter | None:
    """The app's flask-limiter instance, or None when both limits are off."""
    limits = []
    if _enabled(settings.rate_limit):
        limits.append(ApplicationLimit(settings.rate_limit, scope="submit",
                                       exempt_when=lambda: not is_submission()))
    if _enabled(settings.read_rate_limit):
        limits.append(ApplicationLimit(settings.read_rate_limit, scope="read", exempt_when=is_submission))
    if not limits:
        return None
    limiter = Limiter(
        _owner_key,
        application_limits=limits,
        storage_uri=settings.redis_url or "memory://",
        # Fail fast when Redis is down; the in-memory fallback takes over.
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 2},
        strategy="sliding-window-counter",
        key_prefix=REDIS_KEY_PREFIX,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        headers_enabled=False,
    )
    limiter.request_filter(auth.is_exempt)
    limiter.init_app(app)
    return limiter


def _retry_after(limiter: Limiter, exc: RateLimitExceeded) -> int:
    """Seconds until the breached limit lets a request through again (at most its period)."""
    period = int(exc.limit.limit.get_expiry())
    try:
        current = limiter.current_limit
        if current is not None:
            return min(period, math.ceil(current.window[0] - time.time()))
    except Exception:  # storage trouble while reading the window: fall back to the period
        log.debug("could not read the rate-limit window", exc_info=True)
    return period


def init_app(app: Flask, settings: Settings) -> None:
    """Register the limiter and the queued-task cap. Call after ``auth.init_app``."""
    limiter = build_limiter(app, settings)
    app.extensions["segue_limiter"] = limiter

    if limiter is not None:
        @app.errorhandler(RateLimitExceeded)
        def _rate_limited(exc: RateLimitExceeded):
            what = "submissions" if is_submission() else "requests"
            return render(TooManyRequests(f"too many {what}: the limit is {exc.limit.limit}; retry later",
                                          code="rate_limited", retry_after=_retry_after(limiter, exc)))

    cap = settings.max_queued_per_key
    if cap > 0:
        store = app.extensions["segue"].store

        @app.before_request
        def _check_queued_cap():
            if not is_submission() or auth.is_exempt():
                return None
            owner = auth.current_owner()
            active = store.count_active(owner, limit=cap)
            if active >= cap:
                raise TooManyRequests(f"you already have {active} tasks queued or running (the limit is {cap}); "
                                      "wait for some to finish", code="too_many_queued",
                                      retry_after=QUEUED_RETRY_AFTER_SECONDS)
            return None
