"""A Cortex project brought over unchanged: served with ``cortex-ray run``, and deployed with
``cortex-ray deploy`` to a cluster started with ``ray start`` (then redeployed with a change,
refreshed, both under traffic, and deleted).

Both runs use Ray instances of their own, beside the session's, on 127.0.0.1 only. The
cluster is stopped by stopping its ``ray start --block`` (``ray stop`` would also stop the
test session's Ray).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cortex_project import TINY_SPEC, make_project
from tests.support.processes import read_until
from tests.support.s3_server import free_port
from tests.support.traffic import Traffic

pytestmark = pytest.mark.ray

RAY = str(Path(sys.executable).with_name("ray"))  # Ray's CLI beside this interpreter (no PATH needed)


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    return env


def _cluster_env() -> dict[str, str]:
    """As a user who just ran `ray start --head`: no RAY_AUTH_MODE (Ray sends its token to an
    address it is given only when told to; cortex-ray tells it, from ~/.ray/auth_token)."""
    env = _env()
    env.pop("RAY_AUTH_MODE", None)
    return env


def _cli(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cortex_ray", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**(_cluster_env() if "--address" in args else _env()), **(env or {})},
    )


def check_the_project(url: str, marker: Path, shipped: bool) -> dict[str, Any]:
    """Everything of the Cortex project contract, over real HTTP; returns the GET body."""
    with httpx.Client(timeout=60) as http:
        r = http.get(url, params=[("tag", "a"), ("tag", "b")], headers={"x-CUSTOM-header": "Yes"})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["cwd_has_spec"] is True  # the working directory is the project folder
        assert got["omp_at_import"] == "3"  # .env, in the environment before Python started
        assert got["greeting"] == "hello there" and got["from_spec"] == "spec"
        assert got["helper"] == 42  # a module at the project root, imported from src/handler.py
        assert got["tinypkg"] == "from the wheel"  # requirements.txt
        assert got["values"] == {"a": 1, "b": [2, 3]}  # open("values.json")
        assert got["generated"] == "made by dependencies.sh"
        assert got["ignored_shipped"] is (not shipped)  # .cortexignore'd: not sent to a cluster
        assert got["tags"] == ["a", "b"] and got["custom_header"] == "Yes"
        assert got["client"] == "Client" and got["model"] == "weights-v1"
        assert got["apis"] == ["project"]  # import cortex; cortex.client().list_apis(), in the handler
        assert got["config"] == {"answer": 42}
        assert got["dependency_runs"] == 1  # once for the one replica process
        # the callback runs after the answer is sent
        r = http.post(url, json={"mark": "cb-1"})
        assert r.status_code == 200 and r.json() == {"echo": {"mark": "cb-1"}}
        deadline = time.monotonic() + 10
        while "cb-1" not in http.get(url).json()["callbacks"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "cb-1" in http.get(url).json()["callbacks"]
        # form posts arrive as FormData
        r = http.post(url, data={"name": "x"}, files={"upload": ("values.json", b"{}", "application/json")})
        assert r.status_code == 200 and r.json() == {"form": {"name": "x", "upload": "values.json"}}
        r = http.post(url, data={"k": "v"})  # x-www-form-urlencoded
        assert r.json() == {"form": {"k": "v"}}
        # an empty JSON body is a 400 with a JSON error
        r = http.post(url, content=b"", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "error" in r.json()
    # max_replica_concurrency: 2 -> above it, a 503 with a JSON error
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: httpx.put(url, json={"sleep": 2}, timeout=60), range(6)))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(200) >= 2 and 503 in codes and set(codes) <= {200, 503}, codes
    assert all("error" in a.json() for a in answers if a.status_code == 503)
    return got


def test_cortex_run_serves_the_project_unchanged(tmp_path: Path) -> None:
    project, marker = tmp_path / "project", tmp_path / "deps-marker"
    make_project(project, marker)
    assert _cli("validate", "cortex.yaml", cwd=project).returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cortex_ray", "run", str(project / "cortex.yaml"), "--port", str(port)],
        cwd=tmp_path,  # not the project folder: the replicas go there themselves
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    try:
        output = read_until(proc, "serving; press Ctrl-C to stop", timeout=300)
        assert "serving; press Ctrl-C" in output, output[-4000:]
        check_the_project(f"http://127.0.0.1:{port}/project", marker, shipped=False)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
        output += rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Cortex's structured logger, with handler.log_level: debug
    records = [json.loads(line[line.index("{") :]) for line in output.splitlines() if '"levelname"' in line]
    ready = [r for r in records if r["message"] == "handler ready"]
    assert (
        ready
        and ready[0]["values"] == 2
        and ready[0]["labels"] == {"apiName": "project", "apiKind": "RealtimeAPI"}
    )
    assert any(r["levelname"] == "DEBUG" and r.get("where") == "init" for r in records)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A one-node cluster from ``ray start --head`` on 127.0.0.1; yields its address. A failed
    runtime_env is not retried (Ray's default tries 3 times, each copying the test virtualenv)."""
    port = free_port()
    ports = {
        "--port": port,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    args = [a for flag, value in ports.items() for a in (flag, str(value))]
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            "4",
            "--include-dashboard=false",
            "--disable-usage-stats",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**_env(), "RUNTIME_ENV_RETRY_TIMES": "1"},
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            probe = subprocess.run(
                [RAY, "status", "--address", address],
                capture_output=True,
                text=True,
                env=_env(),
                timeout=60,
            )
            if probe.returncode == 0:
                break
            assert head.poll() is None, head.communicate()[0][-3000:]
            time.sleep(1)
        yield address
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        # what `ray stop` also does: the machine's "latest cluster" file must not name a stopped
        # one (a later ray.init() without an address would try to join it)
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip() == address:
            current.unlink()


def test_cortex_deploy_sends_the_project_to_a_running_cluster(tmp_path: Path, cluster: str) -> None:
    project, marker = tmp_path / "project", tmp_path / "deps-marker"
    make_project(project, marker)
    port = free_port()
    url = f"http://127.0.0.1:{port}/project"
    deployed = _cli("deploy", "cortex.yaml", "--address", cluster, "--port", str(port), cwd=project)
    assert deployed.returncode == 0, deployed.stderr[-4000:]
    assert f"project: running at {url}" in deployed.stdout
    check_the_project(url, marker, shipped=True)

    # a handler deploys another API with Cortex's client (in place, from its project folder)
    tiny = f"http://127.0.0.1:{port}/tiny"
    r = httpx.patch(url, json={"deploy": TINY_SPEC}, timeout=300)
    assert r.status_code == 200 and r.json()["deployed"]["status"] == "RUNNING", r.text
    assert httpx.get(tiny, timeout=30).json() == {"tiny": "deployed from a handler"}
    r = httpx.patch(url, json={"delete": "tiny"}, timeout=120)
    assert r.status_code == 200 and httpx.get(tiny, timeout=30).status_code == 404

    again = _cli("deploy", "cortex.yaml", "--address", cluster, "--port", str(port), cwd=project)
    assert again.returncode == 0, again.stderr[-3000:]
    assert httpx.get(url, timeout=30).json()["dependency_runs"] == 1  # unchanged: nothing restarted

    got = _cli("get", "--address", cluster, cwd=project)  # the operator's side, on this cluster
    assert got.returncode == 0, got.stdout + got.stderr[-3000:]
    assert re.search(r"^project\s+running\s+1/1\s+/project\s", got.stdout, re.M), got.stdout
    detail = _cli("get", "project", "--address", cluster, "-o", "json", cwd=project)
    assert detail.returncode == 0, detail.stdout + detail.stderr[-3000:]
    assert json.loads(detail.stdout)["reloader"]["last_successful_poll"] is not None
    logs = _cli("logs", "project", "--address", cluster, cwd=project)
    assert logs.returncode == 0 and "dependencies.sh" in logs.stdout, (
        logs.stdout[-3000:] + logs.stderr[-2000:]
    )

    with Traffic(url, [{"mark": "t"}]) as traffic:
        traffic.wait_for(lambda a: a.status == 200)
        (project / "values.json").write_text('{"a": 2}')  # a changed project rolls
        changed = _cli("deploy", "cortex.yaml", "--address", cluster, "--port", str(port), cwd=project)
        assert changed.returncode == 0, changed.stderr[-3000:]
        assert httpx.get(url, timeout=30).json()["values"] == {"a": 2}
        refreshed = _cli("refresh", "project", "--address", cluster, cwd=project)
        assert refreshed.returncode == 0, refreshed.stderr[-3000:]
        traffic.wait_for(lambda a: a.status == 200)
    assert len(traffic.answers) > 20 and traffic.failures() == [], traffic.failures()[:3]
    assert marker.read_text().count("ran") == 3  # one replica process each: first, changed, refreshed

    deleted = _cli("delete", "project", "--address", cluster, cwd=project)
    assert deleted.returncode == 0 and "deleted project" in deleted.stdout
    assert httpx.get(url, timeout=30).status_code == 404
    missing = _cli("delete", "project", "--address", cluster, cwd=project)
    assert missing.returncode == 1 and "no api named 'project'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_cortex_deploy_names_each_api_that_failed(tmp_path: Path, cluster: str) -> None:
    project, marker = tmp_path / "project", tmp_path / "deps-marker"
    make_project(project, marker)
    (project / "requirements.txt").write_text("--no-index\nno-such-package-cortex-ray-test==0.0.1\n")
    port = str(free_port())
    preflight = _cli("deploy", "cortex.yaml", "--address", cluster, "--port", port, cwd=project, timeout=600)
    assert preflight.returncode == 1  # the preflight refuses it before anything reaches the cluster
    assert "api 'project' (#0)" in preflight.stderr and "requirements.txt:2" in preflight.stderr
    assert (
        "no-such-package-cortex-ray-test" in preflight.stderr
        and "--requirements installed" in preflight.stderr
    )
    assert "Traceback" not in preflight.stderr
    # (the cluster's own install failing, the preflight skipped, is
    # tests/integration/project/test_requirements.py: the same deployer, on the session's Ray)
