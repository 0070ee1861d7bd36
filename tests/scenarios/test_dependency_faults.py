"""Redis and MongoDB going away and coming back, against real servers.

Each test starts its OWN Valkey and SecantusDB servers (the session fixtures
are shared with other tests, so they must never be stopped), builds the API
twice on them — in this process (Flask test client) and as a real gunicorn
process — and then stops one dependency, checks that every route answers a
quick JSON 503 (never a 500, never HTML, never a hang), that a rejected
submission stores nothing, and that the same API processes recover by
themselves once the dependency is started again on the same port (and, for
MongoDB, the same data directory: tasks stored before the outage are still
there).

What needs Redis and what does not, by design:
- submissions need both (the task document goes to MongoDB, its id to the
  RQ queue): either down → 503, nothing stored;
- /health reports each part; any part down → 503 with that part "down";
- task reads come from MongoDB; Redis is consulted only for the queue
  position of a queued task and the live progress of a processing task.
  Without Redis those reads answer 503 rather than a guess (a made-up
  position, or a progress that could go backwards, would break the
  contract), while everything that lives in MongoDB alone — a queued task's
  progress (0), a completed task, its result — is still answered.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from backend.core import heartbeat
from backend.core.settings import Settings
from backend.dev.embedded import free_port, port_open, start_mongo, start_redis, stop_process
from tests.conftest import ROOT, wait_for
from tests.media_server import make_click_track
from worker.pipeline.audio import encode_wav

# A dependency outage must turn into an answer, not a hung request. Generous bounds, not speed tests: an
# unbounded wait would be pymongo's 30 s default server selection or the client's 60 s read timeout.
FAST_503_SECONDS = 20.0
# After the dependency returns, the running API must be serving again within this.
RECOVERY_SECONDS = 60.0


def wav_b64(seconds: float = 3.0, sr: int = 22050) -> str:
    return base64.b64encode(encode_wav(make_click_track(120, seconds, sr=sr), sr)).decode("ascii")


class Answer:
    def __init__(self, status: int, content_type: str, body, seconds: float):
        self.status, self.content_type, self.body, self.seconds = status, content_type, body, seconds

    def __repr__(self) -> str:
        return f"<{self.status} {self.content_type} {self.body!r:.300} in {self.seconds:.2f} s>"


class FlaskApi:
    """The app in this process, through Flask's test client."""

    name = "flask"

    def __init__(self, settings: Settings):
        from backend.api.app import create_app

        self.app = create_app(settings=settings)
        self.app.config["TESTING"] = True

    def call(self, method: str, path: str, body: dict | None = None) -> Answer:
        start = time.monotonic()
        # A client per call, so calls can run from several threads at once.
        response = self.app.test_client().open(path, method=method, json=body)
        seconds = time.monotonic() - start
        return Answer(response.status_code, response.content_type or "", _json(response.get_data(as_text=True)),
                      seconds)

    def close(self) -> None:
        pass


class GunicornApi:
    """The API as it is deployed: gunicorn (gthread) in its own process."""

    name = "gunicorn"

    def __init__(self, settings: Settings, log_path: Path):
        port = free_port()
        env = dict(os.environ, PORT=str(port), SEGUE_HOST="127.0.0.1", REDIS_URL=settings.redis_url,
                   MONGO_URL=settings.mongo_url, SEGUE_MONGO_DB=settings.mongo_db,
                   SEGUE_MODELS=",".join(settings.models), SEGUE_ALLOW_PRIVATE_URLS="1",
                   SEGUE_API_WORKERS="1", SEGUE_API_THREADS="16", SEGUE_LOG_LEVEL="WARNING")
        self.log_path = log_path
        self.base = f"http://127.0.0.1:{port}"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "backend/api/gunicorn_conf.py", "backend.api.wsgi:app"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: self.process.poll() is not None or self._pings(), timeout=30, interval=0.1,
                     message="gunicorn to answer /ping")
            assert self.process.poll() is None, self.log()
        except AssertionError:
            self.close()
            raise AssertionError(self.log())

    def _pings(self) -> bool:
        try:
            return requests.get(f"{self.base}/ping", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def call(self, method: str, path: str, body: dict | None = None) -> Answer:
        start = time.monotonic()
        response = requests.request(method, self.base + path, json=body, timeout=60)
        seconds = time.monotonic() - start
        return Answer(response.status_code, response.headers.get("Content-Type", ""), _json(response.text), seconds)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        stop_process(self.process, timeout=15)


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text  # not JSON: the assertions below report it


def assert_json(answer: Answer, status: int, code: str | None = None) -> dict:
    assert answer.status == status, answer
    assert answer.content_type.startswith("application/json"), answer
    assert isinstance(answer.body, dict), answer
    if code is not None:
        assert answer.body.get("code") == code, answer
        assert isinstance(answer.body.get("error"), str) and answer.body["error"], answer
    return answer.body


def assert_quick_503(answer: Answer, code: str | None = None) -> dict:
    body = assert_json(answer, 503, code)
    assert answer.seconds < FAST_503_SECONDS, answer
    return body


# -- fixtures: private servers and both kinds of API on them -------------------------

@pytest.fixture
def deps(tmp_path):
    """A Valkey and a SecantusDB server of this test's own, restartable on the same port and data dir."""

    class Deps:
        redis_dir = tmp_path / "redis"
        mongo_dir = tmp_path / "mongo"
        redis_port = free_port()
        mongo_port = free_port()
        redis = None
        mongo = None
        log = open(tmp_path / "servers.log", "ab")

        def start_redis(self):
            self.redis = start_redis(self.redis_dir, self.redis_port, persist=True, stdout=self.log)
            return self.redis

        def start_mongo(self):
            self.mongo = start_mongo(self.mongo_dir, self.mongo_port, stdout=self.log)
            return self.mongo

    d = Deps()
    d.start_redis()
    d.start_mongo()
    yield d
    for server in (d.redis, d.mongo):
        if server is not None:
            server.stop()
    d.log.close()


@pytest.fixture
def apis(deps, tiny_model, tmp_path):
    settings = Settings(redis_url=deps.redis.url, mongo_url=deps.mongo.url, mongo_db="segue_faults",
                        models=(str(tiny_model),), device="cpu", data_dir=tmp_path / "var",
                        allow_private_urls=True, heartbeat_seconds=2, log_level="WARNING")
    flask_api = FlaskApi(settings)
    gunicorn_api = GunicornApi(settings, tmp_path / "gunicorn.log")
    yield [flask_api, gunicorn_api]
    for api in (flask_api, gunicorn_api):
        api.close()


def fake_worker_heartbeat(redis_url: str) -> None:
    """A live worker as /health sees it (no torch in this test), so /health can reach 200."""
    import redis

    connection = redis.Redis.from_url(redis_url)
    heartbeat.write(connection, "fault-test-worker", {"torch_ok": True, "device": "cpu", "models_loaded": []},
                    period_seconds=600)
    connection.close()


def mongo_db(deps):
    import pymongo

    client = pymongo.MongoClient(deps.mongo.url, serverSelectionTimeoutMS=5000)
    return client, client["segue_faults"]


def submit_both(api, media_url: str) -> list[Answer]:
    return [api.call("POST", "/generate", {"url": media_url, "currentTime": 4, "duration": "16-18"}),
            api.call("POST", "/continue", {"audio": wav_b64(), "prompt_duration": 1, "duration": 8})]


def wait_until_accepting(api, media_url: str) -> float:
    """Seconds until the API answers 202 to a submission again (no 500 or HTML meanwhile)."""
    start = time.monotonic()
    deadline = start + RECOVERY_SECONDS
    while True:
        answer = api.call("POST", "/generate", {"url": media_url})
        if answer.status == 202:
            assert_json(answer, 202)
            return time.monotonic() - start
        assert_json(answer, 503)
        assert time.monotonic() < deadline, f"{api.name}: not accepting {RECOVERY_SECONDS:.0f} s after restart: {answer}"
        time.sleep(0.2)


def insert_completed_task(deps) -> str:
    """A finished task with its result in GridFS, as a worker leaves it."""
    from backend.core.clock import utcnow
    from backend.core.ids import new_task_id
    from backend.core.store import TaskStore

    client, db = mongo_db(deps)
    store = TaskStore(db, 86400)
    task_id = new_task_id()
    result = store.put_audio(task_id, "result", base64.b64decode(wav_b64(1.0)), "audio/wav")
    store.insert_task({"_id": task_id, "job_id": task_id, "kind": "generate", "status": "completed",
                       "model": "m", "request": {}, "progress": 100.0, "completed_at": utcnow(),
                       "result_file_id": result})
    client.close()
    return task_id


# -- Redis ---------------------------------------------------------------------------

def test_redis_outage_is_a_quick_503_and_the_api_recovers_by_itself(deps, apis, media_server, capsys):
    media_url = media_server.url("/click120.wav")
    fake_worker_heartbeat(deps.redis.url)
    completed_id = insert_completed_task(deps)
    before = {}
    for api in apis:
        assert_json(api.call("GET", "/health"), 200)
        for answer in submit_both(api, media_url):
            assert_json(answer, 202)
        before[api.name] = answer.body["task_id"]  # a queued /continue task
    client, db = mongo_db(deps)
    task_count = db.tasks.count_documents({})
    file_count = db["audio.files"].count_documents({})

    deps.redis.stop()
    assert not port_open(deps.redis_port)
    timings: dict[str, list[float]] = {}
    for api in apis:
        times = timings.setdefault(api.name, [])
        for answer in submit_both(api, media_url):
            assert_quick_503(answer, "queue_unavailable")
            times.append(answer.seconds)
        health = api.call("GET", "/health")
        body = assert_quick_503(health)
        assert body["redis"] == "down" and body["mongodb"] == "live" and body["status"] == "degraded", body
        times.append(health.seconds)
        queued = before[api.name]
        # Its queue position lives only in Redis: 503, not a guess.
        assert_quick_503(api.call("GET", f"/tasks/{queued}"), "queue_unavailable")
        # Everything else a client polls for lives in MongoDB and is still answered.
        answer = api.call("GET", f"/progress/{queued}")
        assert assert_json(answer, 200) == {"progress": 0.0} and answer.seconds < FAST_503_SECONDS
        assert assert_json(api.call("GET", f"/fetch-result/{queued}"), 200) == {"status": "queued"}
        done = assert_json(api.call("GET", f"/tasks/{completed_id}"), 200)
        assert done["status"] == "completed" and done["progress"] == 100 and done["audio"]
        assert assert_json(api.call("GET", f"/fetch-result/{completed_id}"), 200)["audio"] == done["audio"]
        assert assert_json(api.call("GET", f"/progress/{completed_id}"), 200) == {"progress": 100.0}
        assert_json(api.call("GET", "/tasks/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 404, "task_not_found")
        assert_json(api.call("GET", "/ping"), 200)
    # The rejected submissions stored nothing: no task document, no uploaded clip.
    assert db.tasks.count_documents({}) == task_count
    assert db["audio.files"].count_documents({}) == file_count

    deps.start_redis()
    recovery = {api.name: wait_until_accepting(api, media_url) for api in apis}
    for api in apis:
        for answer in submit_both(api, media_url):
            assert_json(answer, 202)
        # The queue survived the restart (append-only file): the earlier task is still in line.
        assert assert_json(api.call("GET", f"/tasks/{before[api.name]}"), 200)["queue_position"] >= 1
        health = assert_json(api.call("GET", "/health"), 200)
        assert health["redis"] == "live" and health["mongodb"] == "live"
    client.close()
    report_timings(capsys, "redis", timings, recovery)


def report_timings(capsys, part: str, timings: dict, recovery: dict) -> None:
    """Print how long the 503s took and how soon the API recovered (visible with -q too)."""
    with capsys.disabled():
        print(f"\n[{part} down] 503 times (s): "
              + "; ".join(f"{k}: {', '.join(f'{t:.3f}' for t in v)}" for k, v in timings.items())
              + f"\n[{part} back] accepting again after (s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in recovery.items()))


# -- MongoDB -------------------------------------------------------------------------

def test_mongodb_outage_is_a_quick_503_and_data_survives_a_restart(deps, apis, media_server, capsys):
    media_url = media_server.url("/click120.wav")
    fake_worker_heartbeat(deps.redis.url)
    completed_id = insert_completed_task(deps)
    before = {}
    for api in apis:
        assert_json(api.call("GET", "/health"), 200)
        answers = submit_both(api, media_url)
        for answer in answers:
            assert_json(answer, 202)
        before[api.name] = [a.body["task_id"] for a in answers]
    import redis

    queue_length = redis.Redis.from_url(deps.redis.url).llen("rq:queue:segue")

    deps.mongo.stop()
    assert not port_open(deps.mongo_port)
    timings: dict[str, list[float]] = {}
    # Each of these waits out the MongoDB client's server-selection timeout, so they run side by side.
    def check(api, method, path, body=None):
        answer = api.call(method, path, body)
        timings.setdefault(api.name, []).append(answer.seconds)
        if path == "/health":
            health = assert_quick_503(answer)
            assert health["mongodb"] == "down" and health["redis"] == "live", health
            assert health["status"] == "degraded", health
        else:
            assert_quick_503(answer, "store_unavailable")

    calls = []
    for api in apis:
        calls += [(api, "GET", "/health"), (api, "POST", "/generate", {"url": media_url}),
                  (api, "POST", "/continue", {"audio": wav_b64(), "prompt_duration": 1, "duration": 8})]
        calls += [(api, "GET", path.format(task_id))
                  for path in ("/tasks/{}", "/progress/{}", "/fetch-result/{}")
                  for task_id in (before[api.name][0], completed_id)]
    with ThreadPoolExecutor(len(calls)) as pool:
        for future in [pool.submit(check, *call) for call in calls]:
            future.result()
    for api in apis:
        assert_json(api.call("GET", "/ping"), 200)
    # Nothing reached the queue for the rejected submissions.
    assert redis.Redis.from_url(deps.redis.url).llen("rq:queue:segue") == queue_length

    deps.start_mongo()
    recovery = {api.name: wait_until_accepting(api, media_url) for api in apis}
    for api in apis:
        health = assert_json(api.call("GET", "/health"), 200)
        assert health["mongodb"] == "live" and health["redis"] == "live"
        for answer in submit_both(api, media_url):
            assert_json(answer, 202)
        # Tasks stored before the outage are still there (durable data dir), /continue's clip included.
        for task_id in before[api.name]:
            task = assert_json(api.call("GET", f"/tasks/{task_id}"), 200)
            assert task["status"] == "queued" and task["queue_position"] >= 1
        assert assert_json(api.call("GET", f"/progress/{before[api.name][0]}"), 200) == {"progress": 0.0}
        done = assert_json(api.call("GET", f"/tasks/{completed_id}"), 200)
        assert done["status"] == "completed" and done["audio"]
    client, db = mongo_db(deps)
    continued = db.tasks.find_one({"_id": before["flask"][1]})
    assert db["audio.files"].count_documents({"_id": continued["input_file_id"]}) == 1
    client.close()
    report_timings(capsys, "mongodb", timings, recovery)


# -- both down when the API starts ------------------------------------------------------

def test_api_started_while_both_are_down_serves_once_they_come_up(deps, tiny_model, tmp_path, media_server):
    deps.redis.stop()
    deps.mongo.stop()
    settings = Settings(redis_url=deps.redis.url, mongo_url=deps.mongo.url, mongo_db="segue_faults",
                        models=(str(tiny_model),), device="cpu", data_dir=tmp_path / "var",
                        allow_private_urls=True, log_level="WARNING")
    api = FlaskApi(settings)  # must not raise: MongoDB indexes are created on the first write instead
    media_url = media_server.url("/click120.wav")
    body = assert_quick_503(api.call("GET", "/health"))
    assert body["redis"] == "down" and body["mongodb"] == "down", body
    answer = api.call("POST", "/generate", {"url": media_url})
    assert assert_quick_503(answer)["code"] in ("queue_unavailable", "store_unavailable"), answer
    deps.start_redis()
    deps.start_mongo()
    wait_until_accepting(api, media_url)
    client, db = mongo_db(deps)
    assert "expires_at_ttl" in db.tasks.index_information()  # the deferred indexes were made
    client.close()
