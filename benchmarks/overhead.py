"""Serving speed beside the real Triton server, in one run, with a native load generator.

The same trivial model everywhere: ``y = 0.5 * x + 2`` over three floats, as JSON.

* ``triton``: NVIDIA Triton 2.51 (from PyPI's nvidia-pytriton), Python backend, one
  instance, v2 JSON inference (see ``benchmarks/peers.py``);
* ``serve-proxy``: a bare Ray Serve deployment doing the same numpy work, on Serve's proxy;
* ``serve-throughput``: the same bare deployment under ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``
  (Ray's best built-in path: direct ingress on the replica's own port, user code on the
  replica's main loop), in a Ray of its own (the flag is read when Ray starts);
* ``cortex-proxy``: a cortex-ray API (a Cortex Python handler doing it with numpy) on
  Serve's proxy;
* ``cortex-fast``: the same API on cortex-ray's fast path (HAProxy, then the replica's own
  HTTP server).
* ``cortex-v2``: the protocol Triton's users speak, against cortex-ray: Triton's own request
  (v2 JSON infer of ``half_plus_two``) to a cortex-ray Python API's ``v2/models/half_plus_two/infer``
  route (``handle_infer``, the model got through ``model_client``), on the fast path.
* ``server-own`` / ``server-uvicorn`` (phase ``servers``, no Ray, no HAProxy): the replica's
  HTTP server alone, cortex-ray's (limits, timeouts and flow control on) against uvicorn's
  ``httptools`` protocol with its defaults, the same handler and endpoint behind both
  (``benchmarks/server_target.py``): what building on uvicorn would cost or save.

Every target has one replica/instance. Rounds alternate between the targets of a phase and
Triton, so drift on the machine hits all of them; ``wrk`` (``apt-get install wrk``) loads
each for ``--seconds`` with ``--threads`` and ``--connections``. Figures: requests per
second, p50, p99, non-2xx answers and socket errors, and each target against Triton's
rounds of the same phase.

    .venv/bin/python benchmarks/overhead.py [--seconds 10] [--rounds 2] [--connections 32]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.peers import TRITON_BODY, Triton  # noqa: E402
from tests.support.s3_server import free_port  # noqa: E402

BODY = '{"x": [1.0, 2.0, 3.0]}'

HANDLER = """
import numpy as np

class Handler:
    def __init__(self, config):
        pass

    def handle_post(self, payload):
        x = np.asarray(payload["x"], dtype=np.float32)
        return {"y": (0.5 * x + 2).tolist()}
"""

V2_HANDLER = """
import numpy as np

class Handler:
    def __init__(self, config, model_client):
        self.client = model_client

    def load_model(self, model_path):
        return np.float32(0.5)

    def handle_infer(self, inputs, model_name, model_version):
        a = self.client.get_model(model_name, model_version)
        return {"y": (a * inputs["x"] + 2).astype(np.float32)}
"""

BARE = """
import numpy as np
from ray import serve
from starlette.requests import Request


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=1024)
class Bare:
    async def __call__(self, request: Request) -> dict:
        x = np.asarray((await request.json())["x"], dtype=np.float32)
        return {"y": (0.5 * x + 2).tolist()}


app = Bare.bind()
"""


@dataclass
class Result:
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    non_2xx: int = 0
    errors: int = 0

    def add(self, other: Result) -> None:
        self.rps += other.rps
        self.p50 += other.p50
        self.p99 += other.p99
        self.non_2xx += other.non_2xx
        self.errors += other.errors


def wrk(url: str, body: str, seconds: float, threads: int, connections: int) -> Result:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = \'{body}\'\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds:g}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        script.unlink()
    result = Result()
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result.rps.append(float(match.group(1)) if match else 0.0)
    for pct, into in (("50", result.p50), ("99", result.p99)):
        found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if found:
            into.append(float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)])
    non = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result.non_2xx = int(non.group(1)) if non else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result.errors = sum(int(x) for x in errors.groups()) if errors else 0
    return result


def wait_ok(url: str, body: str, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (
                httpx.post(
                    url, content=body, headers={"content-type": "application/json"}, timeout=5
                ).status_code
                == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer 200 in {timeout:g}s")


def rounds(
    targets: dict[str, tuple[str, str]], triton: Triton, args: argparse.Namespace
) -> dict[str, Result]:
    """Alternate Triton and each target; warm every one up first."""
    everything = {"triton": (triton.url, TRITON_BODY), **targets}
    for url, body in everything.values():
        wait_ok(url, body)
        wrk(url, body, 2, args.threads, args.connections)
    results = {name: Result() for name in everything}
    for _ in range(args.rounds):
        for name, (url, body) in everything.items():
            results[name].add(wrk(url, body, args.seconds, args.threads, args.connections))
    return results


def phase_default(triton: Triton, args: argparse.Namespace, project: Path) -> dict[str, Result]:
    """One Ray: bare Serve on the proxy, cortex-ray on the proxy and on the fast path."""
    import importlib.util

    from ray import serve

    from cortex_ray import sdk
    from cortex_ray.spec import parse_spec

    fast_port, proxy_port = free_port(), free_port()
    sdk.start(port=fast_port, ingress="fast", proxy_port=proxy_port, num_cpus=4, log_to_driver=False)
    try:
        (project / "models" / "half_plus_two" / "1").mkdir(parents=True, exist_ok=True)
        (project / "models" / "half_plus_two" / "1" / "a.txt").write_text("0.5")
        v2 = {"type": "python", "path": "v2handler.py", "multi_model_reloading": {"dir": "models"}}
        spec = parse_spec(
            [
                {"name": name, "kind": "RealtimeAPI", "handler": {"type": "python", "path": "handler.py"}}
                for name in ("cortex-proxy", "cortex-fast")
            ]
            + [{"name": "cortex-v2", "kind": "RealtimeAPI", "handler": v2}],
            base_dir=project,
        )
        sdk.run_api(spec.apis[0], ingress="proxy", ray_actor_options={"num_cpus": 0.5})
        sdk.run_api(spec.apis[1], ingress="fast", ray_actor_options={"num_cpus": 0.5})
        sdk.run_api(spec.apis[2], ingress="fast", ray_actor_options={"num_cpus": 0.5})
        module = importlib.util.spec_from_file_location("bare_app", project / "bare.py")
        assert module is not None and module.loader is not None
        bare = importlib.util.module_from_spec(module)
        module.loader.exec_module(bare)
        serve.run(bare.app, name="serve-proxy", route_prefix="/serve-proxy")
        targets = {
            "serve-proxy": (f"http://127.0.0.1:{proxy_port}/serve-proxy", BODY),
            "cortex-proxy": (f"http://127.0.0.1:{proxy_port}/cortex-proxy", BODY),
            "cortex-fast": (f"http://127.0.0.1:{fast_port}/cortex-fast", BODY),
            "cortex-v2": (
                f"http://127.0.0.1:{fast_port}/cortex-v2/v2/models/half_plus_two/infer",
                TRITON_BODY,
            ),
        }
        return rounds(targets, triton, args)
    finally:
        sdk.shutdown()


def phase_throughput(triton: Triton, args: argparse.Namespace, project: Path) -> dict[str, Result]:
    """Another Ray, started with RAY_SERVE_THROUGHPUT_OPTIMIZED=1: the bare Serve app."""
    port = free_port()
    env = {**os.environ, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "PYTHONPATH": f"{project}:{ROOT}"}
    runner = textwrap.dedent(
        f"""
        import os, sys, time, ray
        from ray import serve
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        serve.start(http_options={{"host": "127.0.0.1", "port": {port}}})
        import bare
        serve.run(bare.app, name="serve-throughput", route_prefix="/serve-throughput")
        print("READY", flush=True)
        sys.stdin.read()
        serve.shutdown(); ray.shutdown()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", runner], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY"):
                break
        url = _direct_ingress_url(port)
        return rounds({"serve-throughput": (url, BODY)}, triton, args)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def phase_servers(triton: Triton, args: argparse.Namespace, project: Path) -> dict[str, Result]:
    """No Ray, no HAProxy: the replica's server alone, cortex-ray's own against uvicorn's
    (``benchmarks/server_target.py``), the same handler and endpoint behind both."""
    procs, targets = [], {}
    try:
        for kind in ("own", "uvicorn"):
            port = free_port()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "benchmarks" / "server_target.py"),
                    kind,
                    str(port),
                    str(project),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("READY"):
                    break
            targets[f"server-{kind}"] = (f"http://127.0.0.1:{port}/api", BODY)
        return rounds(targets, triton, args)
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _direct_ingress_url(proxy_port: int) -> str:
    """Direct ingress serves on the replica's own port (30000 and up): find the one answering."""
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for port in range(30000, 30010):
            url = f"http://127.0.0.1:{port}/serve-throughput"
            try:
                r = httpx.post(url, content=BODY, headers={"content-type": "application/json"}, timeout=2)
                if r.status_code == 200:
                    return url
            except httpx.HTTPError:
                continue
        time.sleep(1)
    return f"http://127.0.0.1:{proxy_port}/serve-throughput"


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--skip-throughput", action="store_true", help="skip the second Ray")
    parser.add_argument("--skip-servers", action="store_true", help="skip the servers alone (own, uvicorn)")
    parser.add_argument("--only-servers", action="store_true", help="only the servers alone (no Ray)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    results: dict[str, tuple[Result, Result]] = {}
    with tempfile.TemporaryDirectory() as tmp, Triton(free_port()) as triton:
        project = Path(tmp)
        (project / "handler.py").write_text(textwrap.dedent(HANDLER))
        (project / "bare.py").write_text(textwrap.dedent(BARE))
        (project / "v2handler.py").write_text(textwrap.dedent(V2_HANDLER))
        phases = [] if args.only_servers else [phase_default]
        phases += [] if args.skip_throughput or args.only_servers else [phase_throughput]
        phases += [] if args.skip_servers else [phase_servers]
        for phase in phases:
            measured = phase(triton, args, project)
            baseline = measured.pop("triton")
            results[f"triton ({phase.__name__.removeprefix('phase_')} phase)"] = (baseline, baseline)
            for name, result in measured.items():
                results[name] = (result, baseline)
    print(
        f"\nwrk -t{args.threads} -c{args.connections}, {args.rounds} rounds x {args.seconds:g}s, alternating "
        "with Triton; ratios against Triton's rounds of the same phase"
    )
    print(f"{'target':<30}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'errors':>8}{'x Triton':>10}")
    for name, (r, base) in results.items():
        rps = statistics.mean(r.rps)
        ratio = rps / statistics.mean(base.rps) if base.rps else 0.0
        p50, p99 = statistics.median(r.p50 or [0]), statistics.median(r.p99 or [0])
        print(f"{name:<30}{rps:>10.0f}{p50:>9.2f}{p99:>9.2f}{r.non_2xx:>9}{r.errors:>8}{ratio:>10.2f}")


if __name__ == "__main__":
    main()
