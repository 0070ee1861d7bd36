"""Reading tasks: the gary4web polling routes."""

import base64

from flask import Blueprint, jsonify

from .. import services as svc
from ..context import services

bp = Blueprint("tasks", __name__)


@bp.get("/tasks/<task_id>")
def get_task(task_id: str):
    s = services()
    return jsonify(svc.task_view(s, svc.load_task(s, task_id)))


@bp.get("/fetch-result/<task_id>")
def fetch_result(task_id: str):
    s = services()
    doc = svc.load_task(s, task_id)
    body = {"status": doc["status"]}
    if doc["status"] == "completed":
        body["audio"] = base64.b64encode(svc.result_bytes(s, doc)).decode("ascii")
    elif doc["status"] == "failed":
        body["error"] = doc.get("error")
    return jsonify(body)


@bp.get("/progress/<task_id>")
def progress(task_id: str):
    s = services()
    doc = svc.load_task(s, task_id)
    return jsonify({"progress": round(svc.current_progress(s, doc), 2)})
