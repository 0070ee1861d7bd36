"""Task documents in MongoDB and audio in GridFS: the only code that talks to MongoDB.

Audio never sits inside a task document (the old backend hit Mongo's 16 MB
document limit after two continuations) nor inside Redis job arguments: it
goes to a GridFS bucket and the task keeps the file id.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import gridfs
from bson import ObjectId
from pymongo import ASCENDING, MongoClient, ReturnDocument
from pymongo.database import Database

from backend.core.clock import utcnow
from backend.core.tasks import ACTIVE_STATUSES, FINAL_STATES

log = logging.getLogger(__name__)

TASKS = "tasks"
AUDIO_BUCKET = "audio"


def connect(url: str, *, timeout_ms: int = 3000) -> MongoClient:
    # Short timeouts make a down MongoDB a quick 503 rather than a hung request.
    return MongoClient(
        url,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 10, 30000),
        tz_aware=True,
    )


class TaskStore:
    def __init__(self, db: Database, result_ttl_seconds: int):
        self.db = db
        self.tasks = db[TASKS]
        self.audio = gridfs.GridFSBucket(db, bucket_name=AUDIO_BUCKET)
        self.ttl = timedelta(seconds=result_ttl_seconds)
        self._indexed = False
        self._owner_indexed = False

    # -- set-up and health ---------------------------------------------------
    def ensure_indexes(self) -> None:
        # Task documents vanish by themselves once expired; their audio is
        # removed by prune_expired (a TTL index would orphan GridFS chunks).
        self.tasks.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_at_ttl")
        self.tasks.create_index([("status", ASCENDING), ("started_at", ASCENDING)], name="status_started")
        self.db[f"{AUDIO_BUCKET}.files"].create_index([("metadata.expires_at", ASCENDING)], name="audio_expiry")
        self._indexed = True

    def ping(self) -> None:
        self.db.client.admin.command("ping")

    # -- tasks ---------------------------------------------------------------
    def insert_task(self, doc: dict) -> None:
        if not self._indexed:  # MongoDB may have been down when the process started
            self.ensure_indexes()
        now = doc.setdefault("created_at", utcnow())
        doc.setdefault("expires_at", now + self.ttl)
        self.tasks.insert_one(doc)

    def delete_task(self, task_id: str) -> None:
        self.tasks.delete_one({"_id": task_id})

    def get_task(self, task_id: str) -> dict | None:
        return self.tasks.find_one({"_id": task_id})

    def claim(self, task_id: str, worker_id: str, run_id: str) -> dict | None:
        """Move a queued task to processing for run ``run_id``; None when it is no longer queued.

        Safe to call again after a lost reply (a MongoDB restart mid-call): a task this very run already
        holds is returned as it is, without counting a second attempt.
        """
        mine = self.tasks.find_one({"_id": task_id, "status": "processing", "run": run_id})
        if mine is not None:
            return mine
        return self.tasks.find_one_and_update(
            {"_id": task_id, "status": "queued"},
            {"$set": {"status": "processing", "started_at": utcnow(), "worker": worker_id, "run": run_id},
             "$inc": {"attempts": 1}},
            return_document=ReturnDocument.AFTER,
        )

    def queued_models(self, task_ids: list[str]) -> dict[str, str]:
        """The model of each of these tasks that is still queued (a worker choosing jobs to take)."""
        if not task_ids:
            return {}
        return {doc["_id"]: doc["model"]
                for doc in self.tasks.find({"_id": {"$in": list(task_ids)}, "status": "queued"}, {"model": 1})}

    def update(self, task_id: str, fields: dict[str, Any]) -> None:
        self.tasks.update_one({"_id": task_id}, {"$set": fields})

    def finish(self, task_id: str, status: str, fields: dict[str, Any] | None = None,
               *, only_from: tuple[str, ...] = ("queued", "processing"), run: str | None = None) -> bool:
        """End a task once: completed, failed or canceled. False if it had already ended.

        ``run``: only while that run still holds the task, so a stale run (requeued meanwhile and taken by
        another worker) can never store a second outcome. Safe to call again after a lost reply: a task this
        run already ended with ``status`` answers True again.
        """
        assert status in FINAL_STATES
        now = utcnow()
        update = dict(fields or {}, status=status, completed_at=now, expires_at=now + self.ttl)
        where: dict[str, Any] = {"_id": task_id, "status": {"$in": list(only_from)}}
        if run is not None:
            where["run"] = run
            if self.tasks.find_one({"_id": task_id, "status": status, "run": run}, {"_id": 1}) is not None:
                return True
        result = self.tasks.update_one(where, {"$set": update})
        return result.modified_count == 1

    def requeue(self, task_id: str, reason: str, *, run: str | None = None, handed_back: bool = False) -> bool:
        """Put a processing task back to queued (its worker died, or handed it back while stopping).

        ``run``: only if that run still holds it, so two housekeepers (or a housekeeper and a worker) can
        never both requeue one run. A task handed back by a stopping worker counts a hand-back, not a crash:
        hand-backs never use up its retries.
        """
        where: dict[str, Any] = {"_id": task_id, "status": "processing"}
        if run is not None:
            where["run"] = run
        update: dict[str, Any] = {"$set": {"status": "queued", "started_at": None, "worker": None, "run": None,
                                           "last_error": reason, "progress": 0.0}}
        if handed_back:
            update["$inc"] = {"handbacks": 1}
        return self.tasks.update_one(where, update).modified_count == 1

    def processing_tasks(self) -> list[dict]:
        return list(self.tasks.find({"status": "processing"}, {"worker": 1, "attempts": 1, "started_at": 1,
                                                                "cancel_requested": 1, "run": 1,
                                                                "handbacks": 1}))

    def queued_before(self, cutoff: datetime) -> list[dict]:
        """``queued`` tasks created before ``cutoff`` (id and job id only): candidates for a lost job."""
        return list(self.tasks.find({"status": "queued", "created_at": {"$lt": cutoff}}, {"job_id": 1}))

    def ended_with_webhook_due(self, after: datetime, before: datetime) -> list[str]:
        """Tasks that ended between ``after`` and ``before`` with a webhook not yet delivered or given up."""
        return [doc["_id"] for doc in self.tasks.find(
            {"status": {"$in": list(FINAL_STATES)}, "request.webhook": {"$nin": [None, ""]},
             "webhook_delivery.status": {"$nin": ["delivered", "failed"]},
             "completed_at": {"$gt": after, "$lt": before}}, {"_id": 1})]

    def count_active(self, owner: str | None, *, limit: int) -> int:
        """Tasks of ``owner`` still ``queued`` or ``processing``, counted up to ``limit``."""
        active = self.tasks.count_documents({"owner": owner, "status": {"$in": list(ACTIVE_STATUSES)}}, limit=limit)
        if not self._owner_indexed:  # made on first use, not at start-up: MongoDB may start after the API
            try:
                self.tasks.create_index([("owner", 1), ("status", 1)], name="owner_status")
                self._owner_indexed = True
            except Exception as exc:  # counting works without it; try again next time
                log.warning("could not create the owner index yet: %s", exc)
        return active

    def count_by_status(self) -> dict[str, int]:
        return {row["_id"]: row["count"] for row in
                self.tasks.aggregate([{"$group": {"_id": "$status", "count": {"$sum": 1}}}])}

    # -- audio ---------------------------------------------------------------
    def put_audio(self, task_id: str, role: str, data: bytes, content_type: str,
                  expires_at: datetime | None = None) -> ObjectId:
        metadata = {"task_id": task_id, "role": role, "content_type": content_type,
                    "expires_at": expires_at or utcnow() + self.ttl}
        return self.audio.upload_from_stream(f"{task_id}-{role}", data, metadata=metadata)

    def discard_other_results(self, task_id: str, keep: ObjectId) -> int:
        """Delete result files of ``task_id`` other than ``keep``: uploads of runs that died before finishing."""
        files = self.db[f"{AUDIO_BUCKET}.files"]
        stale = [doc["_id"] for doc in files.find({"metadata.task_id": task_id, "metadata.role": "result",
                                                   "_id": {"$ne": keep}}, {"_id": 1})]
        for file_id in stale:
            self.delete_audio(file_id)
        return len(stale)

    def read_audio(self, file_id: ObjectId) -> bytes:
        return self.audio.open_download_stream(file_id).read()

    def delete_audio(self, file_id: ObjectId) -> None:
        try:
            self.audio.delete(file_id)
        except gridfs.errors.NoFile:
            pass

    def extend_audio_expiry(self, file_id: ObjectId, expires_at: datetime) -> None:
        self.db[f"{AUDIO_BUCKET}.files"].update_one({"_id": file_id}, {"$set": {"metadata.expires_at": expires_at}})

    def prune_expired(self, now: datetime | None = None) -> int:
        """Delete audio past its expiry (chunks included); returns how many files went."""
        now = now or utcnow()
        files = self.db[f"{AUDIO_BUCKET}.files"]
        removed = 0
        for doc in files.find({"metadata.expires_at": {"$lt": now}}, {"_id": 1}):
            self.delete_audio(doc["_id"])
            removed += 1
        return removed
