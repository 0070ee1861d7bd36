"""Webhook delivery: POST the task document to the task's ``webhook`` URL when it ends.

Durable through Redis, so a crash loses nothing:

- ``schedule(redis, task_id)`` (called by whoever ends a task) adds the task to
  the sorted set ``segue:webhooks:due``, scored by when the next attempt is due.
- ``deliver_due(services)`` (run by every worker's delivery thread, on any
  number of machines) claims one due entry at a time with a Lua script that
  moves its score a lease into the future. Only the caller that moved it owns
  the attempt; if that caller dies mid-attempt, the lease runs out and another
  one delivers it. Delivery is therefore at least once: receivers can drop
  repeats by ``X-Segue-Delivery`` / ``webhook-id``, which is derived from the
  task id alone (a name-based UUID), so it is the same for every attempt by
  every sender, even one that repeats an attempt whose 2xx it never recorded.
  Due times and leases are Redis's own clock (``TIME``), never a machine's, so
  workers whose clocks disagree cannot steal each other's leases.

What is sent:

    POST <webhook URL>
    Content-Type: application/json
    X-Segue-Event: task.completed | task.failed | task.canceled
    X-Segue-Delivery: <uuid, the same on every retry>
    X-Segue-Timestamp: <unix seconds when this attempt was signed>
    X-Segue-Signature: sha256=<hex HMAC-SHA256(key=SEGUE_WEBHOOK_SECRET,
                                 msg=X-Segue-Timestamp + "." + raw body)>   (only when a secret is set)
    webhook-id: <the delivery id>            Standard Webhooks (standardwebhooks.com): any of
    webhook-timestamp: <unix seconds>        its libraries verifies these with the secret;
    webhook-signature: v1,<base64 HMAC>      the signature only when a secret is set

The X-Segue-* headers are today's and stay for one release beside the
Standard Webhooks ones (docs/webhooks.md). The Standard Webhooks key is the
secret's base64 part after ``whsec_``; a secret without that prefix (older
deployments) is used as raw UTF-8 bytes, which the libraries also accept.

    body: the task document as GET /tasks/<id> shows it, without ``audio``,
          plus ``"audio_url": "<public base>/tasks/<id>/audio"``.

Signing the timestamp with the body lets a receiver refuse replays of an old
request (check that the timestamp is recent) without trusting an unsigned header.

Outcome rules: 2xx = delivered. A timeout, connection error, 429 or 5xx is
retried with exponential backoff (2, 4, 8, ... s, at most 60 s apart) until
``SEGUE_WEBHOOK_RETRY_SECONDS`` after the task ended; any other status
(redirects included: they are never followed) gives up at once. The outcome
is kept on the task document as ``webhook_delivery`` (the URL itself stays in
``request.webhook``): ``{"status": "pending" |
"delivered" | "failed", "attempts", "last_status", "last_error",
"delivery_id"}``.

SSRF: the URL's host is resolved once; if any address is loopback, private,
link-local or otherwise non-public the request is not sent (recorded as
failed) unless ``SEGUE_ALLOW_PRIVATE_URLS``. The connection then goes to that
very address (the Host header and TLS server name carry the original name),
so a DNS answer that changes between check and connect cannot redirect it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

import redis

from backend.core import faults, metrics
from backend.core.connections import Services
from backend.core.tasks import FINAL_STATES
from backend.core.urlguard import is_forbidden_address
from backend.core.view import task_view

log = logging.getLogger(__name__)

DUE_KEY = "segue:webhooks:due"
DOC_FIELD = "webhook_delivery"  # where the outcome is kept on the task document
USER_AGENT = "Segue-Webhook/1"
MAX_BACKOFF_SECONDS = 60.0
# How much of a receiver's answer is read: only the status matters.
MAX_RESPONSE_BYTES = 4096
# Most entries one deliver_due call works through before returning, so a
# delivery thread also gets to notice its stop event.
MAX_PER_CALL = 100
# Time allowed for recording an attempt's outcome (one MongoDB update, two Redis calls).
RECORD_SECONDS = 5.0

# Take the earliest due entry and push its score a lease ahead, atomically:
# whoever gets the member back owns this attempt.
# ARGV[1] = "" means "now by Redis's clock" (ARGV[2] the lease, seconds); tests pass an explicit time.
_CLAIM = """
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1)
if #due == 0 then return false end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), due[1])
return due[1]
"""
# Names the delivery ids: uuid5(namespace, task id) is the same on every machine, for every attempt.
DELIVERY_NAMESPACE = uuid.UUID("5e9c1d0a-6f2b-4c43-9a57-8d1f0f3b2a61")


def delivery_id(task_id: str) -> str:
    return str(uuid.uuid5(DELIVERY_NAMESPACE, task_id))


def redis_now(connection: redis.Redis) -> float:
    seconds, micros = connection.time()
    return seconds + micros / 1_000_000


def schedule(connection: redis.Redis, task_id: str, *, at: float | None = None) -> None:
    """Queue the webhook of a task that has just ended (harmless for a task without one).

    Call it after the task's final state is stored. Adding a task already
    waiting keeps the earlier time (``NX``), so a double call never delays it.
    """
    connection.zadd(DUE_KEY, {task_id: redis_now(connection) if at is None else at}, nx=True)


def pending_count(connection: redis.Redis) -> int:
    return int(connection.zcard(DUE_KEY))


def backoff_seconds(attempts: int) -> float:
    """Wait after the ``attempts``-th failed try: 2, 4, 8, ... seconds, never more than 60."""
    return min(MAX_BACKOFF_SECONDS, 2.0 ** max(1, attempts))


def public_base(settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = settings.host
    if host in ("", "0.0.0.0", "::"):  # a wildcard bind address means nothing to a receiver
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def standard_key(secret: str) -> bytes:
    """The Standard Webhooks signing key of ``SEGUE_WEBHOOK_SECRET`` (see the module doc)."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_") + "==")
    return secret.encode("utf-8")


def standard_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``webhook-signature`` value, made by the standardwebhooks library itself."""
    from standardwebhooks.webhooks import Webhook

    signed_at = datetime.fromtimestamp(int(timestamp), tz=timezone.utc)
    return Webhook(standard_key(secret)).sign(delivery_id, signed_at, body.decode("utf-8"))


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Segue-Signature`` value: HMAC-SHA256 over ``timestamp + "." + body``."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


# -- one HTTP attempt -----------------------------------------------------------

class Refused(Exception):
    """The URL may not be called at all (bad scheme, non-public address)."""


@dataclass
class Attempt:
    status: int | None  # HTTP status, None when no answer came
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


def resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses to connect to, in resolver order; raises ``Refused`` if any answer is non-public."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise OSError(f"could not resolve {host}: {exc}") from None
    addresses = [ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]) for *_rest, sockaddr in answers]
    if not addresses:
        raise OSError(f"could not resolve {host}")
    if not allow_private:
        for address in addresses:
            if is_forbidden_address(address):
                raise Refused(f"refusing to call {host}: it resolves to a non-public address ({address})")
    return list(dict.fromkeys(str(a) for a in addresses))


def _open_socket(addresses: list[str], port: int, timeout: float) -> socket.socket:
    """Like ``socket.create_connection``, but only over addresses already checked: no second look-up."""
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            error = exc
    raise error or OSError("no address to connect to")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, addresses: list[str], port: int, timeout: float):
        super().__init__(addresses[0], port, timeout=timeout)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = _open_socket(self._addresses, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """The certificate is verified against the URL's host name, not the address connected to."""

    def __init__(self, addresses: list[str], port: int, server_name: str, timeout: float,
                 context: ssl.SSLContext):
        super().__init__(addresses[0], port, timeout=timeout, context=context)
        self._addresses = addresses
        self._server_name = server_name

    def connect(self) -> None:
        sock = _open_socket(self._addresses, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_private: bool,
         tls_context: ssl.SSLContext | None = None) -> Attempt:
    """POST once, never following redirects. Raises ``Refused`` for URLs that must not be called.

    ``tls_context``: certificate checks for https (default: the system's trusted CAs).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise Refused("the webhook must be an http(s) URL with a host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise Refused("the webhook URL has an invalid port") from None
    host = parts.hostname
    try:
        addresses = resolve(host, port, allow_private)
    except OSError as exc:
        return Attempt(None, str(exc))
    if scheme == "https":
        connection: http.client.HTTPConnection = _PinnedHTTPSConnection(addresses, port, host, timeout,
                                                                   tls_context or ssl.create_default_context())
    else:
        connection = _PinnedHTTPConnection(addresses, port, timeout)
    default_port = 443 if scheme == "https" else 80
    host_header = (f"[{host}]" if ":" in host else host) + ("" if port == default_port else f":{port}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body,
                           headers=dict(headers, Host=host_header, **{"Content-Length": str(len(body))}))
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        return Attempt(response.status, None if response.status < 300 else f"HTTP {response.status}")
    except (OSError, http.client.HTTPException) as exc:  # timeouts, refusals, resets, garbage answers
        return Attempt(None, f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__)
    finally:
        connection.close()


# -- delivery ---------------------------------------------------------------------

def post_within(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_private: bool) -> Attempt:
    """``post`` with a limit on the whole attempt, not only on each socket operation.

    A receiver that trickles its answer a byte at a time would otherwise hold
    the delivery thread (and every other task's webhook behind it) for as long
    as it likes. The attempt runs in a daemon thread; past twice ``timeout``
    it counts as a timeout (retried later) and the thread is left to end when
    the receiver finally closes.
    """
    outcome: list = []

    def attempt() -> None:
        try:
            outcome.append(post(url, body, headers, timeout=timeout, allow_private=allow_private))
        except Refused as exc:
            outcome.append(exc)

    worker = threading.Thread(target=attempt, name="segue-webhook-post", daemon=True)
    worker.start()
    worker.join(2 * timeout + 1)
    if not outcome:
        return Attempt(None, f"TimeoutError: no complete answer within {2 * timeout + 1:g} s")
    if isinstance(outcome[0], Refused):
        raise outcome[0]
    return outcome[0]


def _claim(services: Services, now: float | None, lease: float) -> str | None:
    claim = services.redis.register_script(_CLAIM)
    member = claim(keys=[DUE_KEY], args=["" if now is None else repr(now), repr(lease)])
    if member is None:
        return None
    return member.decode() if isinstance(member, bytes) else str(member)


def _payload(services: Services, doc: dict) -> bytes:
    view = task_view(services, doc, include_audio=False)
    view["audio_url"] = f"{public_base(services.settings)}/tasks/{doc['_id']}/audio"
    return json.dumps(view, separators=(",", ":")).encode("utf-8")


def _ended_at(doc: dict, fallback: float) -> float:
    ended = doc.get("completed_at")
    return ended.timestamp() if ended is not None else fallback


def deliver_one(services: Services, task_id: str, *, now: float) -> str | None:
    """Make one attempt for a claimed task; returns the outcome recorded (None: nothing to send)."""
    settings = services.settings
    doc = services.store.get_task(task_id)
    url = (doc or {}).get("request", {}).get("webhook")
    if doc is None or not url or doc.get("status") not in FINAL_STATES:
        services.redis.zrem(DUE_KEY, task_id)
        return None
    state = dict(doc.get(DOC_FIELD) or {})
    if state.get("status") in ("delivered", "failed"):  # already settled (a housekeeper re-added it)
        services.redis.zrem(DUE_KEY, task_id)
        return None
    faults.hold("webhook", task_id)
    delivery = state.get("delivery_id") or delivery_id(task_id)
    attempts = int(state.get("attempts") or 0) + 1
    body = _payload(services, doc)
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "X-Segue-Event": f"task.{doc['status']}", "X-Segue-Delivery": delivery,
               "X-Segue-Timestamp": timestamp,
               # Standard Webhooks: the id stays the same on every retry, so receivers drop repeats by it.
               "webhook-id": delivery, "webhook-timestamp": timestamp}
    if settings.webhook_secret:
        headers["X-Segue-Signature"] = sign(settings.webhook_secret, timestamp, body)
        headers["webhook-signature"] = standard_signature(settings.webhook_secret, delivery, timestamp, body)
    try:
        attempt = post_within(url, body, headers, timeout=settings.webhook_timeout,
                              allow_private=settings.allow_private_urls)
    except Refused as exc:
        attempt, retry = Attempt(None, str(exc)), False
    else:
        retry = attempt.retryable
    faults.hold("webhook-sent", task_id)
    next_try = now + backoff_seconds(attempts)
    if attempt.delivered:
        outcome = "delivered"
    elif retry and next_try <= _ended_at(doc, now) + settings.webhook_retry_seconds:
        outcome = "pending"
    else:
        outcome = "failed"
    services.store.update(task_id, {DOC_FIELD: {
        "status": outcome, "attempts": attempts, "last_status": attempt.status, "last_error": attempt.error,
        "delivery_id": delivery}})
    if outcome == "pending":
        services.redis.zadd(DUE_KEY, {task_id: next_try}, xx=True)
    else:
        services.redis.zrem(DUE_KEY, task_id)
    metrics.record_webhook(services.redis, outcome)
    level = logging.WARNING if outcome == "failed" else logging.INFO
    log.log(level, "webhook of task %s: %s (attempt %d, %s)", task_id, outcome, attempts,
            attempt.status or attempt.error)
    return outcome


def attempt_seconds(settings) -> float:
    """The longest one attempt can take: ``post_within``'s limit plus recording its outcome."""
    return 2 * settings.webhook_timeout + 1 + RECORD_SECONDS


def deliver_due(services: Services, *, now: float | None = None,
                stop_event: threading.Event | None = None) -> int:
    """Attempt every delivery due at ``now``; returns how many attempts were made.

    Once ``stop_event`` is set no further entry is claimed: a stopping worker
    only finishes the attempt it holds (see ``run_delivery_loop``).
    """
    lease = 2 * services.settings.webhook_timeout + 30
    made = 0
    for _ in range(MAX_PER_CALL):
        if stop_event is not None and stop_event.is_set():
            break
        task_id = _claim(services, now, lease)
        if task_id is None:
            break
        moment = redis_now(services.redis) if now is None else now
        try:
            if deliver_one(services, task_id, now=moment) is not None:
                made += 1
        except Exception:
            # Leave the entry claimed: its lease runs out and it is tried again.
            log.exception("webhook delivery of task %s crashed", task_id)
    return made


def run_delivery_loop(services: Services, stop_event: threading.Event, interval: float = 1.0) -> None:
    """Body of a worker thread: deliver due webhooks until ``stop_event`` is set.

    A stopping process must join this thread (for up to ``attempt_seconds``)
    before it exits: an attempt cut off between the receiver's 2xx and the
    record of it is sent again by another worker once its lease runs out.
    """
    while not stop_event.is_set():
        try:
            deliver_due(services, stop_event=stop_event)
        except Exception as exc:  # Redis/Mongo blips must not end the thread
            log.warning("webhook delivery pass failed: %s", exc)
        stop_event.wait(interval)
