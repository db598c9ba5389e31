"""Live reloading: time to serve a new version, and storage list requests per minute.

1. Swap latency: write version N+1 of a model into a local ``dir`` (the last file
   written is the moment measured from) while a client keeps asking for "latest";
   the latency is the time until the first answer served by N+1. Median and max
   over ``--swaps`` swaps, for the default poll interval (5 s), for 1 s, and with file
   events (``events: watch``, ``settle_time: 0.5``, ``poll_interval: 60``).
2. List requests per minute against the S3 test server (moto, on 127.0.0.1),
   counted in the server's own access log, with 1 and with 4 replicas. The
   baseline is what Cortex 0.35 did: every replica listed S3 every 10 s.

    .venv/bin/python benchmarks/reload.py [--swaps 20] [--window 60] [--skip-s3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HANDLER = """
import os

class Handler:
    def __init__(self, model_client):
        self.client = model_client

    def load_model(self, model_path):
        return open(os.path.join(model_path, "model.txt")).read()

    def handle_post(self, payload):
        model, version = self.client.get_model_and_version("m")
        return {"version": version}
"""


def spec(name: str, models: dict[str, Any], env: dict[str, str], replicas: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "RealtimeAPI",
        "handler": {"type": "python", "path": "handler.py", "env": env, "multi_model_reloading": models},
        "autoscaling": {"min_replicas": replicas, "max_replicas": replicas},
    }


def swaps(url: str, store: Path, count: int, spacing: float) -> list[float]:
    latencies = []
    rng = random.Random(7)
    with httpx.Client(timeout=30) as client:
        version = client.post(url, json={}).json()["version"]
        for _ in range(count):
            # write at a random moment of the poll cycle (else the writes lock onto its phase)
            time.sleep(rng.uniform(0, spacing))
            version += 1
            folder = store / "m" / str(version)
            folder.mkdir(parents=True)
            (folder / "model.txt").write_text(f"v{version}")
            written = time.perf_counter()
            while client.post(url, json={}).json()["version"] != version:
                time.sleep(0.01)
            latencies.append(time.perf_counter() - written)
            print(f"  v{version}: {latencies[-1]:.2f}s", flush=True)
    return latencies


def list_rates(s3: Any, project: Path, window: float) -> dict[int, float]:
    from cortex_ray.sdk import delete, run_api
    from cortex_ray.spec import parse_spec

    bucket = s3.create_bucket("reload-bench")
    s3.put_tree(bucket, "models", {"m/1/model.txt": "v1"})
    counts = {}
    for replicas in (1, 4):
        api = parse_spec(
            [spec("count", {"dir": f"s3://{bucket}/models/"}, s3.env(), replicas)], base_dir=project
        ).apis[0]
        run_api(api, ray_actor_options={"num_cpus": 0.2})
        time.sleep(5)
        lines = s3.log_path.read_text(errors="replace").count(f"GET /{bucket}?list-type=2")
        time.sleep(window)
        after = s3.log_path.read_text(errors="replace").count(f"GET /{bucket}?list-type=2")
        counts[replicas] = (after - lines) * 60.0 / window
        print(f"{replicas} replica(s): {counts[replicas]:.1f} list requests/minute", flush=True)
        delete("count")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--window", type=float, default=60.0, help="seconds of list counting per case")
    parser.add_argument("--skip-s3", action="store_true", help="swap latencies only")
    args = parser.parse_args()

    from cortex_ray.sdk import delete, run_api, shutdown, start
    from cortex_ray.spec import parse_spec
    from tests.support.s3_server import S3TestServer, free_port

    base = start(port=free_port(), num_cpus=8, log_to_driver=False)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, S3TestServer() as s3:
        project = Path(tmp)
        (project / "handler.py").write_text(textwrap.dedent(HANDLER))
        cases: list[tuple[str, str, dict[str, Any], float]] = [
            ("default poll (5s)", "swap-default", {}, 5.0),
            ("poll_interval: 1s", "swap-1s", {"poll_interval": 1}, 1.0),
            (
                "events: watch",
                "swap-watch",
                {"events": "watch", "settle_time": 0.5, "poll_interval": 60},
                1.0,
            ),
        ]
        for label, name, models, spacing in cases:
            store = project / name
            (store / "m" / "1").mkdir(parents=True)
            (store / "m" / "1" / "model.txt").write_text("v1")
            api = parse_spec([spec(name, {"dir": str(store), **models}, {})], base_dir=project).apis[0]
            run_api(api, ray_actor_options={"num_cpus": 0.2})
            print(f"{label}: {args.swaps} swaps", flush=True)
            results[label] = swaps(f"{base}/{name}", store, args.swaps, spacing)
            delete(name)
        counts: dict[int, float] = {} if args.skip_s3 else list_rates(s3, project, args.window)
        shutdown()

    print("\nswap latency: last file written -> first answer from the new version")
    print(f"{'case':<22}{'median s':>10}{'max s':>10}{'n':>5}")
    for label, values in results.items():
        print(f"{label:<22}{statistics.median(values):>10.2f}{max(values):>10.2f}{len(values):>5}")
    if not counts:
        return
    print("\nS3 list requests per minute (default poll 5s), counted by the S3 server")
    print(f"{'replicas':<10}{'cortex-ray':>12}{'Cortex 0.35 (10s per replica)':>32}")
    for replicas, rate in counts.items():
        print(f"{replicas:<10}{rate:>12.1f}{replicas * 6:>32}")


if __name__ == "__main__":
    main()
