"""The response models read what the routes answer, keep unknown keys, and refuse what breaks the contract."""

import pytest
from pydantic import ValidationError

from backend.api import responses


def test_submit_and_progress():
    answer = responses.SubmitResponse.model_validate({"task_id": "abc", "status": "queued", "queue_position": 2})
    assert answer.task_id == "abc" and answer.queue_position == 2
    assert responses.Progress.model_validate({"progress": "12.5"}).progress == 12.5
    with pytest.raises(ValidationError):
        responses.Progress.model_validate({"progress": 101})
    with pytest.raises(ValidationError):
        responses.SubmitResponse.model_validate({"task_id": "abc", "status": "completed", "queue_position": 0})


def test_task_needs_its_contract_keys_and_keeps_the_rest():
    doc = {"task_id": "t", "status": "completed", "progress": 100.0, "model": "m", "created_at": None,
           "started_at": None, "completed_at": None, "error": None, "queue_position": 0, "parent_task_id": None,
           "request": {}, "duration_seconds": 1.0, "sample_rate": 32000, "bpm": None, "something_new": 1}
    task = responses.Task.model_validate(doc)
    assert task.status is responses.TaskStatus.completed
    assert task.model_dump(mode="json", exclude_unset=True) == doc
    with pytest.raises(ValidationError):
        responses.Task.model_validate({k: v for k, v in doc.items() if k != "request"})


def test_models_and_error():
    offered = responses.Models.model_validate({"models": [{"id": "a", "description": None, "sample_rate": 32000,
                                                           "channels": 1, "loaded": False, "kind": "musicgen"}],
                                               "default": "a"})
    assert offered.models[0].id == "a" and offered.models[0].kind == "musicgen"
    assert responses.Error.model_validate({"error": "x", "code": "y"}).code == "y"
    with pytest.raises(ValidationError):
        responses.Error.model_validate({"error": "no code"})


def test_response_schemas_have_no_defaults_and_name_required_keys():
    schema = responses.Task.model_json_schema()
    assert schema["required"][:3] == ["task_id", "status", "progress"]
    assert all("default" not in prop for prop in schema["properties"].values())
    assert responses.Health.model_json_schema()["required"] == ["mongodb", "redis", "pytorch", "status"]
