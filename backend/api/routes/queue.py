"""GET /queue: queued plus running tasks, the number a queue-depth autoscaler needs.

A Redis list-length trigger (KEDA's ``redis`` scaler) sees only the jobs still waiting on RQ's list; a job a
worker holds has left it, so scaling on the list alone can take a busy worker away. KEDA's ``metrics-api``
trigger reads ``total`` here instead (deploy/kubernetes/base/worker-scaling.yaml).
"""

from flask import Blueprint, jsonify

from backend.api import services as svc
from backend.api.context import services

bp = Blueprint("queue", __name__)


@bp.get("/queue")
def queue_load():
    return jsonify(svc.queue_load(services()))
