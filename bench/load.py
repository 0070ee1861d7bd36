"""`make load`: many tasks through the real stack, exactly once; then wrk on the read routes.

A benchmark, not a test (nothing here runs under pytest):

1. starts the stack ``make run`` starts (``bench.segue_stack``: embedded Valkey
   and SecantusDB, the sidecar, gunicorn, here ``--workers`` workers)
   on the tiny random model, with the per-address limits off (all the load
   comes from 127.0.0.1);
2. queues ``--tasks`` ``/continue`` tasks from a few client threads (a 2 s
   click track, ``prompt_duration`` 1, ``duration`` 2, distinct seeds) and
   waits for all of them to end, reading MongoDB directly so that polling
   does not load the API;
3. checks exactly-once: every task ``completed`` with ``attempts == 1``, RQ's
   FinishedJobRegistry holds exactly the task ids and FailedJobRegistry none,
   GridFS holds exactly one result file per task, and every worker did work;
4. runs ``wrk -t2 -c16 -d10s --latency`` against ``/progress/<id>`` and
   ``/tasks/<id>`` of a completed task (the latter carries the base64 result,
   as the web app reads it) and reads requests/s, p99 and errors.

Prints progress on stderr, then a table and one JSON line on stdout. Exits 1
when a check fails or wrk saw any error (socket error or non-2xx answer).
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from . import wrk_report

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / ".cache" / "test-models" / "tiny-mono"
LOG_DIR = ROOT / ".cache" / "bench"
FINAL = ("completed", "failed", "canceled")
SAMPLE_RATE = 32_000  # the tiny model's rate: no resampling


def log(message: str) -> None:
    print(f"load: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=500, help="tasks to queue (default 500)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (SEGUE_WORKERS, default 2)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="model folder (default: the tiny test model, built if missing)")
    parser.add_argument("--clients", type=int, default=4, help="client threads submitting tasks")
    parser.add_argument("--max-batch", type=int, default=8, help="SEGUE_MAX_BATCH")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for all tasks to end")
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--wrk-connections", type=int, default=16)
    parser.add_argument("--no-wrk", action="store_true", help="skip the wrk part")
    return parser.parse_args(argv)


def prompt_b64(seconds: float = 2.0) -> str:
    from tests.media_server import make_click_track
    from worker.pipeline.audio import encode_wav

    return base64.b64encode(encode_wav(make_click_track(120.0, seconds, sr=SAMPLE_RATE), SAMPLE_RATE)).decode()


def stack_url(stack, name: str) -> str:
    """The URL devstack logged for its embedded server ("stack     | mongodb at mongodb://...")."""
    found = re.findall(rf"\|\s*{name} at (\S+)", stack.log_tail(10**7))
    if not found:
        raise RuntimeError(f"no '{name} at ...' line in the stack log {stack.log_path}")
    return found[-1]


def submit_all(api: str, count: int, clients: int, clip: str) -> tuple[list[str], float]:
    """POST /continue ``count`` times from ``clients`` threads; returns task ids (in seed order) and seconds."""
    ids: list[str | None] = [None] * count
    errors: list[str] = []
    next_index = iter(range(count))
    lock = threading.Lock()

    def client() -> None:
        http = requests.Session()
        while True:
            with lock:
                i = next(next_index, None)
                if i is None or errors:
                    return
            body = {"audio": clip, "prompt_duration": 1, "duration": 2, "seed": 1000 + i}
            try:
                answer = http.post(f"{api}/continue", json=body, timeout=60)
            except requests.RequestException as exc:
                errors.append(f"POST /continue #{i}: {exc}")
                return
            if answer.status_code != 202:
                errors.append(f"POST /continue #{i} answered {answer.status_code}: {answer.text[:300]}")
                return
            ids[i] = answer.json()["task_id"]

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(errors[0])
    return ids, time.perf_counter() - started  # type: ignore[return-value]


def wait_all(tasks, ids: list[str], timeout: float) -> float:
    """Poll MongoDB until every task is in a final state; returns the moment that was seen."""
    deadline = time.perf_counter() + timeout
    last_report = 0.0
    while True:
        ended = tasks.count_documents({"_id": {"$in": ids}, "status": {"$in": list(FINAL)}})
        now = time.perf_counter()
        if ended == len(ids):
            return now
        if now - last_report > 10:
            log(f"{ended}/{len(ids)} tasks ended")
            last_report = now
        if now > deadline:
            raise RuntimeError(f"only {ended}/{len(ids)} tasks ended within {timeout:.0f} s")
        time.sleep(0.25)


def check_exactly_once(db, redis_url: str, queue_name: str, ids: list[str], workers: int) -> dict:
    """Every check of exactly-once; ``problems`` lists what failed (empty: all good)."""
    from redis import Redis
    from rq import Queue

    problems: list[str] = []
    id_set = set(ids)
    docs = list(db["tasks"].find({"_id": {"$in": ids}},
                                 {"status": 1, "attempts": 1, "worker": 1, "batch_size": 1, "job_id": 1,
                                  "error": 1, "result_file_id": 1}))
    statuses = collections.Counter(d.get("status") for d in docs)
    attempts = collections.Counter(d.get("attempts") for d in docs)
    per_worker = collections.Counter(str(d.get("worker")) for d in docs)
    batch_sizes = collections.Counter(d.get("batch_size") for d in docs)
    if len(docs) != len(ids):
        problems.append(f"{len(ids) - len(docs)} task documents missing")
    if statuses.get("completed", 0) != len(ids):
        failed = [d for d in docs if d.get("status") != "completed"][:3]
        problems.append(f"statuses {dict(statuses)}; e.g. {[(d['_id'], d.get('status'), d.get('error')) for d in failed]}")
    if set(attempts) != {1}:
        problems.append(f"attempts per task {dict(attempts)} (want all 1)")
    if any(d.get("job_id") != d["_id"] for d in docs):
        problems.append("some tasks were re-enqueued under a new job id")

    connection = Redis.from_url(redis_url)
    try:
        queue = Queue(queue_name, connection=connection)
        finished = set(j.decode() if isinstance(j, bytes) else j for j in queue.finished_job_registry.get_job_ids())
        failed_jobs = list(queue.failed_job_registry.get_job_ids())
        started_jobs = list(queue.started_job_registry.get_job_ids())
        queued_left = queue.count
    finally:
        connection.close()
    if finished != id_set:
        problems.append(f"FinishedJobRegistry: {len(finished & id_set)} of the task ids, "
                        f"{len(id_set - finished)} missing, {len(finished - id_set)} others")
    if failed_jobs:
        problems.append(f"FailedJobRegistry holds {len(failed_jobs)} jobs, e.g. {failed_jobs[:3]}")
    if started_jobs or queued_left:
        problems.append(f"{len(started_jobs)} jobs still started, {queued_left} still queued")

    results = collections.Counter()
    for row in db["audio.files"].aggregate([{"$match": {"metadata.role": "result"}},
                                            {"$group": {"_id": "$metadata.task_id", "n": {"$sum": 1}}}]):
        results[row["_id"]] = row["n"]
    per_task = collections.Counter(results.get(t, 0) for t in ids)
    if per_task != collections.Counter({1: len(ids)}):
        problems.append(f"GridFS result files per task: {dict(per_task)} (want exactly 1 each)")
    if set(results) - id_set:
        problems.append(f"{len(set(results) - id_set)} result files belong to no queued task")
    linked = sum(1 for d in docs if d.get("result_file_id") is not None)
    if linked != len(ids):
        problems.append(f"{len(ids) - linked} completed tasks do not point at a result file")

    if len([w for w in per_worker if w != "None"]) < workers:
        problems.append(f"only {len(per_worker)} of {workers} workers ran tasks: {dict(per_worker)}")
    return {
        "completed": statuses.get("completed", 0),
        "statuses": dict(statuses),
        "attempts": {str(k): v for k, v in attempts.items()},
        "finished_registry": len(finished),
        "failed_registry": len(failed_jobs),
        "result_files": sum(results.values()),
        "per_worker": dict(sorted(per_worker.items())),
        "batch_sizes": {str(k): v for k, v in sorted(batch_sizes.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))},
        "problems": problems,
    }


def run_wrk(args, api: str, task_id: str) -> dict[str, wrk_report.WrkResult] | None:
    wrk = wrk_report.find_wrk(log=log)
    if wrk is None:
        return None
    out: dict[str, wrk_report.WrkResult] = {}
    for route in ("progress", "tasks"):
        url = f"{api}/{route}/{task_id}"
        status = requests.get(url, timeout=30).status_code
        if status != 200:
            raise RuntimeError(f"GET {url} answered {status} before the wrk run")
        log(f"wrk -t{args.wrk_threads} -c{args.wrk_connections} -d{args.wrk_seconds}s --latency {url}")
        out[route], _ = wrk_report.run(wrk, url, threads=args.wrk_threads, connections=args.wrk_connections,
                                       seconds=args.wrk_seconds)
    return out


def table(result: dict) -> str:
    c = result["checks"]
    lines = [
        f"tasks                 {result['tasks']} through {result['workers']} workers "
        f"(model {Path(result['model']).name}, max batch {result['max_batch']})",
        f"submit                {result['submit_s']:.2f} s ({result['tasks'] / result['submit_s']:.1f} POST/s, "
        f"{result['clients']} clients)",
        f"wall (first POST → last end)  {result['wall_s']:.2f} s   → {result['tasks_per_s']:.2f} tasks/s",
        f"completed exactly once {'yes' if result['completed_once'] else 'NO'}: completed {c['completed']}, "
        f"attempts {c['attempts']}, finished registry {c['finished_registry']}, failed registry "
        f"{c['failed_registry']}, GridFS results {c['result_files']}",
        f"tasks per worker      " + ", ".join(f"{w}: {n}" for w, n in c["per_worker"].items()),
        f"batch sizes           " + ", ".join(f"{size}×{n}" for size, n in c["batch_sizes"].items())
        + "  (batch size × tasks)",
    ]
    for problem in c["problems"]:
        lines.append(f"PROBLEM               {problem}")
    if result.get("wrk"):
        lines += ["", f"{'wrk route':<16}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'requests':>10}{'errors':>8}",
                  "-" * 62]
        for route, w in result["wrk"].items():
            lines.append(f"{'/' + route + '/<id>':<16}{w['requests_per_s']:>10.1f}{w['latency_ms'].get('50%', 0):>9.2f}"
                         f"{w['p99_ms'] or 0:>9.2f}{w['requests']:>10}{w['errors']:>8}")
    elif "wrk" in result:
        lines.append("wrk                   skipped (not installed)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from backend.core.settings import Settings
    from backend.core.store import connect

    from .segue_stack import SegueStack

    if args.model.resolve() == DEFAULT_MODEL.resolve() and not (args.model / "config.json").is_file():
        from worker.testing.random_model import build_tiny_musicgen

        log(f"building the tiny model at {args.model}")
        build_tiny_musicgen(args.model)
    if not (args.model / "config.json").is_file():
        log(f"no model at {args.model}")
        return 2
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    clip = prompt_b64()
    settings = Settings.from_env()

    with tempfile.TemporaryDirectory(prefix="segue-load-") as tmp:
        stack = SegueStack(args.model, Path(tmp) / "segue", LOG_DIR / "load-stack.log", max_batch=args.max_batch)
        stack.env.update(SEGUE_WORKERS=str(args.workers), SEGUE_RATE_LIMIT="off", SEGUE_READ_RATE_LIMIT="off",
                         SEGUE_MAX_QUEUED_PER_KEY="0", SEGUE_HOST="127.0.0.1")
        stack.log_path.write_bytes(b"")
        mongo = None
        try:
            log(f"starting the stack with {args.workers} workers (log: {stack.log_path})")
            start_s = stack.start()
            time.sleep(1.0)  # /health answers once one worker is up; give the others a moment
            mongo = connect(stack_url(stack, "mongodb"), timeout_ms=10_000)
            db = mongo[settings.mongo_db]
            redis_url = stack_url(stack, "redis")
            log(f"healthy after {start_s:.1f} s; queueing {args.tasks} tasks from {args.clients} clients")

            began = time.perf_counter()
            ids, submit_s = submit_all(stack.api, args.tasks, args.clients, clip)
            log(f"{args.tasks} tasks queued in {submit_s:.1f} s; waiting for them to end")
            ended = wait_all(db["tasks"], ids, args.timeout)
            wall = ended - began
            log(f"all {args.tasks} tasks ended after {wall:.1f} s; checking exactly-once")
            checks = check_exactly_once(db, redis_url, settings.queue_name, ids, args.workers)

            wrk = None if args.no_wrk else run_wrk(args, stack.api, ids[-1])
        except Exception:
            log("failed; last lines of the stack log:\n" + stack.log_tail())
            raise
        finally:
            if mongo is not None:
                mongo.close()
            log("stopping the stack")
            stack.stop()

    result = {
        "tasks": args.tasks,
        "completed_once": not checks["problems"],
        "tasks_per_s": round(args.tasks / wall, 3),
        "wall_s": round(wall, 2),
        "submit_s": round(submit_s, 2),
        "start_s": round(start_s, 1),
        "workers": args.workers,
        "clients": args.clients,
        "max_batch": args.max_batch,
        "model": str(args.model),
        "checks": checks,
    }
    if not args.no_wrk:
        result["wrk"] = {route: w.as_dict() for route, w in wrk.items()} if wrk else None
    print(table(result))
    summary = {k: v for k, v in result.items() if k != "wrk"}
    if result.get("wrk"):
        for route, w in result["wrk"].items():
            summary[f"{route}_rps"] = w["requests_per_s"]
            summary[f"{route}_p99_ms"] = w["p99_ms"]
            summary[f"{route}_errors"] = w["errors"]
    print(json.dumps(summary, separators=(", ", ": ")))
    wrk_errors = sum(w["errors"] for w in (result.get("wrk") or {}).values())
    return 0 if result["completed_once"] and wrk_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
