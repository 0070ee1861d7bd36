"""Task identifiers: unguessable, because knowing an id grants access to its result."""

import re
import secrets

# 24 random bytes = 192 bits, URL-safe, also a valid RQ job id.
_TOKEN_BYTES = 24
TASK_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def new_task_id() -> str:
    return secrets.token_urlsafe(_TOKEN_BYTES)


def looks_like_task_id(value: str) -> bool:
    return bool(TASK_ID_PATTERN.match(value or ""))
