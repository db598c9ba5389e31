"""Where a local cortex-ray run's Ray is, so that ``get``, ``logs``, ``deploy`` from another
terminal find it as they find a ``ray start`` cluster.

Ray writes ``/tmp/ray/ray_current_cluster`` only for ``ray start``; a Ray started by
``cortex-ray run``, ``cortex_ray.deploy`` or a notebook records itself in
``<ray temp dir>/cortex_ray_current_cluster.json`` (address, auth mode, process) while it runs.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

__all__ = [
    "find",
    "forget",
    "is_listening",
    "ray_start_address",
    "record",
    "use_loopback",
]


def _ray_tmp() -> Path:
    """Where Ray keeps its files: ``RAY_TMPDIR``, else ``TMPDIR`` (on Linux), else ``/tmp``."""
    base = os.environ.get("RAY_TMPDIR") or (
        os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None
    )
    return Path(base or "/tmp") / "ray"


def _file() -> Path:
    return _ray_tmp() / "cortex_ray_current_cluster.json"


def record(address: str) -> None:
    """This process started the local Ray at ``address`` (its GCS)."""
    try:
        path = _file()
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"address": address, "pid": os.getpid(), "auth_mode": os.environ.get("RAY_AUTH_MODE")}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(body))
        tmp.replace(path)
    except OSError:  # best effort: other terminals then need RAY_ADDRESS
        pass


def forget() -> None:
    """This process's Ray stopped (another process's record is left alone)."""
    found = _read()
    if found is not None and found.get("pid") == os.getpid():
        _file().unlink(missing_ok=True)


def find() -> tuple[str, str | None] | None:
    """The address and auth mode of a running local cortex-ray Ray, if there is one."""
    found = _read()
    try:
        pid = int(str(found.get("pid", 0))) if found is not None else 0
    except ValueError:
        return None
    if found is None or not _alive(pid) or not is_listening(str(found["address"])):
        return None
    mode = found.get("auth_mode")
    return str(found["address"]), str(mode) if mode else None


def ray_start_address() -> str | None:
    """The address ``ray start`` recorded, if a cluster still listens there."""
    try:
        address = (_ray_tmp() / "ray_current_cluster").read_text().strip()
    except OSError:
        return None
    return address if address and is_listening(address) else None


def is_listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


def _read() -> dict[str, object] | None:
    try:
        found = json.loads(_file().read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and "address" in found else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def use_loopback() -> None:
    """Let Ray use 127.0.0.1 as this node's address (to start a Ray bound to it, or to join one
    that is): Ray otherwise turns a loopback address into the machine's. Ray reads
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` when it is imported: set it for the processes Ray
    starts, and on the constant it was read into for this one."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
