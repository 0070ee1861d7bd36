"""gunicorn settings, shared by `make run` and the API container.

gthread workers: a server-sent-events stream holds a thread, not a whole
process, so one process with N threads serves N concurrent streams.
"""

from backend.settings import Settings

_settings = Settings.from_env()

bind = f"{_settings.host}:{_settings.port}"
worker_class = "gthread"
workers = _settings.api_workers
threads = _settings.api_threads
timeout = 120
graceful_timeout = 10
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level.lower()
