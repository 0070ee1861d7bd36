"""YouTube's refusals, told as a musician would want to hear them.

YouTube refuses to hand out a video for a handful of reasons, and yt-dlp
passes YouTube's own wording on inside an ``ExtractorError`` (or a
``GeoRestrictedError``), wrapped in a ``DownloadError``. Each reason below
becomes one sentence for the task's ``error`` field, with what the host can
do where something helps (``SEGUE_YTDLP_COOKIES``, ``SEGUE_YTDLP_PROXY``).
Matching is on YouTube's phrases, case-insensitively, first match wins.
"""

from __future__ import annotations

COOKIES_HINT = ("the host can set SEGUE_YTDLP_COOKIES to a cookies.txt exported from a signed-in browser")
PROXY_HINT = "the host can set SEGUE_YTDLP_PROXY to an upstream proxy"
NOT_IN_COUNTRY = (f"This video is not available in the server's country. Send the clip itself instead, or {PROXY_HINT} "
                  "in a country where it plays.")

# (phrases YouTube uses, what we say). Order matters: "sign in to confirm your age"
# is an age check, not a bot check, and a members-only page also says "sign in".
_REFUSALS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("confirm your age", "age-restricted", "age restricted", "inappropriate for some users"),
     "This video is age-restricted on YouTube, so it needs a signed-in adult account. "
     f"Send the clip itself instead, or {COOKIES_HINT}."),
    (("not a bot", "captcha"),
     "YouTube asked this server to sign in to prove it is not a bot, so the video could not be downloaded. "
     f"Try again later or send the clip itself; {COOKIES_HINT}, or {PROXY_HINT}."),
    (("members-only", "members only", "join this channel", "available to this channel's members"),
     "This video is for the channel's members only, so it cannot be downloaded. Send the clip itself instead "
     f"(a host whose account is a member can set SEGUE_YTDLP_COOKIES)."),
    (("private video", "this video is private"),
     "This video is private on YouTube, so it cannot be downloaded. Send the clip itself instead."),
    (("not made this video available in your country", "not available in your country",
      "not available from your location", "geo restriction", "blocked it in your country"),
     NOT_IN_COUNTRY),
    (("live event will begin", "premieres in", "premiere will begin", "waiting for scheduled",
      "this live event has not started", "is_upcoming"),
     "This live stream or premiere has not started yet. Try again once it has been published."),
    (("try again later", "rate-limited", "rate limited", "too many requests"),
     "YouTube is limiting how often this server may download right now. Try again in an hour, or send "
     f"the clip itself; {COOKIES_HINT}, or {PROXY_HINT}."),
    (("has been removed", "account associated with this video has been terminated", "no longer available",
      "video unavailable", "this video is unavailable", "this video isn't available", "does not exist"),
     "This video has been removed from YouTube or is unavailable."),
)


def _messages(exc: BaseException) -> list[str]:
    """The texts of ``exc`` and of what it wraps (yt-dlp's ``exc_info``), bounded."""
    texts, seen, current = [], set(), exc
    for _ in range(5):
        if current is None or id(current) in seen:
            break
        seen.add(id(current))
        texts.append(str(getattr(current, "orig_msg", None) or current))
        inner = (getattr(current, "exc_info", None) or (None, None))[1]
        current = inner if isinstance(inner, BaseException) else None
    return texts


def explain_refusal(exc: BaseException) -> str | None:
    """Our sentence for a YouTube refusal, or None when ``exc`` is not one."""
    from yt_dlp.utils import GeoRestrictedError

    chain = [exc]
    inner = (getattr(exc, "exc_info", None) or (None, None))[1]
    if isinstance(inner, BaseException):
        chain.append(inner)
    if any(isinstance(e, GeoRestrictedError) for e in chain):
        return NOT_IN_COUNTRY
    text = " ".join(_messages(exc)).lower().replace("\u2019", "'")
    for phrases, sentence in _REFUSALS:
        if any(phrase in text for phrase in phrases):
            return sentence
    return None
