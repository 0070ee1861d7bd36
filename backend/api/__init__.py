"""The HTTP API process (Flask under gunicorn): the app factory (``backend.api.app``), routes, auth,
rate limits, request and response models, error handlers, OpenAPI and the pages. Never imports torch.

This package's ``__init__`` imports nothing, so the request and response models can be used (by the
Python client) without Flask installed."""
