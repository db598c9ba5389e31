"""Stopping `cortex-ray run` by a signal at any moment, the deploy included: within 10 s, with no
process of the Ray it started left behind.

Each test runs the command in a subprocess with its own local Ray (not the session's) and waits on
a marker file its handler writes, or on its output, never on a guessed delay."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.project import write_handler
from tests.support.s3_server import free_port

pytestmark = pytest.mark.ray

STOP_S = 10.0  # what the command promises, from the signal to its exit
SLOW_INIT = """
import os, time

class Handler:
    def __init__(self, config):
        open({marker!r}, "w").write(str(os.getpid()))
        time.sleep(120)

    def handle_post(self, payload):
        return payload
"""
FAST = """
import os, time

class Handler:
    def __init__(self, config):
        pass

    def handle_post(self, payload):
        if payload == "slow":
            open({marker!r}, "w").write(str(os.getpid()))
            time.sleep(120)
        return payload
"""


def _psutil() -> Any:
    importlib.import_module("ray")  # the psutil Ray ships
    import psutil

    return psutil


class Run:
    """`cortex-ray run` of a one-API project, in its own session; its output in a file."""

    def __init__(self, project: Path, handler: str) -> None:
        self.marker = project / "marker"
        write_handler(project, handler.format(marker=str(self.marker)))
        (project / "cortex.yaml").write_text(
            "- name: api\n  kind: RealtimeAPI\n  handler: {type: python, path: handler.py}\n"
        )
        self.port = free_port()
        self.log = project / "run.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("RAY_ADDRESS", None)  # a new local Ray, beside the session's
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cortex_ray", "run", "cortex.yaml", "--port", str(self.port)],
                cwd=project,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            tail = self.output()[-3000:]
            assert self.proc.poll() is None, f"exited ({self.proc.returncode}) before {what}:\n{tail}"
            assert time.monotonic() < deadline, f"no {what} in {timeout} s:\n{tail}"
            time.sleep(0.1)

    def processes(self) -> list[Any]:
        """The command and every process under it now (its Ray's: GCS, raylet, agents, workers)."""
        psutil = _psutil()
        me = psutil.Process(self.proc.pid)
        return [me, *me.children(recursive=True)]

    def signal_and_wait(self, signum: int) -> float:
        """Seconds from ``signum`` to the command's exit (fails past :data:`STOP_S`)."""
        started = time.monotonic()
        self.proc.send_signal(signum)
        try:
            self.proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            name = signal.Signals(signum).name
            pytest.fail(f"still running {STOP_S} s after {name}:\n{self.output()[-3000:]}")
        return time.monotonic() - started

    def kill(self) -> None:
        """Whatever is left (only when a test failed)."""
        if self.proc.poll() is None:
            for proc in self.processes():
                proc.kill()
            self.proc.wait()


def assert_all_gone(processes: list[Any]) -> None:
    """None of ``processes`` runs (zombies are gone), within 2 s."""
    psutil = _psutil()
    deadline = time.monotonic() + 2

    def alive() -> list[str]:
        left = []
        for proc in processes:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{proc.pid} {proc.name()}")
            except psutil.NoSuchProcess:
                pass
        return left

    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = alive()
    for proc in processes:  # a failed test leaves nothing either
        try:
            if proc.is_running():
                proc.kill()
        except psutil.Error:
            pass
    assert not left, f"left running: {left}"


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Callable[[str], Run]]:
    started: list[Run] = []

    def _run(handler: str) -> Run:
        started.append(Run(tmp_path, handler))
        return started[-1]

    yield _run
    for r in started:
        r.kill()


def _names(processes: list[Any]) -> set[str]:
    return {p.name() for p in processes}


def test_ctrl_c_while_a_replica_starts_stops_ray_and_all_within_10s(run: Callable[[str], Run]) -> None:
    r = run(SLOW_INIT)
    r.wait_for("Handler.__init__", r.marker.exists)  # the deploy waits for it, 120 s
    processes = r.processes()
    assert {"raylet", "gcs_server"} <= _names(processes), _names(processes)
    took = r.signal_and_wait(signal.SIGINT)
    output = r.output()
    assert r.proc.returncode == 130, output[-3000:]  # interrupted before serving
    assert "stopped" in output and "serving" not in output
    assert_all_gone(processes)
    print(f"stopped during the deploy in {took:.1f} s")


def test_sigterm_while_serving_stops_ray_and_all_within_10s(run: Callable[[str], Run]) -> None:
    r = run(FAST)
    r.wait_for("serving", lambda: "serving; press Ctrl-C to stop" in r.output())
    assert httpx.post(f"http://127.0.0.1:{r.port}/api", json=1, timeout=30).json() == 1
    # another terminal's `cortex-ray get` finds this run's Ray (no RAY_ADDRESS, no `ray start`)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    got = subprocess.run(
        [sys.executable, "-m", "cortex_ray", "get"], capture_output=True, text=True, timeout=120, env=env
    )
    assert got.returncode == 0, got.stdout + got.stderr[-3000:]
    row = got.stdout.splitlines()[1]  # under the header
    assert row.split()[1:4] == ["running", "1/1", "/api"], got.stdout
    processes = r.processes()
    took = r.signal_and_wait(signal.SIGTERM)
    output = r.output()
    assert r.proc.returncode == 0, output[-3000:]
    assert "stopped" in output and "SIGTERM received" not in output  # Ray's own handler had none
    assert_all_gone(processes)
    print(f"stopped while serving in {took:.1f} s")


def test_a_second_ctrl_c_forces_the_stop(run: Callable[[str], Run]) -> None:
    r = run(FAST)
    r.wait_for("serving", lambda: "serving; press Ctrl-C to stop" in r.output())

    # a request in the handler for 120 s: Serve's graceful shutdown would wait for it
    def slow_request() -> None:
        with contextlib.suppress(httpx.HTTPError):  # cut by the stop
            httpx.post(f"http://127.0.0.1:{r.port}/api", json="slow", timeout=60)

    threading.Thread(target=slow_request, daemon=True).start()
    r.wait_for("the request in the handler", r.marker.exists)
    processes = r.processes()
    r.proc.send_signal(signal.SIGINT)
    r.wait_for("the first stop", lambda: "stopping (press Ctrl-C again to force)" in r.output(), timeout=10)
    took = r.signal_and_wait(signal.SIGINT)
    output = r.output()
    assert r.proc.returncode == 130, output[-3000:]
    assert "forcing the stop" in output
    assert took < 4, took
    assert_all_gone(processes)
    print(f"forced in {took:.1f} s")
