"""A small forward proxy that refuses to connect to non-public addresses (SSRF).

``fetch_section`` points yt-dlp (its ``proxy`` option), the ffmpeg that
yt-dlp launches for section downloads (yt-dlp sets ``http_proxy`` in its
environment) and our ffprobe duration probe (``-http_proxy``) at this proxy,
so every HTTP(S) connection they open, including every redirect hop (a
redirect is a new request), passes through ``EgressProxy``:

- ``GET http://host/...`` (any method, absolute URI): forwarded as a new
  request with ``Connection: close``; the answer is relayed back.
- ``CONNECT host:port`` (https): bytes are tunnelled; TLS stays end to end
  between the client and the origin.

For each request the proxy resolves the host itself, refuses with HTTP 403
when *any* address it resolves to is non-public (the rules are
``backend.core.urlguard``'s), and otherwise connects to exactly an address it
checked, so a DNS answer cannot change between the check and the connection
(DNS rebinding). Refusals are logged and kept in ``EgressProxy.refusals`` so
the caller can report the reason instead of a bare "HTTP 403".

The policy (how to resolve, which addresses are allowed) is injectable so
tests can make a name count as public while it points at a loopback server.

With an ``upstream`` proxy (``SEGUE_YTDLP_PROXY``, for hosts that YouTube
refuses), the checks stay here and only the last leg changes: the guard
still resolves and checks every host, then asks the upstream proxy for
exactly a checked address (``CONNECT 203.0.113.7:443``, or an absolute
``http://203.0.113.7/...`` URI with the original ``Host`` header), so the
upstream never resolves a name the guard did not check.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import logging
import select
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Callable
from urllib.parse import unquote, urlsplit

from backend.core.urlguard import is_forbidden_address

log = logging.getLogger(__name__)

REFUSED_HEADER = "X-Segue-Egress-Refused"
_CHUNK = 64 * 1024
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authorization",
    "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade",
})


class EgressRefused(Exception):
    """The destination is not one the server may connect to."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _system_resolve(host: str) -> list[str]:
    answers = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]) for _f, _t, _p, _c, sockaddr in answers]


def _public_address(address: str) -> bool:
    return not is_forbidden_address(ipaddress.ip_address(address.split("%", 1)[0]))


@dataclass(frozen=True)
class EgressPolicy:
    """How to resolve a host, and which resolved addresses may be connected to."""

    resolve: Callable[[str], list[str]] = field(default=_system_resolve)
    allowed: Callable[[str], bool] = field(default=_public_address)

    def check(self, host: str) -> list[str]:
        """The addresses to connect to for ``host``, or raise ``EgressRefused``.

        Every address is checked: one non-public answer refuses the host.
        """
        host = host.strip("[]").lower()
        if not host:
            raise EgressRefused("the request names no host", status=400)
        try:
            addresses = list(self.resolve(host))
        except (OSError, UnicodeError, ValueError):
            addresses = []
        if not addresses:
            raise EgressRefused(f"could not resolve host {host}", status=502)
        for address in addresses:
            try:
                ok = self.allowed(address)
            except ValueError:
                ok = False
            if not ok:
                raise EgressRefused(
                    f"refusing to fetch from {host}: it resolves to a non-public address ({address})")
        return addresses


def _connect(addresses: list[str], port: int, timeout: float) -> socket.socket:
    last: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            last = exc
    raise last or OSError("no address to connect to")


def _authority(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True)
class Upstream:
    """An http:// proxy the guard forwards checked connections to."""

    host: str
    port: int
    authorization: str | None = None  # a Proxy-Authorization header value

    @classmethod
    def parse(cls, url: str) -> "Upstream":
        parts = urlsplit(url.strip())
        if parts.scheme.lower() != "http" or not parts.hostname:
            raise ValueError(f"{url!r} is not an http://host:port proxy URL")
        authorization = None
        if parts.username is not None:
            secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            authorization = "Basic " + base64.b64encode(secret).decode("ascii")
        return cls(parts.hostname, parts.port or 8080, authorization)

    def tunnel(self, addresses: list[str], port: int, timeout: float) -> socket.socket:
        """A socket tunnelled by the upstream to the first checked address that answers."""
        last: OSError | None = None
        for address in addresses:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
            try:
                target = _authority(address, port)
                request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
                if self.authorization:
                    request += f"Proxy-Authorization: {self.authorization}\r\n"
                sock.sendall((request + "\r\n").encode("ascii"))
                status = _read_connect_answer(sock)
                if status == 200:
                    return sock
                last = OSError(f"the upstream proxy answered {status} to CONNECT {target}")
            except OSError as exc:
                last = exc
            sock.close()
        raise last or OSError("no address to connect to")


def _read_connect_answer(sock: socket.socket) -> int:
    """Read the upstream's answer to CONNECT up to its blank line; return the status code."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > 16 * 1024:
            raise OSError("the upstream proxy sent an oversized answer to CONNECT")
        chunk = sock.recv(1)  # byte by byte: nothing past the blank line belongs to us
        if not chunk:
            raise OSError("the upstream proxy closed the connection during CONNECT")
        data += chunk
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise OSError("the upstream proxy sent a malformed answer to CONNECT") from None


class _Handler(BaseHTTPRequestHandler):
    server: "_ProxyServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        log.debug("egress proxy: " + format, *args)

    # -- refusals -----------------------------------------------------------
    def _refuse(self, exc: EgressRefused, target: str) -> None:
        if exc.status == 403:
            log.warning("egress proxy refused %s %s: %s", self.command, target, exc.message)
            self.server.owner._record_refusal(exc.message)
        body = (exc.message + "\n").encode("utf-8", "replace")
        self.close_connection = True
        try:
            self.send_response_only(exc.status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            if exc.status == 403:
                self.send_header(REFUSED_HEADER, exc.message.encode("ascii", "replace").decode())
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass

    # -- https: CONNECT host:port ---------------------------------------------
    def do_CONNECT(self):
        target = self.path
        host, _, port_text = target.rpartition(":")
        try:
            port = int(port_text)
            if not host or not 0 < port < 65536:
                raise ValueError
        except ValueError:
            self._refuse(EgressRefused(f"malformed CONNECT target {target!r}", 400), target)
            return
        owner = self.server.owner
        try:
            addresses = owner.policy.check(host)
            if owner.upstream is not None:
                upstream = owner.upstream.tunnel(addresses, port, owner.timeout)
            else:
                upstream = _connect(addresses, port, owner.timeout)
        except EgressRefused as exc:
            self._refuse(exc, target)
            return
        except OSError as exc:
            self._refuse(EgressRefused(f"could not connect to {host}: {exc}", 502), target)
            return
        self.close_connection = True
        with upstream:
            self.send_response_only(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            self._tunnel(upstream)

    def _tunnel(self, upstream: socket.socket) -> None:
        client = self.connection
        sockets = [client, upstream]
        idle = self.server.owner.timeout
        while True:
            readable, _, broken = select.select(sockets, [], sockets, idle)
            if broken or not readable:
                return
            for source in readable:
                sink = upstream if source is client else client
                try:
                    data = source.recv(_CHUNK)
                    if not data:
                        return
                    sink.sendall(data)
                except OSError:
                    return

    # -- plain http: METHOD http://host/path ----------------------------------
    def _forward(self):
        target = self.path
        parts = urlsplit(target)
        if parts.scheme.lower() != "http" or not parts.hostname:
            self._refuse(EgressRefused(
                "this proxy forwards only absolute http:// URLs (use CONNECT for https)", 400), target)
            return
        try:
            port = parts.port or 80
        except ValueError:
            self._refuse(EgressRefused(f"invalid port in {target!r}", 400), target)
            return
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._refuse(EgressRefused("chunked request bodies are not supported", 411), target)
            return
        owner = self.server.owner
        try:
            addresses = owner.policy.check(parts.hostname)
            if owner.upstream is not None:
                upstream = _connect([owner.upstream.host], owner.upstream.port, owner.timeout)
            else:
                upstream = _connect(addresses, port, owner.timeout)
        except EgressRefused as exc:
            self._refuse(exc, target)
            return
        except OSError as exc:
            self._refuse(EgressRefused(f"could not connect to {parts.hostname}: {exc}", 502), target)
            return

        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else None
        dropped = _HOP_BY_HOP | {
            token.strip().lower() for token in (self.headers.get("Connection") or "").split(",")}
        headers = {}
        for name, value in self.headers.items():
            if name.lower() not in dropped:
                headers[name] = value
        if not any(name.lower() == "host" for name in headers):
            headers["Host"] = parts.netloc.rpartition("@")[2]
        headers["Connection"] = "close"
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if owner.upstream is not None:
            # Absolute URI naming the checked address; Host keeps the name for the origin.
            path = f"http://{_authority(addresses[0], port)}{path}"
            if owner.upstream.authorization:
                headers["Proxy-Authorization"] = owner.upstream.authorization

        connection = http.client.HTTPConnection(parts.hostname, port, timeout=self.server.owner.timeout)
        connection.sock = upstream  # exactly the address that was checked
        self.close_connection = True
        try:
            connection.request(self.command, path, body=body, headers=headers)
            response = connection.getresponse()
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Connection", "close")
            self.end_headers()
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                self.wfile.write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            log.debug("egress proxy: %s %s failed: %s", self.command, target, exc)
        finally:
            connection.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _forward


class _ProxyServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "EgressProxy"

    def handle_error(self, request, client_address):
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class EgressProxy:
    """The proxy on 127.0.0.1 at a random port; use as a context manager.

    >>> with EgressProxy() as proxy:
    ...     options["proxy"] = proxy.url
    """

    def __init__(self, policy: EgressPolicy | None = None, timeout: float = 30.0,
                 upstream: str | None = None) -> None:
        self.policy = policy or EgressPolicy()
        self.timeout = timeout
        self.upstream = Upstream.parse(upstream) if upstream else None
        self.refusals: list[str] = []
        self._lock = threading.Lock()
        self._server = _ProxyServer(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _record_refusal(self, message: str) -> None:
        with self._lock:
            self.refusals.append(message)

    def start(self) -> "EgressProxy":
        self._thread = threading.Thread(target=self._server.serve_forever, name="egress-proxy",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "EgressProxy":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
