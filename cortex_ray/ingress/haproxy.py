"""The HAProxy process: started, checked, reloaded and stopped; its runtime API.

HAProxy runs in master-worker mode (``-W``) in its own process group, and is told to
exit with the thread that started it (``PR_SET_PDEATHSIG``), so it never outlives the
actor that owns it, even when that actor is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from cortex_ray.net import dial_host

__all__ = ["HAProxy", "HAProxyError"]


class HAProxyError(RuntimeError):
    pass


class HAProxy:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.config = workdir / "haproxy.cfg"
        self.admin = workdir / "admin.sock"
        self.log = workdir / "haproxy.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def write(self, text: str) -> None:
        """Check ``text`` with HAProxy itself, then make it the configuration file."""
        candidate = self.workdir / "haproxy.cfg.new"
        candidate.write_text(text)
        check = subprocess.run(
            [self.binary, "-c", "-q", "-f", str(candidate)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise HAProxyError(f"haproxy refused the configuration: {check.stderr.strip() or check.stdout}")
        os.replace(candidate, self.config)

    def start(self, host: str, port: int) -> None:
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-W", "-db", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise HAProxyError(
                    f"haproxy exited at start (is {host}:{port} free?): {self.log.read_text()[-2000:]}"
                )
            if _listening(host, port) and self.admin.exists():
                return
            time.sleep(0.05)
        raise HAProxyError(f"haproxy did not listen on {host}:{port} within 10 s")

    def reload(self) -> None:
        """Re-read the configuration: new workers take new connections, old ones finish theirs."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGUSR2)

    def command(self, line: str, timeout: float = 5.0) -> str:
        """One runtime API command on the admin socket; its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            try:
                s.connect(str(self.admin))
                s.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
            except OSError as exc:
                raise HAProxyError(f"haproxy's runtime API did not answer {line!r}: {exc}") from exc
        return b"".join(chunks).decode(errors="replace").strip()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the master and its workers
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.settimeout(0.2)
        return s.connect_ex((dial_host(host), port)) == 0


def _die_with_parent() -> None:
    """In the child: exit when the thread that started it ends (Linux), even on SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass
