"""The engine's per-step callbacks get their Redis answers from the side-call thread, never waiting for one."""

from __future__ import annotations

import threading
import uuid

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from backend.core import cancellation, chunks
from backend.core.progress import ProgressStore
from backend.dev.embedded import free_port
from tests.conftest import wait_for
from worker.serving import side_calls
from worker.serving.chunk_publisher import ChunkPublisher
from worker.serving.progress_reporter import ProgressReporter


def _connection(redis_server) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


def test_a_polled_question_is_asked_at_once_and_again_each_period(redis_server):
    connection = _connection(redis_server)
    task_id = uuid.uuid4().hex
    requested = side_calls.Polled(lambda: cancellation.is_requested(connection, task_id), 0.05, initial=False,
                                  on_error=None, what="a test flag")
    cancellation.request_cancel(connection, task_id)
    wait_for(requested.value, timeout=10, interval=0.01, message="the cancel request to be seen")
    connection.delete(cancellation.KEY.format(task_id))
    wait_for(lambda: not requested.value(), timeout=10, interval=0.01, message="the flag's removal to be seen")


def test_the_caller_never_waits_for_an_answer_in_flight():
    asked, answer = threading.Event(), threading.Event()

    def slow_question() -> bool:
        asked.set()
        answer.wait(30)  # held until the test lets it answer
        return True

    polled = side_calls.Polled(slow_question, 0.0, initial=False, on_error=None, what="a slow question")
    assert asked.wait(10)
    # The question is in flight and held: every call returns the last answer at once, and asks nothing new.
    assert [polled.value() for _ in range(100)] == [False] * 100
    answer.set()
    wait_for(polled.value, timeout=10, interval=0.01, message="the answer to arrive")


def test_a_redis_error_keeps_the_last_answer_or_gives_the_safe_one():
    # Refused at once, no retries: redis-py's default retries would hold the side-call thread for seconds.
    unreachable = redis.Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    keeps = side_calls.Polled(lambda: cancellation.is_requested(unreachable, "t"), 0.0, initial=False,
                              on_error=None, what="a cancel flag")
    safe = side_calls.Polled(lambda: chunks.is_listened(unreachable, "t"), 0.0, initial=False, on_error=True,
                             what="a listener")
    wait_for(safe.value, timeout=30, interval=0.01, message="the safe answer after the error")
    side_calls.submit(lambda: None).result(30)  # the questions asked before it have been answered
    assert keeps.value() is False


def test_a_listener_arriving_is_seen_by_the_publisher(redis_server):
    connection = _connection(redis_server)
    task_id = uuid.uuid4().hex
    publisher = ChunkPublisher(connection, task_id, 32000)
    assert publisher.wanted() is False
    chunks.mark_listening(connection, task_id)
    wait_for(publisher.wanted, timeout=10, interval=0.05, message="the listener to be seen")


def test_progress_written_in_the_background_reaches_redis_and_only_rises(redis_server):
    connection = _connection(redis_server)
    store = ProgressStore(connection)
    task_id = uuid.uuid4().hex
    reporter = ProgressReporter(store, task_id, min_step=1.0, min_interval=0.0)
    on_step = reporter.stage(20.0, 90.0, in_background=True)
    for step in range(0, 101):
        on_step(step, 100)
    wait_for(lambda: store.get(task_id) is not None and store.get(task_id) >= 20.0, timeout=10, interval=0.01,
             message="a background write to land")
    reporter.report(95.0, force=True)  # the next stage writes at once, on its own thread
    assert store.get(task_id) == 95.0
    side_calls.submit(lambda: None).result(10)  # every background write made before it has landed
    assert store.get(task_id) == 95.0  # a late background write never lowers it
