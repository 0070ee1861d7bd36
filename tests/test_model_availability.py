"""Model ids the real clients send: offered by default, aliased to local folders, or failing clearly.

- The default ``SEGUE_MODELS`` accepts every id the gary4web web app and the
  gary-on-the-fly extension send, and ``/models`` describes each.
- ``ID=PATH`` serves a local folder under the id clients send.
- A worker that cannot load a model (offline, no local copy) stays up, says
  why in one log line and in its heartbeat, and fails only that model's tasks.
"""

import base64
import signal

import pytest

from backend.core.settings import Settings
from tests.conftest import wait_for
from tests.media_server import make_click_track
from tests.scenarios.test_many_workers import start_worker
from worker.pipeline.audio import encode_wav

WEB_APP_MODELS = ["facebook/musicgen-small", "thepatch/vanya_ai_dnb_0.1"]
EXTENSION_MODELS = ["facebook/musicgen-small", "facebook/musicgen-medium", "facebook/musicgen-large",
                    "facebook/musicgen-melody", "thepatch/vanya_ai_dnb_0.1", "thepatch/hoenn_lofi",
                    "thepatch/budots_remix", "thepatch/PhonkV2", "thepatch/bleeps-medium"]
FINE_TUNES = [m for m in EXTENSION_MODELS if m.startswith("thepatch/")]


def _clip_body(**extra):
    clip = make_click_track(120, 4.0, sr=32000)
    return {"audio": base64.b64encode(encode_wav(clip, 32000)).decode(), "prompt_duration": "2",
            "seed": 3, **extra}


def test_default_models_offer_every_id_the_real_clients_send(settings):
    from backend.api.app import create_app

    defaults = Settings()
    assert defaults.default_model == "facebook/musicgen-small"
    app = create_app(settings=settings.with_(models=defaults.models))
    models = {m["id"]: m for m in app.test_client().get("/models").get_json()["models"]}
    for model_id in set(WEB_APP_MODELS + EXTENSION_MODELS):
        info = models[model_id]
        assert info["size"] and info["channels"] == 1 and info["sample_rate"] == 32000, info
    for model_id in FINE_TUNES:
        assert models[model_id]["description"] and models[model_id]["kind"] == "audiocraft_checkpoint"
    assert models["facebook/musicgen-melody"]["kind"] == "musicgen_melody"
    # Each is accepted where the clients send it (validation only: nothing runs without a worker).
    client = app.test_client()
    for model_id in EXTENSION_MODELS:
        answer = client.post("/continue", json=_clip_body(model=model_id))
        assert answer.status_code == 202, (model_id, answer.get_json())


def test_an_alias_serves_a_local_folder_under_the_client_id(settings, tiny_model, run_worker):
    from backend.api.app import create_app

    aliased = settings.with_(models=(f"facebook/musicgen-small={tiny_model}", f"thepatch/hoenn_lofi={tiny_model}"))
    client = create_app(settings=aliased).test_client()
    listed = client.get("/models").get_json()
    assert listed["default"] == "facebook/musicgen-small"
    models = {m["id"]: m for m in listed["models"]}
    assert set(models) == {"facebook/musicgen-small", "thepatch/hoenn_lofi"}
    assert str(tiny_model) not in models  # the path is the worker's business, not the clients'
    assert models["facebook/musicgen-small"]["summary"].endswith("(local copy)")
    assert models["thepatch/hoenn_lofi"]["description"].startswith("lofi hip hop")  # a known id keeps its prompt

    task_id = client.post("/continue", json=_clip_body(model="facebook/musicgen-small")).get_json()["task_id"]
    run_worker(aliased)
    doc = client.get(f"/tasks/{task_id}").get_json()
    assert doc["status"] == "completed", doc["error"]
    assert doc["model"] == "facebook/musicgen-small"


def test_alias_syntax_is_checked():
    for bad in ("=/models/x", "facebook/musicgen-small=", "a,a=/x"):
        with pytest.raises(ValueError):
            Settings.from_env({"SEGUE_MODELS": bad})
    settings = Settings.from_env({"SEGUE_MODELS": "a=/models/a, b"})
    assert settings.model_ids == ("a", "b") and settings.default_model == "a"
    assert settings.model_source("a") == "/models/a" and settings.model_source("b") == "b"
    assert Settings.from_env(settings.as_env()).models == settings.models


def test_worker_offline_without_the_default_model_stays_up_and_says_why(client, services, settings, tiny_model,
                                                                        tmp_path, monkeypatch):
    # Offline, with an empty hub cache: the default model cannot be had; the tiny folder can.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hub"))
    offline = settings.with_(models=("facebook/musicgen-small", str(tiny_model)))
    log_path = tmp_path / "worker.log"
    worker = start_worker(offline, log_path)
    try:
        from backend.api.app import create_app

        api = create_app(settings=offline).test_client()

        def reported_failure():
            answer = api.get("/health")
            body = answer.get_json()
            return (answer, body) if body.get("models_failed") else None

        answer, health = wait_for(reported_failure, timeout=120, interval=0.5, message="the failed load in /health")
        reason = health["models_failed"]["facebook/musicgen-small"]
        assert "SEGUE_MODELS" in reason and "hub" in reason
        assert answer.status_code == 503 and health["status"] == "degraded"
        assert health["pytorch"] == "live"  # the worker itself works
        (details,) = health["worker_details"]
        assert details["models_failed"] == {"facebook/musicgen-small": reason}
        assert details["js_runtime"].startswith("deno ") and details["yt_dlp"]
        models = {m["id"]: m for m in api.get("/models").get_json()["models"]}
        assert models["facebook/musicgen-small"]["load_error"] == reason

        failing = api.post("/continue", json=_clip_body()).get_json()["task_id"]
        working = api.post("/continue", json=_clip_body(model=str(tiny_model))).get_json()["task_id"]

        def ended(task_id):
            return lambda: (d := services.store.get_task(task_id))["status"] in ("completed", "failed") and d

        failed = wait_for(ended(failing), timeout=120, interval=0.5, message="the task for the missing model")
        assert failed["status"] == "failed"
        assert failed["error"] == f"model facebook/musicgen-small could not be loaded: {reason}"
        done = wait_for(ended(working), timeout=120, interval=0.5, message="the task for the tiny model")
        assert done["status"] == "completed", done["error"]
        assert worker.poll() is None  # still running: no crash loop
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    log = log_path.read_text()
    assert "Traceback" not in log
    assert log.count("model facebook/musicgen-small could not be loaded") >= 1
