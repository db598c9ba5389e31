"""Live reloading across two Ray nodes (a local two-node cluster in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.s3_server import free_port

pytestmark = pytest.mark.ray


def test_each_node_keeps_its_own_cache_and_a_change_reaches_both() -> None:
    script = Path(__file__).with_name("two_nodes.py")
    result = subprocess.run(
        [sys.executable, str(script), str(free_port())],
        capture_output=True,
        text=True,
        timeout=420,
        cwd=Path(__file__).resolve().parents[3],
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, (result.stdout + result.stderr)[-4000:]
    report = json.loads(lines[-1][len("REPORT ") :])
    assert len(report["cluster_nodes"]) == 2
    assert sorted(report["replica_nodes"]) == sorted(report["cluster_nodes"])  # one replica per node
    assert len(set(report["disk_caches"])) == 2  # each replica (node) its own disk cache
    assert sorted(report["v2_seen_on_nodes_after_s"]) == sorted(report["cluster_nodes"])
    assert {a["version"] for a in report["answers_after"]} == {2}
    assert report["http_before"]["version"] == 1 and report["http_after"]["version"] == 2
    assert report["http_nodes"] == sorted(report["cluster_nodes"])  # the fast ingress spans both nodes
