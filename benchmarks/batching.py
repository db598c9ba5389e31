"""Server-side batching against the same handler unbatched, same run, same Ray.

The handler's "model" costs a fixed ``--batch-ms`` per call plus ``--item-ms`` per payload
(``time.sleep``, as a GPU or a vectorised CPU model behaves: the call's cost is mostly per
batch). Two APIs on the fast path, one replica each with ``threads_per_process: 1``:

* unbatched: ``handle_post(payload)`` gets one payload per call;
* batched: ``server_side_batching: {max_batch_size: --max-batch, batch_interval: --interval}``,
  ``handle_post(payload)`` gets a list and returns a list.

``wrk`` with ``--clients`` connections for ``--seconds`` each. Figures: requests per second, p50,
p99, and the mean batch size the batched handler saw; the ratio batched / unbatched.

    .venv/bin/python benchmarks/batching.py [--seconds 20] [--clients 16] [--max-batch 8]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.overhead import wait_ok, wrk  # noqa: E402
from tests.support.s3_server import free_port  # noqa: E402

HANDLER = """
import time

BATCH_S, ITEM_S = {batch_s}, {item_s}

class Handler:
    def __init__(self, config):
        self.batched = config.get("batched", False)
        self.sizes = []

    def handle_post(self, payload):
        items = payload if self.batched else [payload]
        self.sizes = [*self.sizes[-9999:], len(items)]
        time.sleep(BATCH_S + ITEM_S * len(items))
        out = [{{"y": 0.5 * p["x"] + 2}} for p in items]
        return out if self.batched else out[0]

    def handle_get(self):
        return {{"mean_batch": sum(self.sizes) / max(1, len(self.sizes)), "calls": len(self.sizes)}}
"""


def spec(name: str, batching: dict[str, Any] | None) -> dict[str, Any]:
    handler: dict[str, Any] = {
        "type": "python",
        "path": "handler.py",
        "config": {"batched": batching is not None},
        "threads_per_process": 1,
    }
    if batching is not None:
        handler["server_side_batching"] = batching
    return {"name": name, "kind": "RealtimeAPI", "handler": handler}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--interval", default="5ms")
    parser.add_argument("--batch-ms", type=float, default=10.0)
    parser.add_argument("--item-ms", type=float, default=0.5)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("needs wrk (apt-get install wrk)")

    import httpx

    from cortex_ray.sdk import delete, run_api, shutdown, start
    from cortex_ray.spec import parse_spec

    base = start(port=free_port(), num_cpus=4, log_to_driver=False)
    body = '{"x": 3}'
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "handler.py").write_text(
            textwrap.dedent(HANDLER.format(batch_s=args.batch_ms / 1000, item_s=args.item_ms / 1000))
        )
        cases = [
            ("unbatched", None),
            ("batched", {"max_batch_size": args.max_batch, "batch_interval": args.interval}),
        ]
        for name, batching in cases:
            api = parse_spec([spec(name, batching)], base_dir=project).apis[0]
            run_api(api, ray_actor_options={"num_cpus": 0.5})
            url = f"{base}/{name}"
            wait_ok(url, body)
            time.sleep(1)
            result = wrk(url, body, args.seconds, threads=2, connections=args.clients)
            seen = httpx.get(url, timeout=30).json()
            rows.append((name, result, seen["mean_batch"]))
            delete(name)
    shutdown()
    print(
        f"\nhandler: {args.batch_ms:g} ms per call + {args.item_ms:g} ms per payload; wrk -c{args.clients} "
        f"for {args.seconds:g}s each; batched: max_batch_size {args.max_batch}, "
        f"batch_interval {args.interval}"
    )
    print(f"{'case':<12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>9}{'mean batch':>12}")
    for name, r, mean in rows:
        print(f"{name:<12}{r.rps[0]:>10.1f}{r.p50[0]:>10.1f}{r.p99[0]:>10.1f}{r.non_2xx:>9}{mean:>12.2f}")
    (_, off, _), (_, on, _) = rows
    print(
        f"\nbatched / unbatched: throughput x{on.rps[0] / off.rps[0]:.2f}, p99 x{on.p99[0] / off.p99[0]:.2f}"
    )


if __name__ == "__main__":
    main()
