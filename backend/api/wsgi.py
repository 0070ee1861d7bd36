"""gunicorn entry point: ``gunicorn backend.api.wsgi:app``."""

from backend.api.app import create_app

app = create_app()
