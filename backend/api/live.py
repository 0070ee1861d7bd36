"""What ``/tasks/<id>/events`` and ``/tasks/<id>/stream`` send: a task followed live.

``follow`` yields ``("progress", {...})``, ``("audio", Chunk)``,
``("requeued", {...})`` when a running task goes back to the queue (its worker
stopped or died: its progress and audio start again, so a listener drops the
audio it has), and finally one ``("completed"|"failed"|"canceled", task document)``. It reads the task's
chunk stream from the start (late clients catch up), blocks on Redis for new
chunks, and checks the task document about once a second for its end. After
the end it drains the chunks that were still unread, so nothing is lost
between the last chunk and the final event.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

from backend.core import chunks
from backend.core.connections import Services
from backend.core.tasks import FINAL_STATES
from backend.core.view import current_progress, load_task, task_view

BLOCK_MS = 500
DOC_CHECK_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0


def follow(services: Services, task_id: str, *, doc: dict | None = None, max_seconds: float | None = None,
           should_stop: Callable[[], bool] | None = None,
           wants_audio: Callable[[], bool] | None = None) -> Iterator[tuple[str, object]]:
    """``should_stop``: checked after every Redis read (at least every ``BLOCK_MS``); True ends the generator.
    ``wants_audio``: whether a follower wants the audio now (default: yes); while one does, the task is
    marked as listened to, so its worker decodes chunks as it generates.
    ``doc``: the task document when the caller has just read it (the hub reads it once for all listeners)."""
    doc = load_task(services, task_id) if doc is None else doc  # 404 before the stream starts
    deadline = time.monotonic() + (max_seconds or services.settings.job_timeout + 600)
    after = "0-0"
    last_progress = None
    checked = 0.0
    last_sent = time.monotonic()
    marked = 0.0
    while True:
        if should_stop is not None and should_stop():
            return
        if (time.monotonic() - marked >= chunks.LISTENING_TTL_SECONDS / 2 and doc["status"] not in FINAL_STATES
                and (wants_audio is None or wants_audio())):
            chunks.mark_listening(services.redis, task_id)  # the worker decodes chunks while we follow
            marked = time.monotonic()
        final = doc["status"] in FINAL_STATES
        # Block only while the task runs; once it ended, take what is left and stop.
        for entry_id, chunk in chunks.read(services.redis, task_id, after, block_ms=None if final else BLOCK_MS):
            after = entry_id
            last_sent = time.monotonic()
            yield "audio", chunk
        progress = round(current_progress(services, doc), 2)
        if progress != last_progress:
            last_progress = progress
            last_sent = time.monotonic()
            yield "progress", {"progress": progress}
        if final:
            if chunks.read(services.redis, task_id, after, count=1):
                continue  # more chunks arrived meanwhile: drain before ending
            view = task_view(services, doc, include_audio=False)
            if doc["status"] == "completed":
                view["audio_url"] = f"/tasks/{task_id}/audio"
            yield doc["status"], view
            return
        now = time.monotonic()
        if now >= deadline:
            # Not an outcome: the task goes on; clients fall back to polling.
            yield "timeout", {"task_id": task_id, "status": doc["status"],
                              "error": "the event stream's time limit passed before the task ended"}
            return
        if now - last_sent >= KEEPALIVE_SECONDS:
            last_sent = now
            yield "keepalive", None
        if now - checked >= DOC_CHECK_SECONDS:
            checked = now
            previous = doc["status"]
            doc = load_task(services, task_id)
            if previous == "processing" and doc["status"] == "queued":
                after = "0-0"  # the next attempt streams from its start again
                yield "requeued", {"task_id": task_id, "status": "queued", "progress": 0.0,
                                   "reason": doc.get("last_error")}
