"""The task vocabulary is spelled once: every other list of statuses is derived from it."""

from backend.api import responses
from backend.core import tasks


def test_statuses_in_the_order_of_a_tasks_life():
    assert tasks.STATUSES == ("queued", "processing", "completed", "failed", "canceled")


def test_active_and_final_statuses_split_the_statuses():
    assert set(tasks.ACTIVE_STATUSES) | set(tasks.FINAL_STATES) == set(tasks.STATUSES)
    assert not set(tasks.ACTIVE_STATUSES) & set(tasks.FINAL_STATES)


def test_the_response_models_use_the_same_enum():
    assert responses.TaskStatus is tasks.TaskStatus


def test_every_output_format_has_a_content_type():
    assert tasks.CONTENT_TYPES == {"wav": "audio/wav", "mp3": "audio/mpeg"}


def test_limits():
    assert tasks.WINDOW_SECONDS == 30.0 and tasks.MAX_TOTAL_SECONDS == 120.0 and tasks.MAX_SEED == 2**63 - 1
