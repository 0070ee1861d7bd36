"""GET /metrics: Prometheus text, read from Redis and MongoDB at scrape time (same numbers on every API process)."""

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from backend.api import prometheus

bp = Blueprint("metrics", __name__)

REGISTRY = "segue_metrics_registry"


@bp.record_once
def _make_registry(state) -> None:
    # One registry per app: tests build several apps in one process.
    state.app.extensions[REGISTRY] = prometheus.registry_for(state.app.extensions["segue"])


@bp.get("/metrics")
def scrape():
    # A Redis or MongoDB error raised while collecting reaches the JSON 503 handlers.
    return Response(generate_latest(current_app.extensions[REGISTRY]), mimetype=None,
                    content_type=CONTENT_TYPE_LATEST)
