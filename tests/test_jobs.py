"""worker/jobs.py stage by stage, on real Redis and MongoDB and the tiny MusicGen.

Scenario tests (tests/scenarios/) run tasks through the API and a whole worker; these drive each stage
(claim, prepare, engine_for, start, complete, end) directly and check what each leaves behind.
"""

from datetime import timedelta

import numpy as np
import pytest
from rq.timeouts import JobTimeoutException

from backend.core import chunks, webhooks
from backend.core.audiofile import decode_audio_bytes
from backend.core.clock import utcnow
from backend.core.errors import AudioDecodeError, SegueError, TaskFailure
from tests.conftest import _MODEL_CACHES
from tests.media_server import make_noise_track
from worker import jobs, runtime
from worker.engine import GenerationCanceled, GenerationResult
from worker.pipeline.audio import encode_wav

SR = 32000


@pytest.fixture
def rt(settings):
    rt = runtime.init(settings, worker_id="unit-worker")
    rt.models = _MODEL_CACHES.setdefault(settings.models, rt.models)  # the tiny model stays loaded between tests
    return rt


def _continue_task(rt, task_id="t1", *, status="queued", clip=None, **request):
    clip = encode_wav(make_noise_track(4.0, sr=SR), SR) if clip is None else clip
    file_id = rt.services.store.put_audio(task_id, "input", clip, "application/octet-stream")
    req = {"prompt_duration": 2, "duration": 3, "input_seconds": 4.0, "prompt": None, "seed": 3, "top_k": 250,
           "top_p": 0.0, "temperature": 1.0, "cfg_coef": 3.0, "output_format": "wav", "webhook": None,
           "melody": False, **request}
    rt.services.store.insert_task({"_id": task_id, "job_id": task_id, "kind": "continue", "status": status,
                                   "model": rt.settings.default_model, "request": req, "input_file_id": file_id,
                                   "progress": 0.0, "attempts": 0, "error": None})
    return file_id


def _webhooks_due(rt):
    return {m.decode() for m in rt.services.redis.zrange(webhooks.DUE_KEY, 0, -1)}


@pytest.mark.parametrize("status", ["canceled", "processing", "completed"])
def test_claim_skips_a_task_that_is_not_queued(rt, status):
    _continue_task(rt, status=status)
    assert jobs.claim(rt, "t1") is None
    doc = rt.services.store.get_task("t1")
    assert doc["status"] == status and doc["attempts"] == 0
    assert rt.services.progress.get("t1") is None  # nothing was reported for it


def test_claim_takes_the_task_and_starts_its_stream_afresh(rt):
    _continue_task(rt)
    # Chunks left by an earlier attempt of the same task must not reach its listeners again.
    chunks.publish(rt.services.redis, "t1", chunks.Chunk(0, 0, SR, 1, b"\0" * 16))
    run = jobs.claim(rt, "t1")
    assert run.task_id == "t1" and run.doc["status"] == "processing" and run.doc["worker"] == "unit-worker"
    assert run.model == rt.settings.default_model
    assert rt.services.progress.get("t1") == 0.5  # the bar moves as soon as a worker has it
    assert rt.services.redis.exists(chunks.KEY.format("t1")) == 0


def test_prepare_of_a_continue_clip_prompts_with_its_tail(rt):
    clip = encode_wav(make_noise_track(4.0, sr=SR), SR)
    _continue_task(rt, clip=clip)
    run = jobs.claim(rt, "t1")
    jobs.prepare(rt, run)
    assert run.error is None
    request = run.prepared.request
    decoded, _ = decode_audio_bytes(clip)
    np.testing.assert_array_equal(request.prompt_audio, decoded[:, -2 * SR:])
    assert request.total_seconds == 3.0 and request.seed == 3
    assert rt.services.progress.get("t1") == jobs.PREPARED_AT


def test_a_failed_prepare_is_kept_for_end_and_no_engine_is_asked(rt):
    _continue_task(rt, clip=b"definitely not audio" * 50)
    run = jobs.claim(rt, "t1")
    jobs.prepare(rt, run)  # does not raise: the task boundary is `end`
    assert isinstance(run.error, AudioDecodeError) and run.prepared is None
    assert jobs.engine_for(rt, run) is None
    assert isinstance(run.error, AudioDecodeError)  # the first reason is the one kept
    jobs.end(rt, run, timeout=60)
    doc = rt.services.store.get_task("t1")
    assert doc["status"] == "failed" and doc["error"] == run.error.message
    assert doc["progress"] == 0.5


def test_end_stores_a_failure_reason_once(rt):
    _continue_task(rt)
    run = jobs.claim(rt, "t1")
    run.error = TaskFailure("the clip was silent")
    done_before = rt.tasks_done
    jobs.end(rt, run, timeout=60)
    doc = rt.services.store.get_task("t1")
    assert doc["status"] == "failed" and doc["error"] == "the clip was silent"
    assert run.done and rt.tasks_done == done_before + 1
    assert _webhooks_due(rt) == {"t1"}
    # A second word on the same task (a late stage, another worker) changes nothing.
    late = jobs.TaskRun("t1", run.doc, run.reporter, "a-stale-run", error=RuntimeError("something else"))
    jobs.end(rt, late, timeout=60)
    assert rt.services.store.get_task("t1")["error"] == "the clip was silent"


def test_end_does_not_overwrite_a_completed_task(rt):
    _continue_task(rt)
    run = jobs.claim(rt, "t1")
    assert rt.services.store.finish("t1", "completed", {"progress": 100.0}, only_from=("processing",))
    run.error = RuntimeError("boom")
    jobs.end(rt, run, timeout=60)
    doc = rt.services.store.get_task("t1")
    assert doc["status"] == "completed" and doc["error"] is None
    assert _webhooks_due(rt) == set()  # no second ending, so no second webhook


def test_a_timed_out_run_reads_as_its_limit(rt):
    _continue_task(rt)
    run = jobs.claim(rt, "t1")
    run.error = jobs.TaskTimedOut("Task exceeded maximum timeout value (42 seconds)")
    jobs.end(rt, run, timeout=42)
    doc = rt.services.store.get_task("t1")
    assert doc["status"] == "failed"
    assert doc["error"] == "the task ran longer than the 42 s limit and was stopped"


@pytest.mark.parametrize("stopped_by_worker, status, error", [
    (False, "canceled", "canceled by request"),  # its client asked
    (True, "failed", "canceled while generating"),  # the worker stopped it (its time limit): not a cancel
])
def test_a_canceled_generation_ends_as_who_stopped_it(rt, stopped_by_worker, status, error):
    _continue_task(rt)
    run = jobs.claim(rt, "t1")
    run.error = GenerationCanceled()
    if stopped_by_worker:
        run.stop.set()
    jobs.end(rt, run, timeout=60)
    doc = rt.services.store.get_task("t1")
    assert (doc["status"], doc["error"]) == (status, error)


@pytest.mark.parametrize("exc, text", [
    (JobTimeoutException("rq's own words"), "the task ran longer than the 9 s limit and was stopped"),
    (GenerationCanceled(), "canceled while generating"),
    (SegueError("the media has no audio track", code="fetch_failed"), "the media has no audio track"),
    (MemoryError(), "the worker ran out of memory while generating"),
    (RuntimeError("CUDA error: device-side assert"), "generation failed: CUDA error: device-side assert"),
    (RuntimeError("   "), "generation failed: RuntimeError"),
])
def test_describe_failure_wording(exc, text):
    assert jobs.describe_failure(exc, 9) == text


def test_describe_failure_keeps_a_long_message_readable():
    text = jobs.describe_failure(ValueError("x" * 5000), 9)
    assert text == "generation failed: " + "x" * 500


def test_every_stage_on_the_tiny_model_stores_the_result(rt):
    input_id = _continue_task(rt)
    run = jobs.claim(rt, "t1")
    jobs.prepare(rt, run)
    engine = jobs.engine_for(rt, run)
    assert engine is not None and run.error is None
    result = jobs.start(rt, run, engine).result(timeout=120)
    jobs.complete(rt, run, result)
    jobs.end(rt, run, timeout=60)
    assert run.error is None and run.done and run.prepared is None
    doc = rt.services.store.get_task("t1")
    assert doc["status"] == "completed" and doc["progress"] == 100.0 and doc["error"] is None
    assert doc["seed"] == 3 and doc["sample_rate"] == SR and doc["channels"] == 1
    assert doc["duration_seconds"] == pytest.approx(2.0 + 3.0, abs=0.05)  # 2 s head + the 3 s output
    assert doc["batch_size"] >= 1 and doc["result_bytes"] > 0
    audio, sr = decode_audio_bytes(rt.services.store.read_audio(doc["result_file_id"]))
    assert sr == SR and audio.shape[0] == 1 and abs(audio.shape[1] - doc["duration_seconds"] * SR) <= 2
    assert rt.services.progress.get("t1") == 100.0
    assert _webhooks_due(rt) == {"t1"}
    # The input clip is no longer needed: it expires now and the next prune takes it (the result stays).
    assert rt.services.store.prune_expired(now=utcnow() + timedelta(seconds=1)) == 1
    assert rt.services.store.db["audio.files"].find_one({"_id": input_id}) is None
    assert rt.services.store.read_audio(doc["result_file_id"])


def test_a_result_for_a_task_canceled_meanwhile_is_discarded(rt):
    _continue_task(rt)
    run = jobs.claim(rt, "t1")
    jobs.prepare(rt, run)
    assert rt.services.store.finish("t1", "canceled", {"error": "canceled by request"}, only_from=("processing",))
    jobs.complete(rt, run, GenerationResult(np.zeros((1, 3 * SR), dtype=np.float32), SR))
    jobs.end(rt, run, timeout=60)
    doc = rt.services.store.get_task("t1")
    assert doc["status"] == "canceled" and doc.get("result_file_id") is None
    files = rt.services.store.db["audio.files"]
    assert files.count_documents({"metadata.role": "result"}) == 0  # its audio was deleted again
    assert rt.services.progress.get("t1") < 100.0
