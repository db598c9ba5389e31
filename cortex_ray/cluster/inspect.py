"""What a running system says about its APIs: Serve's status, every replica's models (as
reported to each API's reloader), the AsyncAPI queue, and request counts from the metrics."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

from cortex_ray.cluster.apply import describe

__all__ = ["api_pids", "inspect_api", "inspect_apis", "request_counts"]

CALL_TIMEOUT = 10.0
_REQUESTS = re.compile(r"^ray_cortex_ray_requests(?:_total)?\{([^}]*)\}\s+([0-9.eE+-]+)")
_API_TAG = re.compile(r'api_name="([^"]*)"')


def inspect_apis(names: list[str] | None = None, details: bool = False) -> list[dict[str, Any]]:
    """Every API (or those in ``names``): status, replicas, endpoint, requests, health; with
    ``details``, also its models, reloader, replicas' reports and queue (:func:`inspect_api`)."""
    counts = request_counts()
    out = []
    for item in describe(names):
        item["running"] = item["replicas"].get("RUNNING", 0)
        item["target"] = sum(item["replicas"].values())
        item["requests"] = counts.get(item["name"]) if counts is not None else None
        item["healthy"] = item["status"] == "RUNNING"
        if details:
            _add_details(item)
        out.append(item)
    return out


def inspect_api(name: str) -> dict[str, Any] | None:
    """One API in detail: :func:`inspect_apis`' fields, plus its models per version (state,
    latest, which replicas hold it in memory or on disk), its reloader and its queue."""
    found = inspect_apis([name], details=True)
    return found[0] if found else None


def _add_details(item: dict[str, Any]) -> None:
    from ray import serve

    from cortex_ray.asyncapi.dispatcher import worker_name

    name = item["name"]
    is_async = worker_name(name) in _deployments(name)
    item["kind"] = "AsyncAPI" if is_async else "RealtimeAPI"
    try:
        if is_async:
            handle = serve.get_deployment_handle(worker_name(name), name)
            item["queue"] = serve.get_app_handle(name).queue_status.remote().result(timeout_s=CALL_TIMEOUT)
        else:
            handle = serve.get_app_handle(name)
        info = handle.info.remote(details=True, cluster=True).result(timeout_s=CALL_TIMEOUT)
    except Exception as exc:  # not running: Serve's status says why
        item["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        item["healthy"] = False
        return
    item["models"] = models_view(info)
    reloader = info.get("reloader")
    if reloader is not None:
        item["reloader"] = {
            k: reloader.get(k)
            for k in ("last_successful_poll", "last_error", "last_error_at", "poll_count", "problems", "pid")
        }
        failing = reloader.get("last_error_at") and (reloader.get("last_error_at") or 0) > (
            reloader.get("last_successful_poll") or 0
        )
        item["healthy"] = item["healthy"] and not failing and "error" not in reloader
    replicas = info.get("cluster", {}).get("replicas", {})
    item["replica_reports"] = {
        r: {k: e.get(k) for k in ("node_id", "pid", "lag_versions", "lag_seconds", "reported_at", "loads")}
        for r, e in replicas.items()
    }
    if any(v["state"] == "failed" for m in item["models"].values() for v in m["versions"].values()):
        item["healthy"] = False


def models_view(info: dict[str, Any]) -> dict[str, Any]:
    """Per model and version: latest, state (the worst any replica reports) and where it is held."""
    cluster = info.get("cluster", {}).get("versions", {})
    models: dict[str, Any] = {}
    for name, model in info.get("model_metadata", {}).items():
        versions: dict[str, Any] = {}
        for v in model.get("versions", []):
            here = model.get("details", {}).get(v, {})
            held = cluster.get(f"{name}:{v}", {})
            state, reason = here.get("state", "available"), here.get("reason")
            for report in held.get("not_available", {}).values():
                if report.get("state") == "failed" or state == "available":
                    state, reason = report.get("state", state), report.get("reason", reason)
            versions[v] = {
                "state": state,
                "reason": reason,
                "in_memory": held.get("in_memory", []),
                "on_disk": held.get("on_disk", []),
            }
        models[name] = {"latest": model.get("latest"), "error": model.get("error"), "versions": versions}
    return models


def request_counts() -> dict[str, float] | None:
    """Requests answered per API, summed over every node's metrics endpoint (``None`` when
    no node exports metrics)."""
    import ray

    totals: dict[str, float] = {}
    reached = False
    for node in ray.nodes():
        port = node.get("MetricsExportPort")
        if not node.get("Alive") or not port:
            continue
        url = f"http://{node['NodeManagerAddress']}:{port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode("utf-8", "replace")
        except OSError:
            continue
        reached = True
        for line in text.splitlines():
            match = _REQUESTS.match(line)
            if match:
                api = _API_TAG.search(match.group(1))
                if api:
                    totals[api.group(1)] = totals.get(api.group(1), 0.0) + float(match.group(2))
    return totals if reached else None


def _deployments(name: str) -> list[str]:
    from ray import serve

    app = serve.status().applications.get(name)
    return list(app.deployments) if app is not None else []


def api_pids(name: str) -> set[int] | None:
    """The process ids of the API's replicas, reloader and dispatcher that it knows of (``None``
    when no such API runs)."""
    item = inspect_api(name)
    if item is None:
        return None
    pids = {int(e["pid"]) for e in item.get("replica_reports", {}).values() if e.get("pid")}
    for part in ("reloader", "queue"):
        pid = (item.get(part) or {}).get("pid")
        if pid:
            pids.add(int(pid))
    return pids
