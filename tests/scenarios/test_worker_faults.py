"""Real worker processes that die or recycle: no task is lost or stuck."""

import base64
import signal

from backend.core import heartbeat
from tests.conftest import wait_for
from tests.media_server import make_click_track
from tests.scenarios.test_many_workers import start_worker
from worker.pipeline.audio import encode_wav


def _submit_continue(client, seconds=30.0, seed=0):
    clip = make_click_track(120, 4.0, sr=32000)
    body = {"audio": base64.b64encode(encode_wav(clip, 32000)).decode(), "prompt_duration": 2,
            "duration": seconds, "seed": seed}
    return client.post("/continue", json=body).get_json()["task_id"]


def test_sigkilled_worker_task_is_retried_by_another_worker(client, services, settings, tmp_path):
    task_id = _submit_continue(client)
    doomed = start_worker(settings.with_(max_batch=1), tmp_path / "doomed.log")
    try:
        wait_for(lambda: (services.progress.get(task_id) or 0) > 15, timeout=120, interval=0.05,
                 message="the task to be generating")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        assert services.store.get_task(task_id)["status"] == "processing"
    finally:
        if doomed.poll() is None:
            doomed.kill()
    rescuer = start_worker(settings.with_(max_batch=1), tmp_path / "rescuer.log")
    try:
        doc = wait_for(lambda: (d := services.store.get_task(task_id))["status"] in ("completed", "failed") and d,
                       timeout=180, interval=0.5, message="the orphaned task to end")
        assert doc["status"] == "completed", doc.get("error")
        assert doc["attempts"] == 2 and "stopped while running" in doc["last_error"]
        assert client.get(f"/progress/{task_id}").get_json()["progress"] == 100
    finally:
        rescuer.send_signal(signal.SIGTERM)
        rescuer.wait(60)


def test_worker_recycles_after_n_tasks_without_losing_any(client, services, settings, tmp_path):
    task_ids = [_submit_continue(client, seconds=3.0, seed=i) for i in range(3)]
    worker = start_worker(settings.with_(max_batch=1, recycle_after_tasks=2), tmp_path / "recycle.log")
    try:
        assert worker.wait(180) == 0, (tmp_path / "recycle.log").read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
    statuses = [services.store.get_task(t)["status"] for t in task_ids]
    assert statuses.count("completed") == 2 and statuses.count("queued") == 1
    assert heartbeat.read_all(services.redis) == []  # it said goodbye
    fresh = start_worker(settings.with_(max_batch=1), tmp_path / "fresh.log")
    try:
        wait_for(lambda: all(services.store.get_task(t)["status"] == "completed" for t in task_ids), timeout=180,
                 interval=0.5, message="the remaining task to complete")
    finally:
        fresh.send_signal(signal.SIGTERM)
        fresh.wait(60)
