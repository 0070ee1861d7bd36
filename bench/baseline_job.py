"""The old gary4web design, rebuilt for comparison: load the model inside every job.

Its RQ worker was RQ's default ``Worker``, which forks a fresh child ("work
horse") per job, and the job loaded MusicGen itself, so every job paid a
full model load before generating at batch 1. ``generate_in_job`` is that
job; ``python -m bench.baseline_job REDIS_URL QUEUE`` is that worker.

To keep the comparison conservative the worker process imports torch and
transformers before forking, so a job pays only the model load, not the
imports as well.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def generate_in_job(model_path: str, seed: int, threads: int, prompt_seconds: float, new_seconds: float) -> dict:
    import torch

    from . import raw
    from .workload import Workload

    started = time.perf_counter()
    torch.set_num_threads(threads)
    model, processor = raw.load(Path(model_path))
    loaded = time.perf_counter()
    generate_s = raw.generate(model, processor, Workload(prompt_seconds, new_seconds), 1, seed)
    return {"load_s": loaded - started, "generate_s": generate_s}


def measure(model_path: Path, work, *, jobs: int, threads: int, data_dir: Path, log_path: Path,
            timed=lambda label, fn, **kw: fn(), log=print) -> dict:
    """Run ``jobs`` jobs through a forking worker; wall = first enqueue to the worker's exit after the last."""
    import subprocess
    import threading

    from redis import Redis
    from rq import Queue

    from backend.dev.embedded import start_redis

    log_file = open(log_path, "ab")
    redis = start_redis(data_dir / "baseline-redis", persist=False, stdout=log_file)
    worker = None
    try:
        worker = subprocess.Popen([sys.executable, "-m", "bench.baseline_job", redis.url, "baseline"],
                                  cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=log_file)
        if worker.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"baseline worker failed to start; see {log_path}")
        threading.Thread(target=lambda: log_file.write(worker.stdout.read()), daemon=True).start()
        queue = Queue("baseline", connection=Redis.from_url(redis.url))

        def run() -> tuple[float, list, int]:
            started = time.perf_counter()
            enqueued = [queue.enqueue(generate_in_job, str(model_path), seed, threads, work.prompt_seconds,
                                      work.new_seconds, job_timeout=1800) for seed in range(jobs)]
            worker.stdin.write(b"go\n")
            worker.stdin.close()
            code = worker.wait()
            return time.perf_counter() - started, enqueued, code

        # A burst worker runs once, so this measurement is not retaken (a disturbance is reported).
        wall, enqueued, code = timed("baseline", run, retries=0)
        if code != 0:
            raise RuntimeError(f"baseline worker exited with {code}; see {log_path}")
        results = []
        for job in enqueued:
            job.refresh()
            if job.get_status() != "finished":
                raise RuntimeError(f"baseline job {job.id} ended {job.get_status()}; see {log_path}")
            results.append(job.return_value())
        load = [r["load_s"] for r in results]
        gen = [r["generate_s"] for r in results]
        log(f"baseline: {jobs} jobs in {wall:.1f} s (model load {sum(load) / jobs:.1f} s + "
            f"generate {sum(gen) / jobs:.1f} s per job)")
        return {"wall_s": wall, "load_s": load, "generate_s": gen}
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        redis.stop()
        log_file.close()


def main(argv: list[str]) -> int:
    redis_url, queue_name = argv
    import torch  # noqa: F401 - preloaded for every forked job (see the module docstring)
    import transformers  # noqa: F401
    from redis import Redis
    from rq import Queue, Worker

    from . import raw  # noqa: F401 - imports transformers' MusicGen classes too

    connection = Redis.from_url(redis_url)
    worker = Worker([Queue(queue_name, connection=connection)], connection=connection)
    # The bench enqueues the jobs once we are ready, so worker start-up is not timed.
    print("ready", flush=True)
    sys.stdin.readline()
    worker.work(burst=True, logging_level="WARNING")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
