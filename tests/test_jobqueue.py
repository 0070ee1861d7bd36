"""backend/core/jobqueue.py against a real Redis: what a job carries, places in line, removal."""

import importlib

import pytest
import redis
from rq.job import Job

from backend.core.jobqueue import JOB_FUNCTION, JobQueue


@pytest.fixture
def connection(settings):
    conn = redis.Redis.from_url(settings.redis_url)
    yield conn
    conn.close()


@pytest.fixture
def queue(connection):
    return JobQueue(connection, "segue-unit", job_timeout=123)


def test_a_job_carries_only_the_task_id_by_dotted_name(queue, connection):
    assert queue.enqueue("task-1") == "task-1"  # the job id defaults to the task id
    job = Job.fetch("task-1", connection=connection)
    assert job.func_name == JOB_FUNCTION == "worker.serving.jobs.run_task"
    assert job.args == ("task-1",) and job.kwargs == {}
    assert job.timeout == 123
    assert job.description == "segue task task-1"
    assert job.get_status() == "queued"
    # The job hash holds no audio and no request: its serialized call is tiny.
    assert len(connection.hget(job.key, "data")) < 200


def test_the_dotted_name_is_the_workers_job_function():
    module, _, name = JOB_FUNCTION.rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))


def test_a_retry_gets_its_own_job_id(queue, connection):
    queue.enqueue("task-1")
    assert queue.enqueue("task-1", job_id="task-1-r1") == "task-1-r1"
    retry = Job.fetch("task-1-r1", connection=connection)
    assert retry.args == ("task-1",)  # still the same task
    assert queue.queue.get_job_ids() == ["task-1", "task-1-r1"]


def test_positions_are_one_based_and_at_front_jumps_the_line(queue):
    for task_id in ("a", "b", "c"):
        queue.enqueue(task_id)
    assert [queue.position(j) for j in ("a", "b", "c")] == [1, 2, 3]
    queue.enqueue("urgent", at_front=True)
    assert queue.position("urgent") == 1 and queue.position("c") == 4
    assert queue.position("not-queued") is None
    assert queue.depth() == 4
    assert queue.name == "segue-unit"


def test_remove_takes_a_waiting_job_off_the_line(queue):
    for task_id in ("a", "b", "c"):
        queue.enqueue(task_id)
    assert queue.remove("b") is True
    assert queue.remove("b") is False  # gone already
    assert queue.remove("never-queued") is False
    assert queue.queue.get_job_ids() == ["a", "c"]
    assert queue.position("c") == 2 and queue.depth() == 2
    assert queue.job_status("b") == "queued"  # RQ's record stays; only its place in line went


def test_job_status_of_an_unknown_job_is_none(queue):
    assert queue.job_status("nobody") is None


def test_queues_of_different_names_do_not_share_jobs(queue, connection):
    other = JobQueue(connection, "segue-other", job_timeout=5)
    queue.enqueue("a")
    other.enqueue("b")
    assert queue.queue.get_job_ids() == ["a"] and other.queue.get_job_ids() == ["b"]
    assert Job.fetch("b", connection=connection).timeout == 5
