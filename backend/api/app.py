"""Flask application factory (the API process: no torch here, ever)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask_cors import CORS

from backend.api import auth, errorhandlers, ratelimit
from backend.api.admission import StreamAdmission
from backend.api.routes import docs, generation, health, live, models, pages, queue, tasks
from backend.api.routes import metrics as metrics_routes
from backend.core import audiofile
from backend.core.connections import Services
from backend.core.settings import Settings


def create_app(overrides: dict[str, Any] | None = None, *, settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env(**(overrides or {}))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    init_app(app, settings)
    return app


def init_app(app: Flask, settings: Settings) -> None:
    services = Services.from_settings(settings)
    app.extensions["segue"] = services
    audiofile.configure_ffmpeg(settings.ffmpeg_max_concurrent, settings.ffmpeg_wait_seconds)
    origins = list(settings.cors_origins)
    CORS(app, origins="*" if origins == ["*"] else origins,
         expose_headers=["Content-Disposition", "X-Processing-Time-Ms", "X-Audio-Duration-Seconds", "Retry-After"])
    errorhandlers.register(app)
    auth.init_app(app, settings)  # before the limiter, so limits count per API key
    ratelimit.init_app(app, settings)
    for blueprint in (generation.bp, tasks.bp, live.bp, models.bp, health.bp, queue.bp, docs.bp, metrics_routes.bp,
                      pages.bp):
        app.register_blueprint(blueprint)
    # Outermost: a stream request waits for its admission slot before any of Flask's work for it.
    app.wsgi_app = app.extensions["segue_admission"] = StreamAdmission(app.wsgi_app, settings.stream_admissions)
    try:
        services.store.ensure_indexes()
    except Exception as exc:  # MongoDB may start after us; indexes are retried on first write
        app.logger.warning("could not create MongoDB indexes yet: %s", exc)

