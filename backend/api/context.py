"""The per-app service handles, reachable from any request."""

from flask import current_app

from backend.core.connections import Services


def services() -> Services:
    return current_app.extensions["segue"]
