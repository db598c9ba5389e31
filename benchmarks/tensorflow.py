"""The TensorFlow handler: serving overhead, and memory across load/unload cycles.

1. Requests per second for one small SavedModel through cortex-ray over HTTP
   (``tensorflow_client.predict`` in a handler), against calling the same
   SavedModel's signature directly in a plain Python loop, in the same run.
2. The resident memory of a process that loads and unloads a SavedModel 20 times
   through cortex-ray's :class:`~cortex_ray.tensorflow.SavedModel` (as the cache does:
   drop every reference, ``gc.collect()``), to show what TensorFlow gives back.

    .venv/bin/python benchmarks/tensorflow.py [--seconds 10] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# this file is named tensorflow.py: keep its own folder off the path so that `import tensorflow`
# finds TensorFlow, not this script
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

HANDLER = """
class Handler:
    def __init__(self, tensorflow_client):
        self.client = tensorflow_client

    def handle_post(self, payload):
        return self.client.predict(payload, "clf")
"""

X = {"x": [[5.1, 3.5, 1.4, 0.2]]}


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def direct_loop(path: Path, seconds: float) -> float:
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    x = tf.constant(X["x"], dtype=tf.float32)
    for _ in range(50):
        fn(x=x)
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        fn(x=x)
        count += 1
    return count / seconds


def memory_cycles(path: Path, cycles: int) -> list[float]:
    from cortex_ray.tensorflow import SavedModel

    readings = [rss_mib()]
    for i in range(cycles):
        model = SavedModel(str(path), "clf", i, None)
        model.predict(X)
        del model
        gc.collect()
        readings.append(rss_mib())
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()

    from benchmarks.overhead import load, percentile
    from tests.support import tf_models

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        tf_models.save_classifier(project / "store" / "clf" / "1")
        model_path = project / "store" / "clf" / "1"

        print(f"memory: {args.cycles} load/unload cycles of one SavedModel", flush=True)
        import tensorflow  # noqa: F401 - count TensorFlow's own import apart from the cycles

        baseline = rss_mib()
        readings = memory_cycles(model_path, args.cycles)
        print("direct loop", flush=True)
        direct = direct_loop(model_path, args.seconds)

        from cortex_ray.sdk import run_api, shutdown, start
        from cortex_ray.spec import parse_spec
        from tests.support.s3_server import free_port

        (project / "handler.py").write_text(textwrap.dedent(HANDLER))
        base = start(port=free_port(), num_cpus=4, log_to_driver=False)
        api = parse_spec(
            [
                {
                    "name": "tf",
                    "kind": "RealtimeAPI",
                    "handler": {
                        "type": "tensorflow",
                        "path": "handler.py",
                        "threads_per_process": 4,
                        "models": {"dir": "store"},
                    },
                }
            ],
            base_dir=project,
        ).apis[0]
        run_api(api)
        url = f"{base}/tf"
        asyncio.run(load(url, 2.0, args.concurrency, body=X, expect=None))
        count, latencies, errors = asyncio.run(load(url, args.seconds, args.concurrency, body=X, expect=None))
        shutdown()

    served = count / args.seconds
    print(f"\none SavedModel (4 float inputs -> 3 scores), {args.seconds:g}s each, 2 cores")
    print(f"{'path':<40}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'direct signature call, Python loop':<40}{direct:>10.1f}{'':>10}{'':>10}")
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    label = f"cortex-ray over HTTP ({args.concurrency} connections)"
    print(f"{label:<40}{served:>10.1f}{p50:>10.1f}{p99:>10.1f}")
    print(f"served / direct: x{served / direct:.3f}   (errors: {errors})")
    growth = readings[-1] - readings[0]
    print(
        f"\nRSS after importing TensorFlow {baseline:.0f} MiB; before the cycles {readings[0]:.0f} MiB, "
        f"after cycle 1 {readings[1]:.0f} MiB, after {args.cycles} cycles {readings[-1]:.0f} MiB "
        f"(growth {growth:+.0f} MiB, {growth / args.cycles:+.1f} MiB/cycle; "
        f"median step {statistics.median(b - a for a, b in itertools.pairwise(readings)):+.1f} MiB)"
    )


if __name__ == "__main__":
    main()
