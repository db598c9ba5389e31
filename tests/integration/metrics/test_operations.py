"""The operator's side on a real Ray: cortex-ray's metrics on Ray's Prometheus endpoint after
real traffic, the cluster-wide ``/info?all=1`` and ``cortex-ray get`` (both ingress paths)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cortex_ray.cli.main import main
from tests.support.project import write_files, write_handler

pytestmark = pytest.mark.ray

HANDLER = """
import os

class Handler:
    def __init__(self, config, model_client):
        self.client = model_client

    def load_model(self, model_path):
        text = open(os.path.join(model_path, "model.txt")).read()
        if text == "broken":
            raise RuntimeError("cannot parse model.txt")
        return text

    def handle_post(self, payload, query_params):
        return {"model": self.client.get_model(query_params["model"])}
"""


def api(name: str, replicas: int) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "RealtimeAPI",
        "handler": {
            "type": "python",
            "path": "handler.py",
            "multi_model_reloading": {"dir": "models", "cache_size": 2, "disk_cache_size": 2},
        },
        "autoscaling": {"min_replicas": replicas, "max_replicas": replicas, "init_replicas": replicas},
        "networking": {"model_routing": {"query": "model"}},
    }


def scrape(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


def value(text: str, name: str, **tags: str) -> float:
    """The sum of ``ray_<name>`` (a counter's ``_total`` too) over series with these tags."""
    total = 0.0
    pattern = re.compile(rf"^ray_{name}(?:_total)?\{{([^}}]*)\}}\s+(\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in tags.items()):
            total += float(match.group(2))
    return total


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def test_metrics_info_all_and_get_after_real_traffic(
    tmp_path: Path,
    deploy: Any,
    http: httpx.Client,
    proxy_http: httpx.Client,
    ray_serve: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_handler(tmp_path, HANDLER)
    write_files(
        tmp_path / "models", {"a/1/model.txt": "a1", "b/1/model.txt": "b1", "bad/1/model.txt": "broken"}
    )
    deploy(tmp_path, [api("ops", 2)])
    deploy(tmp_path, [api("ops-proxy", 1)], ingress="proxy")
    n = 6
    for _ in range(n):
        assert http.post("/ops", params={"model": "a"}, json={}).json() == {"model": "a1"}
    assert http.post("/ops", params={"model": "b"}, json={}).status_code == 200
    assert http.post("/ops", params={"model": "bad"}, json={}).status_code == 503
    assert http.post("/ops", params={"model": "nope"}, json={}).status_code == 404
    for _ in range(3):
        assert proxy_http.post("/ops-proxy", params={"model": "b"}, json={}).json() == {"model": "b1"}

    # --- Prometheus: the numbers are what happened ---------------------------------
    port = int(ray_serve["metrics_port"])
    text = ""

    def counted() -> bool:
        nonlocal text
        text = scrape(port)
        return (
            value(text, "cortex_ray_requests", api_name="ops", model="a", status="200") == n
            and value(text, "cortex_ray_requests", api_name="ops-proxy", status="200") == 3
            and value(text, "cortex_ray_model_loads", api_name="ops", outcome="failed") >= 1
        )

    wait_for(counted, "the request counts on the Prometheus endpoint")
    assert value(text, "cortex_ray_requests", api_name="ops", model="a", version="1", status="200") == n
    assert value(text, "cortex_ray_requests", api_name="ops", model="", status="404") == 1
    assert value(text, "cortex_ray_requests", api_name="ops", model="bad", status="503") == 1
    assert value(text, "cortex_ray_model_loads", api_name="ops", model="a", outcome="ok") == 1
    assert value(text, "cortex_ray_model_loads", api_name="ops", model="b", outcome="ok") == 1
    assert value(text, "cortex_ray_cache_misses", api_name="ops", tier="memory") == 3  # a, b, bad
    assert value(text, "cortex_ray_cache_hits", api_name="ops", tier="memory") == n - 1
    assert value(text, "cortex_ray_downloads", api_name="ops", outcome="ok") == 3
    assert value(text, "cortex_ray_download_bytes", api_name="ops") == len("a1b1broken")
    assert value(text, "cortex_ray_request_seconds_count", api_name="ops", model="a") == n
    assert value(text, "cortex_ray_model_load_seconds_count", api_name="ops-proxy", model="b") == 1
    assert value(text, "cortex_ray_reloader_polls", api_name="ops", outcome="ok") >= 1
    assert value(text, "cortex_ray_reloader_list_calls", api_name="ops") >= 1
    assert value(text, "cortex_ray_reloader_trees_published", api_name="ops") >= 1
    assert (
        value(text, "cortex_ray_reloader_last_success_timestamp_seconds", api_name="ops") > time.time() - 120
    )

    def gauges() -> bool:
        nonlocal text
        text = scrape(port)
        return value(text, "cortex_ray_cache_models", api_name="ops", tier="memory") == 2

    wait_for(gauges, "the cache gauges (a and b in memory)")
    memory = value(text, "cortex_ray_cache_bytes", api_name="ops", tier="memory")
    assert 4 <= memory < 64 * 2**20  # a's and b's measured sizes: at least their files (a1, b1)
    assert 'replica="' in text and value(text, "cortex_ray_replica_tree_lag_versions", api_name="ops") == 0

    # --- /info?all=1: every replica, as reported to the reloader -------------------------
    def both_reported() -> bool:
        return (
            len(http.get("/ops/info", params={"all": "1"}).json().get("cluster", {}).get("replicas", {})) == 2
        )

    wait_for(both_reported, "both replicas in /info?all=1")
    cluster = http.get("/ops/info", params={"all": "1"}).json()["cluster"]
    assert len(cluster["versions"]["a:1"]["in_memory"]) == 1
    bad = cluster["versions"]["bad:1"]["not_available"]
    assert [s["state"] for s in bad.values()] == ["failed"]
    assert "cannot parse model.txt" in next(iter(bad.values()))["reason"]
    assert "cluster" not in http.get("/ops/info").json()

    # --- cortex-ray get ------------------------------------------------------------------
    capsys.readouterr()
    assert main(["get"]) == 1  # ops has a failed version
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("ops "))
    assert row.split()[1:4] == ["running", "2/2", "/ops"] and row.split()[4] == str(n + 3)
    assert main(["get", "ops-proxy"]) == 0
    detail = capsys.readouterr().out
    assert re.search(r"^b\s+1 \(latest\)\s+available\s+\w{8}\s+\w{8}$", detail, re.M), detail
    assert re.search(r"^bad\s+1 \(latest\)\s+available\s+-\s+-$", detail, re.M), detail  # not asked for
    assert "reloader: last poll" in detail
    assert main(["get", "ops", "-o", "json"]) == 1
    item = json.loads(capsys.readouterr().out)
    versions = item["models"]["bad"]["versions"]["1"]
    assert versions["state"] == "failed" and "cannot parse model.txt" in versions["reason"]
    assert len(item["models"]["a"]["versions"]["1"]["in_memory"]) == 1
    assert len(item["replica_reports"]) == 2
    assert main(["get", "nope"]) == 1
    assert "no API named 'nope'" in capsys.readouterr().err

    # --- cortex-ray logs: the replicas' and the reloader's log files ------------------
    reloader_pid = item["reloader"]["pid"]
    assert main(["logs", "ops", "--tail", "200"]) == 0
    logs = capsys.readouterr().out
    assert re.search(r"INFO .* cortex_ray.cache -- loaded model a version 1 in", logs), logs[-3000:]
    assert "cannot parse model.txt" in logs
    headers = [line for line in logs.splitlines() if line.startswith("==> ")]
    assert any(h.endswith(f"-{reloader_pid}.err <==") for h in headers), headers
    assert re.search(r"cortex_ray.reloader -- api ops: first listing: 3 models, 3 valid versions", logs)
    assert all("ops-proxy" not in Path(h[4:-4]).read_text()[:300] for h in headers)
    assert main(["logs", "nope"]) == 1
