"""API keys: off by default, SHA-256 digests in the settings, Bearer or X-API-Key, constant-time comparison."""

import hashlib

import pytest

from backend.api import auth
from backend.api.app import create_app
from backend.core.settings import Settings

KEY = "segue-test-key-8c1f5e0d9b2a4f7e"
OTHER_KEY = "segue-other-key-1d2c3b4a"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def keyed(settings):
    app = create_app(settings=settings.with_(api_keys=(digest(KEY), digest(OTHER_KEY))))
    app.config["TESTING"] = True
    return app.test_client()


def generate(client, media_server, **headers):
    return client.post("/generate", json={"url": media_server.url("/click120.wav")}, headers=headers)


def test_auth_is_off_by_default(client, media_server):
    assert Settings().api_keys == ()
    assert generate(client, media_server).status_code == 202


def test_missing_key_is_401_json(keyed, media_server, services):
    response = generate(keyed, media_server)
    assert response.status_code == 401
    assert response.get_json()["code"] == "missing_api_key" and set(response.get_json()) == {"error", "code"}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    for path in ("/tasks/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "/progress/x", "/fetch-result/x"):
        assert keyed.get(path).status_code == 401
    # An Authorization header of another scheme is no key either.
    assert generate(keyed, media_server, Authorization=f"Basic {KEY}").status_code == 401


def test_wrong_key_is_403_and_stores_nothing(keyed, media_server, services):
    for headers in ({"Authorization": "Bearer not-the-key"}, {"X-API-Key": "not-the-key"},
                    {"X-API-Key": digest(KEY)}):  # the digest itself is not a key
        response = generate(keyed, media_server, **headers)
        assert response.status_code == 403, headers
        assert response.get_json()["code"] == "invalid_api_key"
    assert services.store.tasks.count_documents({}) == 0


def test_right_key_as_bearer_or_x_api_key(keyed, media_server):
    response = generate(keyed, media_server, Authorization=f"Bearer {KEY}")
    assert response.status_code == 202
    task_id = response.get_json()["task_id"]
    assert generate(keyed, media_server, **{"X-API-Key": OTHER_KEY}).status_code == 202
    assert generate(keyed, media_server, Authorization=f"bearer {KEY}").status_code == 202
    assert keyed.get(f"/progress/{task_id}", headers={"X-API-Key": KEY}).get_json() == {"progress": 0.0}


def test_health_ping_and_preflight_need_no_key(keyed):
    assert keyed.get("/health").status_code in (200, 503)  # no worker here: 503, but not 401
    assert keyed.get("/health").get_json()["mongodb"] == "live"
    assert keyed.get("/ping").status_code == 200
    response = keyed.options("/generate", headers={"Origin": "https://example.org",
                                                   "Access-Control-Request-Method": "POST",
                                                   "Access-Control-Request-Headers": "authorization, x-api-key"})
    assert response.status_code == 200
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", "https://example.org")
    assert "authorization" in response.headers.get("Access-Control-Allow-Headers", "").lower()


def test_errors_carry_cors_headers(keyed, media_server):
    response = keyed.post("/generate", json={"url": media_server.url("/click120.wav")},
                          headers={"Origin": "https://example.org"})
    assert response.status_code == 401
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", "https://example.org")


def test_comparison_is_constant_time_against_every_digest(keyed, media_server, monkeypatch):
    import hmac

    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert generate(keyed, media_server, Authorization=f"Bearer {KEY}").status_code == 202
    # Every configured digest is compared, even after the first one matched.
    assert [b for _, b in calls] == [digest(KEY).encode(), digest(OTHER_KEY).encode()]
    calls.clear()
    assert generate(keyed, media_server, **{"X-API-Key": "wrong"}).status_code == 403
    assert len(calls) == 2


def test_current_owner_names_the_key_or_the_ip(settings):
    keyed_app = create_app(settings=settings.with_(api_keys=(digest(KEY),)))
    with keyed_app.test_request_context("/generate", method="POST", headers={"X-API-Key": KEY}):
        keyed_app.preprocess_request()
        assert auth.current_owner() == f"key:{digest(KEY)[:16]}"
    open_app = create_app(settings=settings)
    with open_app.test_request_context("/generate", method="POST", environ_base={"REMOTE_ADDR": "198.51.100.7"},
                                       headers={"X-Forwarded-For": "203.0.113.1"}):
        open_app.preprocess_request()
        assert auth.current_owner() == "ip:198.51.100.7"  # X-Forwarded-For ignored by default
    proxied = create_app(settings=settings.with_(trust_proxy=True))
    with proxied.test_request_context("/generate", method="POST", environ_base={"REMOTE_ADDR": "10.0.0.2"},
                                      headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.1"}):
        proxied.preprocess_request()
        assert auth.current_owner() == "ip:203.0.113.1"  # the entry our proxy appended
    assert auth.current_owner() is None  # outside a request


def test_settings_take_digests_not_keys():
    settings = Settings.from_env({"SEGUE_API_KEYS": f"{digest(KEY).upper()}, {digest(OTHER_KEY)}"})
    assert settings.api_keys == (digest(KEY), digest(OTHER_KEY))
    assert Settings.from_env(settings.as_env()) == settings
    with pytest.raises(ValueError, match="SEGUE_API_KEYS"):
        Settings.from_env({"SEGUE_API_KEYS": KEY})
