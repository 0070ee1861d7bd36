"""The OpenAPI 3.1 document, generated from the pydantic models that validate requests and describe responses.

Nothing here restates a field by hand: component schemas come from the request
models (``schemas``: types, bounds, defaults, choices, help, examples) and the
response models (``responses``), and the model enum from the settings, so the
document cannot drift from what the API accepts and answers. Paths are a small
table. ``openapi_html.render_html`` turns the document into the ``GET /docs`` page.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from backend.api import openapi_routes, responses, schemas
from backend.api.fieldtypes import NUMERIC_STRING_PATTERN  # noqa: F401  (re-exported: the pattern is part of the document)
from backend.api.openapi_refs import REF_TEMPLATE, error_ref, json_ref
from backend.core.ids import TASK_ID_PATTERN
from backend.core.settings import Settings

OPENAPI_VERSION = "3.1.0"

SIDECAR_DESCRIPTION = """
### Sidecar (express-server, another server, default port 3000)

These routes are served by the Node ffmpeg sidecar, not by this API, so they are
not in `paths`:

- `POST /crop-audio` — `{"audioData": "<base64>", "start": seconds (default 0), "end": seconds}`
  → `text/plain` base64 MP3 of `[start, end)`. 400 for bad numbers or undecodable audio, 413 too large.
- `POST /combine-audio` — `{"audioClips": ["<base64>", ...]}` → `text/plain` base64 MP3 of the clips
  played one after another.
- `GET /health` — `{"status": "live", "ffmpeg": "<version>"}`.
"""

DESCRIPTION = """Segue continues music with Meta's MusicGen. Submit a media URL (`POST /generate`) or a
base64 clip (`POST /continue`), then poll `GET /tasks/{task_id}`, `GET /progress/{task_id}` or
`GET /fetch-result/{task_id}`.

Numeric fields accept a JSON number **or a numeric string** (`"promptLength": "6"`); `null` or an
empty string means "use the default". Every error is `{"error": "<sentence>", "code": "<machine_code>"}`:
4xx for the client's fault, 503 when Redis or MongoDB is down; a 500 is a bug.
""" + SIDECAR_DESCRIPTION


def _package_version() -> str:
    try:
        return metadata.version("segue")
    except metadata.PackageNotFoundError:
        return "0.1.0"


# -- component schemas: generated from the pydantic models ------------------------------

REQUESTS = (schemas.GenerateRequest, schemas.ContinueRequest)


def model_schemas(settings: Settings) -> dict[str, Any]:
    """components/schemas: every request and response model (and the models they nest), for these settings."""
    documented = (*REQUESTS, *responses.DOCUMENTED, responses.SSEEvent)
    _, top = models_json_schema([(model, "validation") for model in documented], ref_template=REF_TEMPLATE)
    found = top["$defs"]
    for request in REQUESTS:
        # The offered models are settings, not code: the one field whose enum is filled in here.
        model = found[request.__name__]["properties"]["model"]
        model["enum"] = list(settings.model_ids) + [None]
        model["default"] = settings.default_model
    return found


# -- the rest of the components ------------------------------------------------------------

def _components(settings: Settings) -> dict[str, Any]:
    return {
        "schemas": model_schemas(settings),
        "responses": {
            name: {"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            for name, text in (
                ("BadRequest", "A field is missing or invalid, or the body is not a JSON object."),
                ("NotFound", "No task with this id."),
                ("PayloadTooLarge", f"The body is larger than {settings.max_body_mb:g} MB."),
                ("TooManyRequests", "Rate limited (or too many queued tasks); try again later."),
                ("Unauthorized", "API keys are on and the request carries no valid key."),
                ("Forbidden", "The key is not allowed to do this."),
                ("Conflict", "The task is not in a state that allows this (e.g. not completed yet, or ended)."),
                ("Unavailable", "Redis or MongoDB is down; try again shortly."),
            )
        },
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`."},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
        "parameters": {
            "TaskId": {"name": "task_id", "in": "path", "required": True,
                       "schema": {"type": "string", "pattern": TASK_ID_PATTERN.pattern},
                       "description": "A task id as returned on submission; an unknown or malformed id is a 404."},
        },
    }


def _submit(summary: str, request: type[BaseModel], tag: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": tag,
            "summary": summary,
            "description": request.__doc__,
            "tags": ["tasks"],
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=request.__name__)}}}},
            "responses": {
                "202": json_ref("SubmitResponse", "Queued."),
                "400": error_ref("BadRequest"),
                "413": error_ref("PayloadTooLarge"),
                "429": error_ref("TooManyRequests"),
                "503": error_ref("Unavailable"),
            },
        }
    }


def _task_get(operation_id: str, summary: str, ref: str, description: str) -> dict[str, Any]:
    return {
        "parameters": [{"$ref": "#/components/parameters/TaskId"}],
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "description": description,
            "tags": ["tasks"],
            "responses": {"200": json_ref(ref, summary), "404": error_ref("NotFound"),
                          "429": error_ref("TooManyRequests"), "503": error_ref("Unavailable")},
        },
    }


def build_openapi(settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of every route of the API process, for these settings."""
    paths = {
        "/generate": _submit("Continue the media at a URL", schemas.GenerateRequest, "generate"),
        "/continue": _submit("Extend a clip the client holds", schemas.ContinueRequest, "continue"),
        "/tasks/{task_id}": _task_get(
            "getTask", "The task document", "Task",
            "The task document; `audio` (base64 WAV/MP3) is included once `status` is `completed`."),
        "/fetch-result/{task_id}": _task_get(
            "fetchResult", "The result, when ready", "FetchResult",
            "`{\"status\": \"completed\", \"audio\": \"<base64>\"}` when done, else `{\"status\": ...}` "
            "(plus `error` when failed)."),
        "/progress/{task_id}": _task_get(
            "getProgress", "Progress 0–100", "Progress",
            "`{\"progress\": P}`, non-decreasing, 0 while queued and exactly 100 once completed."),
        "/health": {"get": {
            "operationId": "health",
            "summary": "Health of MongoDB, Redis and the workers",
            "description": "HTTP 200 when every part is live, else 503 with the same document.",
            "tags": ["service"],
            "responses": {"200": json_ref("Health", "Every part is live."),
                          "503": json_ref("Health", "At least one part is down.")},
        }},
        "/ping": {"get": {
            "operationId": "ping",
            "summary": "Liveness of the API process alone",
            "tags": ["service"],
            "responses": {"200": json_ref("Ping", "The API process answers.")},
        }},
        "/ready": {"get": {
            "operationId": "ready",
            "summary": "Readiness: Redis and MongoDB answer",
            "description": "What a readiness probe asks: 200 when this API process can take requests (Redis and "
                           "MongoDB answer), else 503 with the same document. Unlike `/health` it needs no "
                           "live worker, so API pods stay in service while workers are scaled to zero.",
            "tags": ["service"],
            "responses": {"200": json_ref("Ready", "Redis and MongoDB answer."),
                          "503": json_ref("Ready", "Redis or MongoDB does not answer.")},
        }},
        "/queue": {"get": {
            "operationId": "queueLoad",
            "summary": "Queued plus running tasks, for autoscalers",
            "description": "`total` is what needs workers now: tasks waiting on the queue's Redis list plus tasks "
                           "workers hold, which a list-length trigger cannot see. KEDA's `metrics-api` trigger "
                           "reads it (`valueLocation: total`). No API key needed, like `/health`.",
            "tags": ["service"],
            "responses": {"200": json_ref("QueueLoad", "The counts, read from Redis now."),
                          "503": error_ref("Unavailable")},
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["service"],
            "responses": {"200": {"description": "The OpenAPI document.",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}},
        }},
        "/docs": {"get": {
            "operationId": "docs",
            "summary": "A readable API reference (HTML) generated from this document",
            "tags": ["service"],
            "responses": {"200": {"description": "An HTML page.",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}},
        }},
    }
    paths.update(openapi_routes.paths())
    components = _components(settings)
    if getattr(settings, "api_keys", ()):  # API keys on: the task routes need one (probes and docs do not)
        for path in ("/generate", "/continue", "/tasks/{task_id}", "/fetch-result/{task_id}", "/progress/{task_id}",
                     "/tasks/{task_id}/events", "/tasks/{task_id}/stream", "/tasks/{task_id}/audio",
                     "/tasks/{task_id}/cancel"):
            for method, op in paths[path].items():
                if method != "parameters":
                    op["security"] = [{"bearer": []}, {"apiKey": []}]
                    op["responses"].update({"401": error_ref("Unauthorized"), "403": error_ref("Forbidden")})
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Segue", "version": _package_version(), "description": DESCRIPTION,
                 "license": {"name": "See the repository"}},
        "tags": [{"name": "tasks", "description": "Submit and poll continuation tasks."},
                 {"name": "live", "description": "Follow a task while it runs: progress and audio."},
                 {"name": "service", "description": "Health, models, metrics and documentation."},
                 {"name": "pages", "description": "HTML pages for people."}],
        "paths": paths,
        "components": components,
    }
