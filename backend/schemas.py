"""Request validation for every route, declared once.

Each field is a small declarative object, so the same declarations validate
requests and (later) describe them in the OpenAPI document. Numbers accept a
JSON number or a numeric string because the gary4web web app sends
``"promptLength": "6"``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import BadRequest

MAX_WINDOW_SECONDS = 30.0  # MusicGen's context: the longest prompt
# Longer results are generated in overlapping 30 s windows (worker.windows).
MAX_TOTAL_SECONDS = 120.0
MAX_PROMPT_TEXT = 500
MAX_SEED = 2**63 - 1


class FieldError(BadRequest):
    code = "invalid_field"


def _number(name: str, raw: Any) -> float:
    # bool is an int subclass in Python but never a number in a request.
    if isinstance(raw, bool):
        raise FieldError(f"'{name}' must be a number, got {raw!r}")
    if isinstance(raw, (int, float)):
        try:
            value = float(raw)
        except OverflowError:  # an integer too large for a float is no duration, seed or setting
            raise FieldError(f"'{name}' is too large a number") from None
    elif isinstance(raw, str) and raw.strip():
        try:
            value = float(raw.strip())
        except ValueError:
            raise FieldError(f"'{name}' must be a number, got {raw!r}") from None
    else:
        raise FieldError(f"'{name}' must be a number, got {raw!r}")
    if not math.isfinite(value):
        raise FieldError(f"'{name}' must be a finite number")
    return value


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # number | integer | boolean | string | choice | duration_range | http_url | base64_audio
    help: str
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    choices: Sequence[str] | None = None
    example: Any = None

    def parse(self, raw: Any, *, choices: Sequence[str] | None = None) -> Any:
        parser: Callable[[Any], Any] = getattr(self, f"_parse_{self.kind}")
        if self.kind == "choice":
            return self._parse_choice(raw, choices or self.choices or ())
        return parser(raw)

    def _check_bounds(self, value: float) -> float:
        if self.minimum is not None and value < self.minimum:
            raise FieldError(f"'{self.name}' must be at least {self.minimum:g}, got {value:g}")
        if self.maximum is not None and value > self.maximum:
            raise FieldError(f"'{self.name}' must be at most {self.maximum:g}, got {value:g}")
        return value

    def _parse_number(self, raw: Any) -> float:
        return self._check_bounds(_number(self.name, raw))

    def _parse_integer(self, raw: Any) -> int:
        value = _number(self.name, raw)
        if value != int(value):
            raise FieldError(f"'{self.name}' must be a whole number, got {raw!r}")
        return int(self._check_bounds(value))

    def _parse_boolean(self, raw: Any) -> bool:
        # Clients that send numbers as strings send booleans as strings too.
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "1", "false", "0"):
            return raw.strip().lower() in ("true", "1")
        raise FieldError(f"'{self.name}' must be true or false, got {raw!r}")

    def _parse_string(self, raw: Any) -> str:
        if not isinstance(raw, str):
            raise FieldError(f"'{self.name}' must be a string")
        if self.max_length is not None and len(raw) > self.max_length:
            raise FieldError(f"'{self.name}' is {len(raw)} characters long; the limit is {self.max_length}")
        return raw

    def _parse_choice(self, raw: Any, choices: Sequence[str]) -> str:
        if not isinstance(raw, str) or raw not in choices:
            offered = ", ".join(choices)
            raise FieldError(f"'{self.name}' must be one of: {offered}; got {raw!r}",
                             code="model_not_offered" if self.name == "model" else None)
        return raw

    def _parse_duration_range(self, raw: Any) -> tuple[float, float]:
        text = str(raw).strip() if isinstance(raw, (str, int, float)) and not isinstance(raw, bool) else None
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(?:\s*-\s*(\d+(?:\.\d+)?))?", text or "")
        if not match:
            raise FieldError(f"'{self.name}' must look like \"MIN-MAX\" in seconds (e.g. \"16-18\"), got {raw!r}")
        low = float(match.group(1))
        high = float(match.group(2)) if match.group(2) else low
        lo_bound, hi_bound = self.minimum or 1.0, self.maximum or MAX_WINDOW_SECONDS
        if low > high:
            raise FieldError(f"'{self.name}' range {raw!r} is reversed: MIN must not exceed MAX")
        if low < lo_bound or high > hi_bound:
            raise FieldError(f"'{self.name}' must lie within {lo_bound:g}-{hi_bound:g} seconds, got {raw!r}")
        return low, high

    def _parse_http_url(self, raw: Any) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise FieldError(f"'{self.name}' must be an http(s) URL")
        if self.max_length and len(raw) > self.max_length:
            raise FieldError(f"'{self.name}' is longer than {self.max_length} characters")
        # Imported here: urlguard resolves hosts, which only URL fields need.
        from .urlguard import normalise_media_url

        try:
            return normalise_media_url(raw)
        except BadRequest as exc:
            raise FieldError(f"'{self.name}': {exc.message}", code=exc.code) from None

    def _parse_base64_audio(self, raw: Any) -> bytes:
        if not isinstance(raw, str) or not raw.strip():
            raise FieldError(f"'{self.name}' must be a base64 string of audio")
        text = raw.strip()
        if text.startswith("data:"):  # browsers hand out data URLs; accept them
            text = text.partition(",")[2]
        text = re.sub(r"\s+", "", text)
        # Accept the standard and the URL-safe alphabets, with or without padding.
        if not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", text):
            raise FieldError(f"'{self.name}' is not valid base64", code="invalid_base64")
        text = text.rstrip("=").translate(str.maketrans("-_", "+/"))
        text += "=" * (-len(text) % 4)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise FieldError(f"'{self.name}' is not valid base64", code="invalid_base64") from None
        if not data:
            raise FieldError(f"'{self.name}' is empty")
        return data


@dataclass(frozen=True)
class Schema:
    name: str
    fields: tuple[Field, ...]
    description: str = ""

    def parse(self, body: Any, *, choices: dict[str, Sequence[str]] | None = None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object", code="invalid_json")
        choices = choices or {}
        values: dict[str, Any] = {}
        for f in self.fields:
            raw = body.get(f.name)
            if raw is None or (isinstance(raw, str) and raw.strip() == "" and f.kind != "string"):
                if f.required:
                    raise FieldError(f"'{f.name}' is required", code="missing_field")
                values[f.name] = f.default
                continue
            values[f.name] = f.parse(raw, choices=choices.get(f.name))
        return values


# Fields shared by /generate and /continue.
_COMMON = (
    Field("model", "choice", "Model id from GET /models; the configured default when omitted."),
    Field("prompt", "string", "Text description that conditions the music.", max_length=MAX_PROMPT_TEXT,
          example="lo-fi hip hop with warm keys"),
    Field("seed", "integer", "Random seed; same seed, inputs and model give the same audio.",
          minimum=0, maximum=MAX_SEED, example=42),
    Field("top_k", "integer", "Sample from the k most likely tokens (0 = off).", default=250, minimum=0, maximum=2048),
    Field("top_p", "number", "Nucleus sampling threshold (0 = off).", default=0.0, minimum=0.0, maximum=1.0),
    Field("temperature", "number", "Sampling temperature.", default=1.0, minimum=0.01, maximum=10.0),
    Field("cfg_coef", "number", "Classifier-free guidance strength.", default=3.0, minimum=0.0, maximum=30.0),
    Field("output_format", "choice", "Format of the stored result.", default="wav", choices=("wav", "mp3")),
    Field("webhook", "http_url", "URL POSTed the task document when the task ends.", max_length=2048),
    Field("melody", "boolean", "Melody models only: also condition on the chroma (melody) of the prompt.",
          default=False),
)

GENERATE = Schema("GenerateRequest", (
    Field("url", "http_url", "YouTube link or any http(s) media URL yt-dlp can read.", required=True,
          max_length=2048, example="https://www.youtube.com/watch?v=dQw4w9WgXcQ"),
    Field("currentTime", "number", "Where the prompt starts, seconds.", default=0.0, minimum=0.0, maximum=86400.0,
          example=42),
    Field("promptLength", "number", "Prompt length, seconds.", default=6.0, minimum=1.0, maximum=MAX_WINDOW_SECONDS,
          example="6"),
    Field("duration", "duration_range", "Total output length range \"MIN-MAX\" in seconds, prompt included; "
          "the result is a whole number of 4/4 bars at the detected tempo. Beyond 30 s the result is generated "
          "in overlapping 30 s windows.", default=(16.0, 18.0),
          minimum=1.0, maximum=MAX_TOTAL_SECONDS, example="16-18"),
) + _COMMON, "Continue the audio at `url` from the playback position `currentTime`.")

CONTINUE = Schema("ContinueRequest", (
    Field("audio", "base64_audio", "The clip to extend (WAV, MP3, OGG or FLAC; any rate; mono or stereo), base64.",
          required=True),
    Field("task_id", "string", "The task this clip came from (stored as parent_task_id).", max_length=128),
    Field("prompt_duration", "number", "The last this-many seconds of `audio` are the prompt.", default=6.0,
          minimum=1.0, maximum=MAX_WINDOW_SECONDS, example="6"),
    Field("duration", "number", "Seconds generated, prompt included; the clip grows by duration - "
          "prompt_duration. Beyond 30 s it is generated in overlapping 30 s windows.",
          default=MAX_WINDOW_SECONDS, minimum=1.0, maximum=MAX_TOTAL_SECONDS, example=30),
) + _COMMON, "Extend a clip the client holds by about 30 - prompt_duration seconds.")


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
