"""The request field types: how each kind of field is parsed and how it is described in JSON Schema.

Each type is an ``Annotated`` marker on a pydantic v2 field. Parsing is a
plain validator (pydantic's own coercion never runs) because the gary4web
clients send numbers as strings, ``"16-18"`` ranges and data URLs, and because
every refusal must carry today's error code and a sentence naming the field:
a refusal is a ``PydanticCustomError`` whose type is the error code and whose
message is that sentence (``schemas.parse`` turns it into a ``FieldError``).
The JSON Schema each marker emits is what ``/openapi.json`` publishes, so the
document and the parser live side by side.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationInfo
from pydantic_core import PydanticCustomError, core_schema

# What ``_number`` accepts as a numeric string: Python's float() syntax around
# optional whitespace (finite values only; bounds are checked on the value).
NUMERIC_STRING_PATTERN = r"^\s*[+-]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][+-]?\d+)?\s*$"
DURATION_RANGE_PATTERN = r"^\s*\d+(\.\d+)?(\s*-\s*\d+(\.\d+)?)?\s*$"
BASE64_PATTERN = r"^(data:[^,]*,)?[A-Za-z0-9+/_=\s-]+$"

#: Key a marker's JSON Schema uses to hand a sentence to ``describe_fields``: pydantic
#: replaces a type's own ``description`` with the field's, so the note travels aside.
NOTE_KEY = "x-segue-note"


def refuse(message: str, code: str = "invalid_field") -> PydanticCustomError:
    # The message goes in the context, not the template, so braces in a value stay literal.
    return PydanticCustomError(code, "{message}", {"message": message})


def _field_name(info: ValidationInfo | None) -> str:
    return (info.field_name if info is not None else None) or "value"


def _num(value: float) -> str:
    """A bound as people write it: 30, 0.01, 9223372036854775807 (not 9.22337e+18)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _number(name: str, raw: Any) -> float:
    # bool is an int subclass in Python but never a number in a request.
    if isinstance(raw, bool):
        raise refuse(f"'{name}' must be a number, got {raw!r}")
    if isinstance(raw, (int, float)):
        try:
            value = float(raw)
        except OverflowError:  # an integer too large for a float is no duration, seed or setting
            raise refuse(f"'{name}' is too large a number") from None
    elif isinstance(raw, str) and raw.strip():
        try:
            value = float(raw.strip())
        except ValueError:
            raise refuse(f"'{name}' must be a number, got {raw!r}") from None
    else:
        raise refuse(f"'{name}' must be a number, got {raw!r}")
    if not math.isfinite(value):
        raise refuse(f"'{name}' must be a finite number")
    return value


class _Marker:
    """Base of the markers: a plain validator with the field's name, and a JSON Schema."""

    #: Whether null or "" stand for the default (true for every kind but free text).
    blank_is_default = True

    def parse(self, name: str, raw: Any, info: ValidationInfo) -> Any:
        raise NotImplementedError

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def serialize(self, value: Any) -> Any:
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            lambda raw, info: self.parse(_field_name(info), raw, info),
            serialization=core_schema.plain_serializer_function_ser_schema(self.serialize, when_used="json"))

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return self.json_schema()


@dataclass(frozen=True)
class Number(_Marker):
    """A finite number, or a numeric string, within bounds; ``integer`` ones must be whole."""

    minimum: float
    maximum: float
    integer: bool = False

    def parse(self, name: str, raw: Any, info: ValidationInfo) -> float | int:
        value = _number(name, raw)
        if self.integer and value != int(value):
            raise refuse(f"'{name}' must be a whole number, got {raw!r}")
        if value < self.minimum:
            raise refuse(f"'{name}' must be at least {self.minimum:g}, got {value:g}")
        if value > self.maximum:
            raise refuse(f"'{name}' must be at most {self.maximum:g}, got {value:g}")
        return int(value) if self.integer else value

    def json_schema(self) -> dict[str, Any]:
        # JSON Schema cannot bound the value inside a string; the same bounds apply (see the note).
        kind = "integer" if self.integer else "number"
        return {"anyOf": [{"type": kind, "minimum": self.minimum, "maximum": self.maximum},
                          {"type": "string", "pattern": NUMERIC_STRING_PATTERN}],
                NOTE_KEY: f"Range {_num(self.minimum)}–{_num(self.maximum)}; a JSON number or a numeric string."}


@dataclass(frozen=True)
class Boolean(_Marker):
    def parse(self, name: str, raw: Any, info: ValidationInfo) -> bool:
        # Clients that send numbers as strings send booleans as strings too.
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "1", "false", "0"):
            return raw.strip().lower() in ("true", "1")
        raise refuse(f"'{name}' must be true or false, got {raw!r}")

    def json_schema(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false", "1", "0"]}]}


@dataclass(frozen=True)
class Text(_Marker):
    max_length: int
    blank_is_default = False  # "" is a text like any other

    def parse(self, name: str, raw: Any, info: ValidationInfo) -> str:
        if not isinstance(raw, str):
            raise refuse(f"'{name}' must be a string")
        if len(raw) > self.max_length:
            raise refuse(f"'{name}' is {len(raw)} characters long; the limit is {self.max_length}")
        return raw

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": self.max_length}


@dataclass(frozen=True)
class Choice(_Marker):
    """One of fixed ``choices``, or (``choices`` empty) of the ids in the validation context's ``models``.

    Without that context (the Python client) any model id passes: only the server knows what it offers.
    """

    choices: tuple[str, ...] = ()

    def parse(self, name: str, raw: Any, info: ValidationInfo) -> str:
        offered: Sequence[str] | None = self.choices or (info.context or {}).get("models")
        if not isinstance(raw, str) or (offered is not None and raw not in offered):
            raise refuse(f"'{name}' must be one of: {', '.join(offered or ())}; got {raw!r}",
                         "model_not_offered" if not self.choices else "invalid_field")
        return raw

    def json_schema(self) -> dict[str, Any]:
        # The model ids depend on the settings: openapi.build_openapi fills that enum in.
        return {"type": "string", "enum": list(self.choices)} if self.choices else {"type": "string"}


@dataclass(frozen=True)
class DurationRange(_Marker):
    """``"MIN-MAX"`` seconds (or one number meaning MIN = MAX), parsed to ``(MIN, MAX)``."""

    minimum: float
    maximum: float

    def parse(self, name: str, raw: Any, info: ValidationInfo) -> tuple[float, float]:
        if isinstance(raw, tuple) and len(raw) == 2:  # already parsed (a model built in Python)
            raw = f"{raw[0]:g}-{raw[1]:g}"
        text = str(raw).strip() if isinstance(raw, (str, int, float)) and not isinstance(raw, bool) else None
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(?:\s*-\s*(\d+(?:\.\d+)?))?", text or "")
        if not match:
            raise refuse(f"'{name}' must look like \"MIN-MAX\" in seconds (e.g. \"16-18\"), got {raw!r}")
        low = float(match.group(1))
        high = float(match.group(2)) if match.group(2) else low
        if low > high:
            raise refuse(f"'{name}' range {raw!r} is reversed: MIN must not exceed MAX")
        if low < self.minimum or high > self.maximum:
            raise refuse(f"'{name}' must lie within {self.minimum:g}-{self.maximum:g} seconds, got {raw!r}")
        return low, high

    def serialize(self, value: Any) -> Any:
        return f"{value[0]:g}-{value[1]:g}" if isinstance(value, tuple) else value

    def json_schema(self) -> dict[str, Any]:
        # MIN and MAX are numbers inside a string; their bounds are machine-readable here.
        return {"type": "string", "pattern": DURATION_RANGE_PATTERN,
                "x-range-bounds": {"minimum": self.minimum, "maximum": self.maximum},
                NOTE_KEY: f"MIN and MAX lie within {_num(self.minimum)}–{_num(self.maximum)}."}


@dataclass(frozen=True)
class HttpUrl(_Marker):
    """An http(s) URL, normalised by ``urlguard`` (YouTube links to one canonical form)."""

    max_length: int

    def parse(self, name: str, raw: Any, info: ValidationInfo) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise refuse(f"'{name}' must be an http(s) URL")
        if len(raw) > self.max_length:
            raise refuse(f"'{name}' is longer than {self.max_length} characters")
        # Imported here: only URL fields need it (it only parses; resolving hosts is services' job).
        from backend.core.errors import BadRequest
        from backend.core.urlguard import normalise_media_url

        try:
            return normalise_media_url(raw)
        except BadRequest as exc:
            raise refuse(f"'{name}': {exc.message}", exc.code) from None

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "uri", "pattern": r"^\s*[hH][tT][tT][pP][sS]?://",
                "maxLength": self.max_length}


@dataclass(frozen=True)
class Base64Audio(_Marker):
    """Audio as base64 text (data: URLs, the URL-safe alphabet, missing padding accepted), parsed to bytes."""

    def parse(self, name: str, raw: Any, info: ValidationInfo) -> bytes:
        if isinstance(raw, (bytes, bytearray)) and raw:  # already decoded (a model built in Python)
            return bytes(raw)
        if not isinstance(raw, str) or not raw.strip():
            raise refuse(f"'{name}' must be a base64 string of audio")
        text = raw.strip()
        if text.startswith("data:"):  # browsers hand out data URLs; accept them
            text = text.partition(",")[2]
        text = re.sub(r"\s+", "", text)
        if not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", text):
            raise refuse(f"'{name}' is not valid base64", "invalid_base64")
        text = text.rstrip("=").translate(str.maketrans("-_", "+/"))
        text += "=" * (-len(text) % 4)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise refuse(f"'{name}' is not valid base64", "invalid_base64") from None
        if not data:
            raise refuse(f"'{name}' is empty")
        return data

    def serialize(self, value: Any) -> Any:
        return base64.b64encode(value).decode("ascii") if isinstance(value, (bytes, bytearray)) else value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "contentEncoding": "base64", "minLength": 1, "pattern": BASE64_PATTERN}


def marker_of(metadata: Sequence[Any]) -> _Marker | None:
    return next((m for m in metadata if isinstance(m, _Marker)), None)


def describe_fields(schema: dict[str, Any], required: Sequence[str]) -> None:
    """Finish a request model's JSON Schema: notes appended to descriptions, optional fields nullable."""
    for name, prop in schema.get("properties", {}).items():
        prop.pop("title", None)  # the property name says it
        note = prop.pop(NOTE_KEY, None)
        if note:
            prop["description"] = f"{prop.get('description', '')} {note}".strip()
        if name in required:
            continue
        # null (or "" for non-string fields) means "use the default".
        if "anyOf" in prop:
            prop["anyOf"] = prop["anyOf"] + [{"type": "null"}]
        elif isinstance(prop.get("type"), str):
            prop["type"] = [prop["type"], "null"]
            if "enum" in prop:
                prop["enum"] = list(prop["enum"]) + [None]
