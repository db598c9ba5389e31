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

``--sizes mixed``: the 40 models' sizes drawn from a seeded lognormal law (median
``--median-mb``, sigma ``--sigma``, clipped to 1-200 MB), each ``load_model`` holding its
weights in memory (``numpy.fromfile``, every page written), and three targets one after the
other (each deleted after its run): the same baseline with ``max_num_models_per_replica=K``,
cortex-ray with ``cache_size: K`` (a count) and cortex-ray with ``cache_size: <B>Mi``, B = K x
the mean model size (the same memory, as a budget in bytes); ``disk_cache_size`` holds every
model in both. cortex-ray's ``/info`` is polled during its runs (``memory_used``, the peak).

    .venv/bin/python benchmarks/zipf.py [--seconds 60] [--clients 8] [--sizes uniform|mixed] [-k 4]
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.s3_server import free_port  # noqa: E402

MODELS = 40
MIB = 1024 * 1024

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

HANDLER_MIXED = """
import os
import time

import numpy


class Handler:
    def __init__(self, config, model_client):
        self.client = model_client
        self.load_seconds = config["load_seconds"]

    def load_model(self, model_path):
        # read into a new array: every page of it is written, so it is resident (no size stated:
        # the cache measures it)
        weights = numpy.fromfile(os.path.join(model_path, "weights.bin"), dtype=numpy.uint8)
        time.sleep(self.load_seconds)
        return weights

    def handle_post(self, query_params):
        weights = self.client.get_model(query_params["model"])
        return {"model": query_params["model"], "size": int(weights.size)}
"""

BARE_MIXED = """
import asyncio
import os

import numpy
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
        weights = numpy.fromfile(os.path.join(STORE, model_id, "weights.bin"), dtype=numpy.uint8)
        await asyncio.sleep(LOAD_SECONDS)
        return weights

    async def __call__(self, request: Request) -> dict:
        self.requests += 1
        model_id = serve.get_multiplexed_model_id()
        return {{"model": model_id, "size": int((await self.get_model(model_id)).size)}}

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


def wrk_polling(
    url: str, lua: str, seconds: float, clients: int, poll: Any, every: float
) -> tuple[dict[str, float], list[Any]]:
    """:func:`wrk` in a thread, calling ``poll()`` every ``every`` seconds while it runs (and once
    after it); its result and what the polls returned (a failed poll is skipped)."""
    result: dict[str, dict[str, float]] = {}
    runner = threading.Thread(target=lambda: result.update(r=wrk(url, lua, seconds, clients)), daemon=True)
    runner.start()
    polls: list[Any] = []
    while True:
        runner.join(every)
        try:
            polls.append(poll())
        except Exception as exc:  # a poll that fails must not end the run
            print(f"  (poll failed: {type(exc).__name__}: {exc})", file=sys.stderr)
        if not runner.is_alive():
            break
    return result.get("r", {"rps": 0.0, "requests": 0.0, "non_2xx": 0.0}), polls


def draw_sizes(seed: int, median_mb: float, sigma: float) -> list[int]:
    """The models' sizes in bytes: a seeded lognormal law, clipped to 1-200 MB (m0, the most
    requested model, gets the first draw; popularity and size are independent)."""
    import numpy

    rng = numpy.random.default_rng(seed)
    mb = numpy.clip(rng.lognormal(math.log(median_mb), sigma, MODELS), 1.0, 200.0)
    return [int(x * MIB) for x in mb]


def mib(amount: float) -> str:
    return f"{amount / MIB:.1f}Mi"


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--load-ms", type=float, default=150.0)
    parser.add_argument("--model-mb", type=float, default=4.0, help="every model's size (uniform)")
    parser.add_argument("--sizes", choices=("uniform", "mixed"), default="uniform")
    parser.add_argument("-k", type=int, default=4, help="models in memory per replica (the budget)")
    parser.add_argument("--median-mb", type=float, default=20.0, help="the law's median (mixed)")
    parser.add_argument("--sigma", type=float, default=0.8, help="the law's sigma, of log sizes (mixed)")
    parser.add_argument("--seed", type=int, default=0, help="the sizes' seed (mixed)")
    args = parser.parse_args()
    if args.sizes == "mixed":
        mixed(args)
    else:
        uniform(args)


def lua_for(target: str, args: argparse.Namespace) -> str:
    """wrk's script: each request's model drawn by the Zipf law, in the header (``multiplexed``)
    or in the query string (a cortex-ray endpoint)."""
    if target == "multiplexed":
        request = (
            'return wrk.format("POST", "/multiplexed", {["serve_multiplexed_model_id"] = m, '
            '["Content-Type"] = "application/json"}, "{}")'
        )
    else:
        request = (
            f'return wrk.format("POST", "/{target}?model=" .. m, '
            '{["Content-Type"] = "application/json"}, "{}")'
        )
    return LUA.format(models=MODELS, zipf=args.zipf, request=request)


def uniform(args: argparse.Namespace) -> None:
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
            textwrap.dedent(
                BARE.format(store=str(store), load_seconds=args.load_ms / 1000, per_replica=args.k)
            )
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
                            "multi_model_reloading": {
                                "dir": "models",
                                "cache_size": args.k,
                                "disk_cache_size": 2 * args.k,
                            },
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
        f"2 replicas x {args.k} in memory, wrk -c{args.clients} for {args.seconds:g}s each"
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


def cortex_api(
    name: str, args: argparse.Namespace, project: Path, cache_size: int | str, disk_cache_size: int | str
) -> Any:
    """The API a cortex-ray run deploys: the uniform run's, with these cache budgets."""
    from cortex_ray.spec import parse_spec

    return parse_spec(
        [
            {
                "name": name,
                "kind": "RealtimeAPI",
                "handler": {
                    "type": "python",
                    "path": "handler.py",
                    "config": {"load_seconds": args.load_ms / 1000},
                    "multi_model_reloading": {
                        "dir": "models",
                        "cache_size": cache_size,
                        "disk_cache_size": disk_cache_size,
                    },
                },
                "autoscaling": {"min_replicas": 2, "max_replicas": 2, "max_replica_concurrency": 64},
                "networking": {"model_routing": {"query": "model"}},
            }
        ],
        base_dir=project,
    ).apis[0]


def memory_peaks(polls: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """From the polls of every replica's ``/info``: per replica the peak of ``memory_used`` (in the
    budget's unit) and of ``memory_bytes`` (the sizes of the models in memory), and how many polls
    saw a replica above its budget."""
    used: dict[str, int] = {}
    held: dict[str, int] = {}
    over = 0
    unit, limit = "versions", 0
    for infos in polls:
        for n, info in enumerate(infos):
            cache = info["cache"]
            replica = str(info.get("replica", {}).get("replica_id") or n)
            unit, limit = cache["memory_unit"], cache["memory_limit"]
            used[replica] = max(used.get(replica, 0), cache["memory_used"])
            held[replica] = max(held.get(replica, 0), cache["memory_bytes"])
            over += cache["memory_used"] > limit
    return {
        "used": list(used.values()),
        "held": list(held.values()),
        "unit": unit,
        "limit": limit,
        "over": over,
    }


def size_sources(infos: list[dict[str, Any]]) -> Counter[str]:
    """How the sizes of the versions in memory at the end were found (measured, estimated...)."""
    found: Counter[str] = Counter()
    for info in infos:
        for model in info["model_metadata"].values():
            for version in model["details"].values():
                if version.get("in_memory"):
                    found[version.get("size_source") or "?"] += 1
    return found


def mixed(args: argparse.Namespace) -> None:
    """Mixed sizes: Serve's multiplexing with K models, cortex-ray with ``cache_size: K`` and with
    ``cache_size: <K x mean>Mi``, one after the other on the same Ray."""
    import importlib.util

    from ray import serve

    from cortex_ray import sdk

    k = args.k
    sizes = draw_sizes(args.seed, args.median_mb, args.sigma)
    mean = statistics.mean(sizes)
    budget_mi = round(k * mean / MIB)  # B = K x the mean model size
    disk_mi = math.ceil(sum(sizes) / MIB) + MODELS  # every model's files, and a margin
    too_big = [f"m{i}" for i, size in enumerate(sizes) if size > budget_mi * MIB]
    poll_every = min(5.0, max(2.0, args.seconds / 10))
    results: dict[str, dict[str, Any]] = {}
    fast_port, proxy_port = free_port(), free_port()

    def cortex_run(project: Path, name: str, cache_size: int | str, disk_cache_size: int | str) -> None:
        api = cortex_api(name, args, project, cache_size, disk_cache_size)
        sdk.run_api(api, ray_actor_options={"num_cpus": 0.5})
        time.sleep(2)
        handle = serve.get_deployment_handle(name, name)
        r, polls = wrk_polling(
            f"http://127.0.0.1:{fast_port}/{name}",
            lua_for(name, args),
            args.seconds,
            args.clients,
            lambda: handle.broadcast("info").results(),
            poll_every,
        )
        infos = handle.broadcast("info").results()
        loads = [i["cache"]["loads"] for i in infos]
        results[name] = {
            "r": r,
            "loads": loads,
            "hits": 1 - sum(loads) / max(1.0, r["requests"]),
            "memory": memory_peaks([*polls, infos]),
            "sources": size_sources(infos),
            "polls": len(polls) + 1,
        }
        sdk.delete(name)

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        store = project / "models"
        for i, size in enumerate(sizes):
            (store / f"m{i}").mkdir(parents=True)
            with open(store / f"m{i}" / "weights.bin", "wb") as f:
                for start in range(0, size, 16 * MIB):
                    f.write(bytes(min(16 * MIB, size - start)))
        (project / "handler.py").write_text(textwrap.dedent(HANDLER_MIXED))
        (project / "bare.py").write_text(
            textwrap.dedent(
                BARE_MIXED.format(store=str(store), load_seconds=args.load_ms / 1000, per_replica=k)
            )
        )
        sdk.start(port=fast_port, ingress="fast", proxy_port=proxy_port, num_cpus=4, log_to_driver=False)
        try:
            module = importlib.util.spec_from_file_location("bare", project / "bare.py")
            assert module is not None and module.loader is not None
            bare = importlib.util.module_from_spec(module)
            module.loader.exec_module(bare)
            serve.run(bare.app, name="multiplexed", route_prefix="/multiplexed")
            time.sleep(2)
            baseline = wrk(
                f"http://127.0.0.1:{proxy_port}/multiplexed",
                lua_for("multiplexed", args),
                args.seconds,
                args.clients,
            )
            base_stats = (
                serve.get_deployment_handle("Multiplexed", "multiplexed").broadcast("stats").results()
            )
            serve.delete("multiplexed")
            cortex_run(project, "zipf-count", k, MODELS)
            cortex_run(project, "zipf-bytes", f"{budget_mi}Mi", f"{disk_mi}Mi")
        finally:
            sdk.shutdown()

    print(
        f"\n{MODELS} models of mixed sizes (lognormal, median {args.median_mb:g} MB, sigma {args.sigma:g}, "
        f"seed {args.seed}, clipped to 1-200 MB): total {mib(sum(sizes))}, median "
        f"{mib(statistics.median(sizes))}, max {mib(max(sizes))}, mean {mib(mean)}; the 8 most requested "
        f"(m0..m7): {', '.join(f'{s / MIB:.0f}' for s in sizes[:8])} Mi"
    )
    print(
        f"load {args.load_ms:g} ms + numpy.fromfile of the weights, Zipf s={args.zipf}, 2 replicas, "
        f"wrk -c{args.clients} for {args.seconds:g}s each; memory per replica: {k} models, or "
        f"B = {k} x mean = {budget_mi}Mi; disk_cache_size {MODELS} / {disk_mi}Mi (every model)"
    )
    if too_big:
        print(f"models bigger than B (they cannot load in the bytes run): {', '.join(too_big)}")
    print(
        f"{'target':<44}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>10}{'non-2xx':>9}  loads per replica (hit rate)"
        "  peak memory_used per replica [models' bytes]"
    )
    base_loads = [s["loads"] for s in base_stats]
    base_hits = sum(s["requests"] - s["loads"] for s in base_stats) / max(
        1, sum(s["requests"] for s in base_stats)
    )
    by_count, by_bytes = results["zipf-count"], results["zipf-bytes"]
    rows: list[tuple[str, dict[str, float], list[Any], float, dict[str, Any] | None]] = [
        (f"Serve multiplexed, max {k} models per replica", baseline, base_loads, base_hits, None),
        (
            f"cortex-ray, cache_size: {k}",
            by_count["r"],
            by_count["loads"],
            by_count["hits"],
            by_count["memory"],
        ),
        (
            f"cortex-ray, cache_size: {budget_mi}Mi",
            by_bytes["r"],
            by_bytes["loads"],
            by_bytes["hits"],
            by_bytes["memory"],
        ),
    ]
    for name, r, loads, hits, memory in rows:
        peaks = ""
        if memory is not None:
            if memory["unit"] == "bytes":
                used = " / ".join(mib(x) for x in memory["used"])
                of = mib(memory["limit"])
            else:
                used = " / ".join(str(x) for x in memory["used"])
                of = f"{memory['limit']} versions"
            peaks = f"  {used} of {of} [{' / '.join(mib(x) for x in memory['held'])}]"
        print(
            f"{name:<44}{r['rps']:>9.1f}{r.get('p50', 0):>9.1f}{r.get('p99', 0):>10.1f}{r['non_2xx']:>9.0f}  "
            f"{' / '.join(str(x) for x in loads)} ({hits:.1%}){peaks}"
        )
    for name, run in (("count", by_count), ("bytes", by_bytes)):
        sources = ", ".join(f"{n} {source}" for source, n in sorted(run["sources"].items()))
        print(
            f"cortex-ray {name}: {run['polls']} polls of /info, {run['memory']['over']} saw a replica above "
            f"its budget; sizes of the versions in memory at the end: {sources or 'none'}"
        )

    def ratios(a: dict[str, float], b: dict[str, float], hits_a: float, hits_b: float) -> str:
        return (
            f"throughput x{a['rps'] / max(b['rps'], 1e-9):.2f}, "
            f"p99 x{a.get('p99', 0) / max(b.get('p99', 1e-9), 1e-9):.2f}, "
            f"hit rate x{hits_a / max(hits_b, 1e-9):.2f} ({hits_a:.1%} vs {hits_b:.1%})"
        )

    print(f"\nbytes / count:    {ratios(by_bytes['r'], by_count['r'], by_bytes['hits'], by_count['hits'])}")
    print(f"count / baseline: {ratios(by_count['r'], baseline, by_count['hits'], base_hits)}")
    print(f"bytes / baseline: {ratios(by_bytes['r'], baseline, by_bytes['hits'], base_hits)}")


if __name__ == "__main__":
    main()
