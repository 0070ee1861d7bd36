"""Decide which media URLs the server is willing to fetch.

Two checks, used by the API (early, for a clear 400) and by the worker
(again, right before fetching, because DNS answers can change in between):

- ``normalise_media_url`` rejects anything that is not an http(s) URL with a
  host, and rewrites the many spellings of a YouTube video link to one
  canonical form so that playlists, timestamps and tracking parameters never
  reach yt-dlp.
- ``check_url_allowed`` refuses hosts that resolve to addresses a public
  service must never be tricked into calling (SSRF): loopback, private
  networks, link-local, cloud metadata endpoints and the like.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import parse_qs, urlsplit

from backend.core.errors import UrlRefused

_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_YOUTUBE_HOSTS = frozenset({"youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com"})
_SHORT_HOSTS = frozenset({"youtu.be", "www.youtu.be"})
# Path prefixes under which the video id is the next path segment.
_ID_PATH_PREFIXES = ("shorts", "embed", "live", "v")

# Metadata endpoints are already link-local / unique-local, but they are named
# here so the refusal survives any future loosening of the generic rules.
_METADATA_ADDRESSES = frozenset({
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
})


def _canonical_youtube(video_id: str) -> str:
    return f"https://www.youtube.com/watch?v={video_id}"


def _youtube_id(host: str, path: str, query: str) -> str | None:
    segments = [s for s in path.split("/") if s]
    if host in _SHORT_HOSTS:
        return segments[0] if segments else None
    if host not in _YOUTUBE_HOSTS:
        return None
    if segments[:1] == ["watch"]:
        values = parse_qs(query).get("v")
        return values[0] if values else None
    if len(segments) >= 2 and segments[0] in _ID_PATH_PREFIXES:
        return segments[1]
    return None


def normalise_media_url(url: str) -> str:
    """Return the URL to fetch, or raise ``UrlRefused`` explaining why not."""
    if not isinstance(url, str):
        raise UrlRefused("url must be a string")
    url = url.strip()
    if not url:
        raise UrlRefused("url is empty")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise UrlRefused(f"url is malformed: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UrlRefused("url must start with http:// or https://")
    if not host:
        raise UrlRefused("url has no host name")

    video_id = _youtube_id(host, parts.path, parts.query)
    if video_id is not None:
        if not _YOUTUBE_ID.match(video_id):
            raise UrlRefused("this YouTube link does not contain a valid video id")
        return _canonical_youtube(video_id)
    if host in _YOUTUBE_HOSTS or host in _SHORT_HOSTS:
        # A channel, playlist or search page: yt-dlp would try to fetch many
        # videos, and a continuation needs exactly one.
        raise UrlRefused("this YouTube link does not point to a single video")
    return url


def is_forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # An IPv4 address tunnelled in IPv6 (::ffff:127.0.0.1) is judged as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address in _METADATA_ADDRESSES
        or address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def check_url_allowed(url: str, allow_private: bool) -> None:
    """Raise ``UrlRefused`` when the URL's host resolves to a non-public address.

    Every address the host resolves to is checked, so a name that answers with
    both a public and a private address is refused. With ``allow_private`` the
    address checks are skipped (local use and tests), but the host must still
    resolve.
    """
    parts = urlsplit(url.strip())
    host = parts.hostname
    if not host:
        raise UrlRefused("url has no host name")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise UrlRefused("url has an invalid port") from None
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise UrlRefused(f"could not resolve host {host}") from None
    if not answers:
        raise UrlRefused(f"could not resolve host {host}")
    if allow_private:
        return
    for _family, _type, _proto, _canon, sockaddr in answers:
        # Drop an IPv6 zone id ("fe80::1%eth0") before parsing.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if is_forbidden_address(address):
            raise UrlRefused(
                f"refusing to fetch from {host}: it resolves to a non-public address ({address})"
            )
