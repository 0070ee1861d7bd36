"""GET /models: the models this deployment offers."""

from flask import Blueprint, jsonify

from backend.api import services as svc
from backend.api.context import services

bp = Blueprint("models", __name__)


@bp.get("/models")
def models():
    return jsonify(svc.models_view(services()))
