"""The OpenAPI document is valid, complete, generated from the request schemas, and rendered at /docs."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from backend import openapi, schemas
from backend.routes import docs
from backend.settings import Settings


@pytest.fixture
def docs_app(app):
    if "docs" not in app.blueprints:  # until backend/app.py registers it
        app.register_blueprint(docs.bp)
    return app


@pytest.fixture
def document(docs_app):
    response = docs_app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def _flask_path(rule: str) -> str:
    # /tasks/<task_id> -> /tasks/{task_id}; converters (<int:x>) lose their prefix.
    import re

    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_document_is_valid_openapi(document):
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "Segue"
    assert document["info"]["version"]


def test_default_settings_document_is_valid():
    validate(openapi.build_openapi(Settings()))


def test_every_flask_route_is_documented(docs_app, document):
    documented = {(path, method) for path, item in document["paths"].items() for method in item
                  if method != "parameters"}
    missing = []
    for rule in docs_app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if (_flask_path(rule.rule), method.lower()) not in documented:
                missing.append(f"{method} {rule.rule}")
    assert not missing, f"routes missing from the OpenAPI document: {missing}"
    for path in ("/generate", "/continue", "/tasks/{task_id}", "/fetch-result/{task_id}", "/progress/{task_id}",
                 "/health", "/ping", "/openapi.json", "/docs"):
        assert path in document["paths"]


@pytest.mark.parametrize("schema_obj", [schemas.GENERATE, schemas.CONTINUE], ids=lambda s: s.name)
def test_request_fields_are_generated_from_schemas(document, settings, schema_obj):
    body = document["components"]["schemas"][schema_obj.name]
    props = body["properties"]
    assert [f.name for f in schema_obj.fields] == list(props)
    assert body.get("required", []) == [f.name for f in schema_obj.fields if f.required]
    for f in schema_obj.fields:
        prop = props[f.name]
        assert prop["description"].startswith(f.help)
        if f.kind in ("number", "integer"):
            number, numeric_string = prop["anyOf"][0], prop["anyOf"][1]
            assert number["type"] == f.kind
            assert numeric_string["type"] == "string" and numeric_string["pattern"]
            assert number.get("minimum") == f.minimum and number.get("maximum") == f.maximum
        elif f.kind == "duration_range":
            assert prop["x-range-bounds"] == {"minimum": f.minimum, "maximum": f.maximum}
        if f.max_length is not None:
            assert prop["maxLength"] == f.max_length
        if f.name == "model":
            assert [v for v in prop["enum"] if v is not None] == list(settings.models)
            assert prop["default"] == settings.default_model
        elif f.kind == "choice":
            assert [v for v in prop["enum"] if v is not None] == list(f.choices)
        if f.default is not None:
            expected = f"{f.default[0]:g}-{f.default[1]:g}" if isinstance(f.default, tuple) else f.default
            assert prop["default"] == expected
        if f.example is not None:
            assert prop["examples"] == [f.example]


def test_numeric_string_pattern_matches_what_the_parser_accepts():
    import re

    pattern = re.compile(openapi.NUMERIC_STRING_PATTERN)
    field = next(f for f in schemas.GENERATE.fields if f.name == "promptLength")
    for text in ("6", " 6 ", "6.5", "+7", "1e1", ".5e1", "1_0"):
        assert pattern.match(text), text
        field.parse(text)  # the parser accepts it too
    for text in ("six", "6s", "--6", "0x10", "inf", "nan"):
        assert not pattern.match(text), text


def test_responses_document_submit_task_and_errors(document):
    gen = document["paths"]["/generate"]["post"]
    assert set(gen["responses"]) >= {"202", "400", "413", "429", "503"}
    submit = document["components"]["schemas"]["SubmitResponse"]
    assert submit["required"] == ["task_id", "status", "queue_position"]
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "code"]
    task = document["components"]["schemas"]["Task"]
    for key in ("task_id", "status", "progress", "model", "created_at", "started_at", "completed_at", "error",
                "queue_position", "parent_task_id", "request", "duration_seconds", "sample_rate", "bpm", "audio"):
        assert key in task["properties"]
    for path in ("/tasks/{task_id}", "/fetch-result/{task_id}", "/progress/{task_id}"):
        assert "404" in document["paths"][path]["get"]["responses"]
    assert "/crop-audio" in document["info"]["description"]  # the sidecar, described but not in paths
    assert "/crop-audio" not in document["paths"]


def test_document_follows_the_configured_models(app):
    doc = openapi.build_openapi(app.extensions["segue"].settings.with_(models=("a/one", "b/two")))
    enum = doc["components"]["schemas"]["GenerateRequest"]["properties"]["model"]["enum"]
    assert [v for v in enum if v is not None] == ["a/one", "b/two"]


def test_docs_page(docs_app):
    response = docs_app.test_client().get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "/generate" in page and "/continue" in page and "promptLength" in page
    assert "16-18" in page  # a default
    assert "<script" not in page and "cdn" not in page.lower()  # self-contained


def test_api_keys_are_documented_when_on(settings):
    import dataclasses

    if "api_keys" not in {f.name for f in dataclasses.fields(settings)}:
        pytest.skip("this Settings has no api_keys")
    doc = openapi.build_openapi(settings.with_(api_keys=("0" * 64,)))
    validate(doc)
    gen = doc["paths"]["/generate"]["post"]
    assert gen["security"] and {"401", "403"} <= set(gen["responses"])
    assert "security" not in doc["paths"]["/health"]["get"]


def test_the_document_is_built_once_per_process(client):
    from backend.routes import docs

    first = client.get("/openapi.json")
    hits = docs._rendered.cache_info().hits
    again = client.get("/openapi.json")
    page = client.get("/docs")
    assert docs._rendered.cache_info().hits == hits + 2
    assert first.get_json() == again.get_json() and first.mimetype == "application/json"
    assert page.status_code == 200 and page.mimetype == "text/html"
