"""Stopping a long-running command on Ctrl-C or SIGTERM, at any moment, within a deadline.

Python runs signal handlers in the main thread only, between bytecodes, and a thread blocked in
Ray (``ray.get``, ``serve.run`` waiting for a replica whose ``__init__`` takes minutes) may not
come back: so the command does its Ray work on another thread, and the main thread only waits,
handles the signals and enforces the deadline. What a local ``ray.init`` starts is this
process's descendants (GCS, raylet, the monitors; under the raylet its agents and workers;
under a worker HAProxy): :func:`stop_processes` stops those, and never anything else.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

__all__ = ["Signals", "exit_now", "process_tree", "say", "stop_processes"]


def _psutil() -> Any:
    importlib.import_module("ray")  # psutil is the one Ray ships: importing Ray puts it on sys.path
    import psutil

    return psutil


def say(text: str) -> None:
    """One line on standard error, unbuffered: safe in a signal handler, which may interrupt the
    main thread in the middle of a ``print`` (buffered streams refuse a reentrant write)."""
    with contextlib.suppress(OSError):
        os.write(2, (text + "\n").encode(errors="replace"))


def exit_now(code: int) -> NoReturn:
    """Exit at once: no atexit handlers (Ray's would wait on the processes just stopped), no
    joining of a thread still blocked in Ray."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


class Signals:
    """SIGINT and SIGTERM handlers (main thread only): the first asks to stop (:attr:`received`),
    any one after that, or once :meth:`begin_stop` was called, forces: ``force(signum)``."""

    def __init__(self, force: Callable[[int], None]) -> None:
        self.received = threading.Event()
        self.signum: int | None = None
        self._force = force
        self._stopping = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def begin_stop(self) -> None:
        """The stop is under way: a signal from now on forces it."""
        self._stopping = True

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGTERM:
            # Ray's core worker handles SIGTERM too (abseil's failure handler, until the command
            # takes it back): it calls this one, then aborts the process 3 s later by an alarm
            signal.alarm(0)
        name = signal.Signals(signum).name
        if self._stopping:
            say(f"received {name} again, forcing the stop")
            self._force(signum)
            return
        self._stopping = True
        self.signum = signum
        say(f"\nreceived {name}, stopping (press Ctrl-C again to force)")
        self.received.set()


Known = dict[int, Any]
"""Processes by PID (``psutil.Process``: signalling one checks that its PID was not reused)."""


def process_tree(known: Known | None = None, root: int | None = None) -> Known:
    """The descendants of ``root`` (default: this process) now, added to ``known`` (which keeps
    those whose parent died: they are not found from ``root`` any more)."""
    psutil = _psutil()
    known = {} if known is None else known
    with contextlib.suppress(psutil.Error):
        for proc in psutil.Process(root).children(recursive=True):
            if proc.pid not in known or not _alive(known[proc.pid]):  # new, or its PID reused
                known[proc.pid] = proc
    return known


def _alive(proc: Any) -> bool:
    psutil = _psutil()
    try:
        return bool(proc.is_running()) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(procs: list[Any], how: str) -> None:
    psutil = _psutil()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            getattr(proc, how)()


def _wait_gone(procs: list[Any], timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    return alive


def stop_processes(known: Known, grace: float, root: int | None = None) -> list[Any]:
    """Stop ``known`` and the descendants of ``root`` (default: this process): SIGTERM and up to
    ``grace`` seconds to exit (none when ``grace`` is 0), then SIGKILL to the rest, frozen first
    (SIGSTOP) until no new one appears, so that none escapes by forking meanwhile. Returns those
    still there 2 s later (none, unless the kernel is slow). Zombies count as gone; those that
    are this process's children are reaped."""
    alive = [p for p in process_tree(known, root).values() if _alive(p)]
    signalled = list(alive)
    if grace > 0 and alive:
        _signal(alive, "terminate")
        alive = _wait_gone(alive, grace)
    frozen: set[int] = set()
    for _ in range(50):  # until a pass finds no new one
        alive = [p for p in process_tree(known, root).values() if _alive(p)]
        new = [p for p in alive if p.pid not in frozen]
        if not new:
            break
        _signal(new, "suspend")
        frozen.update(p.pid for p in new)
        signalled.extend(new)
    _signal(alive, "kill")
    left = _wait_gone(alive, 2.0)
    _reap(signalled)
    return left


def _reap(procs: list[Any]) -> None:
    """Collect those of ``procs`` that are this process's exited children (else they stay
    zombies until it exits)."""
    me = os.getpid()
    for proc in procs:
        with contextlib.suppress(Exception):
            if proc.ppid() == me and not _alive(proc):
                os.waitpid(proc.pid, os.WNOHANG)
