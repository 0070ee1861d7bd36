"""The response bodies of the JSON routes, as pydantic v2 models.

They describe what the routes answer (the OpenAPI document's component
schemas are generated from them, and schemathesis checks every answer against
those) and let the Python client read answers. Every model allows extra keys:
a newer server may add fields, and an older client must keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.core.tasks import TaskStatus

NonNegative = Annotated[int, Field(ge=0)]
Percent = Annotated[float, Field(ge=0, le=100)]
LiveOrDown = Literal["live", "down"]


def _no_defaults(schema: dict[str, Any], model: type[BaseModel]) -> None:
    # A response has no defaults: a missing optional key is just absent. Titles repeat the key.
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
        prop.pop("title", None)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra=_no_defaults)


TASK_ID_DOC = Field(description="Opaque, unguessable task id (at least 128 random bits).",
                    examples=["3q2-7wEjJ0m6bJk1pPqkqXjZs3T1cV6Y"])


def _error_schema(schema: dict[str, Any], model: type[BaseModel]) -> None:
    _no_defaults(schema, model)
    schema["examples"] = [{"error": "'promptLength' must be at most 30, got 45", "code": "invalid_field"}]


class Error(_Response):
    model_config = ConfigDict(json_schema_extra=_error_schema)

    error: str = Field(description="A human sentence.")
    code: str = Field(description="A machine-readable code, e.g. `invalid_field`, `missing_field`, "
                      "`model_not_offered`, `invalid_base64`, `url_refused`, `task_not_found`, "
                      "`payload_too_large`, `queue_unavailable`, `store_unavailable`.")


class SubmitResponse(_Response):
    task_id: str = TASK_ID_DOC
    status: Literal["queued"]
    queue_position: NonNegative = Field(description="1-based place in the queue (0 if already picked up).")


class Task(_Response):
    task_id: str = TASK_ID_DOC
    status: TaskStatus
    progress: Percent
    model: str | None
    created_at: str | None = Field(json_schema_extra={"format": "date-time"})
    started_at: str | None = Field(json_schema_extra={"format": "date-time"})
    completed_at: str | None = Field(json_schema_extra={"format": "date-time"})
    error: str | None = Field(description="Why the task failed.")
    queue_position: NonNegative
    parent_task_id: str | None
    request: dict[str, Any] = Field(description="The validated request as stored.")
    duration_seconds: float | None
    sample_rate: int | None
    bpm: float | None
    channels: int | None = None
    seed: int | None = None
    output_format: str | None = None
    processing_time_ms: float | None = None
    batch_size: int | None = None
    eta_seconds: float | None = Field(None, description="Estimated seconds until the task ends, from recent "
                                      "batch times; null when unknown or ended.")
    cancel_requested: bool = False
    attempts: int | None = None
    webhook_delivery: dict[str, Any] | None = Field(None, description="Outcome of the webhook call.")
    audio_url: str = Field(None, description="Where to download the result (events).")  # type: ignore[assignment]
    audio: str = Field(None, description="The result (WAV or MP3), only when status is completed.",  # type: ignore[assignment]
                       json_schema_extra={"contentEncoding": "base64"})


class FetchResult(_Response):
    status: TaskStatus
    audio: str = Field(None, description="When completed.",  # type: ignore[assignment]
                       json_schema_extra={"contentEncoding": "base64"})
    error: str | None = Field(None, description="When failed.")


class Progress(_Response):
    progress: Percent = Field(description="Non-decreasing; 0 while queued, 100 once completed.")


class Health(_Response):
    mongodb: LiveOrDown
    redis: LiveOrDown
    pytorch: LiveOrDown = Field(description="live when a worker reported a working torch device recently.")
    status: Literal["live", "degraded"]
    workers: NonNegative = None  # type: ignore[assignment]
    workers_draining: NonNegative = Field(None, description="Workers told to stop (SIGTERM): they finish what "  # type: ignore[assignment]
                                          "they hold, take nothing new, then hand the rest back.")
    queue_depth: NonNegative | None = None
    device: str | list[str] | None = Field(None, description="e.g. cuda:0 or cpu")
    models_loaded: list[str] = None  # type: ignore[assignment]
    models_failed: dict[str, str] = Field(None, description="Models a worker could not load, with the reason; "  # type: ignore[assignment]
                                          "status is degraded while the default model is among them and no "
                                          "worker has it loaded.")
    torch_version: str | None = None
    worker_details: list[dict[str, Any]] = None  # type: ignore[assignment]
    checked_at: float = Field(None, description="Unix time of this report.")  # type: ignore[assignment]


class Ping(_Response):
    status: Literal["ok"]


class Ready(_Response):
    """Whether this API process can take requests: Redis and MongoDB answer (workers are not needed)."""

    status: Literal["ready", "unavailable"]
    redis: LiveOrDown
    mongodb: LiveOrDown


class QueueLoad(_Response):
    """The work on the task queue, for autoscalers (KEDA's metrics-api trigger reads `total`)."""

    queue: str = Field(description="The RQ queue's name (`SEGUE_QUEUE`); its waiting ids are the Redis list "
                                   "`rq:queue:<queue>`.")
    queued: NonNegative = Field(description="Tasks waiting on the queue's list: all a list-length trigger sees.")
    running: NonNegative = Field(description="Tasks workers hold (taken off the list, running or about to).")
    total: NonNegative = Field(description="`queued + running`: the work that needs workers now.")


class Model(_Response):
    id: str = Field(description="Pass as `model` in requests.")
    description: str | None = Field(description="Default text prompt used when a request has none "
                                    "(community fine-tunes have one).")
    sample_rate: int | None
    channels: int | None = Field(description="1 (mono) or 2 (stereo).")
    loaded: bool = Field(description="Loaded on at least one live worker.")
    size: str | None = Field(None, description="Parameters, e.g. `300M`.")
    kind: str = Field(None, description="`musicgen`, `musicgen_melody` or `audiocraft_checkpoint` "  # type: ignore[assignment]
                      "(converted on first load).")
    summary: str | None = None
    load_error: str | None = Field(None, description="Why a worker could not load it (while no worker has it "
                                   "loaded); tasks for it fail with this.")
    default: bool = None  # type: ignore[assignment]


class Models(_Response):
    models: list[Model]
    default: str


class SSEEvent(_Response):
    """One event of the stream, as an SSE parser sees it (``data`` is JSON text, see the route's description)."""

    event: Literal["progress", "audio", "completed", "failed", "canceled", "error", "timeout"] = None  # type: ignore[assignment]
    data: str = None  # type: ignore[assignment]
    id: str = None  # type: ignore[assignment]
    retry: int = None  # type: ignore[assignment]


#: Every model the document publishes under components/schemas (nested ones, e.g. TaskStatus, come along).
DOCUMENTED = (Error, SubmitResponse, Task, FetchResult, Progress, Health, Ping, Ready, QueueLoad, Model,
              Models)
