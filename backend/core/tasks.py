"""The task vocabulary: the words a task's life is spelled in, once for API, worker and store.

A task is ``queued`` until a worker claims it, ``processing`` while it runs and
ends exactly once as ``completed``, ``failed`` or ``canceled``. Results are
stored in one of two formats, each with one content type. The limits on a
task's lengths and seed are here too.
"""

from __future__ import annotations

from enum import Enum


class TaskStatus(str, Enum):
    queued = "queued"
    processing = "processing"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"


#: Every status, in the order of a task's life (metrics report them in this order).
STATUSES: tuple[str, ...] = tuple(s.value for s in TaskStatus)
#: Statuses a task ends in, and ends in once (the store refuses a second end).
FINAL_STATES: tuple[str, ...] = (TaskStatus.completed.value, TaskStatus.failed.value, TaskStatus.canceled.value)
#: Statuses of a task that still holds a place: counted against ``SEGUE_MAX_QUEUED_PER_KEY``.
ACTIVE_STATUSES: tuple[str, ...] = (TaskStatus.queued.value, TaskStatus.processing.value)

#: Result formats (``output_format``) and the content type each is stored and served with.
CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}

# Limits: the API refuses requests past them and the worker relies on them.
#: MusicGen's context: the longest prompt, and what one generation window covers.
WINDOW_SECONDS = 30.0
#: The longest result; past one window it is generated window by window (``worker.engine.windows``).
MAX_TOTAL_SECONDS = 120.0
#: Seeds are stored and handed to torch as signed 64-bit integers.
MAX_SEED = 2**63 - 1
