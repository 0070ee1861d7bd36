"""The one table from error class to HTTP status: domain errors carry no status, the API decides it."""

import inspect

import pytest
import redis
from pymongo.errors import ConnectionFailure, PyMongoError

from backend.api import errors as api_errors
from backend.api.errorhandlers import TABLE, status_of
from backend.core import errors as core_errors


def _classes(module):
    return [c for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, core_errors.SegueError) and c.__module__ == module.__name__]


def test_domain_errors_carry_a_code_but_no_http_status():
    for cls in _classes(core_errors):
        assert not hasattr(cls, "status"), cls
        assert isinstance(cls.code, str) and cls.code


@pytest.mark.parametrize("exc, status, code", [
    (core_errors.BadRequest("x"), 400, "bad_request"),
    (core_errors.UrlRefused("x"), 400, "url_refused"),
    (core_errors.AudioDecodeError("x"), 400, "undecodable_audio"),
    (api_errors.Unauthorized("x", code="missing_api_key"), 401, "missing_api_key"),
    (api_errors.Forbidden("x", code="invalid_api_key"), 403, "invalid_api_key"),
    (core_errors.NotFound("x", code="task_not_found"), 404, "task_not_found"),
    (core_errors.Conflict("x", code="task_finished"), 409, "task_finished"),
    (core_errors.PayloadTooLarge("x"), 413, "payload_too_large"),
    (api_errors.TooManyRequests("x", retry_after=3), 429, "rate_limited"),
    (core_errors.ServiceUnavailable("x"), 503, "service_unavailable"),
    (core_errors.Busy("x", retry_after=2), 503, "busy"),
    (core_errors.TaskFailure("x"), 500, "task_failed"),
    (redis.ConnectionError("down"), 503, "queue_unavailable"),
    (ConnectionFailure("down"), 503, "store_unavailable"),
    (PyMongoError("odd"), 503, "store_error"),
])
def test_each_error_answers_with_its_status_and_code(exc, status, code):
    assert status_of(exc)[:2] == (status, code)


def test_every_error_class_is_answered_by_the_table():
    for cls in _classes(core_errors) + _classes(api_errors):
        assert any(parent in TABLE for parent in cls.__mro__), cls


def test_retry_after_is_whole_seconds_and_at_least_one():
    assert core_errors.Busy("x", retry_after=0.2).retry_after == 1
    assert api_errors.TooManyRequests("x", retry_after=15.9).retry_after == 15


def test_an_error_outside_the_table_is_not_guessed():
    with pytest.raises(LookupError):
        status_of(ValueError("not ours"))
