"""Serving overhead of cortex-ray against a bare Ray Serve deployment, in the same run.

Both answer POST with the same small JSON body; the cortex-ray API goes through the
whole path (spec, handler injection, payload decoding, ``model_client.get_model`` on a
cached model, JSON encoding). One local Ray (127.0.0.1), the same HTTP client, the same
concurrency, alternating rounds so that drift on the machine hits both sides.

    .venv/bin/python benchmarks/overhead.py [--seconds 10] [--concurrency 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = {"label": "setosa", "version": 1}

HANDLER = """
class Handler:
    def __init__(self, model_client):
        self.client = model_client

    def load_model(self, model_path):
        return {"label": open(model_path + "/model.txt").read()}

    def handle_post(self, payload):
        model = self.client.get_model()
        return {"label": model["label"], "version": 1}
"""


async def load(
    url: str, seconds: float, concurrency: int, body: Any = None, expect: Any = BODY
) -> tuple[int, list[float], int]:
    """POST ``body`` from ``concurrency`` connections for ``seconds``; (count, latencies, errors)."""
    payload = body if body is not None else {"x": [5.1, 3.5, 1.4, 0.2]}
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                r = await client.post(url, json=payload)
                if r.status_code != 200 or (expect is not None and r.json() != expect):
                    errors += 1
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    args = parser.parse_args()

    from ray import serve
    from starlette.requests import Request

    from cortex_ray.sdk import run_api, shutdown, start
    from cortex_ray.spec import parse_spec
    from tests.support.s3_server import free_port

    @serve.deployment(ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=1024)
    class Bare:
        async def __call__(self, request: Request) -> dict[str, object]:
            await request.json()
            return BODY

    base = start(port=args.port or free_port(), num_cpus=4, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "handler.py").write_text(textwrap.dedent(HANDLER))
        (project / "model").mkdir()
        (project / "model" / "model.txt").write_text("setosa")
        spec = parse_spec(
            [
                {
                    "name": "cortex",
                    "kind": "RealtimeAPI",
                    "handler": {
                        "type": "python",
                        "path": "handler.py",
                        "threads_per_process": 4,
                        "multi_model_reloading": {"path": "model"},
                    },
                    "compute": {"cpu": "200m"},
                }
            ],
            base_dir=project,
        )
        run_api(spec.apis[0])
        serve.run(Bare.bind(), name="bare", route_prefix="/bare")
        targets = {"bare Ray Serve": f"{base}/bare", "cortex-ray": f"{base}/cortex"}
        for url in targets.values():  # warm up: connections, the cached model
            asyncio.run(load(url, 2.0, args.concurrency))
        results: dict[str, list[tuple[int, list[float], int]]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, url in targets.items():
                results[name].append(asyncio.run(load(url, args.seconds, args.concurrency)))
        shutdown()

    print(f"\n{args.rounds} rounds x {args.seconds:g}s, {args.concurrency} concurrent connections, HTTP POST")
    print(f"{'target':<16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    summary = {}
    for name, rounds in results.items():
        count = sum(r[0] for r in rounds)
        lat = [x for r in rounds for x in r[1]]
        errors = sum(r[2] for r in rounds)
        rps = count / (args.seconds * args.rounds)
        summary[name] = (rps, percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000)
        print(f"{name:<16}{rps:>10.1f}{summary[name][1]:>10.1f}{summary[name][2]:>10.1f}{errors:>8}")
    bare, ours = summary["bare Ray Serve"], summary["cortex-ray"]
    print(
        f"\ncortex-ray / bare: throughput x{ours[0] / bare[0]:.2f}, "
        f"p50 x{ours[1] / bare[1]:.2f}, p99 x{ours[2] / bare[2]:.2f}"
    )


if __name__ == "__main__":
    main()
