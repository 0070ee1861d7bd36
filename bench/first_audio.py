"""Time to the first audio chunk versus total time, for one 10 s continuation.

A listener hears the first half second of the continuation while the rest is
still being generated; this measures how early, through the whole stack:
the client submits a /continue and reads ``GET /tasks/<id>/events`` at once.
"""

from __future__ import annotations

import json
import time

import requests

from .workload import Workload


def measure(api: str, work: Workload, seed: int = 7, timeout: float = 3600) -> dict:
    body = {"audio": work.prompt_b64(), "prompt_duration": work.prompt_seconds, "duration": work.total_seconds,
            "seed": seed}
    started = time.perf_counter()
    answer = requests.post(f"{api}/continue", json=body, timeout=60)
    answer.raise_for_status()
    task_id = answer.json()["task_id"]
    first_audio = None
    chunks = 0
    event = None
    with requests.get(f"{api}/tasks/{task_id}/events", stream=True, timeout=timeout) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "audio":
                chunks += 1
                if first_audio is None:
                    first_audio = time.perf_counter() - started
            elif line.startswith("data: ") and event in ("completed", "failed", "canceled"):
                if event != "completed":
                    raise RuntimeError(f"task {task_id} {event}: {json.loads(line[6:]).get('error')}")
                break
    total = time.perf_counter() - started
    if first_audio is None:
        raise RuntimeError(f"task {task_id} completed without streaming any audio")
    return {"first_audio_s": first_audio, "total_s": total, "chunks": chunks}
