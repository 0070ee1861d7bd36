"""GET /openapi.json (the document generated from the request schemas) and GET /docs (its HTML rendering)."""

from flask import Blueprint, Response, jsonify

from .. import openapi
from ..context import services

bp = Blueprint("docs", __name__)


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(openapi.build_openapi(services().settings))


@bp.get("/docs")
def docs():
    page = openapi.render_html(openapi.build_openapi(services().settings))
    return Response(page, mimetype="text/html")
