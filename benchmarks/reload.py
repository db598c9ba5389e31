"""Live reloading: time to serve a new version, and storage list requests per minute.

1. Swap latency: write version N+1 of a model into a local ``dir`` (the last file
   written is the moment measured from) while a client keeps asking for "latest";
   the latency is the time until the first answer served by N+1. Median and max
   over ``--swaps`` swaps, for the default poll interval (5 s), for 1 s, and with file
   events (``events: watch``, ``settle_time: 0.5``, ``poll_interval: 60``; and ``settle_time:
   0.2``, what the path costs beyond the settle time).
   The same on S3 (the moto test server, on 127.0.0.1, which also does SQS and the bucket's
   event notifications): ``poll_interval: 1s``, and ``events: {sqs: <queue>}`` (``settle_time:
   0.5``, ``poll_interval: 60``), the upload's last ``PutObject`` the moment measured from.
2. List requests per minute against the S3 test server, counted in the server's own access
   log, with 1 and with 4 replicas, and with events on (no change during the window: what the
   reconcile listing costs). The baseline is what Cortex 0.35 did: every replica listed S3
   every 10 s.

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
from collections.abc import Callable
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


def local_writer(store: Path) -> Callable[[int], None]:
    def write(version: int) -> None:
        folder = store / "m" / str(version)
        folder.mkdir(parents=True)
        (folder / "model.txt").write_text(f"v{version}")

    return write


def swaps(url: str, write: Callable[[int], None], count: int, spacing: float) -> list[float]:
    latencies = []
    rng = random.Random(7)
    with httpx.Client(timeout=30) as client:
        version = client.post(url, json={}).json()["version"]
        for _ in range(count):
            # write at a random moment of the poll cycle (else the writes lock onto its phase)
            time.sleep(rng.uniform(0, spacing))
            version += 1
            write(version)
            written = time.perf_counter()
            while client.post(url, json={}).json()["version"] != version:
                time.sleep(0.01)
            latencies.append(time.perf_counter() - written)
            print(f"  v{version}: {latencies[-1]:.2f}s", flush=True)
    return latencies


def events_queue(s3: Any, bucket: str) -> str:
    """An SQS queue receiving ``bucket``'s object events (on the test server); its URL."""
    sqs = s3.client("sqs")
    url: str = sqs.create_queue(QueueName=f"{bucket}-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.client().put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]
        },
    )
    return url


def s3_swaps(s3: Any, project: Path, base: str, count: int) -> dict[str, list[float]]:
    from cortex_ray.sdk import delete, run_api
    from cortex_ray.spec import parse_spec

    results = {}
    client = s3.client()
    for label, name, spacing in (("S3, poll_interval: 1s", "s3-1s", 1.0), ("S3, events: sqs", "s3-sqs", 1.0)):
        bucket = s3.create_bucket(name)
        s3.put_tree(bucket, "models", {"m/1/model.txt": "v1"})
        models: dict[str, Any] = {"dir": f"s3://{bucket}/models/", "poll_interval": 1}
        if name == "s3-sqs":
            models = {
                **models,
                "events": {"sqs": events_queue(s3, bucket)},
                "settle_time": 0.5,
                "poll_interval": 60,
            }
        api = parse_spec([spec(name, models, s3.env())], base_dir=project).apis[0]
        run_api(api, ray_actor_options={"num_cpus": 0.2})

        def write(version: int, bucket: str = bucket) -> None:
            client.put_object(Bucket=bucket, Key=f"models/m/{version}/model.txt", Body=f"v{version}".encode())

        print(f"{label}: {count} swaps", flush=True)
        results[label] = swaps(f"{base}/{name}", write, count, spacing)
        delete(name)
    return results


def list_rates(s3: Any, project: Path, window: float) -> dict[str, float]:
    from cortex_ray.sdk import delete, run_api
    from cortex_ray.spec import parse_spec

    bucket = s3.create_bucket("reload-bench")
    s3.put_tree(bucket, "models", {"m/1/model.txt": "v1"})
    queue = events_queue(s3, bucket)
    counts = {}
    cases: list[tuple[str, int, dict[str, Any]]] = [
        ("1 replica", 1, {}),
        ("4 replicas", 4, {}),
        ("4 replicas, events: sqs", 4, {"events": {"sqs": queue}, "poll_interval": 60}),
    ]
    for label, replicas, extra in cases:
        api = parse_spec(
            [spec("count", {"dir": f"s3://{bucket}/models/", **extra}, s3.env(), replicas)], base_dir=project
        ).apis[0]
        run_api(api, ray_actor_options={"num_cpus": 0.2})
        time.sleep(5)
        lines = s3.log_path.read_text(errors="replace").count(f"GET /{bucket}?list-type=2")
        time.sleep(window)
        after = s3.log_path.read_text(errors="replace").count(f"GET /{bucket}?list-type=2")
        counts[label] = (after - lines) * 60.0 / window
        print(f"{label}: {counts[label]:.1f} list requests/minute", flush=True)
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
            (  # what the path costs beyond settling: an upload that never pauses 0.2 s
                "events: watch, settle 0.2s",
                "swap-watch-fast",
                {"events": "watch", "settle_time": 0.2, "poll_interval": 60},
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
            results[label] = swaps(f"{base}/{name}", local_writer(store), args.swaps, spacing)
            delete(name)
        if not args.skip_s3:
            results.update(s3_swaps(s3, project, base, args.swaps))
        counts: dict[str, float] = {} if args.skip_s3 else list_rates(s3, project, args.window)
        shutdown()

    print("\nswap latency: last file written -> first answer from the new version")
    print(f"{'case':<28}{'median s':>10}{'max s':>10}{'n':>5}")
    for label, values in results.items():
        print(f"{label:<28}{statistics.median(values):>10.2f}{max(values):>10.2f}{len(values):>5}")
    if not counts:
        return
    print(
        "\nS3 list requests per minute (default poll 5s; events: a 60s reconcile), counted by the S3 server"
    )
    print(f"{'case':<26}{'cortex-ray':>12}{'Cortex 0.35 (10s per replica)':>32}")
    for label, rate in counts.items():
        replicas = int(label.split()[0])
        print(f"{label:<26}{rate:>12.1f}{replicas * 6:>32}")


if __name__ == "__main__":
    main()
