"""POST /generate and POST /continue: validate, store, enqueue, answer 202."""

from flask import Blueprint, jsonify

from backend.api import schemas
from backend.api import services as svc
from backend.api.context import services
from backend.api.routes.request_body import json_body

bp = Blueprint("generation", __name__)


@bp.post("/generate")
def generate():
    s = services()
    values = schemas.parse(schemas.GenerateRequest, json_body(), s.settings.model_ids)
    return jsonify(svc.submit_generate(s, values)), 202


@bp.post("/continue")
def continue_clip():
    s = services()
    values = schemas.parse(schemas.ContinueRequest, json_body(), s.settings.model_ids)
    return jsonify(svc.submit_continue(s, values)), 202
