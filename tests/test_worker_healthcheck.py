"""worker/serving/healthcheck.py against a real Redis: liveness wants this host's fresh heartbeat, --ready
(Kubernetes' startup and readiness probes) also wants the default model's first load ended."""

import socket

import redis

from backend.core import heartbeat
from worker.serving import healthcheck


def beat(settings, **info):
    conn = redis.Redis.from_url(settings.redis_url)
    heartbeat.write(conn, "w1", dict({"host": socket.gethostname(), "torch_ok": True}, **info), 10)


def test_live_and_ready(settings, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    assert healthcheck.main([]) == 1 and healthcheck.main(["--ready"]) == 1  # no heartbeat yet
    beat(settings, ready=False)  # loading its default model
    assert healthcheck.main([]) == 0
    assert healthcheck.main(["--ready"]) == 1
    beat(settings, ready=True)
    assert healthcheck.main(["--ready"]) == 0
    assert "1 ready worker(s)" in capsys.readouterr().out


def test_another_hosts_worker_does_not_count(settings, monkeypatch):
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    beat(settings, ready=True, host="some-other-pod")
    assert healthcheck.main([]) == 1 and healthcheck.main(["--ready"]) == 1


def test_redis_unreachable_fails_the_probe(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert healthcheck.main([]) == 1
