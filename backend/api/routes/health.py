"""GET /health (the status page's data), GET /ping (liveness) and GET /ready (readiness) for containers."""

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


@bp.get("/ready")
def ready():
    # A readiness probe: 503 takes this process out of its Service until Redis and MongoDB answer again.
    report = svc.ready(services())
    return jsonify(report), 200 if report["status"] == "ready" else 503
