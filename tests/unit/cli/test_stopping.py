"""Stopping a process tree and the signal handlers of ``cortex-ray run`` (no Ray started)."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from cortex_ray.cli.stopping import Signals, process_tree, stop_processes
from tests.support.processes import read_until

LEAF = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops it
print("leaf ready", flush=True)
time.sleep(120)
"""
MIDDLE = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", {LEAF!r}])
time.sleep(120)
"""
ROOT = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", {MIDDLE!r}])
time.sleep(120)
"""


def _psutil() -> Any:
    importlib.import_module("ray")  # the psutil Ray ships
    import psutil

    return psutil


def _gone(pid: int) -> bool:
    psutil = _psutil()
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_stop_processes_kills_every_descendant_even_orphaned_and_nothing_else() -> None:
    root = subprocess.Popen([sys.executable, "-c", ROOT], stdout=subprocess.PIPE, text=True)
    outsider = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        assert "leaf ready" in read_until(root, "leaf ready", timeout=30)
        known = process_tree(root=root.pid)
        assert len(known) == 2  # middle and leaf
        middle = next(p for p in known.values() if p.ppid() == root.pid)
        leaf = next(p for p in known.values() if p.ppid() == middle.pid)
        middle.kill()  # the leaf is orphaned: no longer found from root
        assert _wait(lambda: _gone(middle.pid))  # a zombie: root does not reap it
        assert leaf.pid not in process_tree(root=root.pid)
        started = time.monotonic()
        assert stop_processes(known, grace=0.2, root=root.pid) == []
        assert time.monotonic() - started < 5
        assert _gone(leaf.pid)  # it ignored SIGTERM: killed
        assert root.poll() is None and outsider.poll() is None  # neither is a descendant of root
    finally:
        for proc in (root, outsider):
            proc.kill()
            proc.wait()
        if root.stdout is not None:
            root.stdout.close()


def test_stop_processes_stops_what_exits_on_sigterm_within_the_grace() -> None:
    child = 'import time; print("ready", flush=True); time.sleep(120)'
    code = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {child!r}])\n"
    code += "time.sleep(120)"
    root = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert "ready" in read_until(root, "ready", timeout=30)
        (proc,) = process_tree(root=root.pid).values()
        started = time.monotonic()
        assert stop_processes({}, grace=5, root=root.pid) == []
        assert time.monotonic() - started < 2  # SIGTERM sufficed: no wait for the whole grace
        assert _gone(proc.pid)
    finally:
        root.kill()
        root.wait()
        if root.stdout is not None:
            root.stdout.close()


def _wait(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_signals_first_asks_to_stop_then_a_second_forces() -> None:
    forced: list[int] = []
    signals = Signals(forced.append)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signals.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.received.wait(5)
        assert signals.signum == signal.SIGINT and forced == []
        os.kill(os.getpid(), signal.SIGINT)
        assert _wait(lambda: forced == [signal.SIGINT])
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def test_signals_force_once_the_stop_has_begun() -> None:
    forced: list[int] = []
    signals = Signals(forced.append)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signals.install()
    try:
        signals.begin_stop()  # e.g. the deploy failed: stopping without a signal
        os.kill(os.getpid(), signal.SIGINT)
        assert _wait(lambda: forced == [signal.SIGINT])
        assert not signals.received.is_set()
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def test_run_help_documents_the_stop_and_the_exit_status() -> None:
    from cortex_ray.cli.main import build_parser

    parser = build_parser()
    actions = [a for a in parser._actions if a.dest == "command"]
    run = actions[0].choices["run"]  # type: ignore[index]
    text = " ".join(run.format_help().split())
    assert "within 10 s" in text
    assert "130 (SIGINT) or 143 (SIGTERM)" in text


def test_only_a_local_ray_this_process_starts_counts_as_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``cortex-ray run`` may kill at a stop: a Ray it joined (RAY_ADDRESS) never."""
    import ray
    from ray import serve

    from cortex_ray import sdk
    from cortex_ray.cluster import local_run

    session = sdk.Session()
    calls: list[tuple[Any, bool]] = []

    def init(**kw: Any) -> None:
        calls.append((kw.get("address"), session.local_ray))  # known while it starts
        if kw.get("_fail"):
            raise RuntimeError("no Ray")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(serve, "start", lambda **kw: None)
    monkeypatch.setattr(sdk, "start_ingress", lambda host, port, grpc_port=None: None)
    monkeypatch.setattr(local_run, "use_loopback", lambda: None)
    monkeypatch.setattr(sdk, "_record_local_ray", lambda: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    session.start(port=1)
    assert calls[-1] == ("local", True) and session.local_ray
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    session.start(port=1)
    assert calls[-1] == (None, False) and not session.local_ray
    monkeypatch.delenv("RAY_ADDRESS")
    session.start(port=1, address="auto")
    assert not session.local_ray
    with pytest.raises(RuntimeError):
        session.start(port=1, _fail=True)
    assert calls[-1] == ("local", True) and not session.local_ray
