"""Imports go one way: the worker never loads Flask, the API never loads torch & co, the core neither.

Each check runs in a fresh interpreter (what one test imported would otherwise
hide what the next one pulls in) and imports every module of a package, found
by walking it, then reads ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "librosa")

# Run in a child: import the named modules, print which of the watched packages got loaded.
CHILD = """
import importlib, json, sys
modules, watched = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in modules:
    importlib.import_module(name)
print(json.dumps(sorted(w for w in watched if w in sys.modules)))
"""


def modules_of(package: str, *, skip: tuple[str, ...] = ()) -> list[str]:
    """The package and every module below it, found on disk (nothing imported here)."""
    path = ROOT / package.replace(".", "/")
    names = [package] + [m.name for m in pkgutil.walk_packages([str(path)], package + ".")]
    # __main__ modules run their program when imported; they are covered by what they import.
    return [n for n in names if not n.endswith(".__main__") and n not in skip]


def loaded_by(modules: list[str], watched: tuple[str, ...], env: dict[str, str] | None = None) -> list[str]:
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(modules), json.dumps(list(watched))],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_walk_finds_the_packages():
    assert "worker.serving.jobs" in modules_of("worker")
    assert "worker.pipeline.fetcher" in modules_of("worker")
    assert "backend.api.routes.tasks" in modules_of("backend.api")
    assert "backend.core.store" in modules_of("backend.core")


def test_no_worker_module_imports_flask():
    assert loaded_by(modules_of("worker"), ("flask", "flask_cors", "flask_limiter", "werkzeug")) == []


def test_the_api_imports_no_torch_transformers_or_librosa(redis_server, mongo_server):
    # backend.api.wsgi builds the app at import time, so it needs real service URLs.
    env = dict(os.environ, REDIS_URL=redis_server.url, MONGO_URL=mongo_server.url)
    assert loaded_by(modules_of("backend.api"), HEAVY, env) == []


def test_the_api_app_factory_imports_no_torch_transformers_or_librosa():
    assert loaded_by(["backend.api", "backend.api.app"], HEAVY) == []


def test_the_core_imports_neither_flask_nor_torch_transformers_librosa():
    assert loaded_by(modules_of("backend.core"), ("flask",) + HEAVY) == []


def test_the_client_needs_none_of_the_servers_packages():
    # `pip install segue` (no extra) gives requests and pydantic only: the client must run on those.
    server_only = ("flask", "redis", "rq", "pymongo", "numpy", "soundfile", "prometheus_client", "gevent") + HEAVY
    assert loaded_by(modules_of("backend.client"), server_only) == []
