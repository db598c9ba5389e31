"""Who this process is: its Serve replica id, its Ray node and its process id.

Asked by the replica's fast path (the name it registers under), ``/info``, the reports to
the reloader and the per-replica metrics; outside a Serve replica (tests, tools) the id is
``pid-<pid>`` and the node is empty.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["replica_identity", "serve_replica_id"]


def serve_replica_id() -> str | None:
    """This process's Serve replica id, or ``None`` outside a Serve replica."""
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # not in a replica (tests, tools), or no Ray
        return None


def replica_identity() -> dict[str, Any]:
    """``{"replica": id, "node_id": node, "pid": pid}`` of this process."""
    node_id = ""
    try:
        import ray

        if ray.is_initialized():  # (asked otherwise, Ray would start a local instance)
            node_id = ray.get_runtime_context().get_node_id()
    except Exception:  # no Ray: no node
        pass
    return {"replica": serve_replica_id() or f"pid-{os.getpid()}", "node_id": node_id, "pid": os.getpid()}
