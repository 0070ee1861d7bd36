"""The OpenAPI document is valid, complete, generated from the request and response models, and rendered at /docs."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from backend.api import fieldtypes, openapi, responses, schemas
from backend.api.routes import docs
from backend.core.settings import Settings


@pytest.fixture
def docs_app(app):
    if "docs" not in app.blueprints:  # until backend/api/app.py registers it
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


@pytest.mark.parametrize("model", [schemas.GenerateRequest, schemas.ContinueRequest], ids=lambda m: m.__name__)
def test_request_fields_are_generated_from_the_models(document, settings, model):
    body = document["components"]["schemas"][model.__name__]
    props = body["properties"]
    assert schemas.field_order(model) == list(props)
    assert body.get("required", []) == [name for name, f in model.model_fields.items() if f.is_required()]
    assert body["additionalProperties"] is True and body["description"] == model.__doc__
    for name, f in model.model_fields.items():
        prop = props[name]
        assert prop["description"].startswith(f.description)
        marker = fieldtypes.marker_of(f.metadata)
        if isinstance(marker, fieldtypes.Number):
            number, numeric_string = prop["anyOf"][0], prop["anyOf"][1]
            assert number["type"] == ("integer" if marker.integer else "number")
            assert numeric_string["type"] == "string" and numeric_string["pattern"]
            assert number["minimum"] == marker.minimum and number["maximum"] == marker.maximum
        elif isinstance(marker, fieldtypes.DurationRange):
            assert prop["x-range-bounds"] == {"minimum": marker.minimum, "maximum": marker.maximum}
        if getattr(marker, "max_length", None) is not None:
            assert prop["maxLength"] == marker.max_length
        if name == "model":
            assert [v for v in prop["enum"] if v is not None] == list(settings.models)
            assert prop["default"] == settings.default_model
        elif isinstance(marker, fieldtypes.Choice):
            assert [v for v in prop["enum"] if v is not None] == list(marker.choices)
        if not f.is_required() and f.default is not None:
            assert prop["default"] == f.default
        if f.examples:
            assert prop["examples"] == f.examples
    assert props["duration"]["default"] == ("16-18" if model is schemas.GenerateRequest else 30.0)


def test_component_schemas_are_the_models_json_schemas(settings):
    doc = openapi.build_openapi(settings)
    for model in (*openapi.REQUESTS, *responses.DOCUMENTED):
        expected = model.model_json_schema(ref_template=openapi.REF_TEMPLATE)
        expected.pop("$defs", None)
        published = doc["components"]["schemas"][model.__name__]
        if model in openapi.REQUESTS:  # the offered models come from the settings
            published = {**published, "properties": {**published["properties"],
                                                     "model": expected["properties"]["model"]}}
        assert published == expected, model.__name__
    assert doc["components"]["schemas"]["TaskStatus"]["enum"] == [s.value for s in responses.TaskStatus]


def test_numeric_string_pattern_matches_what_the_parser_accepts():
    import re

    pattern = re.compile(openapi.NUMERIC_STRING_PATTERN)
    for text in ("6", " 6 ", "6.5", "+7", "1e1", ".5e1", "1_0"):
        assert pattern.match(text), text
        schemas.parse(schemas.GenerateRequest, {"url": "https://e.com/a", "promptLength": text})  # accepted too
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
    from backend.api.routes import docs

    first = client.get("/openapi.json")
    hits = docs._rendered.cache_info().hits
    again = client.get("/openapi.json")
    page = client.get("/docs")
    assert docs._rendered.cache_info().hits == hits + 2
    assert first.get_json() == again.get_json() and first.mimetype == "application/json"
    assert page.status_code == 200 and page.mimetype == "text/html"
