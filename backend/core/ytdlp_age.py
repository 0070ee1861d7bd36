"""How old the installed yt-dlp is, and when to say so.

yt-dlp's releases are named by their date, and YouTube changes often enough
that releases a couple of months old stop working. Shared by the worker
(which logs it at start and reports it in its heartbeat) and the maintenance
job (which warns about every worker's copy, whatever machine it runs on).
"""

from __future__ import annotations

from datetime import date

STALE_AFTER_DAYS = 60


def release_date(version: str) -> date | None:
    """yt-dlp's version ``2026.10.26`` (or ``2026.10.26.1``) as a date; None if it is not one."""
    parts = version.split(".")
    try:
        return date(int(parts[0]), int(parts[1]), int(parts[2]))
    except (IndexError, ValueError):
        return None


def age_days(version: str, today: date | None = None) -> int | None:
    released = release_date(version)
    if released is None:
        return None
    return ((today or date.today()) - released).days


def stale_warning(version: str | None, today: date | None = None) -> str | None:
    """A sentence for the logs when this yt-dlp release is old enough that YouTube may have broken it."""
    if not version:
        return None
    days = age_days(version, today)
    if days is None or days <= STALE_AFTER_DAYS:
        return None
    return (f"yt-dlp {version} is {days} days old; YouTube often breaks releases older than "
            f"{STALE_AFTER_DAYS} days: run `make update-ytdlp` (or rebuild the worker image)")
