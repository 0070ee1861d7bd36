"""GET / (the web app) and GET /status (the status page): HTML shells for the ES modules under /static/.

The pages are public (see ``auth.EXEMPT_PATHS``); the API calls they make carry
the key the user typed. Everything a page needs to know about this deployment
is rendered into it as one JSON block, so the scripts need no extra request
before they can draw.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, render_template, request

from backend.api.context import services

bp = Blueprint("pages", __name__)


def sidecar_url(express_port: int) -> str:
    """The express sidecar as the browser reaches it: this request's hostname, the sidecar's port."""
    hostname = urlsplit(f"//{request.host}").hostname or "127.0.0.1"
    if ":" in hostname:  # an IPv6 literal needs its brackets back
        hostname = f"[{hostname}]"
    return f"{request.scheme}://{hostname}:{express_port}"


def page_config() -> dict:
    settings = services().settings
    return {
        "sidecarUrl": sidecar_url(settings.express_port),
        "authRequired": bool(settings.api_keys),
        "heartbeatSeconds": settings.heartbeat_seconds,
    }


@bp.get("/")
def webapp():
    return render_template("webapp.html", config=page_config())


@bp.get("/status")
def status_page():
    return render_template("status.html", config=page_config())
