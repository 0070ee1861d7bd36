"""Rate limits (flask-limiter on the real Redis) and the queued-task cap (counted in the real MongoDB)."""

import hashlib

import pytest

from backend.api.app import create_app
from backend.core.clock import utcnow
from backend.core.settings import Settings

KEY_A = "rate-limit-key-a-0123456789"
KEY_B = "rate-limit-key-b-9876543210"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def make_client(settings, **changes):
    app = create_app(settings=settings.with_(**changes))
    app.config["TESTING"] = True
    return app.test_client(), app.extensions["segue"]


def generate(client, media_server, key=None, **environ):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post("/generate", json={"url": media_server.url("/click120.wav")}, headers=headers,
                       environ_base=environ)


def assert_429(response, code):
    assert response.status_code == 429
    body = response.get_json()
    assert set(body) == {"error", "code"} and body["code"] == code
    assert int(response.headers["Retry-After"]) >= 1


def test_defaults():
    settings = Settings.from_env({})
    assert settings.rate_limit == "30/minute" and settings.read_rate_limit == "1200/minute"
    assert settings.max_queued_per_key == 20 and settings.trust_proxy is False
    off = Settings.from_env({"SEGUE_RATE_LIMIT": "off", "SEGUE_READ_RATE_LIMIT": "0"})
    assert off.rate_limit == "off" and off.read_rate_limit == "off"
    assert Settings.from_env(off.as_env()) == off
    with pytest.raises(ValueError, match="SEGUE_RATE_LIMIT"):
        Settings.from_env({"SEGUE_RATE_LIMIT": "lots"})


def test_fourth_submission_is_429_per_key(settings, media_server):
    client, services = make_client(settings, rate_limit="3/minute", max_queued_per_key=0,
                                   api_keys=(digest(KEY_A), digest(KEY_B)))
    for _ in range(3):
        assert generate(client, media_server, KEY_A).status_code == 202
    response = generate(client, media_server, KEY_A)
    assert_429(response, "rate_limited")
    assert int(response.headers["Retry-After"]) <= 60
    assert services.store.tasks.count_documents({}) == 3
    # /continue shares the submission budget.
    assert_429(client.post("/continue", json={}, headers={"X-API-Key": KEY_A}), "rate_limited")
    # Another key has its own budget; reads are limited separately.
    assert generate(client, media_server, KEY_B).status_code == 202
    assert client.get("/progress/x", headers={"X-API-Key": KEY_A}).status_code == 404
    # The counters live in Redis: a second app (another gunicorn worker) sees them.
    other, _ = make_client(settings, rate_limit="3/minute", max_queued_per_key=0,
                           api_keys=(digest(KEY_A), digest(KEY_B)))
    assert_429(generate(other, media_server, KEY_A), "rate_limited")
    assert any(b"segue-ratelimit" in k for k in services.redis.keys("LIMITS*"))


def test_limit_is_per_ip_when_keys_are_off(settings, media_server):
    client, _ = make_client(settings, rate_limit="2/minute", max_queued_per_key=0)
    for _ in range(2):
        assert generate(client, media_server, REMOTE_ADDR="198.51.100.1").status_code == 202
    assert_429(generate(client, media_server, REMOTE_ADDR="198.51.100.1"), "rate_limited")
    assert generate(client, media_server, REMOTE_ADDR="198.51.100.2").status_code == 202
    # X-Forwarded-For does not reset a budget unless SEGUE_TRUST_PROXY is on.
    response = client.post("/generate", json={"url": media_server.url("/click120.wav")},
                           headers={"X-Forwarded-For": "203.0.113.9"}, environ_base={"REMOTE_ADDR": "198.51.100.1"})
    assert_429(response, "rate_limited")


def test_read_limit_and_exempt_routes(settings):
    client, _ = make_client(settings, read_rate_limit="2/minute")
    for _ in range(2):
        assert client.get("/progress/x").status_code == 404
    assert_429(client.get("/progress/x"), "rate_limited")
    for _ in range(4):  # probes and preflight never count
        assert client.get("/ping").status_code == 200
        assert client.get("/health").status_code in (200, 503)
        assert client.options("/generate", headers={"Origin": "https://example.org",
                                                    "Access-Control-Request-Method": "POST"}).status_code == 200


def test_limits_off(settings, media_server):
    client, _ = make_client(settings, rate_limit="off", read_rate_limit="", max_queued_per_key=0)
    assert client.application.extensions["segue_limiter"] is None
    for _ in range(5):
        assert generate(client, media_server).status_code == 202


def insert_active_tasks(services, owner, count, status="queued"):
    services.store.tasks.insert_many([
        {"_id": f"sim-{owner}-{status}-{i}", "job_id": f"sim-{i}", "status": status, "owner": owner,
         "created_at": utcnow(), "request": {}, "model": "m"} for i in range(count)])


def test_queued_cap_per_key(settings, media_server):
    client, services = make_client(settings, max_queued_per_key=3, api_keys=(digest(KEY_A), digest(KEY_B)))
    owner_a = f"key:{digest(KEY_A)[:16]}"
    insert_active_tasks(services, owner_a, 2, "queued")
    insert_active_tasks(services, owner_a, 1, "processing")
    insert_active_tasks(services, owner_a, 5, "completed")  # finished tasks do not count
    before = services.store.tasks.count_documents({})
    response = generate(client, media_server, KEY_A)
    assert_429(response, "too_many_queued")
    assert_429(client.post("/continue", json={}, headers={"X-API-Key": KEY_A}), "too_many_queued")
    assert services.store.tasks.count_documents({}) == before
    # Reads are not capped; another key is not affected.
    assert client.get("/progress/x", headers={"X-API-Key": KEY_A}).status_code == 404
    assert generate(client, media_server, KEY_B).status_code == 202
    # Once one of A's tasks ends, A may submit again.
    services.store.tasks.update_one({"owner": owner_a, "status": "processing"}, {"$set": {"status": "completed"}})
    assert generate(client, media_server, KEY_A).status_code == 202


def test_queued_cap_per_ip_when_keys_are_off(settings, media_server):
    client, services = make_client(settings, max_queued_per_key=1)
    insert_active_tasks(services, "ip:198.51.100.5", 1)
    assert_429(generate(client, media_server, REMOTE_ADDR="198.51.100.5"), "too_many_queued")
    assert generate(client, media_server, REMOTE_ADDR="198.51.100.6").status_code == 202


def test_redis_down_is_no_500(settings, media_server):
    """With the limiter's Redis unreachable, requests are still answered (in-memory counters take over)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    client, services = make_client(settings, rate_limit="2/minute", max_queued_per_key=0)
    limiter = client.application.extensions["segue_limiter"]
    from limits.storage import storage_from_string
    from limits.strategies import STRATEGIES

    # Point only the limiter at a dead Redis: the routes keep the real one.
    limiter._storage = storage_from_string(f"redis://127.0.0.1:{dead_port}/0", socket_connect_timeout=0.5)
    limiter._limiter = STRATEGIES["sliding-window-counter"](limiter._storage)
    for _ in range(2):
        assert generate(client, media_server).status_code == 202
    assert_429(generate(client, media_server), "rate_limited")
    assert limiter._storage_dead  # it did fall back to memory
    assert client.get("/ping").status_code == 200
