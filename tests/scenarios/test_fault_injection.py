"""Fault injection on the real stack: nothing is lost, nothing completes twice.

Real worker processes (``python -m worker``), a Valkey server with its
append-only file and a SecantusDB server of this module's own (restartable on
the same port and data), the API in this process, and a webhook receiver on
loopback. Faults land at named instants of a task's life, held there
deterministically (``backend.core.faults``: the test arms a point, waits for
the ``.reached`` file, injects the fault, then releases), never timed with
sleeps. The only sleeps are the lengths of the outages themselves.

After every fault the same things must hold for every task submitted:
- it ends ``completed`` (none stays ``queued`` or ``processing``, none
  ``failed``: no fault here spends a task's retries);
- its end-of-task webhook was delivered exactly once (one POST, one
  ``webhook-id``), except where a sender is killed (SIGKILL), on purpose
  after a 2xx or at any instant: a 2xx it had not recorded yet is sent once
  more, with the same ``webhook-id``. A stopped worker (SIGTERM) never
  repeats one;
- exactly one result file is stored for it.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from backend.core import heartbeat, maintenance, taking, webhooks
from backend.core.clock import utcnow
from backend.core.connections import Services
from backend.core.settings import Settings
from backend.dev.embedded import free_port, start_mongo, start_redis
from tests.conftest import ROOT, wait_for
from tests.media_server import make_click_track
from tests.test_webhooks import Receiver
from worker.pipeline.audio import encode_wav

HEARTBEAT = 2  # seconds: a dead worker is noticed within 3 periods
DRAIN = 3.0  # seconds a stopped worker finishes what it holds before handing the rest back
ENDED_WITHIN = 240.0  # generous bounds: outcomes are checked, not speed
TASKS = 4


class Stack:
    """Private servers, a hold-point folder, a webhook receiver, the API in-process and worker processes."""

    def __init__(self, tmp_path: Path, tiny_model: Path, receiver: Receiver):
        self.tmp = tmp_path
        self.log = open(tmp_path / "servers.log", "ab")
        self.redis_dir, self.mongo_dir = tmp_path / "redis", tmp_path / "mongo"
        self.redis_port, self.mongo_port = free_port(), free_port()
        self.redis = start_redis(self.redis_dir, self.redis_port, persist=True, stdout=self.log)
        self.mongo = start_mongo(self.mongo_dir, self.mongo_port, stdout=self.log)
        self.holds = tmp_path / "holds"
        self.holds.mkdir()
        self.receiver = receiver
        self.settings = Settings(redis_url=self.redis.url, mongo_url=self.mongo.url, mongo_db="segue_faults",
                                 models=(str(tiny_model),), device="cpu", data_dir=tmp_path / "var",
                                 allow_private_urls=True, heartbeat_seconds=HEARTBEAT, drain_seconds=DRAIN,
                                 fault_hold_dir=str(self.holds), webhook_timeout=1.0, max_batch=4,
                                 rate_limit="off", read_rate_limit="off", log_level="INFO")
        from backend.api.app import create_app

        self.app = create_app(settings=self.settings)
        self.client = self.app.test_client()
        self.services: Services = self.app.extensions["segue"]
        self.workers: list[subprocess.Popen] = []
        self._seed = 0

    # -- services ------------------------------------------------------------
    def restart_redis(self, outage_seconds: float) -> None:
        self.redis.stop()
        time.sleep(outage_seconds)  # the outage itself: how long the service is away
        self.redis = start_redis(self.redis_dir, self.redis_port, persist=True, stdout=self.log)

    def stop_mongo(self) -> None:
        self.mongo.stop()

    def start_mongo(self) -> None:
        self.mongo = start_mongo(self.mongo_dir, self.mongo_port, stdout=self.log)

    # -- workers -------------------------------------------------------------
    def start_worker(self, name: str, *, skew: str | None = None, **changes) -> subprocess.Popen:
        env = dict(os.environ, **self.settings.with_(**changes).as_env())
        command = [sys.executable, "-m", "worker"]
        if skew:  # libfaketime: this process's wall clock (not its monotonic clock) is off by `skew`
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
            command = ["faketime", "-f", skew] + command
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(self.tmp / f"{name}.log", "wb"),
                                   stderr=subprocess.STDOUT)
        process.log_name = name
        self.workers.append(process)
        return process

    def wait_ready(self, count: int) -> None:
        def ready():
            beats = heartbeat.read_all(self.services.redis)
            return len([b for b in beats if b.get("ready") and not b.get("draining")]) >= count

        wait_for(ready, timeout=180, interval=0.2, message=f"{count} ready workers\n{self.worker_logs()}")

    def worker_logs(self) -> str:
        parts = []
        for process in self.workers:
            path = self.tmp / f"{process.log_name}.log"
            if path.exists():
                parts.append(f"--- {process.log_name} ---\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def close(self) -> None:
        (self.holds / "release-all").touch()
        for point in list(self.holds.glob("*.arm")):
            point.unlink()
        for name in ("taken", "claim", "preparing", "generating", "storing", "webhook", "webhook-sent", "requeue"):
            (self.holds / f"{name}.release").touch()
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(DRAIN + 30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for server in (self.redis, self.mongo):
            server.stop()
        self.log.close()

    # -- hold points ---------------------------------------------------------
    def arm(self, point: str) -> None:
        (self.holds / f"{point}.release").unlink(missing_ok=True)
        (self.holds / f"{point}.reached").unlink(missing_ok=True)
        (self.holds / f"{point}.arm").touch()

    def reached(self, point: str) -> tuple[str, int]:
        """Wait until a process holds at ``point``; returns (task id, pid)."""
        path = self.holds / f"{point}.reached"
        wait_for(lambda: path.exists() and len(path.read_text().splitlines()) == 2, timeout=ENDED_WITHIN,
                 interval=0.05, message=f"a task to reach {point}\n{self.worker_logs()}")
        task_id, pid = path.read_text().splitlines()
        return task_id, int(pid)

    def release(self, point: str) -> None:
        (self.holds / f"{point}.release").touch()

    # -- tasks ---------------------------------------------------------------
    def submit(self, count: int = TASKS) -> list[str]:
        ids = []
        for _ in range(count):
            self._seed += 1
            clip = make_click_track(100 + 5 * self._seed, 4.0, sr=32000)
            body = {"audio": base64.b64encode(encode_wav(clip, 32000)).decode(), "prompt_duration": 2,
                    "duration": 4, "seed": self._seed, "webhook": self.receiver.url()}
            answer = self.client.post("/continue", json=body)
            assert answer.status_code == 202, answer.get_json()
            ids.append(answer.get_json()["task_id"])
        return ids

    def submit_generate(self, media_url: str) -> str:
        self._seed += 1
        answer = self.client.post("/generate", json={"url": media_url, "promptLength": 2, "duration": "4-6",
                                                      "seed": self._seed, "webhook": self.receiver.url()})
        assert answer.status_code == 202, answer.get_json()
        return answer.get_json()["task_id"]

    def docs(self, task_ids) -> list[dict]:
        return [self.services.store.get_task(t) for t in task_ids]

    def results_stored(self, task_id: str) -> int:
        files = self.services.store.db["audio.files"]
        return files.count_documents({"metadata.task_id": task_id, "metadata.role": "result"})

    def posts(self) -> list[tuple[str, str]]:
        """(task id, webhook-id) of every webhook POST received."""
        with self.receiver.lock:
            received = list(self.receiver.received)
        return [(json.loads(body)["task_id"], headers.get("webhook-id")) for headers, body in received]

    def check_every_task_done_once(self, task_ids, *, repeats_allowed: frozenset = frozenset()) -> list[dict]:
        def all_ended():
            docs = self.docs(task_ids)
            return docs if all(d["status"] in ("completed", "failed", "canceled") for d in docs) else None

        docs = wait_for(all_ended, timeout=ENDED_WITHIN, interval=0.25,
                        message=f"every task to end: {[(d['_id'], d['status']) for d in self.docs(task_ids)]}\n"
                                f"{self.worker_logs()}")
        assert [d["status"] for d in docs] == ["completed"] * len(docs), [d.get("error") for d in docs]

        # Settled webhooks: delivered, and nothing left due for them, so no later POST can follow.
        def settled():
            for doc in self.docs(task_ids):
                if (doc.get("webhook_delivery") or {}).get("status") != "delivered":
                    return False
                if self.services.redis.zscore(webhooks.DUE_KEY, doc["_id"]) is not None:
                    return False
            return True

        wait_for(settled, timeout=ENDED_WITHIN, interval=0.25,
                 message=f"every webhook delivered: {self.posts()}\n{self.worker_logs()}")
        posts = self.posts()
        per_task = Counter(task for task, _id in posts)
        ids_per_task = {task: {hook_id for t, hook_id in posts if t == task} for task in task_ids}
        for task_id in task_ids:
            assert len(ids_per_task[task_id]) == 1, ids_per_task[task_id]  # one webhook-id, always
            # A repeat (same webhook-id) only where a sender may have died between a 2xx and its record.
            assert per_task[task_id] == 1 or (task_id in repeats_allowed and per_task[task_id] == 2), (task_id, posts)
            assert self.results_stored(task_id) == 1, task_id
            assert self.services.store.get_task(task_id)["progress"] == 100.0
        ledger = self.services.redis.hgetall(taking.ledger_key(self.services.queue.name))
        assert not ({value.decode().partition("|")[2] for value in ledger.values()} & set(task_ids)), ledger
        return docs


@pytest.fixture
def stack(tmp_path, tiny_model):
    with Receiver() as receiver:
        stack = Stack(tmp_path, tiny_model, receiver)
        try:
            yield stack
        finally:
            stack.close()


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory, tiny_model):
    """One stack for the whole kill matrix: each fault costs one replacement worker, not a new stack."""
    with Receiver() as receiver:
        stack = Stack(tmp_path_factory.mktemp("fault-matrix"), tiny_model, receiver)
        try:
            yield stack
        finally:
            stack.close()


def _keep_two_workers(stack: Stack) -> None:
    """Let earlier faults' tasks end, replace the workers they took down, wait for one to be ready."""
    tasks = stack.services.store.tasks
    wait_for(lambda: tasks.count_documents({"status": {"$in": ["queued", "processing"]}}) == 0,
             timeout=ENDED_WITHIN, interval=0.25, message=f"earlier tasks to end\n{stack.worker_logs()}")
    alive = [p for p in stack.workers if p.poll() is None]
    for n in range(2 - len(alive)):
        stack.start_worker(f"w{len(stack.workers) + 1}")
    stack.wait_ready(1)


def _wait_exit(process: subprocess.Popen, stack: Stack, within: float = 60.0) -> int:
    try:
        return process.wait(within)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker {process.log_name} did not exit\n{stack.worker_logs()}") from None


def _process_of(stack: Stack, pid: int) -> subprocess.Popen:
    return next(p for p in stack.workers if p.pid == pid)


# -- a worker killed or stopped at each instant of a task's life ----------------------

POINTS = ["taken", "preparing", "generating", "storing", "webhook"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("point", POINTS)
def test_a_worker_killed_or_stopped_at_any_instant_loses_nothing(shared_stack, point, sig):
    stack = shared_stack
    _keep_two_workers(stack)
    stack.arm(point)
    task_ids = stack.submit()
    held_task, pid = stack.reached(point)
    victim = _process_of(stack, pid)
    victim.send_signal(sig)
    if sig == signal.SIGTERM:
        # Stopping drains: it finishes what it holds (or hands it back after DRAIN s) and exits cleanly.
        stack.release(point)
        assert _wait_exit(victim, stack) == 0
    else:
        victim.wait(10)
        stack.release(point)
    # A killed worker's webhook sender may have been between another task's 2xx and its record: that
    # one webhook then goes once more, under the same webhook-id (at least once, docs/webhooks.md).
    killed = frozenset(task_ids) if sig == signal.SIGKILL else frozenset()
    docs = stack.check_every_task_done_once(task_ids, repeats_allowed=killed)
    held = next(d for d in docs if d["_id"] == held_task)
    if sig == signal.SIGKILL and point in ("preparing", "generating", "storing"):
        # Claimed by the killed worker: run again once by the survivor; the crash counts one attempt.
        assert held["attempts"] == 2 and "stopped while running" in held["last_error"], held
    assert all(d["attempts"] - d.get("handbacks", 0) <= 2 for d in docs)


def test_a_download_interrupted_by_a_kill_is_retried(shared_stack, media_server):
    """The preparing point on a /generate task: the worker dies while it downloads with yt-dlp."""
    stack = shared_stack
    _keep_two_workers(stack)
    stack.arm("preparing")
    task_id = stack.submit_generate(media_server.url("/click120.wav"))
    held_task, pid = stack.reached("preparing")
    assert held_task == task_id
    _process_of(stack, pid).kill()
    stack.release("preparing")
    (doc,) = stack.check_every_task_done_once([task_id])
    assert doc["attempts"] == 2 and doc["bpm"] == pytest.approx(120, abs=2)


# -- drain on SIGTERM ---------------------------------------------------------------

def _follow_kinds(stack: Stack, task_id: str, kinds: list) -> threading.Thread:
    from backend.api import live

    def follow():
        for kind, _payload in live.follow(stack.services, task_id, max_seconds=ENDED_WITHIN):
            if kind != "keepalive":
                kinds.append(kind)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread


def test_a_stopped_worker_hands_back_what_it_cannot_finish_and_listeners_are_told(stack):
    doomed = stack.start_worker("doomed")
    stack.wait_ready(1)
    stack.arm("generating")
    (task_id,) = stack.submit(1)
    stack.reached("generating")
    kinds: list[str] = []
    follower = _follow_kinds(stack, task_id, kinds)
    wait_for(lambda: "progress" in kinds, timeout=30, message="the follower to see progress")
    doomed.send_signal(signal.SIGTERM)
    health = wait_for(lambda: (h := stack.client.get("/health").get_json()).get("workers_draining") == 1 and h,
                      timeout=30, interval=0.2, message="/health to show the worker draining")
    assert [w["draining"] for w in health["worker_details"]] == [True]
    # The held step never ends, so after DRAIN seconds the task goes back to the queue at once.
    doc = wait_for(lambda: (d := stack.services.store.get_task(task_id))["status"] == "queued" and d,
                   timeout=DRAIN + 60, interval=0.1, message=f"the hand-back\n{stack.worker_logs()}")
    assert doc["handbacks"] == 1 and "stopped" in doc["last_error"] and doc["worker"] is None
    # Its document says queued first, then its new job goes to the front of the queue.
    front = wait_for(lambda: stack.services.queue.queue.get_job_ids()[:1], timeout=30, interval=0.1,
                     message="the handed-back task's job on the queue")
    assert front[0].startswith(f"{task_id}-h")
    stack.release("generating")
    assert _wait_exit(doomed, stack) == 0
    stack.start_worker("rescuer")
    (doc,) = stack.check_every_task_done_once([task_id])
    assert doc["attempts"] == 2 and doc["handbacks"] == 1  # a hand-back spends no retry
    follower.join(30)
    assert "requeued" in kinds and kinds[-1] == "completed", kinds
    assert kinds.index("requeued") < len(kinds) - 1


def test_a_second_sigterm_ends_the_drain_at_once(stack):
    doomed = stack.start_worker("doomed", drain_seconds=600)
    stack.wait_ready(1)
    stack.arm("generating")
    (task_id,) = stack.submit(1)
    stack.reached("generating")
    doomed.send_signal(signal.SIGTERM)
    wait_for(lambda: stack.client.get("/health").get_json().get("workers_draining") == 1, timeout=30,
             interval=0.2, message="the worker to drain")
    time.sleep(1.1)  # RQ's rule: a second signal within 1 s is the same stop delivered twice
    doomed.send_signal(signal.SIGTERM)
    wait_for(lambda: stack.services.store.get_task(task_id)["status"] == "queued", timeout=30, interval=0.1,
             message=f"the hand-back after the second signal\n{stack.worker_logs()}")
    stack.release("generating")
    assert _wait_exit(doomed, stack) == 0
    stack.start_worker("rescuer")
    (doc,) = stack.check_every_task_done_once([task_id])
    assert doc["handbacks"] == 1


# -- Redis and MongoDB restarts -----------------------------------------------------

def test_a_redis_restart_mid_session_pauses_work_and_fails_nothing(stack):
    stack.start_worker("w1")
    stack.start_worker("w2")
    stack.wait_ready(2)
    stack.arm("generating")
    task_ids = stack.submit()
    stack.reached("generating")
    # Longer than redis-py's own retries and than a worker's heartbeat key: every Redis call fails meanwhile.
    stack.restart_redis(outage_seconds=3 * HEARTBEAT + 1)
    stack.release("generating")
    docs = stack.check_every_task_done_once(task_ids)
    assert all(d["attempts"] - d.get("handbacks", 0) <= 2 for d in docs)


def test_a_mongodb_restart_mid_claim_and_mid_store_pauses_work_and_fails_nothing(stack):
    stack.start_worker("w1")
    stack.start_worker("w2")
    stack.wait_ready(2)
    stack.arm("claim")
    task_ids = stack.submit()
    stack.reached("claim")
    stack.stop_mongo()
    stack.release("claim")  # the claim now meets a MongoDB that is down, and other jobs wait behind it
    time.sleep(2 * HEARTBEAT)  # the outage itself
    stack.start_mongo()
    stack.arm("storing")
    more = stack.submit(2)
    stack.reached("storing")
    stack.stop_mongo()
    stack.release("storing")  # marking the task completed meets a MongoDB that is down
    time.sleep(2 * HEARTBEAT)
    stack.start_mongo()
    stack.check_every_task_done_once(task_ids + more)


# -- housekeeping races ---------------------------------------------------------------

def _orphan(services: Services, task_id: str, run: str = "dead-run") -> None:
    services.store.insert_task({"_id": task_id, "job_id": task_id, "status": "processing", "model": "m",
                                "kind": "continue", "request": {}, "attempts": 1, "worker": "dead-worker",
                                "run": run, "started_at": utcnow().replace(year=2020)})


def test_two_housekeepers_at_once_requeue_each_orphan_once(stack):
    services = stack.services
    orphans = [f"orphan{i}" for i in range(12)]
    for task_id in orphans:
        _orphan(services, task_id)
    barrier = threading.Barrier(2)
    counts = []

    def housekeeper():
        mine = Services.from_settings(stack.settings)  # each its own connections, as two machines would
        barrier.wait()
        counts.append(maintenance.reap_orphans(mine)["requeued"])

    threads = [threading.Thread(target=housekeeper) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(counts) == len(orphans)
    queued = services.queue.queue.get_job_ids()
    assert sorted(services.store.get_task(t)["job_id"] for t in orphans) == sorted(queued)
    assert len(queued) == len(orphans) == len(set(queued))
    # A housekeeper working from a stale read cannot requeue a run that is no longer the task's.
    services.store.claim("orphan0", "live-worker", "new-run")
    assert not services.store.requeue("orphan0", "stale", run="dead-run")
    assert services.store.get_task("orphan0")["status"] == "processing"
    assert not services.store.finish("orphan0", "completed", run="dead-run")


def test_a_housekeeper_killed_between_requeue_and_enqueue_loses_nothing(stack):
    services = stack.services
    _orphan(services, "orphan")
    stack.arm("requeue")
    env = dict(os.environ, **stack.settings.as_env())
    housekeeper = subprocess.Popen([sys.executable, "-m", "backend.core.maintenance"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        task_id, pid = stack.reached("requeue")
        assert (task_id, pid) == ("orphan", housekeeper.pid)
        housekeeper.kill()
        housekeeper.wait(10)
    finally:
        if housekeeper.poll() is None:
            housekeeper.kill()
    doc = services.store.get_task("orphan")
    assert doc["status"] == "queued" and doc["job_id"] == "orphan"  # set queued; its new job never made
    assert maintenance.requeue_lost(services, grace_seconds=0) == 1
    doc = services.store.get_task("orphan")
    assert doc["job_id"].startswith("orphan-q") and services.queue.queue.get_job_ids() == [doc["job_id"]]


# -- clocks and webhooks ---------------------------------------------------------------

def test_a_worker_whose_clock_is_a_minute_off_changes_nothing(stack):
    stack.start_worker("ahead", skew="+60s")
    stack.start_worker("on-time")
    stack.wait_ready(2)
    task_ids = stack.submit(6)
    docs = stack.check_every_task_done_once(task_ids)
    assert all(d["attempts"] == 1 for d in docs)  # nobody took the skewed worker's work for dead


def test_a_webhook_sender_killed_after_the_2xx_repeats_it_under_the_same_id(stack):
    stack.start_worker("w1")
    stack.start_worker("w2")
    stack.wait_ready(2)
    stack.arm("webhook-sent")
    task_ids = stack.submit(2)
    held_task, pid = stack.reached("webhook-sent")
    _process_of(stack, pid).kill()  # it got the 2xx but never recorded it
    stack.release("webhook-sent")
    # The survivor repeats it once the dead sender's lease runs out, with the very same webhook-id.
    stack.check_every_task_done_once(task_ids, repeats_allowed=frozenset({held_task}))
    ids = [hook_id for task, hook_id in stack.posts() if task == held_task]
    assert len(ids) == 2 and ids[0] == ids[1] == webhooks.delivery_id(held_task)


def test_a_stopped_worker_records_the_webhook_attempt_it_holds_before_it_exits(stack):
    """SIGTERM while a POST's 2xx is not yet recorded: the worker waits for it, so the webhook goes once."""
    worker = stack.start_worker("w1")
    stack.wait_ready(1)
    stack.arm("webhook-sent")
    (task_id,) = stack.submit(1)
    held_task, pid = stack.reached("webhook-sent")
    assert (held_task, pid) == (task_id, worker.pid)
    worker.send_signal(signal.SIGTERM)
    # Its heartbeat goes once it has stopped taking work; the attempt it holds keeps the process alive.
    wait_for(lambda: heartbeat.read_all(stack.services.redis) == [], timeout=60, interval=0.1,
             message=f"the worker to stop\n{stack.worker_logs()}")
    assert worker.poll() is None, stack.worker_logs()
    stack.release("webhook-sent")
    assert _wait_exit(worker, stack) == 0
    (doc,) = stack.check_every_task_done_once([task_id])
    assert doc["webhook_delivery"]["attempts"] == 1
