"""Task-boundary guarantees: timeouts, orphaned tasks, heartbeats, and a torch-free API."""

import base64
import json
import os
import subprocess
import sys
from datetime import timedelta

from backend.core import audiofile, heartbeat
from backend.core.clock import utcnow
from backend.core.maintenance import MAX_ATTEMPTS, reap_orphans
from tests.conftest import ROOT, wait_for
from tests.media_server import make_click_track
from worker.pipeline.audio import encode_wav


def _continue_body(seconds=8.0):
    clip = make_click_track(120, seconds, sr=32000)
    return {"audio": base64.b64encode(encode_wav(clip, 32000)).decode(), "prompt_duration": 6}


def _m4a_body(tmp_path, seconds=8.0):
    """A clip libsndfile cannot read (AAC in MP4): decoding it needs an ffmpeg slot."""
    source, target = tmp_path / "clip.wav", tmp_path / "clip.m4a"
    source.write_bytes(encode_wav(make_click_track(120, seconds, sr=32000), 32000))
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source),
                    "-c:a", "aac", "-movflags", "+faststart", str(target)], check=True, capture_output=True)
    return {"audio": base64.b64encode(target.read_bytes()).decode(), "prompt_duration": 6}


def test_job_timeout_fails_the_task_with_a_reason(client, services, settings, tmp_path):
    # The job must outlast its limit whatever the machine's speed: the test holds the only ffmpeg slot, so
    # the worker's decode of the clip blocks, and gives the slot back only once the worker has ended the job
    # (never by racing a fast machine against a short job).
    import threading

    from worker import runtime
    from worker.continuous_worker import ContinuousWorker

    gate = audiofile.configure_ffmpeg(1, wait_seconds=3600)
    services.queue.job_timeout = 1
    task_id = client.post("/continue", json=_m4a_body(tmp_path)).get_json()["task_id"]
    assert gate._slots.acquire(timeout=0)
    # The decode stays blocked on its preparation thread until the job has ended: the limit must end the job
    # without waiting for its downloads and decodes (they are abandoned, and end by their own timeouts).
    try:
        rt = runtime.init(settings, worker_id=f"test-worker-{os.getpid()}")
        worker = ContinuousWorker([rt.services.queue.queue], connection=rt.services.redis, name=rt.worker_id,
                                  max_tasks=settings.max_batch)
        # Without the limit the job would wait for the slot (an hour): a watchdog frees it after 120 s so the
        # test fails instead of hanging.
        worker_done = threading.Event()
        watchdog_fired = threading.Event()

        def watchdog() -> None:
            if not worker_done.wait(120):
                watchdog_fired.set()
                gate._slots.release()

        threading.Thread(target=watchdog, daemon=True).start()
        worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
        worker_done.set()
        assert not watchdog_fired.is_set(), "the worker did not end the job at its time limit"
    finally:
        gate._slots.release()  # only now: the abandoned decode may finish in the background
        audiofile.configure_ffmpeg(0, 10.0)
    task = client.get(f"/tasks/{task_id}").get_json()
    assert task["status"] == "failed"
    assert "1 s limit" in task["error"]
    # RQ's registry agrees: the job is failed, not finished.
    assert services.queue.job_status(task_id) == "failed"


def _orphan(services, task_id, attempts, worker="gone-worker"):
    services.store.update(task_id, {"status": "processing", "worker": worker, "attempts": attempts,
                                    "started_at": utcnow() - timedelta(minutes=5)})
    services.queue.remove(task_id)


def test_orphaned_task_is_requeued_once_then_failed(client, services, run_worker, media_server):
    task_id = client.post("/generate", json={"url": media_server.url("/click120.wav"), "duration": "8-10",
                                             "promptLength": 3}).get_json()["task_id"]
    _orphan(services, task_id, attempts=1)
    assert reap_orphans(services) == {"requeued": 1, "failed": 0}
    doc = services.store.get_task(task_id)
    assert doc["status"] == "queued" and "retrying" in doc["last_error"]
    assert services.queue.position(doc["job_id"]) == 1
    run_worker()
    assert client.get(f"/tasks/{task_id}").get_json()["status"] == "completed"

    second = client.post("/generate", json={"url": media_server.url("/click120.wav")}).get_json()["task_id"]
    _orphan(services, second, attempts=MAX_ATTEMPTS)
    assert reap_orphans(services) == {"requeued": 0, "failed": 1}
    task = client.get(f"/tasks/{second}").get_json()
    assert task["status"] == "failed" and "stopped unexpectedly" in task["error"]


def test_tasks_of_live_workers_are_left_alone(client, services, media_server):
    task_id = client.post("/generate", json={"url": media_server.url("/click120.wav")}).get_json()["task_id"]
    heartbeat.write(services.redis, "busy-worker", {"torch_ok": True}, period_seconds=10)
    _orphan(services, task_id, attempts=1, worker="busy-worker")
    assert reap_orphans(services) == {"requeued": 0, "failed": 0}
    assert services.store.get_task(task_id)["status"] == "processing"


def test_health_is_live_only_with_a_fresh_heartbeat(client, services):
    assert client.get("/health").status_code == 503
    info = {"torch_ok": True, "device": "cpu", "torch_version": "2.13.0", "models_loaded": ["m"]}
    # A long period first, so that a slow moment between the beat and the read cannot expire it.
    heartbeat.write(services.redis, "w1", info, period_seconds=600)
    body = client.get("/health").get_json()
    assert body["pytorch"] == "live" and body["status"] == "live" and body["workers"] == 1
    assert body["device"] == "cpu" and body["models_loaded"] == ["m"]
    # Then a beat of a 1 s period and none after it: the worker counts as gone once three periods pass
    # (waited for, however long this machine takes, rather than slept on).
    heartbeat.write(services.redis, "w1", info, period_seconds=1)
    body = wait_for(lambda: (lambda b: b if b["pytorch"] == "down" else None)(client.get("/health").get_json()),
                    timeout=60, interval=0.2, message="the stale worker to count as gone")
    assert body["workers"] == 0


def test_canceled_or_taken_task_is_not_run_twice(client, services, run_worker, media_server):
    task_id = client.post("/generate", json={"url": media_server.url("/click120.wav")}).get_json()["task_id"]
    services.store.finish(task_id, "canceled")
    run_worker()
    assert services.store.get_task(task_id)["status"] == "canceled"
    assert services.store.get_task(task_id).get("result_file_id") is None


def test_api_process_never_imports_torch(settings):
    code = (
        "import sys, json\n"
        "from backend.core.settings import Settings\n"
        "from backend.api.app import create_app\n"
        f"app = create_app(settings=Settings(redis_url={settings.redis_url!r}, mongo_url={settings.mongo_url!r}))\n"
        "app.test_client().get('/health')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'librosa'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_queued_task_missing_from_the_queue_is_queued_again(client, services, run_worker, media_server):
    from backend.core.maintenance import requeue_lost

    task_id = client.post("/generate", json={"url": media_server.url("/click120.wav"), "duration": "8-10",
                                             "promptLength": 3}).get_json()["task_id"]
    assert requeue_lost(services, grace_seconds=0) == 0  # still on the queue
    services.queue.remove(task_id)  # as if a worker took it off the queue and died at once
    assert requeue_lost(services, grace_seconds=0) == 1
    assert services.queue.depth() == 1
    run_worker()
    assert client.get(f"/tasks/{task_id}").get_json()["status"] == "completed"
