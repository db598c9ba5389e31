"""A Cortex project of its day on today's Python, on the session's Ray: served from the environment
as it is (``requirements="installed"``), and a requirement that cannot be installed failing the
deploy at once with pip's own lines instead of after Serve's retries."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.project import write_handler

pytestmark = pytest.mark.ray

OLD = """
import numpy
import sklearn

class Handler:
    def __init__(self, config):
        pass

    def handle_get(self):
        return {"numpy": numpy.__version__, "sklearn": sklearn.__version__}
"""

ASYNC = """
class Handler:
    def handle_async(self, payload, request_id):
        return {"never": True}
"""


def _project(root: Path, apis: list[dict[str, Any]], requirements: str, handler: str, name: str) -> Path:
    write_handler(root, handler, name)
    (root / "requirements.txt").write_text(requirements)
    spec = root / "cortex.yaml"
    spec.write_text(yaml.safe_dump(apis))
    return spec


def test_a_project_pinning_2020_packages_is_served_from_the_environment_as_it_is(
    tmp_path: Path, serve_url: str
) -> None:
    from cortex_ray import sdk

    spec = _project(
        tmp_path,
        [{"name": "old-pins", "kind": "RealtimeAPI", "handler": {"type": "python", "path": "old.py"}}],
        "numpy==1.19.1\nscikit-learn==0.21.3\n",  # Cortex's examples of 2020: no build for Python 3.11
        OLD,
        "old.py",
    )
    port = int(serve_url.rsplit(":", 1)[1])
    try:
        handles = sdk.deploy(
            str(spec), port=port, requirements="installed", ray_actor_options={"num_cpus": 0.1}
        )
        got = httpx.get(handles["old-pins"].url, timeout=60).json()
        assert got["numpy"] != "1.19.1" and got["sklearn"] != "0.21.3"  # today's, as installed here
    finally:
        sdk.delete("old-pins")


def test_a_requirement_that_cannot_be_installed_fails_the_deploy_at_once(
    tmp_path: Path, serve_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AsyncAPI whose workers cannot install their requirements is refused as a whole: no
    gateway left taking workloads that no worker will ever run."""
    from ray import serve

    from cortex_ray import sdk
    from cortex_ray.errors import DeploymentError

    monkeypatch.setenv("CORTEX_RAY_PREFLIGHT", "0")  # as a deployer whose index differs from the cluster's
    spec = _project(
        tmp_path,
        [
            {
                "name": "unbuildable",
                "kind": "AsyncAPI",
                "handler": {"type": "python", "path": "worker.py"},
                "workloads": {"store": str(tmp_path / "store")},
            }
        ],
        "--no-index\nno-such-package-cortex-ray-test==1.0\n",
        ASYNC,
        "worker.py",
    )
    port = int(serve_url.rsplit(":", 1)[1])
    started = time.monotonic()
    with pytest.raises(DeploymentError) as info:
        sdk.deploy(str(spec), port=port, ray_actor_options={"num_cpus": 0.1})
    took = time.monotonic() - started
    message = str(info.value)
    assert "its requirements could not be installed" in message
    assert "no-such-package-cortex-ray-test" in message and "--requirements installed" in message
    assert took < 120, took  # one failed install, not Serve's 20 tries
    deadline = time.monotonic() + 30
    while "unbuildable" in serve.status().applications and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "unbuildable" not in serve.status().applications
    assert httpx.post(f"{serve_url}/unbuildable", json={}, timeout=30).status_code == 404
