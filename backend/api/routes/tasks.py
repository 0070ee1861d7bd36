"""Tasks: the gary4web polling routes, the audio download and cancel."""

import base64

from flask import Blueprint, Response, jsonify

from backend.api import services as svc
from backend.api.context import services
from backend.core import view

bp = Blueprint("tasks", __name__)


@bp.get("/tasks/<task_id>")
def get_task(task_id: str):
    s = services()
    return jsonify(view.task_view(s, view.load_task(s, task_id)))


@bp.get("/fetch-result/<task_id>")
def fetch_result(task_id: str):
    s = services()
    doc = view.load_task(s, task_id)
    body = {"status": doc["status"]}
    if doc["status"] == "completed":
        body["audio"] = base64.b64encode(view.result_bytes(s, doc)).decode("ascii")
    elif doc["status"] == "failed":
        body["error"] = doc.get("error")
    return jsonify(body)


@bp.get("/progress/<task_id>")
def progress(task_id: str):
    s = services()
    doc = view.load_task(s, task_id)
    return jsonify({"progress": round(view.current_progress(s, doc), 2)})


@bp.get("/tasks/<task_id>/audio")
def audio(task_id: str):
    s = services()
    doc = view.load_task(s, task_id)
    data, content_type, filename = svc.result_file(s, doc)
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Processing-Time-Ms": str(doc.get("processing_time_ms") or 0),
        "X-Audio-Duration-Seconds": f"{doc.get('duration_seconds') or 0:g}",
        "Cache-Control": "private, max-age=3600",  # a finished result never changes
    }
    return Response(data, mimetype=content_type, headers=headers)


@bp.post("/tasks/<task_id>/cancel")
def cancel(task_id: str):
    return jsonify(svc.cancel_task(services(), task_id))
