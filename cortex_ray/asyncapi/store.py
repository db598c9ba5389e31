"""Where an AsyncAPI's workloads live: a local folder (default) or an S3 prefix.

One folder per workload, named by its server-generated id::

    <id>/payload        the request body, as received
    <id>/meta.json      content type, submission time, attempts
    <id>/status.json    {"status": in_queue | in_progress | completed | failed, ...}
    <id>/result.json    the handler's result (completed workloads)

Every object is written whole (S3 PUT, or a local temp file renamed into place),
so a reader never sees half an object. Ids have one fixed form; anything else is
refused before the store is touched, so a GET can never reach outside the API's
prefix.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any

from cortex_ray.errors import StorageNotFoundError
from cortex_ray.storage import Storage, open_storage

__all__ = ["FINAL", "STATUSES", "WorkloadStore", "new_workload_id", "valid_workload_id"]

STATUSES = ("in_queue", "in_progress", "completed", "failed")
FINAL = ("completed", "failed")
_ID = re.compile(r"[0-9]{14}-[0-9a-f]{20}")


def new_workload_id() -> str:
    """A sortable, unguessable id: UTC time to the second, then 80 random bits."""
    return datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(10)


def valid_workload_id(value: str) -> bool:
    return bool(_ID.fullmatch(value))


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


class WorkloadStore:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._storage: Storage | None = None

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = open_storage(self.uri)
        return self._storage

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "_storage": None}

    # --- writing -----------------------------------------------------------

    def submit(self, workload_id: str, body: bytes, content_type: str) -> None:
        now = time.time()
        self.storage.upload(f"{workload_id}/payload", body, content_type)
        self._put_json(
            f"{workload_id}/meta.json", {"content_type": content_type, "submitted_at": now, "attempts": 0}
        )
        self.set_status(workload_id, "in_queue")

    def set_status(self, workload_id: str, status: str, **extra: Any) -> None:
        self._put_json(f"{workload_id}/status.json", {"status": status, "updated_at": time.time(), **extra})

    def set_attempts(self, workload_id: str, attempts: int) -> None:
        meta = self.meta(workload_id)
        meta["attempts"] = attempts
        self._put_json(f"{workload_id}/meta.json", meta)

    def complete(self, workload_id: str, result: dict[str, Any]) -> None:
        self._put_json(f"{workload_id}/result.json", result)
        self.set_status(workload_id, "completed")
        self.storage.delete(f"{workload_id}/payload")

    def fail(self, workload_id: str, error_type: str, message: str) -> None:
        self.set_status(workload_id, "failed", error={"type": error_type, "message": message})
        self.storage.delete(f"{workload_id}/payload")

    # --- reading -----------------------------------------------------------

    def payload(self, workload_id: str) -> tuple[bytes, str]:
        meta = self.meta(workload_id)
        return self.storage.read(f"{workload_id}/payload"), str(meta["content_type"])

    def meta(self, workload_id: str) -> dict[str, Any]:
        return self._get_json(f"{workload_id}/meta.json")

    def status(self, workload_id: str) -> dict[str, Any] | None:
        """The status document, or ``None`` when the id is unknown."""
        try:
            return self._get_json(f"{workload_id}/status.json")
        except StorageNotFoundError:
            return None

    def describe(self, workload_id: str) -> dict[str, Any] | None:
        """The GET reply: ``{"id", "status"}`` plus result and timestamp, or the error."""
        status = self.status(workload_id)
        if status is None:
            return None
        out: dict[str, Any] = {"id": workload_id, "status": status["status"]}
        if status["status"] == "completed":
            out["result"] = self._get_json(f"{workload_id}/result.json")
            out["timestamp"] = rfc3339(status["updated_at"])
        elif status["status"] == "failed":
            out["error"] = status.get("error", {})
            out["timestamp"] = rfc3339(status["updated_at"])
        return out

    def unfinished(self) -> list[str]:
        """Every workload not completed or failed, oldest first: one listing, no reads.

        A workload's payload is deleted when it ends, so the ids that still hold one
        are exactly the unfinished ones.
        """
        ids = {obj.key.split("/", 1)[0] for obj in self.storage.list() if obj.key.endswith("/payload")}
        return sorted(i for i in ids if valid_workload_id(i))

    def expire(self, ttl: float) -> int:
        """Delete finished workloads older than ``ttl`` seconds; returns how many."""
        removed = 0
        cutoff = time.time() - ttl
        for workload_id in self._ids():
            status = self.status(workload_id)
            if status is not None and status["status"] in FINAL and status["updated_at"] < cutoff:
                self.storage.delete_prefix(workload_id)
                removed += 1
        return removed

    def _ids(self) -> list[str]:
        ids = {obj.key.split("/", 1)[0] for obj in self.storage.list() if obj.key.endswith("/status.json")}
        return sorted(i for i in ids if valid_workload_id(i))

    def _put_json(self, key: str, value: Any) -> None:
        self.storage.upload(key, json.dumps(value).encode(), "application/json")

    def _get_json(self, key: str) -> dict[str, Any]:
        return json.loads(self.storage.read(key))
