"""A long soak of mixed traffic on the fast path: p99, failures and memory, minute by minute.

One local Ray (the product's ``sdk.start``, fast ingress), one Python API with 8 models in a local
folder, 2 replicas holding at most 3 models each in memory (so models keep being evicted and
loaded again), the model named in the query string (routed by it). ``wrk`` (``-c8``, its Lua
script drawing each request's model by a Zipf law, s = 1.1) runs one minute at a time for
``--minutes`` minutes, while a new version of one model (in turn) is written every ``--swap-every``
seconds and the version before the last two is removed. After each minute: requests per second,
p50 and p99, non-2xx answers and socket errors, and the resident memory of every process of the
serving path (each replica, the reloader, the ingress actor and its HAProxy, Serve's controller,
the raylet and the GCS). Each model holds 4 MiB of numpy weights, so a leak of models shows.

    .venv/bin/python benchmarks/soak.py [--minutes 60] [--swap-every 30] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.zipf import wrk  # noqa: E402
from tests.support.s3_server import free_port  # noqa: E402

MODELS = 8

HANDLER = """
import json, os
import numpy as np

class Handler:
    def __init__(self, config, model_client):
        self.client = model_client

    def load_model(self, model_path):
        with open(os.path.join(model_path, "model.json")) as f:
            content = json.load(f)["content"]
        return content, np.full(2**19, 1.0)  # 4 MiB of weights

    def handle_post(self, query_params):
        content, weights = self.client.get_model(query_params["model"])
        return {"content": content, "w": float(weights[0])}
"""

LUA = """
local n, s = %d, 1.1
local cdf, total = {}, 0
for i = 1, n do total = total + 1 / (i ^ s); cdf[i] = total end
for i = 1, n do cdf[i] = cdf[i] / total end
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", 7000 + threads)
end
function init(args)
  math.randomseed(seed)
end
local function pick()
  local r = math.random()
  for i = 1, n do if r <= cdf[i] then return i - 1 end end
  return n - 1
end
request = function()
  return wrk.format("POST", wrk.path .. "?model=m" .. pick(), {["Content-Type"] = "application/json"}, "{}")
end
"""

GROUPS = {
    "replica": "ServeReplica:soak:",
    "reloader": "ModelReloader",
    "ingress": "ray::Registry",
    "haproxy": "haproxy",
    "controller": "ServeController",
    "raylet": "/raylet",
    "gcs": "gcs_server",
}
"""Process kind -> a string its command line holds."""


def write_version(root: Path, model: str, version: int) -> None:
    staging = root / f".{model}-{version}.tmp"
    staging.mkdir(parents=True)
    (staging / "model.json").write_text(json.dumps({"content": f"{model}-v{version}"}))
    (root / model).mkdir(exist_ok=True)
    staging.rename(root / model / str(version))


def rss_by_process() -> dict[str, int]:
    """Resident memory (KiB) of each process of the serving path, named kind#n (n by pid)."""
    import psutil

    found: dict[str, list[tuple[int, int]]] = {kind: [] for kind in GROUPS}
    for proc in psutil.process_iter(["pid", "cmdline", "memory_info"]):
        line = " ".join(proc.info["cmdline"] or [])
        for kind, marker in GROUPS.items():
            if marker in line and proc.info["memory_info"] is not None:
                found[kind].append((proc.info["pid"], proc.info["memory_info"].rss // 1024))
                break
    out: dict[str, int] = {}
    for kind, procs in found.items():
        for i, (_, rss) in enumerate(sorted(procs)):
            out[f"{kind}#{i + 1}" if len(procs) > 1 else kind] = rss
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--swap-every", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    from cortex_ray.sdk import run_api, shutdown, start
    from cortex_ray.spec import parse_spec

    with tempfile.TemporaryDirectory(prefix="cortex-ray-soak-") as tmp:
        work = Path(tmp)
        models = work / "models"
        versions = {f"m{i}": [1] for i in range(MODELS)}
        for name in versions:
            write_version(models, name, 1)
        (work / "handler.py").write_text(textwrap.dedent(HANDLER))
        base = start(port=free_port(), num_cpus=4, log_to_driver=False)
        spec = {
            "name": "soak",
            "kind": "RealtimeAPI",
            "handler": {
                "type": "python",
                "path": "handler.py",
                "multi_model_reloading": {
                    "dir": str(models),
                    "cache_size": 3,
                    "disk_cache_size": MODELS * 3,
                    "poll_interval": 1.0,
                },
            },
            "networking": {"model_routing": {"query": "model"}},
            "autoscaling": {"min_replicas": 2, "max_replicas": 2},
        }
        run_api(parse_spec([spec], base_dir=work).apis[0], ray_actor_options={"num_cpus": 0.2})
        stop = threading.Event()
        swaps = [0]

        def swapper() -> None:
            turn = 0
            while not stop.wait(args.swap_every):
                name = f"m{turn % MODELS}"
                turn += 1
                kept = versions[name]
                kept.append(kept[-1] + 1)
                write_version(models, name, kept[-1])
                if len(kept) > 2:
                    shutil.rmtree(models / name / str(kept.pop(0)), ignore_errors=True)
                swaps[0] += 1

        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        rows: list[dict[str, Any]] = []
        try:
            url = f"{base}/soak"
            head = f"{'min':>3} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8} {'swaps':>6}"
            print(f"{head}  RSS MiB by process")
            for minute in range(1, args.minutes + 1):
                result = wrk(url, LUA % MODELS, 60, args.clients)
                result["minute"], result["swaps"], result["rss"] = minute, swaps[0], rss_by_process()
                rows.append(result)
                rss = " ".join(f"{k}={v // 1024}" for k, v in sorted(result["rss"].items()))
                print(
                    f"{minute:>3} {result['rps']:>8.0f} {result.get('p50', 0):>7.2f} "
                    f"{result.get('p99', 0):>7.2f} {int(result['non_2xx']):>8} {swaps[0]:>6}  {rss}",
                    flush=True,
                )
        finally:
            stop.set()
            shutdown()
    summary(rows)


def summary(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    total = sum(r["requests"] for r in rows)
    failed = sum(r["non_2xx"] for r in rows)
    p99s = [r.get("p99", 0.0) for r in rows]
    print(
        f"\n{len(rows)} minutes, {total:.0f} requests, {failed:.0f} non-2xx, "
        f"{rows[-1]['swaps']} versions written; "
        f"p99 by minute: median {sorted(p99s)[len(p99s) // 2]:.2f} ms, max {max(p99s):.2f} ms"
    )
    first = rows[min(1, len(rows) - 1)]["rss"]  # (after the first minute: warm)
    last = rows[-1]["rss"]
    print("RSS, from the end of minute 2 to the end:")
    for name in sorted(set(first) | set(last)):
        a, b = first.get(name), last.get(name)
        if a and b:
            print(f"  {name:<14} {a // 1024:>6} MiB -> {b // 1024:>6} MiB ({(b - a) / a:+.1%})")
        else:
            before, after = "-" if a is None else a // 1024, "-" if b is None else b // 1024
            print(f"  {name:<14} {before} -> {after} (process changed)")


if __name__ == "__main__":
    main()
