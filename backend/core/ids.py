"""Task identifiers: unguessable, because knowing an id grants access to its result."""

import re
import secrets

# 24 random bytes = 192 bits, URL-safe, also a valid RQ job id.
_TOKEN_BYTES = 24
TASK_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def new_task_id() -> str:
    # Never with a leading "-": an id is pasted into command lines (`segue status <id>`, scripts), where
    # it would read as an option (1 draw in 64 did; redrawing costs under 0.03 bits of the 192).
    while True:
        task_id = secrets.token_urlsafe(_TOKEN_BYTES)
        if not task_id.startswith("-"):
            return task_id


def looks_like_task_id(value: str) -> bool:
    return bool(TASK_ID_PATTERN.match(value or ""))
