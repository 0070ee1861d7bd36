"""The OpenAPI 3.1 document, generated from the declarations that validate requests.

Nothing here restates a field by hand: request bodies come from the ``Field``
objects of ``schemas.GENERATE`` / ``schemas.CONTINUE`` (types, bounds,
defaults, choices, help, examples), and the model enum from the settings, so
the document cannot drift from what the API accepts. ``render_html`` turns
the same document into the self-contained ``GET /docs`` page (no CDN, no JS).
"""

from __future__ import annotations

import html
import json
from importlib import metadata
from typing import Any

from . import schemas
from .ids import TASK_ID_PATTERN
from .settings import Settings

OPENAPI_VERSION = "3.1.0"

# What ``schemas._number`` accepts as a numeric string: Python's float() syntax
# around optional whitespace (finite values only; bounds are checked on the value).
NUMERIC_STRING_PATTERN = r"^\s*[+-]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][+-]?\d+)?\s*$"
DURATION_RANGE_PATTERN = r"^\s*\d+(\.\d+)?(\s*-\s*\d+(\.\d+)?)?\s*$"
BASE64_PATTERN = r"^(data:[^,]*,)?[A-Za-z0-9+/_=\s-]+$"

TASK_STATUSES = ["queued", "processing", "completed", "failed", "canceled"]

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


# -- request fields ---------------------------------------------------------------

def _num(value: float) -> str:
    """A bound as people write it: 30, 0.01, 9223372036854775807 (not 9.22337e+18)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


def _bounds(f: schemas.Field) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if f.minimum is not None:
        out["minimum"] = f.minimum
    if f.maximum is not None:
        out["maximum"] = f.maximum
    return out


def _numeric_string(f: schemas.Field) -> dict[str, Any]:
    # JSON Schema cannot bound the value inside a string; the same bounds apply (see the description).
    return {"type": "string", "pattern": NUMERIC_STRING_PATTERN}


def _json_default(f: schemas.Field) -> Any:
    if f.kind == "duration_range" and isinstance(f.default, tuple):
        low, high = f.default
        return f"{low:g}-{high:g}"
    return f.default


def field_schema(f: schemas.Field, choices: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """The JSON Schema (OpenAPI 3.1 dialect) of one request field."""
    kind = f.kind
    if kind in ("number", "integer"):
        number: dict[str, Any] = {"type": kind, **_bounds(f)}
        out: dict[str, Any] = {"anyOf": [number, _numeric_string(f)]}
    elif kind == "boolean":
        out = {"anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false", "1", "0"]}]}
    elif kind == "string":
        out = {"type": "string"}
        if f.max_length is not None:
            out["maxLength"] = f.max_length
    elif kind == "choice":
        options = list(choices or f.choices or ())
        out = {"type": "string", "enum": options}
    elif kind == "duration_range":
        # MIN and MAX are numbers inside a string; their bounds are machine-readable here.
        out = {"type": "string", "pattern": DURATION_RANGE_PATTERN,
               "x-range-bounds": {"minimum": f.minimum or 1.0, "maximum": f.maximum or schemas.MAX_WINDOW_SECONDS}}
    elif kind == "http_url":
        out = {"type": "string", "format": "uri", "pattern": r"^\s*[hH][tT][tT][pP][sS]?://"}
        if f.max_length is not None:
            out["maxLength"] = f.max_length
    elif kind == "base64_audio":
        out = {"type": "string", "contentEncoding": "base64", "minLength": 1, "pattern": BASE64_PATTERN}
    else:  # a new kind must be described here before it ships
        raise ValueError(f"field {f.name!r} has kind {kind!r}, which the OpenAPI generator does not know")

    description = f.help
    if kind == "duration_range":
        description += f" MIN and MAX lie within {_num(f.minimum or 1.0)}–{_num(f.maximum or schemas.MAX_WINDOW_SECONDS)}."
    elif kind in ("number", "integer") and f.minimum is not None and f.maximum is not None:
        description += f" Range {_num(f.minimum)}–{_num(f.maximum)}; a JSON number or a numeric string."
    out["description"] = description
    default = _json_default(f)
    if default is not None:
        out["default"] = default
    if f.example is not None:
        out["examples"] = [f.example]
    if not f.required:
        # null (or "" for non-string fields) means "use the default".
        out = {**out, "anyOf": out["anyOf"] + [{"type": "null"}]} if "anyOf" in out else _nullable(out)
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    kind = out.pop("type")
    out["type"] = [kind, "null"]
    if "enum" in out:
        out["enum"] = list(out["enum"]) + [None]
    return out


def request_schema(schema: schemas.Schema, settings: Settings) -> dict[str, Any]:
    choices = {"model": list(settings.model_ids)}
    properties = {f.name: field_schema(f, choices.get(f.name)) for f in schema.fields}
    if "model" in properties:
        properties["model"]["default"] = settings.default_model
    out: dict[str, Any] = {
        "type": "object",
        "title": schema.name,
        "description": schema.description,
        "properties": properties,
        # Unknown fields are ignored, as the gary4web clients send extra ones.
        "additionalProperties": True,
    }
    required = [f.name for f in schema.fields if f.required]
    if required:
        out["required"] = required
    example = {f.name: f.example for f in schema.fields if f.example is not None}
    if schema is schemas.CONTINUE:
        example = {"audio": "UklGRi4AAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAACABAAZGF0YQoAAAAAAAAAAAAAAAAA", **example}
    out["examples"] = [example]
    return out


# -- responses ----------------------------------------------------------------------

def _nullable_type(kind: str | list[str], **extra: Any) -> dict[str, Any]:
    kinds = [kind] if isinstance(kind, str) else list(kind)
    return {"type": kinds + ["null"], **extra}


def _components(settings: Settings) -> dict[str, Any]:
    task_id = {"type": "string", "description": "Opaque, unguessable task id (at least 128 random bits).",
               "examples": ["3q2-7wEjJ0m6bJk1pPqkqXjZs3T1cV6Y"]}
    return {
        "schemas": {
            "GenerateRequest": request_schema(schemas.GENERATE, settings),
            "ContinueRequest": request_schema(schemas.CONTINUE, settings),
            "Error": {
                "type": "object",
                "required": ["error", "code"],
                "properties": {
                    "error": {"type": "string", "description": "A human sentence."},
                    "code": {"type": "string", "description": "A machine-readable code, e.g. `invalid_field`, "
                             "`missing_field`, `url_refused`, `task_not_found`, `payload_too_large`, "
                             "`queue_unavailable`, `store_unavailable`."},
                },
                "examples": [{"error": "'promptLength' must be at most 30, got 45", "code": "invalid_field"}],
            },
            "SubmitResponse": {
                "type": "object",
                "required": ["task_id", "status", "queue_position"],
                "properties": {
                    "task_id": task_id,
                    "status": {"type": "string", "enum": ["queued"]},
                    "queue_position": {"type": "integer", "minimum": 0,
                                       "description": "1-based place in the queue (0 if already picked up)."},
                },
            },
            "TaskStatus": {"type": "string", "enum": TASK_STATUSES},
            "Task": {
                "type": "object",
                "required": ["task_id", "status", "progress", "model", "created_at", "started_at", "completed_at",
                             "error", "queue_position", "parent_task_id", "request", "duration_seconds",
                             "sample_rate", "bpm"],
                "properties": {
                    "task_id": task_id,
                    "status": {"$ref": "#/components/schemas/TaskStatus"},
                    "progress": {"type": "number", "minimum": 0, "maximum": 100},
                    "model": _nullable_type("string"),
                    "created_at": _nullable_type("string", format="date-time"),
                    "started_at": _nullable_type("string", format="date-time"),
                    "completed_at": _nullable_type("string", format="date-time"),
                    "error": _nullable_type("string", description="Why the task failed."),
                    "queue_position": {"type": "integer", "minimum": 0},
                    "parent_task_id": _nullable_type("string"),
                    "request": {"type": "object", "description": "The validated request as stored."},
                    "duration_seconds": _nullable_type("number"),
                    "sample_rate": _nullable_type("integer"),
                    "channels": _nullable_type("integer"),
                    "bpm": _nullable_type("number"),
                    "seed": _nullable_type("integer"),
                    "output_format": _nullable_type("string"),
                    "processing_time_ms": _nullable_type("number"),
                    "batch_size": _nullable_type("integer"),
                    "eta_seconds": _nullable_type("number", description="Estimated seconds until the task "
                                                  "ends, from recent batch times; null when unknown or ended."),
                    "cancel_requested": {"type": "boolean"},
                    "attempts": _nullable_type("integer"),
                    "webhook_delivery": _nullable_type("object", description="Outcome of the webhook call."),
                    "audio_url": {"type": "string", "description": "Where to download the result (events)."},
                    "audio": {"type": "string", "contentEncoding": "base64",
                              "description": "The result (WAV or MP3), only when status is completed."},
                },
            },
            "FetchResult": {
                "type": "object",
                "required": ["status"],
                "properties": {
                    "status": {"$ref": "#/components/schemas/TaskStatus"},
                    "audio": {"type": "string", "contentEncoding": "base64", "description": "When completed."},
                    "error": _nullable_type("string", description="When failed."),
                },
            },
            "Progress": {
                "type": "object",
                "required": ["progress"],
                "properties": {"progress": {"type": "number", "minimum": 0, "maximum": 100,
                                            "description": "Non-decreasing; 0 while queued, 100 once completed."}},
            },
            "Health": {
                "type": "object",
                "required": ["mongodb", "redis", "pytorch", "status"],
                "properties": {
                    "mongodb": {"type": "string", "enum": ["live", "down"]},
                    "redis": {"type": "string", "enum": ["live", "down"]},
                    "pytorch": {"type": "string", "enum": ["live", "down"],
                                "description": "live when a worker reported a working torch device recently."},
                    "status": {"type": "string", "enum": ["live", "degraded"]},
                    "workers": {"type": "integer", "minimum": 0},
                    "queue_depth": _nullable_type("integer", minimum=0),
                    "device": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}},
                                         {"type": "null"}], "description": "e.g. cuda:0 or cpu"},
                    "models_loaded": {"type": "array", "items": {"type": "string"}},
                    "models_failed": {"type": "object", "additionalProperties": {"type": "string"},
                                      "description": "Models a worker could not load, with the reason; "
                                                     "status is degraded while the default model is among them "
                                                     "and no worker has it loaded."},
                    "torch_version": _nullable_type("string"),
                    "worker_details": {"type": "array", "items": {"type": "object"}},
                    "checked_at": {"type": "number", "description": "Unix time of this report."},
                },
            },
            "Ping": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
        },
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


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _err(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _submit(summary: str, schema: schemas.Schema, request_ref: str, tag: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": tag,
            "summary": summary,
            "description": schema.description,
            "tags": ["tasks"],
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request_ref}"}}}},
            "responses": {
                "202": _json("SubmitResponse", "Queued."),
                "400": _err("BadRequest"),
                "413": _err("PayloadTooLarge"),
                "429": _err("TooManyRequests"),
                "503": _err("Unavailable"),
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
            "responses": {"200": _json(ref, summary), "404": _err("NotFound"), "429": _err("TooManyRequests"),
                          "503": _err("Unavailable")},
        },
    }


def build_openapi(settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of every route of the API process, for these settings."""
    from . import openapi_routes  # it builds on this module's helpers

    paths = {
        "/generate": _submit("Continue the media at a URL", schemas.GENERATE, "GenerateRequest", "generate"),
        "/continue": _submit("Extend a clip the client holds", schemas.CONTINUE, "ContinueRequest", "continue"),
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
            "responses": {"200": _json("Health", "Every part is live."),
                          "503": _json("Health", "At least one part is down.")},
        }},
        "/ping": {"get": {
            "operationId": "ping",
            "summary": "Liveness of the API process alone",
            "tags": ["service"],
            "responses": {"200": _json("Ping", "The API process answers.")},
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
    components["schemas"].update(openapi_routes.schemas())
    if getattr(settings, "api_keys", ()):  # API keys on: the task routes need one (probes and docs do not)
        for path in ("/generate", "/continue", "/tasks/{task_id}", "/fetch-result/{task_id}", "/progress/{task_id}",
                     "/tasks/{task_id}/events", "/tasks/{task_id}/stream", "/tasks/{task_id}/audio",
                     "/tasks/{task_id}/cancel"):
            for method, op in paths[path].items():
                if method != "parameters":
                    op["security"] = [{"bearer": []}, {"apiKey": []}]
                    op["responses"].update({"401": _err("Unauthorized"), "403": _err("Forbidden")})
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


# -- the /docs page --------------------------------------------------------------------

def _resolve(doc: dict, node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _type_text(doc: dict, schema: dict) -> str:
    schema = _resolve(doc, schema)
    if "anyOf" in schema:
        parts = []
        for option in schema["anyOf"]:
            option = _resolve(doc, option)
            if option.get("type") == "string" and option.get("pattern") == NUMERIC_STRING_PATTERN:
                parts.append("numeric string")
            else:
                parts.append(_type_text(doc, option))
        return " | ".join(dict.fromkeys(parts))
    if "const" in schema:
        return json.dumps(schema["const"])
    kind = schema.get("type", "any")
    text = " | ".join(kind) if isinstance(kind, list) else kind
    if "enum" in schema:
        text += " — one of " + ", ".join(json.dumps(v) for v in schema["enum"] if v is not None)
    if "format" in schema:
        text += f" ({schema['format']})"
    return text


def _constraints(schema: dict) -> str:
    found: list[str] = []
    options = [schema] + list(schema.get("anyOf", []))
    for option in options:
        for key, label in (("minimum", "min"), ("maximum", "max"), ("maxLength", "max length")):
            if key in option and f"{label} {_num(option[key])}" not in found:
                found.append(f"{label} {_num(option[key])}")
    return ", ".join(found)


def _schema_table(doc: dict, schema: dict) -> str:
    schema = _resolve(doc, schema)
    props = schema.get("properties") or {}
    if not props:
        return f"<p><code>{html.escape(_type_text(doc, schema))}</code></p>"
    required = set(schema.get("required", []))
    rows = []
    for name, prop in props.items():
        prop = _resolve(doc, prop)
        default = json.dumps(prop["default"]) if "default" in prop else ""
        example = json.dumps(prop["examples"][0]) if prop.get("examples") else ""
        rows.append(
            "<tr>"
            f"<td><code>{html.escape(name)}</code>{' <strong>required</strong>' if name in required else ''}</td>"
            f"<td>{html.escape(_type_text(doc, prop))}</td>"
            f"<td>{html.escape(_constraints(prop))}</td>"
            f"<td><code>{html.escape(default)}</code></td>"
            f"<td><code>{html.escape(example)}</code></td>"
            f"<td>{html.escape(prop.get('description', ''))}</td>"
            "</tr>")
    return ("<table><thead><tr><th>field</th><th>type</th><th>bounds</th><th>default</th><th>example</th>"
            "<th>meaning</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _paragraphs(text: str) -> str:
    out = []
    for block in text.strip().split("\n\n"):
        block = block.strip()
        if block.startswith("### "):
            out.append(f"<h3>{html.escape(block[4:].splitlines()[0])}</h3>")
            rest = "\n".join(block.splitlines()[1:]).strip()
            if rest:
                out.append(f"<p>{html.escape(rest)}</p>")
        elif block.startswith("- "):
            items = "".join(f"<li>{html.escape(item.strip())}</li>" for item in block.split("\n- "))
            out.append(f"<ul>{items.replace('<li>- ', '<li>', 1)}</ul>")
        else:
            out.append(f"<p>{html.escape(block)}</p>")
    return "\n".join(out)


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;
color:#1d1d1f;line-height:1.45}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2.5rem}
.op{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.method{display:inline-block;min-width:3.5rem;font-weight:700;color:#fff;border-radius:4px;padding:.1rem .5rem;
text-align:center;margin-right:.5rem} .get{background:#2b7bb9} .post{background:#2f9e44}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.5rem 0} th,td{border:1px solid #e3e3e3;
padding:.3rem .5rem;vertical-align:top;text-align:left} th{background:#f6f6f6} code{background:#f3f3f3;
padding:0 .2rem;border-radius:3px} .muted{color:#666}
"""


def render_html(doc: dict) -> str:
    """A self-contained HTML reference of the document: routes, fields, types, defaults, errors."""
    info = doc["info"]
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">",
        f"<title>{html.escape(info['title'])} API reference</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(info['title'])} API</h1>",
        f"<p class=\"muted\">version {html.escape(info['version'])} · OpenAPI {html.escape(doc['openapi'])} · "
        "machine-readable document: <a href=\"openapi.json\"><code>/openapi.json</code></a></p>",
        _paragraphs(info.get("description", "")),
        "<h2>Routes</h2><ul>",
    ]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            anchor = f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", "")
            parts.append(f"<li><a href=\"#{html.escape(anchor)}\"><code>{method.upper()} {html.escape(path)}</code></a>"
                         f" — {html.escape(op.get('summary', ''))}</li>")
    parts.append("</ul>")
    for path, item in doc["paths"].items():
        shared_params = item.get("parameters", [])
        for method, op in item.items():
            if method == "parameters":
                continue
            anchor = f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", "")
            parts.append(f"<div class=\"op\" id=\"{html.escape(anchor)}\"><h3><span class=\"method {method}\">"
                         f"{method.upper()}</span><code>{html.escape(path)}</code></h3>")
            parts.append(f"<p><strong>{html.escape(op.get('summary', ''))}</strong></p>")
            if op.get("description"):
                parts.append(f"<p>{html.escape(op['description'])}</p>")
            params = [_resolve(doc, p) for p in shared_params + op.get("parameters", [])]
            if params:
                parts.append("<h4>Parameters</h4><ul>")
                for p in params:
                    parts.append(f"<li><code>{html.escape(p['name'])}</code> (in {p['in']}): "
                                 f"{html.escape(p.get('description', ''))}</li>")
                parts.append("</ul>")
            body = op.get("requestBody")
            if body:
                for media, content in body["content"].items():
                    schema = _resolve(doc, content["schema"])
                    parts.append(f"<h4>Request body (<code>{html.escape(media)}</code>)</h4>")
                    parts.append(_schema_table(doc, schema))
                    if schema.get("examples"):
                        parts.append("<p>Example:</p><pre><code>"
                                     f"{html.escape(json.dumps(schema['examples'][0], indent=2))}</code></pre>")
            parts.append("<h4>Responses</h4>")
            for status, response in op["responses"].items():
                response = _resolve(doc, response)
                parts.append(f"<p><strong>{html.escape(status)}</strong> — {html.escape(response['description'])}</p>")
                for media, content in (response.get("content") or {}).items():
                    ref = content["schema"].get("$ref", "")
                    if ref.endswith("/Error") and status != "200":
                        parts.append("<p class=\"muted\"><code>{\"error\": \"…\", \"code\": \"…\"}</code></p>")
                    elif media == "application/json":
                        parts.append(_schema_table(doc, content["schema"]))
            parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
