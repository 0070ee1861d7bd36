"""GET /openapi.json (the document generated from the request and response models) and GET /docs (its HTML rendering)."""

import functools
import json

from flask import Blueprint, Response

from backend.api import openapi, openapi_html
from backend.api.context import services
from backend.core.settings import Settings

bp = Blueprint("docs", __name__)


@functools.lru_cache(maxsize=8)
def _rendered(settings: Settings) -> tuple[str, str]:
    """The document as JSON text and as the /docs page, built once per process (and settings)."""
    document = openapi.build_openapi(settings)
    return json.dumps(document), openapi_html.render_html(document)


@bp.get("/openapi.json")
def openapi_json():
    return Response(_rendered(services().settings)[0], mimetype="application/json")


@bp.get("/docs")
def docs():
    return Response(_rendered(services().settings)[1], mimetype="text/html")
