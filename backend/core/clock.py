"""UTC timestamps, stored as datetimes in MongoDB and shown as ISO 8601 in the API."""

from datetime import datetime, timezone


def utcnow() -> datetime:
    # MongoDB keeps millisecond precision; trimming here keeps round-trips equal.
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # pymongo returns naive UTC datetimes by default
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat().replace("+00:00", "Z")
