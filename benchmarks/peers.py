"""Real peers for the benchmarks: NVIDIA's Triton Inference Server, run here on 127.0.0.1.

``nvidia-pytriton`` (PyPI) ships the real ``tritonserver`` binary (2.51) with its Python
backend. It goes in a virtualenv of its own (``.bench/triton-venv``, made on first use:
it pins its own numpy and client), and is started as Triton users run it, on a plain
model repository, without pytriton's Python wrapper: the tree is copied somewhere
writable, the Python backend stub for this interpreter is put in place, and the
libraries it needs go first on ``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import httpx

__all__ = ["TRITON_BODY", "TRITON_MODEL", "Triton"]

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench"
TRITON_MODEL = "half_plus_two"
TRITON_BODY = '{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}'

_CONFIG = """
name: "half_plus_two"
backend: "python"
max_batch_size: 0
input [ { name: "x", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""

_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            y = pb_utils.Tensor("y", (0.5 * x + 2).astype(np.float32))
            out.append(pb_utils.InferenceResponse(output_tensors=[y]))
        return out
"""


class Triton:
    """``with Triton(port) as t: ...``: a running tritonserver with the half_plus_two model."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v2/models/{TRITON_MODEL}/infer"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Triton:
        venv = _venv()
        tree = _tree(venv)
        repo = BENCH / "triton-repo"
        shutil.rmtree(repo, ignore_errors=True)
        (repo / TRITON_MODEL / "1").mkdir(parents=True)
        (repo / TRITON_MODEL / "config.pbtxt").write_text(textwrap.dedent(_CONFIG))
        (repo / TRITON_MODEL / "1" / "model.py").write_text(textwrap.dedent(_MODEL))
        libs = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "from pytriton.utils.distribution import get_libs_path as g; print(g())",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": ":".join(
                [str(sysconfig.get_config_var("LIBDIR")), libs, os.environ.get("LD_LIBRARY_PATH", "")]
            ),
            "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        }
        command = [
            str(tree / "bin" / "tritonserver"),
            f"--model-repository={repo}",
            f"--backend-directory={tree / 'backends'}",
            f"--cache-directory={tree / 'caches'}",
            "--http-address=127.0.0.1",
            f"--http-port={self.port}",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--log-error=false",
            "--log-warning=false",
            "--log-info=false",
        ]
        log = open(BENCH / "triton.log", "wb")
        self._proc = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited: {(BENCH / 'triton.log').read_text()[-3000:]}")
            try:
                ready = httpx.get(f"http://127.0.0.1:{self.port}/v2/models/{TRITON_MODEL}/ready", timeout=2)
                if ready.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("tritonserver did not become ready in 120 s")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGINT)
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)


def _venv() -> Path:
    venv = BENCH / "triton-venv"
    if not (venv / "bin" / "python").exists():
        print("==> installing nvidia-pytriton into .bench/triton-venv (once)", file=sys.stderr)
        BENCH.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "nvidia-pytriton"], check=True)
    return venv


def _tree(venv: Path) -> Path:
    """A writable copy of pytriton's tritonserver tree, with this Python's backend stub."""
    tree = BENCH / "tritonserver"
    if not (tree / "bin" / "tritonserver").exists():
        found = sorted(venv.glob("lib/python*/site-packages/pytriton/tritonserver"))
        if not found:
            raise RuntimeError("nvidia-pytriton has no tritonserver tree (is this Linux x86_64?)")
        shutil.copytree(found[0], tree)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = tree / "python_backend_stubs" / version / "triton_python_backend_stub"
        shutil.copy(stub, tree / "backends" / "python" / "triton_python_backend_stub")
    return tree
