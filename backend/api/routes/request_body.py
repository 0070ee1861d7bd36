"""Reading the JSON body of a request: any body that is not plain, sane JSON is a 400.

Flask's ``get_json`` lets two kinds of hostile body through as a 500: JSON
nested deeply enough to exhaust the parser's recursion (``RecursionError`` is
not a ``ValueError``), and numbers that do not fit a float (``1e999`` parses as
``inf``; a 400-digit integer overflows the moment it is made a float). This
parser refuses both, plus NaN/Infinity literals, duplicate keys (which value
would win is an accident of the parser), invalid UTF-8 and empty bodies, each
with a JSON 400 naming the problem. The Content-Type is not checked: the
gary4web clients did not always send one, and the body decides.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import request

from backend.core.errors import BadRequest

#: Deepest nesting of arrays/objects accepted. Segue's bodies are one object of scalars.
MAX_DEPTH = 32


class InvalidJson(BadRequest):
    code = "invalid_json"


def _reject_constant(name: str) -> Any:
    raise InvalidJson(f"the request body contains {name}, which is not a JSON number", code="invalid_number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJson(f"the number {text[:40]} does not fit a 64-bit float", code="invalid_number")
    return value


def _int(text: str) -> int:
    value = int(text)  # over 4300 digits: ValueError, reported as malformed JSON below
    try:
        float(value)
    except OverflowError:
        raise InvalidJson(f"the number {text[:40]}... ({len(text)} digits) does not fit a 64-bit float",
                          code="invalid_number") from None
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidJson(f"the request body repeats the key {key[:60]!r}", code="duplicate_key")
        out[key] = value
    return out


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_tree(value: Any) -> None:
    """Depth and strings of a parsed value, without recursion.

    JSON escapes can spell lone UTF-16 surrogates (``"\\ud800"``), which are no
    text: MongoDB (BSON is UTF-8) would refuse them at insert time, after the
    request was judged valid.
    """
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise InvalidJson("the request body contains a lone UTF-16 surrogate escape, which is not text",
                                  code="invalid_encoding")
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise _too_deep()
            if isinstance(item, dict):
                pending.extend((key, depth) for key in item)
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)


def _too_deep() -> InvalidJson:
    return InvalidJson(f"the request body is nested more than {MAX_DEPTH} levels deep", code="json_too_deep")


def parse_json(raw: bytes) -> Any:
    """The value of a JSON document, or an ``InvalidJson`` (400) saying why not."""
    if not raw or not raw.strip():
        raise InvalidJson("the request body is empty; send a JSON object (Content-Type: application/json)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"the request body is not valid UTF-8 (byte {exc.start})", code="invalid_encoding") from None
    try:
        value = json.loads(text, parse_float=_float, parse_int=_int, parse_constant=_reject_constant,
                           object_pairs_hook=_object)
    except InvalidJson:
        raise
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise InvalidJson(f"the request body is not valid JSON ({str(exc)[:120]})") from None
    _check_tree(value)
    return value


def json_body() -> Any:
    return parse_json(request.get_data(cache=True))
