"""The stream hub: one reader per task per process, shared by every listener (real Redis and MongoDB)."""

from __future__ import annotations

import threading

from backend.api.hub import Hub
from backend.core.chunks import Chunk, publish
from tests.conftest import wait_for
from tests.test_fuzz import REAL_AUDIO


def _queued(client) -> str:
    response = client.post("/continue", json={"audio": REAL_AUDIO, "prompt_duration": 1, "duration": 2})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["task_id"]


def _feed_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("feed-")]


def test_listeners_share_one_reader_and_late_ones_catch_up(client, services):
    task_id = _queued(client)
    hub = Hub(services, keepalive_seconds=3600)
    first, second = hub.listen(task_id), hub.listen(task_id)
    assert next(first) == ("progress", {"progress": 0.0})
    assert next(second) == ("progress", {"progress": 0.0})
    assert hub.feeds() == 1 and len(_feed_threads()) == 1

    for seq in range(3):
        publish(services.redis, task_id, Chunk(seq, seq * 10, 32000, 1, bytes([seq]) * 40))
    got = {name: [next(listener) for _ in range(3)] for name, listener in (("first", first), ("second", second))}
    for items in got.values():
        assert [(kind, chunk.seq) for kind, chunk in items] == [("audio", 0), ("audio", 1), ("audio", 2)]
    # The same chunk objects: read from Redis once, handed to both.
    assert all(a[1] is b[1] for a, b in zip(got["first"], got["second"]))
    late = hub.listen(task_id)
    assert next(late)[0] == "progress"  # the one progress value so far
    assert [next(late)[1].seq for _ in range(3)] == [0, 1, 2]  # everything generated so far, from the start
    assert hub.feeds() == 1

    # The task ends: every listener gets the final event and stops; the feed goes away.
    assert client.post(f"/tasks/{task_id}/cancel").status_code == 200
    for listener in (first, second, late):
        kinds = [kind for kind, _ in listener]
        assert kinds[-1] == "canceled" and "audio" not in kinds
    wait_for(lambda: hub.feeds() == 0 and not _feed_threads(), timeout=60, message="the feed to end")


def test_the_reader_stops_when_its_last_listener_leaves(client, services):
    task_id = _queued(client)
    hub = Hub(services, keepalive_seconds=3600)
    listeners = [hub.listen(task_id) for _ in range(5)]
    for listener in listeners:
        next(listener)
    assert hub.feeds() == 1
    for listener in listeners[:-1]:
        listener.close()
    assert hub.feeds() == 1  # one listener is left
    listeners[-1].close()
    assert hub.feeds() == 0
    wait_for(lambda: not _feed_threads(), timeout=60, message="the reader to stop")
    # A new listener starts a fresh reader, which reads Redis from the start again.
    publish(services.redis, task_id, Chunk(0, 0, 32000, 1, b"\0" * 8))
    again = hub.listen(task_id)
    assert [next(again)[0] for _ in range(2)] == ["audio", "progress"]
    again.close()


def test_a_keepalive_comes_when_nothing_happens(client, services):
    task_id = _queued(client)
    hub = Hub(services, keepalive_seconds=0.2)
    listener = hub.listen(task_id)
    kinds = []
    for kind, _ in listener:  # keep-alives may come before the reader's first read ends
        kinds.append(kind)
        if kind == "progress":
            break
    assert set(kinds) <= {"keepalive", "progress"}
    # Nothing else will happen to this queued task: the next item is a keep-alive, however long it takes.
    assert next(listener) == ("keepalive", None)
    listener.close()


def test_only_a_listener_that_wants_audio_marks_the_task_listened(client, services):
    # The worker decodes audio chunks only for a task marked as listened to: a progress-only follower
    # (/events?audio=0, a status badge) must not cost it EnCodec decodes; one that wants audio must.
    from backend.core.chunks import LISTENING_KEY, is_listened

    task_id = _queued(client)
    hub = Hub(services, keepalive_seconds=3600)
    progress_only = hub.listen(task_id, with_audio=False)
    assert next(progress_only)[0] == "progress"
    assert not is_listened(services.redis, task_id)
    with_audio = hub.listen(task_id)
    assert next(with_audio)[0] == "progress"
    wait_for(lambda: is_listened(services.redis, task_id), timeout=30, message="the task marked listened")
    assert 0 < services.redis.ttl(LISTENING_KEY.format(task_id)) <= 5  # it lapses when nobody refreshes it
    with_audio.close()
    progress_only.close()


def test_an_unknown_task_raises_not_found_and_leaves_no_feed(client, services):
    import pytest

    from backend.core.errors import NotFound
    from backend.core.ids import new_task_id

    hub = Hub(services, keepalive_seconds=3600)
    for task_id in (new_task_id(), "not a task id"):  # well-formed but stored nowhere; malformed (no read at all)
        with pytest.raises(NotFound):
            hub.open(task_id)
    wait_for(lambda: hub.feeds() == 0 and not _feed_threads(), timeout=30, message="no feed left")


def test_listeners_arriving_together_share_the_feeds_one_read(client, services):
    # Opened before the feed's read returns or after: either way the task is read once for all of them.
    from pymongo import MongoClient

    task_id = _queued(client)
    with MongoClient(services.settings.mongo_url) as mongo:
        def queries() -> int:
            return int(mongo.admin.command("serverStatus")["opcounters"]["query"])

        hub = Hub(services, keepalive_seconds=3600)
        before = queries()
        listeners = [hub.open(task_id) for _ in range(50)]
        read = queries() - before
        assert 1 <= read < 25, read  # one read plus the feed's checks (once a second); 50+ with a read each
        assert hub.feeds() == 1
        for listener in listeners:
            listener.close()
    assert hub.feeds() == 0
