"""Reading the JSON body of a request, with a clear 400 when it is not JSON."""

from typing import Any

from flask import request

from ..errors import BadRequest


def json_body() -> Any:
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise BadRequest("the request body must be JSON (Content-Type: application/json)", code="invalid_json")
    return body
