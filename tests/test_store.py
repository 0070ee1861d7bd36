"""backend/core/store.py against a real MongoDB-protocol server: task states, audio in GridFS, indexes."""

from datetime import timedelta

import gridfs
import pytest

from backend.core.clock import utcnow
from backend.core.store import AUDIO_BUCKET, TaskStore, connect

TTL = 3600


@pytest.fixture
def store(settings):
    client = connect(settings.mongo_url)
    yield TaskStore(client[settings.mongo_db], result_ttl_seconds=TTL)
    client.close()


def _task(task_id, status="queued", **fields):
    return {"_id": task_id, "status": status, "model": "m", "attempts": 0, "request": {"x": 1}, **fields}


def _close(a, b, seconds=2.0):
    return abs((a - b).total_seconds()) <= seconds


def test_the_first_insert_makes_every_index(store):
    assert "expires_at_ttl" not in store.tasks.index_information()
    store.insert_task(_task("t1"))
    tasks = store.tasks.index_information()
    assert tasks["expires_at_ttl"]["key"] == [("expires_at", 1)]
    assert tasks["expires_at_ttl"]["expireAfterSeconds"] == 0
    assert tasks["status_started"]["key"] == [("status", 1), ("started_at", 1)]
    audio = store.db[f"{AUDIO_BUCKET}.files"].index_information()
    assert audio["audio_expiry"]["key"] == [("metadata.expires_at", 1)]


def test_insert_sets_created_and_expiry_from_the_ttl(store):
    store.insert_task(_task("t1"))
    doc = store.get_task("t1")
    assert _close(doc["created_at"], utcnow())
    assert doc["expires_at"] - doc["created_at"] == timedelta(seconds=TTL)
    created = utcnow() - timedelta(days=1)
    store.insert_task(_task("t2", created_at=created))
    assert store.get_task("t2")["created_at"] == created  # a given creation time is kept
    assert store.get_task("missing") is None


def test_claim_takes_a_queued_task_once(store):
    store.insert_task(_task("t1"))
    doc = store.claim("t1", "w1", "run-w1")
    assert doc["status"] == "processing" and doc["worker"] == "w1" and doc["attempts"] == 1
    assert _close(doc["started_at"], utcnow())
    assert store.claim("t1", "w2", "run-w2") is None  # a second worker gets nothing
    assert store.get_task("t1")["worker"] == "w1"
    assert store.claim("missing", "w1", "run-w1") is None


@pytest.mark.parametrize("status", ["processing", "completed", "failed", "canceled"])
def test_claim_refuses_a_task_that_is_not_queued(store, status):
    store.insert_task(_task("t1", status=status))
    assert store.claim("t1", "w1", "run-w1") is None
    doc = store.get_task("t1")
    assert doc["status"] == status and doc["attempts"] == 0 and "worker" not in doc


def test_finish_ends_a_task_once(store):
    store.insert_task(_task("t1"))
    store.claim("t1", "w1", "run-w1")
    assert store.finish("t1", "completed", {"progress": 100.0})
    first = store.get_task("t1")
    assert first["status"] == "completed" and first["progress"] == 100.0
    assert _close(first["completed_at"], utcnow())
    assert first["expires_at"] - first["completed_at"] == timedelta(seconds=TTL)  # kept TTL after it ended
    assert not store.finish("t1", "failed", {"error": "late"})
    second = store.get_task("t1")
    assert second["status"] == "completed" and "error" not in second
    assert second["completed_at"] == first["completed_at"]


def test_finish_only_from_the_states_it_names(store):
    store.insert_task(_task("queued"))
    assert not store.finish("queued", "failed", {"error": "x"}, only_from=("processing",))
    assert store.get_task("queued")["status"] == "queued"
    assert store.finish("queued", "canceled", only_from=("queued",))
    store.insert_task(_task("running", status="processing"))
    assert not store.finish("running", "canceled", only_from=("queued",))
    assert store.get_task("running")["status"] == "processing"


def test_finish_refuses_a_status_that_is_not_final(store):
    store.insert_task(_task("t1"))
    with pytest.raises(AssertionError):
        store.finish("t1", "processing")
    assert store.get_task("t1")["status"] == "queued"


def test_requeue_moves_only_a_processing_task_back(store):
    store.insert_task(_task("t1"))
    store.claim("t1", "w1", "run-w1")
    assert store.requeue("t1", "worker gone")
    doc = store.get_task("t1")
    assert doc["status"] == "queued" and doc["worker"] is None and doc["started_at"] is None
    assert doc["last_error"] == "worker gone" and doc["attempts"] == 1  # the count of runs is kept
    assert not store.requeue("t1", "again")  # queued already
    assert store.claim("t1", "w2", "run-w2")["attempts"] == 2
    store.finish("t1", "completed")
    assert not store.requeue("t1", "after the end")
    assert store.get_task("t1")["status"] == "completed"


def test_queued_models_reports_only_tasks_still_queued(store):
    store.insert_task(_task("a", model="small"))
    store.insert_task(_task("b", model="medium"))
    store.insert_task(_task("c", model="large", status="processing"))
    store.insert_task(_task("d", model="small", status="canceled"))
    assert store.queued_models(["a", "b", "c", "d", "missing"]) == {"a": "small", "b": "medium"}
    assert store.queued_models(["b"]) == {"b": "medium"}
    assert store.queued_models([]) == {}


def test_processing_tasks_lists_what_the_reaper_needs(store):
    store.insert_task(_task("a"))
    store.insert_task(_task("b", status="completed"))
    store.insert_task(_task("c", cancel_requested=True))
    store.claim("a", "w1", "run-w1")
    store.claim("c", "w2", "run-w2")
    rows = {row["_id"]: row for row in store.processing_tasks()}
    assert set(rows) == {"a", "c"}
    assert rows["a"]["worker"] == "w1" and rows["a"]["attempts"] == 1 and rows["a"]["started_at"] is not None
    assert rows["c"]["cancel_requested"] is True
    assert "request" not in rows["a"] and "model" not in rows["a"]  # only the fields it asked for


def test_queued_before_the_cutoff(store):
    now = utcnow()
    store.insert_task(_task("old", created_at=now - timedelta(minutes=10), job_id="old-q1"))
    store.insert_task(_task("new", created_at=now))
    store.insert_task(_task("old-running", created_at=now - timedelta(minutes=10), status="processing"))
    rows = store.queued_before(now - timedelta(minutes=1))
    assert rows == [{"_id": "old", "job_id": "old-q1"}]


def test_count_by_status_and_active_per_owner(store):
    for i, status in enumerate(["queued", "queued", "processing", "completed", "failed", "failed"]):
        store.insert_task(_task(f"t{i}", status=status, owner="key:a" if i % 2 == 0 else "key:b"))
    assert store.count_by_status() == {"queued": 2, "processing": 1, "completed": 1, "failed": 2}
    # key:a owns t0 (queued), t2 (processing), t4 (failed); key:b owns t1 (queued), t3, t5.
    assert store.count_active("key:a", limit=10) == 2
    assert store.count_active("key:b", limit=10) == 1
    assert store.count_active("key:a", limit=1) == 1  # counting stops at the limit
    assert store.count_active("key:nobody", limit=10) == 0
    assert "owner_status" in store.tasks.index_information()  # made on first use


def test_audio_round_trip_with_its_metadata(store):
    data = bytes(range(256)) * 1000  # several GridFS chunks
    file_id = store.put_audio("t1", "result", data, "audio/wav")
    assert store.read_audio(file_id) == data
    meta = store.db[f"{AUDIO_BUCKET}.files"].find_one({"_id": file_id})["metadata"]
    assert meta["task_id"] == "t1" and meta["role"] == "result" and meta["content_type"] == "audio/wav"
    assert _close(meta["expires_at"], utcnow() + timedelta(seconds=TTL))


def test_delete_audio_removes_chunks_and_is_harmless_twice(store):
    file_id = store.put_audio("t1", "input", b"x" * 600_000, "application/octet-stream")
    chunks = store.db[f"{AUDIO_BUCKET}.chunks"]
    assert chunks.count_documents({"files_id": file_id}) >= 2
    store.delete_audio(file_id)
    assert chunks.count_documents({"files_id": file_id}) == 0
    with pytest.raises(gridfs.errors.NoFile):
        store.read_audio(file_id)
    store.delete_audio(file_id)  # already gone: no error


def test_prune_removes_only_expired_audio(store):
    now = utcnow()
    expired = store.put_audio("t1", "input", b"old" * 1000, "audio/wav", expires_at=now - timedelta(seconds=1))
    fresh = store.put_audio("t2", "result", b"new" * 1000, "audio/wav")
    extended = store.put_audio("t3", "result", b"ext" * 1000, "audio/wav", expires_at=now - timedelta(seconds=1))
    store.extend_audio_expiry(extended, now + timedelta(hours=1))
    assert store.prune_expired() == 1
    assert store.read_audio(fresh) == b"new" * 1000 and store.read_audio(extended) == b"ext" * 1000
    with pytest.raises(gridfs.errors.NoFile):
        store.read_audio(expired)
    assert store.db[f"{AUDIO_BUCKET}.chunks"].count_documents({"files_id": expired}) == 0
    assert store.prune_expired() == 0
    # Expiring an input at once (as a completed /continue does) lets the next prune take it.
    store.extend_audio_expiry(fresh, now - timedelta(seconds=1))
    assert store.prune_expired(now=now + timedelta(seconds=1)) == 1
