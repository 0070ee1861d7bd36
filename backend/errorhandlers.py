"""Render every error as JSON: SegueError subclasses, HTTP errors and dependency outages."""

from __future__ import annotations

import logging

import redis
from flask import Flask, jsonify
from pymongo.errors import ConnectionFailure, PyMongoError
from werkzeug.exceptions import HTTPException

from .errors import SegueError

log = logging.getLogger(__name__)


def register(app: Flask) -> None:
    @app.errorhandler(SegueError)
    def _segue(exc: SegueError):
        response = jsonify(exc.to_json())
        response.status_code = exc.status
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                400: "bad_request"}.get(exc.code or 500, "http_error")
        message = exc.description or exc.name
        if exc.code == 413:
            limit_mb = app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024)
            message = f"the request body is larger than the {limit_mb:g} MB limit"
        return jsonify({"error": message, "code": code}), exc.code

    @app.errorhandler(redis.RedisError)
    def _redis_down(exc: redis.RedisError):
        log.warning("redis unavailable: %s", exc)
        return jsonify({"error": "the job queue (Redis) is unavailable; try again shortly",
                        "code": "queue_unavailable"}), 503

    @app.errorhandler(ConnectionFailure)
    def _mongo_down(exc: ConnectionFailure):
        log.warning("mongodb unavailable: %s", exc)
        return jsonify({"error": "the task store (MongoDB) is unavailable; try again shortly",
                        "code": "store_unavailable"}), 503

    @app.errorhandler(PyMongoError)
    def _mongo_error(exc: PyMongoError):
        log.exception("mongodb error")
        return jsonify({"error": "the task store (MongoDB) failed to answer", "code": "store_error"}), 503

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return jsonify({"error": "internal error; the server log has the details", "code": "internal_error"}), 500
