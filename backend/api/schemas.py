"""The request models of POST /generate and POST /continue (pydantic v2), and the one function that parses them.

The field types (``fieldtypes``) reproduce what clients rely on: numbers as
JSON numbers or numeric strings (the gary4web web app sends
``"promptLength": "6"``), ``"16-18"`` ranges, null or ``""`` meaning the
default, unknown fields ignored. ``parse`` turns the first refusal into a
``FieldError`` carrying the machine code and a sentence naming the field, and
hands services the plain dict they always received. The same models build the
Python client's requests and generate the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from backend.api.fieldtypes import (Base64Audio, Boolean, Choice, DurationRange, HttpUrl, Number, Text,
                                    describe_fields, marker_of)
from backend.core.errors import BadRequest
from backend.core.tasks import MAX_SEED, MAX_TOTAL_SECONDS, WINDOW_SECONDS

MAX_PROMPT_TEXT = 500
MAX_URL = 2048


class FieldError(BadRequest):
    code = "invalid_field"


def _finish_schema(schema: dict[str, Any], model: type[BaseModel]) -> None:
    props = schema.get("properties", {})
    schema["properties"] = {name: props[name] for name in field_order(model) if name in props}
    describe_fields(schema, schema.get("required", []))
    # Unknown fields are ignored, as the gary4web clients send extra ones.
    schema["additionalProperties"] = True
    # The example request: each field's own example, plus what a model adds for fields that have none.
    example = {name: f.examples[0] for name in field_order(model) if (f := model.model_fields[name]).examples}
    schema["examples"] = [{**getattr(model, "EXAMPLE_EXTRA"), **example}]


class RequestModel(BaseModel):
    # extra="ignore": unknown fields are dropped; defaults are final values except where validated on purpose.
    model_config = ConfigDict(extra="ignore", json_schema_extra=_finish_schema)
    EXAMPLE_EXTRA: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _blank_means_default(cls, body: Any) -> Any:
        # null (or "" for fields that are not free text) means "use the default"; dropping the key says so.
        if not isinstance(body, dict):
            return body
        out = dict(body)
        for name, info in cls.model_fields.items():
            raw = out.get(name)
            marker = marker_of(info.metadata)
            if raw is None or (isinstance(raw, str) and not raw.strip() and marker is not None
                               and marker.blank_is_default):
                out.pop(name, None)
        return out

    def cross_check(self) -> None:
        """Rules across fields (JSON Schema cannot say them); raise ``FieldError``."""

    @model_validator(mode="after")
    def _cross_checked(self) -> "RequestModel":
        try:
            self.cross_check()
        except FieldError as exc:
            raise PydanticCustomError(exc.code, "{message}", {"message": exc.message}) from None
        return self


# Fields shared by /generate and /continue (a mixin: pydantic keeps the subclass's fields first).
class _Sampling(BaseModel):
    model: Annotated[str | None, Choice()] = Field(
        None, description="Model id from GET /models; the configured default when omitted.")
    prompt: Annotated[str | None, Text(MAX_PROMPT_TEXT)] = Field(
        None, description="Text description that conditions the music.", examples=["lo-fi hip hop with warm keys"])
    seed: Annotated[int | None, Number(0, MAX_SEED, integer=True)] = Field(
        None, description="Random seed; same seed, inputs and model give the same audio.", examples=[42])
    top_k: Annotated[int, Number(0, 2048, integer=True)] = Field(
        250, description="Sample from the k most likely tokens (0 = off).")
    top_p: Annotated[float, Number(0.0, 1.0)] = Field(0.0, description="Nucleus sampling threshold (0 = off).")
    temperature: Annotated[float, Number(0.01, 10.0)] = Field(1.0, description="Sampling temperature.")
    cfg_coef: Annotated[float, Number(0.0, 30.0)] = Field(3.0, description="Classifier-free guidance strength.")
    output_format: Annotated[str, Choice(("wav", "mp3"))] = Field("wav", description="Format of the stored result.")
    webhook: Annotated[str | None, HttpUrl(MAX_URL)] = Field(
        None, description="URL POSTed the task document when the task ends.")
    melody: Annotated[bool, Boolean()] = Field(
        False, description="Melody models only: also condition on the chroma (melody) of the prompt.")


class GenerateRequest(RequestModel, _Sampling):
    """Continue the audio at `url` from the playback position `currentTime`."""

    url: Annotated[str, HttpUrl(MAX_URL)] = Field(
        description="YouTube link or any http(s) media URL yt-dlp can read.",
        examples=["https://www.youtube.com/watch?v=dQw4w9WgXcQ"])
    currentTime: Annotated[float, Number(0.0, 86400.0)] = Field(
        0.0, description="Where the prompt starts, seconds.", examples=[42])
    promptLength: Annotated[float, Number(1.0, WINDOW_SECONDS)] = Field(
        6.0, description="Prompt length, seconds.", examples=["6"])
    # The default is written as clients write it and parsed like their values (validate_default).
    duration: Annotated[tuple[float, float], DurationRange(1.0, MAX_TOTAL_SECONDS)] = Field(
        "16-18", validate_default=True,  # type: ignore[assignment]
        description="Total output length range \"MIN-MAX\" in seconds, prompt included; the result is a whole "
                    "number of 4/4 bars at the detected tempo. Beyond 30 s the result is generated in "
                    "overlapping 30 s windows.", examples=["16-18"])

    def cross_check(self) -> None:
        check_generate(self.model_dump())


class ContinueRequest(RequestModel, _Sampling):
    """Extend a clip the client holds by about 30 - prompt_duration seconds."""

    # A tiny silent WAV: no field example (base64 of real audio is long), but a complete request needs one.
    EXAMPLE_EXTRA: ClassVar[dict[str, Any]] = {
        "audio": "UklGRi4AAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAACABAAZGF0YQoAAAAAAAAAAAAAAAAA"}

    audio: Annotated[bytes, Base64Audio()] = Field(
        description="The clip to extend (WAV, MP3, OGG or FLAC; any rate; mono or stereo), base64.")
    task_id: Annotated[str | None, Text(128)] = Field(
        None, description="The task this clip came from (stored as parent_task_id).")
    prompt_duration: Annotated[float, Number(1.0, WINDOW_SECONDS)] = Field(
        6.0, description="The last this-many seconds of `audio` are the prompt.", examples=["6"])
    duration: Annotated[float, Number(1.0, MAX_TOTAL_SECONDS)] = Field(
        WINDOW_SECONDS, description="Seconds generated, prompt included; the clip grows by duration - "
        "prompt_duration. Beyond 30 s it is generated in overlapping 30 s windows.", examples=[30])

    def cross_check(self) -> None:
        check_continue(self.model_dump())


def field_order(model: type[BaseModel]) -> list[str]:
    """The request's own fields first, then the shared ones: the order errors are reported and documented in.

    (pydantic puts inherited fields first; a client reads ``url`` before ``seed``.)
    """
    own = [name for name in vars(model).get("__annotations__", {}) if name in model.model_fields]
    return own + [name for name in model.model_fields if name not in own]


def check_generate(values: dict[str, Any]) -> None:
    low, high = values["duration"]
    if high <= values["promptLength"]:
        raise FieldError(
            f"'duration' ({low:g}-{high:g} s) is the total length including the prompt, so its MAX must "
            f"exceed promptLength ({values['promptLength']:g} s)")


def check_continue(values: dict[str, Any]) -> None:
    if values["prompt_duration"] >= values["duration"]:
        raise FieldError(
            f"'prompt_duration' ({values['prompt_duration']:g} s) must be shorter than 'duration' "
            f"({values['duration']:g} s), the generated window that includes the prompt")


def validate(model: type[RequestModel], body: Any, models: Sequence[str] | None = None) -> RequestModel:
    """The validated model, or the ``FieldError`` of the first refusal (fields in declaration order)."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(body, context={"models": models} if models is not None else None)
    except ValidationError as exc:
        order = field_order(model)
        errors = exc.errors(include_url=False)
        first = min(errors, key=lambda e: order.index(e["loc"][0]) if e["loc"] and e["loc"][0] in order else -1)
        raise _field_error(first) from None


def parse(model: type[RequestModel], body: Any, models: Sequence[str] | None = None) -> dict[str, Any]:
    """What the routes call: the request as the plain dict services take (``duration`` a tuple, ``audio`` bytes)."""
    return dict(validate(model, body, models))


def _field_error(error: dict[str, Any]) -> FieldError:
    name = ".".join(str(part) for part in error["loc"]) or "body"
    if error["type"] == "missing":
        return FieldError(f"'{name}' is required", code="missing_field")
    ctx = error.get("ctx") or {}
    if "message" in ctx:  # one of ours: the type is the code, the message names the field
        return FieldError(ctx["message"], code=error["type"])
    return FieldError(f"'{name}': {error['msg']}")  # pydantic's own (not expected: every field has a marker)
