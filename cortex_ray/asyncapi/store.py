"""Where an AsyncAPI's workloads live: a local folder (default) or an S3 prefix.

Layout below the store's root::

    queue/<id>                     one per unfinished workload: {"attempts": n}
    workloads/<id>/payload         the request body, as received
    workloads/<id>/meta.json       content type, size, submission time
    workloads/<id>/lease-<n>.json  the worker running it (the highest n): attempt, heartbeat
    workloads/<id>/final.json      completed (with the result) or failed (with the error)
    done/<bucket>/<id>             finished workloads, by finishing time, for expiry

The rules that keep acknowledged work safe:

* A workload is acknowledged only once its payload, metadata and queue entry are written
  durably (local folders: fsync of the file and its folder; S3: a completed PUT).
* ``final.json`` is written with a **create-only** write (S3 ``If-None-Match: *``, a hard
  link locally), so a final status is never overwritten: whichever run finishes first
  wins, later ones find it and stop. Nothing else decides the status: ``queue/`` and the
  lease only say whether it waits or runs.
* A run takes a lease first, also with a create-only write (lease ``n+1`` after a stale
  lease ``n``), so of two workers handed the same workload at once exactly one runs it.
* A pass over the store touches only what it is about: ``queue/`` holds just the
  unfinished workloads, and expiry lists the folder names under ``done/`` and then only
  the buckets whose time has come.
* A file that cannot be read (empty after a power loss, corrupt) fails that workload with
  a reason saying so, and never stops the others.

Ids have one fixed form; anything else is refused before the store is touched, so a GET
can never reach outside the API's prefix.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cortex_ray.errors import StorageError, StorageNotFoundError
from cortex_ray.storage import Storage, open_storage

__all__ = ["FINAL", "WorkloadState", "WorkloadStore", "new_workload_id", "valid_workload_id"]

FINAL = ("completed", "failed")
_ID = re.compile(r"[0-9]{14}-[0-9a-f]{20}")
LEASE_TTL = 20.0
"""A lease not renewed for this long belongs to a worker that died: the workload may run again."""


def new_workload_id() -> str:
    """A sortable, unguessable id: UTC time to the second, then 80 random bits."""
    return datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(10)


def valid_workload_id(value: str) -> bool:
    return bool(_ID.fullmatch(value))


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


class Unreadable(StorageError):
    """A store file exists but cannot be read as what it should hold."""


@dataclass
class WorkloadState:
    """What the dispatcher needs to decide about one queued workload."""

    final: dict[str, Any] | None
    attempts: int
    lease: dict[str, Any] | None
    problem: str | None = None
    """Why the workload cannot run (unreadable metadata, truncated payload), if it cannot."""

    def lease_fresh(self, now: float | None = None) -> bool:
        if self.lease is None:
            return False
        return (now or time.time()) - float(self.lease.get("heartbeat_at", 0)) < LEASE_TTL


class WorkloadStore:
    def __init__(self, uri: str, result_ttl: float = 7 * 86400) -> None:
        self.uri = uri
        self.result_ttl = result_ttl
        self._storage: Storage | None = None

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = open_storage(self.uri)
        return self._storage

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "result_ttl": self.result_ttl, "_storage": None}

    # --- submitting ----------------------------------------------------------

    def submit(self, workload_id: str, body: bytes, content_type: str) -> None:
        """Store a new workload durably; it is acknowledged once this returns."""
        now = time.time()
        self.storage.upload(f"workloads/{workload_id}/payload", body, content_type)
        meta = {"content_type": content_type, "submitted_at": now, "size": len(body)}
        self._put(f"workloads/{workload_id}/meta.json", meta)
        self._put(f"queue/{workload_id}", {"attempts": 0})

    def discard(self, workload_id: str) -> None:
        """Forget a workload that was stored but refused (the queue was full)."""
        self.storage.delete(f"queue/{workload_id}")
        self.storage.delete_prefix(f"workloads/{workload_id}")

    # --- running -----------------------------------------------------------

    def state(self, workload_id: str) -> WorkloadState:
        final = self._final(workload_id)
        if final is not None:
            return WorkloadState(final, 0, None)
        problem = None
        try:
            attempts = int(self._get(f"queue/{workload_id}").get("attempts", 0))
        except (Unreadable, StorageNotFoundError, ValueError, TypeError):
            attempts = 0  # the count is lost, not the workload
        try:
            self._meta(workload_id)
        except Unreadable as exc:
            problem = str(exc)
        except StorageNotFoundError:
            problem = "the workload's metadata is missing from the store"
        return WorkloadState(None, attempts, self.lease(workload_id), problem)

    def set_attempts(self, workload_id: str, attempts: int) -> None:
        self._put(f"queue/{workload_id}", {"attempts": attempts})

    def payload(self, workload_id: str) -> tuple[bytes, str]:
        """The body and its content type; :class:`Unreadable` when either is damaged."""
        meta = self._meta(workload_id)
        try:
            body = self.storage.read(f"workloads/{workload_id}/payload")
        except StorageNotFoundError as exc:
            raise Unreadable(f"workload {workload_id}: its payload is missing from the store") from exc
        size = meta.get("size")
        if isinstance(size, int) and size != len(body):
            raise Unreadable(
                f"workload {workload_id}: its payload is truncated in the store ({len(body)} of {size} bytes)"
            )
        return body, str(meta["content_type"])

    def lease(self, workload_id: str) -> dict[str, Any] | None:
        """The workload's current lease (the highest numbered one), or ``None``."""
        number = self._lease_number(workload_id)
        if number == 0:
            return None
        try:
            return {**self._get(_lease_key(workload_id, number)), "number": number}
        except StorageNotFoundError:
            return None
        except Unreadable:
            return {"heartbeat_at": 0, "number": number}  # a lease nobody can read is a stale one

    def acquire_lease(self, workload_id: str, attempt: int, holder: str) -> int | None:
        """Take the workload for one run: the number of the new lease, or ``None`` when another
        worker holds a fresh one, or won the race for it. Atomic: each lease is a new object
        made with a create-only write, so of two workers taking it at once exactly one wins."""
        current = self.lease(workload_id)
        fresh = current is not None and time.time() - float(current.get("heartbeat_at", 0)) < LEASE_TTL
        if fresh and current is not None and current.get("holder") != holder:
            return None
        number = (current or {}).get("number", 0) + 1
        lease = {"attempt": attempt, "holder": holder, "heartbeat_at": time.time()}
        if not self.storage.create(_lease_key(workload_id, number), json.dumps(lease).encode()):
            return None
        return int(number)

    def renew_lease(self, workload_id: str, number: int, attempt: int, holder: str) -> None:
        lease = {"attempt": attempt, "holder": holder, "heartbeat_at": time.time()}
        self._put(_lease_key(workload_id, number), lease)

    def _lease_number(self, workload_id: str) -> int:
        numbers = [
            int(o.key[6:-5])
            for o in self.storage.list(f"workloads/{workload_id}")
            if o.key.startswith("lease-") and o.key.endswith(".json") and o.key[6:-5].isdigit()
        ]
        return max(numbers, default=0)

    def finish(self, workload_id: str, status: str, **body: Any) -> dict[str, Any]:
        """Record the final status once: returns the final document that stands (this one, or
        the one another run wrote first), then tidies up (idempotent)."""
        assert status in FINAL
        final = {"status": status, "finished_at": time.time(), **body}
        data = json.dumps(final).encode()
        if not self.storage.create(f"workloads/{workload_id}/final.json", data, "application/json"):
            standing = self._final(workload_id)
            if standing is None:  # refused, yet nothing readable there: never tidy on a guess
                raise StorageError(f"workload {workload_id}: its final status could not be written")
            final = standing
        self.tidy(workload_id, final)
        return final

    def tidy(self, workload_id: str, final: dict[str, Any]) -> None:
        """After the final status: index it for expiry, drop the payload and the queue entry."""
        finished = float(final.get("finished_at", time.time()))
        self.storage.upload(f"done/{_bucket(finished, self.result_ttl)}/{workload_id}", b"")
        self.storage.delete(f"workloads/{workload_id}/payload")
        for number in range(1, self._lease_number(workload_id) + 1):
            self.storage.delete(_lease_key(workload_id, number))
        self.storage.delete(f"queue/{workload_id}")

    # --- reading -----------------------------------------------------------

    def describe(self, workload_id: str) -> dict[str, Any] | None:
        """The GET reply: ``{"id", "status"}`` plus the result or the error and a timestamp."""
        final = self._final(workload_id)
        if final is not None:
            out: dict[str, Any] = {"id": workload_id, "status": final["status"]}
            if final["status"] == "completed":
                out["result"] = final.get("result")
            else:
                out["error"] = final.get("error", {})
            out["timestamp"] = rfc3339(float(final.get("finished_at", 0)))
            return out
        if self.lease(workload_id) is not None:
            return {"id": workload_id, "status": "in_progress"}
        if self._exists(f"queue/{workload_id}"):
            return {"id": workload_id, "status": "in_queue"}
        return None

    def unfinished(self) -> list[str]:
        """Every workload not yet finished, oldest first: one listing of ``queue/`` alone."""
        return sorted(o.key for o in self.storage.list("queue") if valid_workload_id(o.key))

    def expire(self, now: float | None = None) -> int:
        """Delete finished workloads older than the TTL; touches only the buckets now due."""
        now = time.time() if now is None else now
        ttl = self.result_ttl
        removed = 0
        for bucket in self.storage.list_folders("done"):
            end = _bucket_end(bucket)
            if end is None or end + ttl > now:
                continue
            for marker in self.storage.list(f"done/{bucket}"):
                if valid_workload_id(marker.key):
                    self.storage.delete_prefix(f"workloads/{marker.key}")
                    removed += 1
            self.storage.delete_prefix(f"done/{bucket}")
        return removed

    # --- helpers -----------------------------------------------------------

    def _final(self, workload_id: str) -> dict[str, Any] | None:
        try:
            final = self._get(f"workloads/{workload_id}/final.json")
        except StorageNotFoundError:
            return None
        except Unreadable as exc:
            return {
                "status": "failed",
                "error": {"type": "CorruptWorkload", "message": str(exc)},
                "finished_at": time.time(),
            }
        if final.get("status") not in FINAL:
            return {
                "status": "failed",
                "error": {"type": "CorruptWorkload", "message": f"workload {workload_id}: bad final status"},
                "finished_at": float(final.get("finished_at", 0) or 0),
            }
        return final

    def _meta(self, workload_id: str) -> dict[str, Any]:
        meta = self._get(f"workloads/{workload_id}/meta.json")
        if not isinstance(meta.get("content_type"), str):
            raise Unreadable(f"workload {workload_id}: its metadata names no content type")
        return meta

    def _exists(self, key: str) -> bool:
        try:
            self.storage.read(key)
        except StorageNotFoundError:
            return False
        return True

    def _put(self, key: str, value: Any) -> None:
        self.storage.upload(key, json.dumps(value).encode(), "application/json")

    def _get(self, key: str) -> dict[str, Any]:
        data = self.storage.read(key)
        try:
            value = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            what = "empty" if not data else "not valid JSON"
            raise Unreadable(f"{self.storage.describe(key)} is unreadable ({what})") from exc
        if not isinstance(value, dict):
            raise Unreadable(f"{self.storage.describe(key)} is unreadable (not a JSON object)")
        return value


def _lease_key(workload_id: str, number: int) -> str:
    return f"workloads/{workload_id}/lease-{number:06d}.json"


def _bucket(finished_at: float, ttl: float) -> str:
    """The expiry bucket of a workload finished at ``finished_at``: about a hundredth of the TTL
    wide (1 s to 1 h), so a bucket is deleted at most that late and a pass lists few folders."""
    width = int(min(3600, max(1, ttl // 100)))
    start = int(finished_at // width * width)
    return f"{start:012d}-{width}"


def _bucket_end(name: str) -> float | None:
    start, _, width = name.partition("-")
    if not (start.isdigit() and width.isdigit()):
        return None
    return float(int(start) + int(width))
