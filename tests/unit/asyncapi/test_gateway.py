"""The AsyncAPI gateway refuses workloads while no worker of its API can run (no Ray: Serve's
status is a stand-in)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.asyncapi.gateway import GatewayCore
from cortex_ray.endpoint import Incoming
from cortex_ray.spec import parse_spec
from tests.support.project import write_handler


@dataclass
class Deployment:
    status: str
    message: str = ""
    replica_states: dict[str, int] = field(default_factory=dict)


@dataclass
class App:
    deployments: dict[str, Deployment]


@dataclass
class Status:
    applications: dict[str, App]


def gateway(tmp_path: Path) -> GatewayCore:
    write_handler(
        tmp_path, "class Handler:\n    def handle_async(self, payload, request_id):\n        return {}\n"
    )
    api = parse_spec(
        [
            {
                "name": "jobs",
                "kind": "AsyncAPI",
                "handler": {"type": "python", "path": "handler.py"},
                "workloads": {"store": str(tmp_path / "store")},
            }
        ],
        base_dir=tmp_path,
    ).apis[0]
    core = GatewayCore(api)

    async def no_dispatcher(method: str, *args: Any) -> Any:
        return True  # accepted (the dispatcher is not what these tests are about)

    core._dispatcher_call = no_dispatcher  # type: ignore[method-assign]
    return core


def submit(core: GatewayCore) -> tuple[int, dict[str, Any]]:
    out = asyncio.run(core.handle(Incoming("POST", "", b"", [(b"content-type", b"application/json")], b"{}")))
    return out.status, json.loads(out.body)


PIP = (
    "A replica failed to start with exception. Retrying 19 more time(s). Error:\n"
    "Exception when allocating Replica(id='x'): Failed to set up runtime environment.\n"
    "ERROR: Could not find a version that satisfies the requirement nope==1.0 (from versions: none)\n"
    "ERROR: No matching distribution found for nope==1.0"
)


@pytest.mark.parametrize(
    ("worker", "refused"),
    [
        (Deployment("DEPLOYING", PIP), "its requirements cannot be installed"),
        (Deployment("DEPLOY_FAILED", "The deployment failed to start 20 times in a row"), "failed to start"),
        (Deployment("UNHEALTHY", "replicas keep dying"), "replicas keep dying"),
        (Deployment("RUNNING", "", {"RUNNING": 1}), None),
        (Deployment("UPDATING", PIP, {"RUNNING": 1}), None),  # a new version fails: the old one runs
    ],
)
def test_workloads_are_refused_while_no_worker_can_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker: Deployment, refused: str | None
) -> None:
    from ray import serve

    core = gateway(tmp_path)
    status = Status({"jobs": App({"jobs": Deployment("RUNNING"), "jobs-worker": worker})})
    monkeypatch.setattr(serve, "status", lambda: status)
    asyncio.run(core._check_workers())
    code, body = submit(core)
    if refused is None:
        assert code == 200 and "id" in body
    else:
        assert code == 503 and body["error"] == "no_worker" and refused in body["message"]
        status.applications["jobs"].deployments["jobs-worker"] = Deployment("RUNNING", "", {"RUNNING": 1})
        asyncio.run(core._check_workers())  # a worker runs again: workloads are taken again
        assert submit(core)[0] == 200


def test_a_wrong_method_is_a_405_that_says_what_is_allowed(tmp_path: Path) -> None:
    core = gateway(tmp_path)
    for method, path, allowed in (("PUT", "", b"POST"), ("DELETE", "/abc", b"GET, HEAD")):
        out = asyncio.run(core.handle(Incoming(method, path, b"", [], b"")))
        assert out.status == 405 and (b"allow", allowed) in out.headers, (method, out.headers)
