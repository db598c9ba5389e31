"""AsyncAPI: workloads per second end to end, and submit-to-result time at low load.

A trivial ``handle_async`` (returns its payload) on the local workload store.
1. Throughput: submit ``--workloads`` at once (16 client threads), then poll until
   every one is completed; workloads/s = count / (last completion - first submit).
2. Latency at low load: one workload at a time, the time from POST to the first GET
   that says ``completed`` (polled every 10 ms), median and p90 over ``--samples``.
Baseline in the same run: a RealtimeAPI with the same handler body (one HTTP round
trip, nothing stored), to show what durability and the queue cost.

    .venv/bin/python benchmarks/async.py [--workloads 300] [--samples 30] [--max-workers 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HANDLER = """
class Handler:
    def handle_async(self, payload, request_id):
        return {"echo": payload}

    def handle_post(self, payload):
        return {"echo": payload}
"""


def wait_completed(client: httpx.Client, url: str, workload_id: str, timeout: float = 300) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        status = client.get(f"{url}/{workload_id}").json()["status"]
        if status == "completed":
            return time.perf_counter()
        if status == "failed":
            raise RuntimeError(f"workload {workload_id} failed")
        time.sleep(0.01)
    raise TimeoutError(workload_id)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", type=int, default=300)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--max-workers", type=int, default=2)
    args = parser.parse_args()

    from cortex_ray.sdk import run_api, shutdown, start
    from cortex_ray.spec import parse_spec
    from tests.support.s3_server import free_port

    base = start(port=free_port(), num_cpus=8, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "handler.py").write_text(textwrap.dedent(HANDLER))
        apis = parse_spec(
            [
                {
                    "name": "jobs",
                    "kind": "AsyncAPI",
                    "handler": {"type": "python", "path": "handler.py"},
                    "autoscaling": {"min_replicas": 1, "max_replicas": args.max_workers},
                },
                {
                    "name": "realtime",
                    "kind": "RealtimeAPI",
                    "handler": {"type": "python", "path": "handler.py"},
                },
            ],
            base_dir=project,
        ).apis
        for api in apis:
            run_api(api, ray_actor_options={"num_cpus": 0.2})
        url = f"{base}/jobs"
        with httpx.Client(timeout=60) as client:
            for i in range(5):  # warm up
                wait_completed(client, url, client.post(url, json={"warm": i}).json()["id"])

            print(f"throughput: {args.workloads} workloads submitted at once", flush=True)
            started = time.perf_counter()

            def submit(i: int) -> str:
                return str(httpx.post(url, json={"n": i}, timeout=60).json()["id"])

            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                ids = list(pool.map(submit, range(args.workloads)))
            submitted = time.perf_counter()
            finished = max(wait_completed(client, url, i) for i in ids)
            throughput = args.workloads / (finished - started)
            submit_rate = args.workloads / (submitted - started)

            print(f"latency: {args.samples} workloads one at a time", flush=True)
            latencies = []
            for i in range(args.samples):
                t0 = time.perf_counter()
                workload_id = client.post(url, json={"sample": i}).json()["id"]
                latencies.append(wait_completed(client, url, workload_id) - t0)
            realtime = []
            for i in range(args.samples):
                t0 = time.perf_counter()
                client.post(f"{base}/realtime", json={"sample": i}).raise_for_status()
                realtime.append(time.perf_counter() - t0)
        shutdown()

    latencies.sort()
    print(f"\nAsyncAPI, trivial handler, local store, workers autoscaling 1..{args.max_workers}, 2 cores")
    print(f"submit rate (POST, stored and acknowledged): {submit_rate:.1f} workloads/s")
    print(f"end to end (submit -> all completed):        {throughput:.1f} workloads/s")
    print(
        f"submit -> completed, one at a time: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"p90 {latencies[int(0.9 * len(latencies)) - 1] * 1000:.0f} ms"
    )
    baseline = statistics.median(realtime) * 1000
    print(f"baseline, same handler as a RealtimeAPI: median {baseline:.0f} ms per request")


if __name__ == "__main__":
    main()
