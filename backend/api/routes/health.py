"""GET /health (the status page's data) and GET /ping (a liveness probe for containers)."""

from flask import Blueprint, jsonify

from backend.api import services as svc
from backend.api.context import services

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    report = svc.health(services())
    return jsonify(report), 200 if report["status"] == "live" else 503


@bp.get("/ping")
def ping():
    return jsonify({"status": "ok"})
