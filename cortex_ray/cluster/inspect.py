"""What a running system says about its APIs: Serve's status, every replica's models (as
reported to each API's reloader), the AsyncAPI queue, and request counts from the metrics."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

from cortex_ray.cluster.apply import describe
from cortex_ray.spec.names import worker_name

__all__ = ["api_pids", "inspect_api", "inspect_apis", "request_counts"]

CALL_TIMEOUT = 10.0
_REQUESTS = re.compile(r"^ray_cortex_ray_requests(?:_total)?\{([^}]*)\}\s+([0-9.eE+-]+)")
_API_TAG = re.compile(r'api_name="([^"]*)"')


def inspect_apis(
    names: list[str] | None = None, details: bool = False, requests: bool = True
) -> list[dict[str, Any]]:
    """Every API (or those in ``names``): status, replicas, endpoint, requests, health; with
    ``details``, also its models, reloader, replicas' reports and queue (:func:`inspect_api`).
    The replicas of every API are asked at once, not one API after another."""
    counts = request_counts() if requests else None
    items = describe(names)
    asked: dict[str, tuple[Any, Any]] = {}
    for item in items:
        item["running"] = item["replicas"].get("RUNNING", 0)
        item["target"] = sum(item["replicas"].values())
        item["requests"] = counts.get(item["name"], 0.0) if counts is not None else None
        item["healthy"] = item["status"] == "RUNNING"
        if details:
            asked[item["name"]] = _ask(item)
    for item in items:
        if details:
            _add_details(item, *asked[item["name"]])
    return items


def inspect_api(name: str) -> dict[str, Any] | None:
    """One API in detail: :func:`inspect_apis`' fields, plus its models per version (state,
    latest, which replicas hold it in memory or on disk), its reloader and its queue."""
    found = inspect_apis([name], details=True)
    return found[0] if found else None


def _ask(item: dict[str, Any]) -> tuple[Any, Any]:
    """Start the calls for an API's details: its ``info`` (with every replica's report) and, for
    an AsyncAPI, its queue; ``(None, None)`` when no replica runs to answer."""
    from ray import serve

    name = item["name"]
    is_async = worker_name(name) in item["deployments"]
    item["kind"] = "AsyncAPI" if is_async else "RealtimeAPI"
    if item["running"] == 0:
        return None, None
    try:
        if is_async:
            queue = serve.get_app_handle(name).queue_status.remote()
            info = serve.get_deployment_handle(worker_name(name), name).info.remote(
                details=True, cluster=True
            )
            return info, queue
        return serve.get_app_handle(name).info.remote(details=True, cluster=True), None
    except Exception as exc:
        item["error"] = _first_line(exc)
        return None, None


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def _add_details(item: dict[str, Any], asked_info: Any, asked_queue: Any) -> None:
    if asked_info is None:
        item.setdefault("error", "no replica is running" if item["running"] == 0 else "not reachable")
        item["healthy"] = False
        return
    try:
        if asked_queue is not None:
            item["queue"] = asked_queue.result(timeout_s=CALL_TIMEOUT)
        info = asked_info.result(timeout_s=CALL_TIMEOUT)
    except Exception as exc:  # stopping, or not a cortex-ray API: Serve's status says more
        item["error"] = _first_line(exc)
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


def api_pids(name: str) -> set[int] | None:
    """The process ids of the API's replicas, reloader and dispatcher that it knows of (``None``
    when no such API runs)."""
    found = inspect_apis([name], details=True, requests=False)
    if not found:
        return None
    item = found[0]
    pids = {int(e["pid"]) for e in item.get("replica_reports", {}).values() if e.get("pid")}
    for part in ("reloader", "queue"):
        pid = (item.get(part) or {}).get("pid")
        if pid:
            pids.add(int(pid))
    return pids
