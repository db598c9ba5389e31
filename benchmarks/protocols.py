"""The protocols against the handler path: one SavedModel, three ways in, same run.

TF Serving's ``half_plus_two`` (``x: float32[None]`` -> ``y = 0.5 x + 2``, built here with
tensorflow-cpu) served by one TensorFlow API on the fast path, one replica, and asked for the
same three values three ways:

* ``handler``: ``POST /<api>`` to the user's ``handle_post``, which calls
  ``tensorflow_client.predict(payload, "half_plus_two")`` (Cortex's way);
* ``v2``: ``POST /<api>/v2/models/half_plus_two/infer`` (Open Inference Protocol, JSON);
* ``v1``: ``POST /<api>/v1/models/half_plus_two:predict`` (TF Serving's REST API, rows).

Rounds alternate the three (``--rounds`` x ``--seconds`` each, ``wrk -t2 -c<--connections>``),
so drift hits all of them. Figures: requests per second, p50, p99, non-2xx, and each protocol
against the handler path (the goal: >= 0.95).

    .venv/bin/python benchmarks/protocols.py [--seconds 10] [--rounds 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (this folder holds a tensorflow.py of its own: it must not stand for TensorFlow)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from benchmarks.overhead import Result, wait_ok, wrk  # noqa: E402
from tests.support.s3_server import free_port  # noqa: E402
from tests.support.tf_models import save_half_plus_two  # noqa: E402

HANDLER = """
class Handler:
    def __init__(self, tensorflow_client):
        self.client = tensorflow_client

    def handle_post(self, payload):
        return self.client.predict(payload, "half_plus_two")
"""
CASES = {
    "handler": ("", '{"x": [1.0, 2.0, 3.0]}'),
    "v2": (
        "/v2/models/half_plus_two/infer",
        '{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}',
    ),
    "v1": ("/v1/models/half_plus_two:predict", '{"instances": [1.0, 2.0, 3.0]}'),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("needs wrk (apt-get install wrk)")

    from cortex_ray.sdk import run_api, shutdown, start
    from cortex_ray.spec import parse_spec

    results = {name: Result() for name in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "handler.py").write_text(HANDLER)
        save_half_plus_two(project / "models" / "half_plus_two" / "1")
        base = start(port=free_port(), num_cpus=4, log_to_driver=False)
        try:
            spec = {
                "name": "protocols",
                "kind": "RealtimeAPI",
                "handler": {"type": "tensorflow", "path": "handler.py", "models": {"dir": "models"}},
            }
            run_api(parse_spec([spec], base_dir=project).apis[0], ray_actor_options={"num_cpus": 0.5})
            urls = {name: (f"{base}/protocols{path}", body) for name, (path, body) in CASES.items()}
            for url, body in urls.values():
                wait_ok(url, body)
                wrk(url, body, 2, 2, args.connections)  # (warm: the model loaded, the paces measured)
            for _ in range(args.rounds):
                for name, (url, body) in urls.items():
                    results[name].add(wrk(url, body, args.seconds, 2, args.connections))
        finally:
            shutdown()
    print(
        f"\nhalf_plus_two SavedModel, one replica on the fast path; wrk -t2 -c{args.connections}, "
        f"{args.rounds} rounds x {args.seconds:g}s, alternating"
    )
    print(
        f"{'way in':<10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'errors':>8}{'x handler':>11}"
    )
    base_rps = statistics.mean(results["handler"].rps)
    for name, r in results.items():
        rps = statistics.mean(r.rps)
        p50, p99 = statistics.median(r.p50 or [0]), statistics.median(r.p99 or [0])
        print(
            f"{name:<10}{rps:>10.0f}{p50:>9.2f}{p99:>9.2f}{r.non_2xx:>9}{r.errors:>8}{rps / base_rps:>11.2f}"
        )


if __name__ == "__main__":
    main()
