"""`cortex-ray run` as a user runs it: a subprocess with its own local Ray, stopped by a signal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.support.processes import read_until
from tests.support.project import write_files, write_handler
from tests.support.s3_server import free_port

pytestmark = pytest.mark.ray


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_run_serves_every_api_on_loopback_and_stops_on_sigterm(tmp_path: Path) -> None:
    write_handler(
        tmp_path,
        """
        class Handler:
            def __init__(self, model_client):
                self.client = model_client

            def load_model(self, model_path):
                return open(model_path + "/w.txt").read()

            def handle_post(self, payload):
                return {"model": self.client.get_model(), "echo": payload}
        """,
    )
    write_files(tmp_path, {"model/w.txt": "weights"})
    (tmp_path / "cortex.yaml").write_text(
        "- name: first\n  kind: RealtimeAPI\n  handler: {type: python, path: handler.py,"
        " multi_model_reloading: {path: model}}\n"
        "- name: second\n  kind: RealtimeAPI\n  handler: {type: python, path: handler.py,"
        " multi_model_reloading: {path: model}}\n  networking: {endpoint: /v2/second}\n"
    )
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cortex_ray", "run", "cortex.yaml", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        output = read_until(proc, "serving; press Ctrl-C to stop", timeout=180)
        assert f"first: http://127.0.0.1:{port}/first" in output, output[-3000:]
        assert f"second: http://127.0.0.1:{port}/v2/second" in output
        r = httpx.post(f"http://127.0.0.1:{port}/first", json={"x": 1}, timeout=30)
        assert r.json() == {"model": "weights", "echo": {"x": 1}}
        assert httpx.post(f"http://127.0.0.1:{port}/v2/second", json=2, timeout=30).json()["echo"] == 2
        # the fast ingress: HAProxy and both replicas' own ports, all on 127.0.0.1 only
        listening = _fast_path_addresses(port)
        assert len(listening) == 3 and {host for host, _ in listening} == {"127.0.0.1"}, listening
        other = _non_loopback_address()
        if other is not None:  # nothing is exposed on the machine's network address
            for _, listened in listening:
                with pytest.raises(httpx.ConnectError):
                    httpx.post(f"http://{other}:{listened}/first", json={}, timeout=5)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, rest[-3000:]
        assert "stopped" in rest
        for _, listened in listening:  # HAProxy and the replicas are gone too
            with pytest.raises(httpx.ConnectError):
                httpx.post(f"http://127.0.0.1:{listened}/first", json={}, timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _fast_path_addresses(port: int) -> list[tuple[str, int]]:
    """What the balancer listens on and sends to, from its own configuration."""
    import glob
    import re

    for config in glob.glob(os.path.join(tempfile.gettempdir(), "cortex-ray-ingress-*", "haproxy.cfg")):
        text = Path(config).read_text()
        bound = re.search(r"^\s+bind (\S+):(\d+)$", text, re.M)
        if bound and int(bound.group(2)) == port:
            servers = re.findall(r"^\s+server \S+ (\S+):(\d+)", text, re.M)
            return [(bound.group(1), port), *((h, int(p)) for h, p in servers)]
    raise AssertionError(f"no balancer configuration listens on {port}")


def test_run_reports_a_bad_spec_without_starting_ray(tmp_path: Path) -> None:
    (tmp_path / "cortex.yaml").write_text("- name: x\n  kind: BatchAPI\n")
    result = subprocess.run(
        [sys.executable, "-m", "cortex_ray", "run", "cortex.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "kind 'BatchAPI' is not supported by cortex-ray" in result.stderr
    assert "Traceback" not in result.stderr
