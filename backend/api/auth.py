"""API keys (off by default) and the caller identity used for rate limits and the queued-task cap.

``SEGUE_API_KEYS`` holds SHA-256 hex digests of the accepted keys; the keys
themselves are never stored. A client sends its key as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The server hashes what
it receives and compares the digest with every configured one in constant time
(``hmac.compare_digest``, no early exit), so neither the key nor which digest
matched leaks through timing.

With no keys configured every request passes, exactly as before, and callers
are told apart by client IP.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, g, has_request_context, request

from backend.api.errors import Forbidden, Unauthorized
from backend.core.settings import Settings

#: Paths that never need a key: probes, metrics for scrapers, the list of models, documentation and pages.
EXEMPT_PATHS = frozenset({"/health", "/ping", "/ready", "/queue", "/openapi.json", "/docs", "/models", "/metrics",
                          "/", "/status"})
EXEMPT_PREFIXES = ("/static/", "/docs/")

#: Length of the digest prefix that names a key in Redis counters and on task documents.
OWNER_DIGEST_CHARS = 16


def key_digest(key: str) -> str:
    """The SHA-256 hex digest of an API key: what ``SEGUE_API_KEYS`` lists."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_exempt() -> bool:
    """True for requests that need no key and count against no limit (CORS preflight, probes, docs)."""
    path = request.path
    return (request.method == "OPTIONS" or path in EXEMPT_PATHS
            or any(path == p.rstrip("/") or path.startswith(p) for p in EXEMPT_PREFIXES))


def presented_key() -> str | None:
    """The key the client sent (Bearer token first, then X-API-Key), or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = request.headers.get("X-API-Key", "").strip()
    return key or None


def matching_digest(key: str, digests: tuple[str, ...]) -> str | None:
    """The configured digest equal to the key's, compared in constant time against every entry."""
    candidate = key_digest(key).encode("ascii")
    found = None
    for digest in digests:
        if hmac.compare_digest(candidate, digest.encode("ascii")):
            found = digest
    return found


def client_ip(trust_proxy: bool) -> str:
    """The client's address; behind a trusted proxy, the last ``X-Forwarded-For`` entry (the one it added)."""
    if trust_proxy:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-1]
    return request.remote_addr or "unknown"


def current_owner() -> str | None:
    """Who is calling: ``key:<digest prefix>`` when keys are on, else ``ip:<client address>``.

    Stored on task documents as ``owner`` (the queued-task cap counts by it) and used
    as the rate-limit key. None outside a request (tasks created by scripts or tests).
    """
    if not has_request_context():
        return None
    digest = g.get("segue_key_digest")
    if digest:
        return f"key:{digest[:OWNER_DIGEST_CHARS]}"
    settings: Settings | None = g.get("segue_auth_settings")
    return f"ip:{client_ip(bool(settings and settings.trust_proxy))}"


def init_app(app: Flask, settings: Settings) -> None:
    """Register the key check. Call it before the rate limiter, so limits count by key."""
    digests = tuple(d.lower() for d in settings.api_keys)

    @app.before_request
    def _check_api_key():
        g.segue_auth_settings = settings
        if not digests or is_exempt():
            return None
        key = presented_key()
        if key is None:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                               code="missing_api_key")
        digest = matching_digest(key, digests)
        if digest is None:
            raise Forbidden("the API key is not valid", code="invalid_api_key")
        g.segue_key_digest = digest
        return None
