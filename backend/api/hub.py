"""One reader per followed task per API process, fanned out to every listener of that task.

Without it, each ``/events`` or ``/stream`` connection ran its own
``live.follow``: one blocking Redis read and one MongoDB task check a second
per listener, so a thousand listeners of one task meant a thousand Redis
connections and a thousand document reads a second. Here the first listener of
a task starts a ``Feed`` (a thread; a greenlet under gunicorn's gevent worker,
which patches ``threading``) that runs ``live.follow`` once and appends what it
yields to a list; every listener, early or late, walks that list from the start
(late clients catch up on the audio, as before) and waits on a condition for
more. A late listener skips progress events that a newer one already replaced.
The feed stops when its task ends or its last listener leaves; the next listener
starts a fresh one, which reads Redis from the start again.

The feed also reads the task document once for all its listeners (``Hub.open``):
a route that loaded it per listener, to answer 404 before the stream starts,
made a flood of 1,000 listeners 1,000 MongoDB reads queued on the process's
connection pool (pymongo's 100 connections), and ``/health``'s ping waited
behind them. Listeners joining a feed that already runs read nothing; those
that arrive together while it starts wait for its one read.

Keep-alives are per listener (each connection needs its own to notice a client
that went away), so the feed does not record them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from backend.api import live
from backend.core.connections import Services
from backend.core.errors import NotFound
from backend.core.ids import looks_like_task_id
from backend.core.view import load_task

TERMINAL = frozenset({"completed", "failed", "canceled", "timeout"})


@dataclass
class Feed:
    hub: "Hub"
    task_id: str
    events: list[tuple[str, object]] = field(default_factory=list)
    last_progress: int = -1  # index of the newest progress event
    error: BaseException | None = None
    loaded: bool = False  # the task document was read: the task exists
    done: bool = False
    listeners: int = 0
    audio_listeners: int = 0  # listeners that want the audio: while there are any, the worker decodes chunks
    stopped: bool = False
    changed: threading.Condition = field(default_factory=threading.Condition)

    def run(self) -> None:
        try:
            doc = load_task(self.hub.services, self.task_id)  # once for every listener (404: NotFound)
            with self.changed:
                self.loaded = True
                self.changed.notify_all()
            # Once the last listener has left, the reader stops within one blocking read (live.BLOCK_MS).
            for kind, payload in live.follow(self.hub.services, self.task_id, doc=doc,
                                             should_stop=lambda: self.stopped,
                                             wants_audio=lambda: self.audio_listeners > 0):
                if kind == "keepalive":
                    continue
                with self.changed:
                    if kind == "progress":
                        self.last_progress = len(self.events)
                    self.events.append((kind, payload))
                    self.changed.notify_all()
                if kind in TERMINAL:
                    break
        except BaseException as exc:  # Redis or MongoDB trouble: every listener ends with it
            self.error = exc
        finally:
            with self.changed:
                self.done = True
                self.changed.notify_all()
            self.hub._forget(self)


class Hub:
    """The per-process registry of feeds; ``listen`` is what a stream route iterates."""

    def __init__(self, services: Services, keepalive_seconds: float = live.KEEPALIVE_SECONDS):
        self.services = services
        self.keepalive_seconds = keepalive_seconds
        self._feeds: dict[str, Feed] = {}
        self._lock = threading.Lock()

    def _join(self, task_id: str, with_audio: bool = True) -> Feed:
        with self._lock:
            feed = self._feeds.get(task_id)
            if feed is None or feed.done:
                feed = Feed(self, task_id)
                self._feeds[task_id] = feed
                threading.Thread(target=feed.run, name=f"feed-{task_id[:8]}", daemon=True).start()
            feed.listeners += 1
            feed.audio_listeners += int(with_audio)
            return feed

    def _leave(self, feed: Feed, with_audio: bool = True) -> None:
        with self._lock:
            feed.listeners -= 1
            feed.audio_listeners -= int(with_audio)
            if feed.listeners <= 0:
                feed.stopped = True  # the reader stops after its current read
                if self._feeds.get(feed.task_id) is feed:
                    del self._feeds[feed.task_id]

    def _forget(self, feed: Feed) -> None:
        with self._lock:
            if self._feeds.get(feed.task_id) is feed:
                del self._feeds[feed.task_id]

    def feeds(self) -> int:
        with self._lock:
            return len(self._feeds)

    def open(self, task_id: str, *, with_audio: bool = True) -> "Listening":
        """Join the task's feed now, once it has read the task: raises what that read raised (``NotFound``
        for an unknown task, a ``PyMongoError``), so a route can answer with an error before its stream starts.
        The caller must ``close()`` what it gets (iterated or not): that is how the feed knows it left."""
        if not looks_like_task_id(task_id):
            raise NotFound(f"no task with id {task_id!r}", code="task_not_found")  # no feed (no thread) for it
        feed = self._join(task_id, with_audio)
        with feed.changed:
            while not feed.loaded and not feed.done:
                feed.changed.wait()
            loaded, error = feed.loaded, feed.error
        if not loaded:
            self._leave(feed, with_audio)
            raise error if error is not None else RuntimeError(f"the feed of {task_id} ended before it started")
        return Listening(self._events(feed, with_audio), lambda: self._leave(feed, with_audio))

    def listen(self, task_id: str, *, with_audio: bool = True) -> Iterator[tuple[str, object]]:
        """What ``live.follow`` yields, shared with every other listener of the task in this process.
        ``with_audio``: this listener wants the audio chunks (the worker decodes them only for such)."""
        listening = self.open(task_id, with_audio=with_audio)
        try:
            yield from listening
        finally:
            listening.close()

    def _events(self, feed: Feed, with_audio: bool) -> Iterator[tuple[str, object]]:
        index = 0
        last_sent = time.monotonic()
        while True:
            with feed.changed:
                while index >= len(feed.events) and not feed.done:
                    remaining = self.keepalive_seconds - (time.monotonic() - last_sent)
                    if remaining <= 0:
                        break
                    feed.changed.wait(remaining)
                batch = feed.events[index:]
                skip_progress_before = feed.last_progress
                finished = feed.done and index + len(batch) >= len(feed.events)
                error = feed.error
            if batch:
                for offset, (kind, payload) in enumerate(batch):
                    if kind == "progress" and index + offset < skip_progress_before:
                        continue  # a newer progress value is already recorded
                    yield kind, payload
                index += len(batch)
                last_sent = time.monotonic()
                if batch[-1][0] in TERMINAL:
                    return
                continue
            if finished:
                if error is not None:
                    raise error
                return
            last_sent = time.monotonic()
            yield "keepalive", None


class Listening:
    """One listener's events (``Hub.open``); ``close()`` leaves the feed, once, whether iterated or not."""

    def __init__(self, events: Iterator[tuple[str, object]], leave):
        self._events = events
        self._leave = leave

    def __iter__(self):
        return self

    def __next__(self) -> tuple[str, object]:
        return next(self._events)

    def close(self) -> None:
        leave, self._leave = self._leave, None
        try:
            self._events.close()
        finally:
            if leave is not None:
                leave()


def hub_of(app_extensions: dict, services: Services) -> Hub:
    hub = app_extensions.get("segue_hub")
    if hub is None:
        hub = app_extensions.setdefault("segue_hub", Hub(services))
    return hub
