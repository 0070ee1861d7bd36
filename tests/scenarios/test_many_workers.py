"""Two worker processes on one queue: every task runs exactly once, in batches."""

import base64
import os
import signal
import subprocess
import sys

from rq.registry import FailedJobRegistry, FinishedJobRegistry

from backend.core import heartbeat
from tests.conftest import ROOT, wait_for
from tests.media_server import make_click_track
from worker.pipeline.audio import encode_wav


def start_worker(settings, log_path):
    env = dict(os.environ, **settings.as_env())
    return subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env,
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)


def test_two_workers_share_one_queue_and_run_each_task_once(client, services, settings, tmp_path):
    workers = [start_worker(settings.with_(max_batch=4), tmp_path / f"w{i}.log")
               for i in range(2)]
    try:
        wait_for(lambda: len(heartbeat.read_all(services.redis)) == 2, timeout=120, message="two heartbeats")
        task_ids = []
        for i in range(12):
            clip = make_click_track(100 + 5 * i, 4.0, sr=32000)
            body = {"audio": base64.b64encode(encode_wav(clip, 32000)).decode(), "prompt_duration": 2,
                    "seed": i}
            task_ids.append(client.post("/continue", json=body).get_json()["task_id"])

        def all_ended():
            docs = [services.store.get_task(t) for t in task_ids]
            return docs if all(d["status"] in ("completed", "failed") for d in docs) else None

        docs = wait_for(all_ended, timeout=240, interval=0.5, message="12 tasks to end")
        assert [d["status"] for d in docs] == ["completed"] * 12, [d.get("error") for d in docs]
        assert all(d["attempts"] == 1 for d in docs)
        assert len({d["worker"] for d in docs}) == 2, "both workers should have taken tasks"
        assert max(d["batch_size"] for d in docs) > 1, "tasks waiting together should share a batch"
        queue = services.queue.queue
        # A worker records the job's end with RQ just after it stores the task's outcome: on a busy machine
        # the last task can read completed a moment before its job reaches the finished registry.
        finished = wait_for(lambda: (lambda ids: ids if len(ids) >= len(task_ids) else None)(
                                FinishedJobRegistry(queue=queue).get_job_ids()),
                            timeout=60, interval=0.2, message="every job in RQ's finished registry")
        assert sorted(finished) == sorted(task_ids)
        assert FailedJobRegistry(queue=queue).count == 0
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            process.wait(60)
