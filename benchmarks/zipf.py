"""Many models, few slots: cortex-ray's routing by model against Ray Serve's multiplexing.

40 models of ``--model-mb`` MB each, a ``load_model`` that takes ``--load-ms`` (plus reading
the file), requests spread over the models by a Zipf law (``--zipf``), two replicas holding
at most 4 models each in memory, ``--clients`` concurrent connections from ``wrk`` (its Lua
script draws each request's model).

* baseline: a bare Ray Serve deployment, ``@serve.multiplexed(max_num_models_per_replica=4)``,
  the model named in the ``serve_multiplexed_model_id`` header, on Serve's proxy;
* cortex-ray: a Cortex Python handler on the fast path, the model named only in the query
  string (``networking.model_routing: {query: model}``), ``cache_size: 4``.

Same run, one after the other, on the same Ray. Figures: requests per second, p50 and p99,
and per replica the model loads and the hit rate (requests that found their model loaded).

    .venv/bin/python benchmarks/zipf.py [--seconds 60] [--clients 8]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.s3_server import free_port  # noqa: E402

MODELS = 40

HANDLER = """
import os
import time

class Handler:
    def __init__(self, config, model_client):
        self.client = model_client
        self.load_seconds = config["load_seconds"]

    def load_model(self, model_path):
        data = open(os.path.join(model_path, "weights.bin"), "rb").read()
        time.sleep(self.load_seconds)
        return len(data)

    def handle_post(self, query_params):
        return {"model": query_params["model"], "size": self.client.get_model(query_params["model"])}
"""

BARE = """
import asyncio
import os
from ray import serve
from starlette.requests import Request

STORE = {store!r}
LOAD_SECONDS = {load_seconds!r}


@serve.deployment(num_replicas=2, ray_actor_options={{"num_cpus": 0.5}}, max_ongoing_requests=64)
class Multiplexed:
    def __init__(self):
        self.loads = 0
        self.requests = 0

    @serve.multiplexed(max_num_models_per_replica={per_replica})
    async def get_model(self, model_id: str):
        self.loads += 1
        data = open(os.path.join(STORE, model_id, "weights.bin"), "rb").read()
        await asyncio.sleep(LOAD_SECONDS)
        return len(data)

    async def __call__(self, request: Request) -> dict:
        self.requests += 1
        model_id = serve.get_multiplexed_model_id()
        return {{"model": model_id, "size": await self.get_model(model_id)}}

    def stats(self) -> dict:
        return {{"loads": self.loads, "requests": self.requests}}


app = Multiplexed.bind()
"""

LUA = """
local n, s = {models}, {zipf}
local cdf, total = {{}}, 0
for i = 1, n do total = total + 1 / (i ^ s); cdf[i] = total end
for i = 1, n do cdf[i] = cdf[i] / total end
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", 1000 + threads)
end
function init(args)
  math.randomseed(seed)  -- each thread its own sequence (the same ones in every run)
end
local function pick()
  local r = math.random()
  for i = 1, n do if r <= cdf[i] then return i - 1 end end
  return n - 1
end
request = function()
  local m = "m" .. pick()
  {request}
end
"""


def wrk(url: str, lua: str, seconds: float, clients: int) -> dict[str, float]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(lua)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{clients}",
                f"-d{seconds:g}s",
                "--timeout",
                "30s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
        ).stdout
    finally:
        script.unlink()
    result: dict[str, float] = {}
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(match.group(1)) if match else 0.0
    match = re.search(r"(\d+) requests in", out)
    result["requests"] = float(match.group(1)) if match else 0.0
    for pct in ("50", "99"):
        found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\b", out, re.M)
        if found:
            result[f"p{pct}"] = float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]
    non = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["non_2xx"] = float(non.group(1)) if non else 0.0
    return result


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--load-ms", type=float, default=150.0)
    parser.add_argument("--model-mb", type=float, default=4.0)
    args = parser.parse_args()

    import importlib.util

    from ray import serve

    from cortex_ray import sdk
    from cortex_ray.spec import parse_spec

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        store = project / "models"
        blob = bytes(int(args.model_mb * 1024 * 1024))
        for i in range(MODELS):
            (store / f"m{i}").mkdir(parents=True)
            (store / f"m{i}" / "weights.bin").write_bytes(blob)
        (project / "handler.py").write_text(textwrap.dedent(HANDLER))
        (project / "bare.py").write_text(
            textwrap.dedent(BARE.format(store=str(store), load_seconds=args.load_ms / 1000))
        )
        fast_port, proxy_port = free_port(), free_port()
        sdk.start(port=fast_port, ingress="fast", proxy_port=proxy_port, num_cpus=4, log_to_driver=False)
        try:
            module = importlib.util.spec_from_file_location("bare", project / "bare.py")
            assert module is not None and module.loader is not None
            bare = importlib.util.module_from_spec(module)
            module.loader.exec_module(bare)
            serve.run(bare.app, name="multiplexed", route_prefix="/multiplexed")
            spec = parse_spec(
                [
                    {
                        "name": "zipf",
                        "kind": "RealtimeAPI",
                        "handler": {
                            "type": "python",
                            "path": "handler.py",
                            "config": {"load_seconds": args.load_ms / 1000},
                            "multi_model_reloading": {"dir": "models", "cache_size": 4, "disk_cache_size": 8},
                        },
                        "autoscaling": {"min_replicas": 2, "max_replicas": 2, "max_replica_concurrency": 64},
                        "networking": {"model_routing": {"query": "model"}},
                    }
                ],
                base_dir=project,
            )
            sdk.run_api(spec.apis[0], ray_actor_options={"num_cpus": 0.5})
            time.sleep(2)
            base_lua = LUA.format(
                models=MODELS,
                zipf=args.zipf,
                request='return wrk.format("POST", "/multiplexed", {["serve_multiplexed_model_id"] = m, '
                '["Content-Type"] = "application/json"}, "{}")',
            )
            ours_lua = LUA.format(
                models=MODELS,
                zipf=args.zipf,
                request='return wrk.format("POST", "/zipf?model=" .. m, '
                '{["Content-Type"] = "application/json"}, "{}")',
            )
            baseline = wrk(f"http://127.0.0.1:{proxy_port}/multiplexed", base_lua, args.seconds, args.clients)
            base_stats = (
                serve.get_deployment_handle("Multiplexed", "multiplexed").broadcast("stats").results()
            )
            ours = wrk(f"http://127.0.0.1:{fast_port}/zipf", ours_lua, args.seconds, args.clients)
            infos = serve.get_deployment_handle("zipf", "zipf").broadcast("info").results()
        finally:
            sdk.shutdown()
    print(
        f"\n{MODELS} models x {args.model_mb:g} MB, load {args.load_ms:g} ms, Zipf s={args.zipf}, "
        f"2 replicas x 4 in memory, wrk -c{args.clients} for {args.seconds:g}s each"
    )
    print(
        f"{'target':<44}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>10}{'non-2xx':>9}  loads per replica (hit rate)"
    )
    base_loads = [s["loads"] for s in base_stats]
    base_hits = sum(s["requests"] - s["loads"] for s in base_stats) / max(
        1, sum(s["requests"] for s in base_stats)
    )
    our_loads = [i["cache"]["loads"] for i in infos]
    our_hits = 1 - sum(our_loads) / max(1.0, ours["requests"])
    rows = [
        ("Serve multiplexed, header, Serve's proxy", baseline, base_loads, base_hits),
        ("cortex-ray, query string only, fast path", ours, our_loads, our_hits),
    ]
    for name, r, loads, hits in rows:
        print(
            f"{name:<44}{r['rps']:>9.1f}{r.get('p50', 0):>9.1f}{r.get('p99', 0):>10.1f}{r['non_2xx']:>9.0f}  "
            f"{' / '.join(str(x) for x in loads)} ({hits:.1%})"
        )
    print(
        f"\ncortex-ray / baseline: throughput x{ours['rps'] / max(baseline['rps'], 1e-9):.2f}, "
        f"p99 x{ours.get('p99', 0) / max(baseline.get('p99', 1e-9), 1e-9):.2f}"
    )


if __name__ == "__main__":
    main()
