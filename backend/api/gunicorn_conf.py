"""gunicorn settings, shared by `make run` and the API container.

gevent workers (the default): an open ``/events`` or ``/stream`` connection
costs a greenlet waiting on the process's stream hub (``backend.api.hub``), not a
thread, so listeners can never use up what ``/health`` and ``POST /generate``
need. With sync or gthread workers every open stream holds a thread, and a
client opening a few dozen streams stopped the whole API (measured).

gunicorn's gevent worker monkey-patches the standard library itself
(``monkey.patch_all()`` in the worker process, before the app is imported), so
redis-py's and pymongo's sockets, ``threading`` and ``queue`` all become
cooperative there. Nothing here may import them before that: this file is read
by the arbiter, which only needs the settings.
"""

from backend.core.settings import Settings

_settings = Settings.from_env()

bind = f"{_settings.host}:{_settings.port}"
# gevent: gunicorn's gevent worker, accepting waiting connections in batches (see backend/api/gevent_worker.py).
worker_class = {"gevent": "backend.api.gevent_worker.GeventWorker"}.get(_settings.api_worker_class,
                                                                       _settings.api_worker_class)
workers = _settings.api_workers
threads = _settings.api_threads  # gthread only
worker_connections = _settings.api_connections  # gevent only
timeout = 120
graceful_timeout = 10
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level.lower()
