"""The AsyncAPI store's periodic passes: what one pass reads, with many finished workloads.

The dispatcher looks for unfinished workloads every 30 s and expires finished ones
regularly. With ``--finished`` workloads retained (7 days of results) and ``--queued``
waiting, this times one "find the unfinished" pass and one expiry pass with nothing due,
and counts the objects they list and read, on a local folder. Baseline in the same run:
listing the whole store once. ``--against`` another checkout (e.g. ``git worktree add
/tmp/before <commit>``) measures it too, in the same run.

    .venv/bin/python benchmarks/workload_store.py [--finished 5000] [--queued 50] [--against /tmp/before]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _child(finished: int, queued: int) -> dict[str, Any]:
    from cortex_ray.asyncapi.store import WorkloadStore, new_workload_id
    from cortex_ray.storage import LocalStorage

    class Counting(LocalStorage):
        listed = 0
        reads = 0

        def list(self, prefix: str = "") -> Any:
            found = super().list(prefix)
            type(self).listed += len(found)
            return found

        def read(self, key: str) -> bytes:
            type(self).reads += 1
            return super().read(key)

    with tempfile.TemporaryDirectory() as tmp:
        store = WorkloadStore(f"file://{tmp}/")
        store._storage = Counting(tmp)
        new_api = hasattr(store, "finish")
        for i in range(finished + queued):
            wid = new_workload_id()[:-6] + f"{i:06x}"
            store.submit(wid, b"{}", "application/json")
            if i < finished:
                if new_api:
                    store.finish(wid, "completed", result={})
                else:
                    store.complete(wid, {})
        started = time.perf_counter()
        LocalStorage(tmp).list()
        baseline = time.perf_counter() - started

        def measure(step: Any) -> dict[str, Any]:
            Counting.listed = Counting.reads = 0
            started = time.perf_counter()
            result = step()
            return {
                "seconds": time.perf_counter() - started,
                "listed": Counting.listed,
                "reads": Counting.reads,
                "result": result if isinstance(result, int) else len(result),
            }

        scan = measure(store.unfinished)
        expire = measure(store.expire if new_api else lambda: store.expire(7 * 86400))
        return {"baseline_whole_listing_s": baseline, "scan": scan, "expire": expire}


def run(checkout: Path, finished: int, queued: int) -> Any:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(finished), str(queued)],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{checkout}: {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print("RESULT " + json.dumps(_child(int(sys.argv[2]), int(sys.argv[3]))))
        return
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--finished", type=int, default=5000)
    parser.add_argument("--queued", type=int, default=50)
    parser.add_argument("--against", type=Path)
    args = parser.parse_args()
    checkouts = {"this": ROOT, **({"against": args.against.resolve()} if args.against else {})}
    print(f"{args.finished} finished workloads retained, {args.queued} queued, local folder")
    print(f"{'checkout':<9}{'pass':<8}{'seconds':>9}{'listed':>9}{'reads':>8}{'x whole listing':>17}")
    for label, path in checkouts.items():
        r = run(path, args.finished, args.queued)
        for step in ("scan", "expire"):
            s = r[step]
            ratio = s["seconds"] / r["baseline_whole_listing_s"]
            print(f"{label:<9}{step:<8}{s['seconds']:>9.4f}{s['listed']:>9}{s['reads']:>8}{ratio:>17.2f}")


if __name__ == "__main__":
    main()
