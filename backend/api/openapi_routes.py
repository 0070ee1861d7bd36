"""OpenAPI paths of the routes beyond gary4web's: live streams, downloads, models, cancel,
metrics and the pages. Merged into the document by ``openapi.build_openapi``; their bodies'
schemas (Model, Models, SSEEvent, Task) come from ``responses``."""

from __future__ import annotations

from typing import Any

from backend.api.openapi_refs import REF_TEMPLATE, error_ref, json_ref

TASK_ID = [{"$ref": "#/components/parameters/TaskId"}]
COMMON = {"404": error_ref("NotFound"), "429": error_ref("TooManyRequests"), "503": error_ref("Unavailable")}

EVENTS_DESCRIPTION = """Server-Sent Events following the task until it ends:

- `event: progress`, `data: {"progress": P}` whenever progress changes;
- `event: audio`, `id: <seq>`, `data: {"seq", "sample_rate", "channels", "dtype": "float32", "offset_samples",
  "final": false, "pcm": "<base64>"}`: the next chunk of the continuation (the generated part, after the
  prompt) at the model's sample rate, as little-endian float32 samples, channels interleaved. `offset_samples`
  is where the chunk starts within the continuation; concatenated in order, chunks equal the result's
  continuation. A client that connects late first receives every chunk generated so far;
- one final `event: completed` | `failed` | `canceled` whose `data` is the task document without `audio`
  (plus `audio_url` when completed); then the stream ends.

`: keep-alive` comments are sent every 15 s of silence. If the task has not ended after `SEGUE_JOB_TIMEOUT`
+ 600 s, a non-final `event: timeout` ends the stream (poll `/tasks/{task_id}` then). Each open stream holds
one API thread."""

STREAM_DESCRIPTION = """The audio chunks of `/events` as binary frames (`application/octet-stream`). Each frame:
a 4-byte big-endian **total frame length** (these 4 bytes included), a 4-byte big-endian header length, a
UTF-8 JSON header `{"seq", "sample_rate", "channels", "dtype": "float32", "offset_samples", "final"}`, then the
raw PCM (little-endian float32, channels interleaved). While nothing is generated (e.g. the task is queued)
a frame with `"keepalive": true` and no PCM is sent every 15 s; skip it. The last frame has `"final": true`,
a `"status"` (`completed`, `failed`, `canceled`, `timeout` when the stream's time limit passed before the
task ended, or `interrupted` when Redis/MongoDB went away) and no PCM."""


def _page(operation_id: str, summary: str) -> dict[str, Any]:
    return {"get": {"operationId": operation_id, "summary": summary, "tags": ["pages"],
                    "responses": {"200": {"description": "An HTML page.",
                                          "content": {"text/html": {"schema": {"type": "string"}}}}}}}


def paths() -> dict[str, Any]:
    return {
        "/tasks/{task_id}/events": {"parameters": TASK_ID, "get": {
            "parameters": [{"name": "audio", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["1", "0", "true", "false"], "default": "1"},
                            "description": "`0` leaves out the `audio` events (progress and the end only)."}],
            "operationId": "taskEvents", "summary": "Progress and audio while the task runs (SSE)",
            "description": EVENTS_DESCRIPTION, "tags": ["live"],
            "responses": {"200": {"description": "An event stream.",
                                  "content": {"text/event-stream": {"schema": {"$ref": REF_TEMPLATE.format(model="SSEEvent")}}}},
                          "400": error_ref("BadRequest"), **COMMON}}},
        "/tasks/{task_id}/stream": {"parameters": TASK_ID, "get": {
            "operationId": "taskStream", "summary": "Audio while the task runs (binary frames)",
            "description": STREAM_DESCRIPTION, "tags": ["live"],
            "responses": {"200": {"description": "Length-prefixed frames.",
                                  "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                      "format": "binary"}}}},
                          **COMMON}}},
        "/tasks/{task_id}/audio": {"parameters": TASK_ID, "get": {
            "operationId": "taskAudio", "summary": "Download the result file",
            "description": "The result as a file (`audio/wav` or `audio/mpeg`), with `Content-Disposition`, "
                           "`X-Processing-Time-Ms` and `X-Audio-Duration-Seconds`. 409 until the task completed.",
            "tags": ["tasks"],
            "responses": {
                "200": {"description": "The audio file.",
                        "headers": {h: {"schema": {"type": "string"}} for h in
                                    ("Content-Disposition", "X-Processing-Time-Ms", "X-Audio-Duration-Seconds")},
                        "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}},
                                    "audio/mpeg": {"schema": {"type": "string", "format": "binary"}}}},
                "409": error_ref("Conflict"), **COMMON}}},
        "/tasks/{task_id}/cancel": {"parameters": TASK_ID, "post": {
            "operationId": "cancelTask", "summary": "Cancel a queued or running task",
            "description": "A queued task ends `canceled` at once. A running one gets `cancel_requested: true` "
                           "and ends `canceled` within a few decoding steps; tasks batched with it go on. "
                           "Canceling a canceled task is a no-op; a completed or failed one is a 409.",
            "tags": ["tasks"],
            "responses": {"200": json_ref("Task", "The task document (without audio)."), "409": error_ref("Conflict"),
                          **COMMON}}},
        "/models": {"get": {
            "operationId": "models", "summary": "The models offered", "tags": ["service"],
            "responses": {"200": json_ref("Models", "Every offered model; the first is the default."),
                          "429": error_ref("TooManyRequests")}}},
        "/metrics": {"get": {
            "operationId": "metrics", "summary": "Prometheus metrics", "tags": ["service"],
            "description": "Queue depth, tasks by status, task seconds, generated audio seconds, batch sizes, "
                           "workers: shared through Redis, so every API process reports the same numbers.",
            "responses": {"200": {"description": "Prometheus text format.",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          "503": error_ref("Unavailable")}}},
        "/": _page("webApp", "The web app"),
        "/status": _page("statusPage", "A human-readable status page built from /health"),
    }
