"""The model cache's costs that requests feel, measured on two checkouts in one run.

Each case runs in a subprocess per checkout (``--against`` another checkout, e.g. the
commit before a change: ``git worktree add /tmp/before <commit>``), so "before" and
"after" come from the same run on the same machine, and each case also prints its own
baseline:

* ``swap``: ``cache_size: 1``; version 1 serves, version 2 is published and its
  ``load_model`` takes ``--load-seconds``. How long do requests for "latest" wait while
  it loads (baseline: the load time itself)? Then version 3 is broken: over 8 s of
  retries, how often is the version serving reloaded cold?
* ``unload``: a replica with ``--objects`` million live Python objects loads and evicts
  models with reference cycles 10 times (``cache_size: 1``), while a task on the event
  loop measures how late it runs. Baseline: one full ``gc.collect()`` with those objects.
* ``lookup``: the cost of finding the model a request names, for a model in memory, on
  the event loop (what a sync ``get_model`` on the loop and an awaiting one do), with
  10 and with 10,000 models in the tree.

    .venv/bin/python benchmarks/cache.py [--against /tmp/before] [--cases swap,unload,lookup]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# --- the cases (run inside a subprocess, against whichever checkout is on sys.path) -----


def _publish(files: dict[str, bytes]) -> Any:
    from cortex_ray.models import discover_models
    from cortex_ray.spec import MultiModelsSpec
    from cortex_ray.storage import open_storage

    s = open_storage("mem://bench/models/")
    for key, data in files.items():
        s.upload(key, data)
    return discover_models(MultiModelsSpec(dir="mem://bench/models/"), "python")


def case_swap(load_seconds: float) -> dict[str, Any]:
    from cortex_ray.cache import ModelCache

    loads: list[bytes] = []

    def loader(path: str, name: str, version: int) -> str:
        data = (Path(path) / "model.bin").read_bytes()
        loads.append(data)
        if data != b"v1":
            time.sleep(load_seconds)
        if data == b"broken":
            raise RuntimeError("broken")
        return data.decode()

    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            cache = ModelCache(
                loader, tmp, memory_limit=1, disk_limit=2, tree=_publish({"a/1/model.bin": b"v1"})
            )
            await cache.get("a")
            cache.set_tree(_publish({"a/2/model.bin": b"v2"}))
            waits = []
            end = time.perf_counter() + load_seconds * 1.5
            while time.perf_counter() < end:
                started = time.perf_counter()
                await cache.get("a")
                waits.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)
            await asyncio.sleep(load_seconds)
            loads.clear()
            cache.set_tree(_publish({"a/3/model.bin": b"broken"}))
            end = time.perf_counter() + 8
            while time.perf_counter() < end:
                await cache.get("a")
                await asyncio.sleep(0.05)
            await cache.close()
            return {
                "wait_max_s": max(waits),
                "wait_median_s": statistics.median(waits),
                "requests": len(waits),
                "cold_reloads_of_serving": loads.count(b"v2"),
                "broken_retries": loads.count(b"broken"),
            }

    return asyncio.run(main())


class _Model:
    """A model object with reference cycles (as TensorFlow's and many others' are)."""

    def __init__(self) -> None:
        self.me = self
        self.weights = [bytearray(1024) for _ in range(200)]


def case_unload(objects_millions: float) -> dict[str, Any]:
    from cortex_ray.cache import ModelCache

    keep = [(i, str(i)) for i in range(int(objects_millions * 1e6))]  # the replica's live objects
    started = time.perf_counter()
    gc.collect()
    one_collect = time.perf_counter() - started
    collections = []
    gc.callbacks.append(
        lambda phase, info: collections.append(info["generation"]) if phase == "stop" else None
    )

    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            tree = _publish({f"{n}/1/model.bin": n.encode() for n in "ab"})
            cache = ModelCache(lambda p, n, v: _Model(), tmp, memory_limit=1, disk_limit=2, tree=tree)
            lags: list[float] = []
            stop = asyncio.Event()

            async def heartbeat() -> None:
                while not stop.is_set():
                    before = time.perf_counter()
                    await asyncio.sleep(0.005)
                    lags.append(time.perf_counter() - before - 0.005)

            beat = asyncio.create_task(heartbeat())
            collections.clear()
            t0 = time.perf_counter()
            for i in range(10):
                await cache.get("ab"[i % 2])
            await asyncio.sleep(8)  # let deferred work (if any) run
            stop.set()
            await beat
            await cache.close()
            return {
                "baseline_one_gc_s": one_collect,
                "loop_max_lag_s": max(lags),
                "loop_stalled_s": sum(x for x in lags if x > 0.02),
                "stalls": sum(1 for x in lags if x > 0.02),
                "full_collections": sum(1 for g in collections if g == 2),
                "elapsed_s": time.perf_counter() - t0,
            }

    out = asyncio.run(main())
    del keep
    return out


def case_lookup(models: int) -> dict[str, Any]:
    from cortex_ray.cache import ModelCache, resolve_version

    names = [f"m{i:05d}" for i in range(models)]
    target = names[models // 2]
    files = {f"{n}/1/model.bin": b"x" for n in names}
    files.update({f"{target}/{v}/model.bin": b"x" for v in (2, 3)})
    tree = _publish(files)

    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            cache = ModelCache(lambda p, n, v: object(), tmp, memory_limit=4, disk_limit=4, tree=tree)
            await cache.get(target)
            try_get = getattr(cache, "try_get", None)
            n = 5000

            def on_loop() -> None:  # what a sync get_model on the event loop does
                if try_get is not None:
                    try_get(target, "latest")
                else:
                    name, info = resolve_version(cache.tree, target, "latest")
                    cache.tiers.peek(name, info)

            started = time.perf_counter()
            for _ in range(n):
                on_loop()
            loop_us = (time.perf_counter() - started) / n * 1e6
            started = time.perf_counter()
            for _ in range(n):
                await cache.get(target)
            get_us = (time.perf_counter() - started) / n * 1e6
            return {"models": models, "on_loop_us": loop_us, "awaited_get_us": get_us}

    return asyncio.run(main())


CASES = {"swap": case_swap, "unload": case_unload, "lookup": case_lookup}


def _child(case: str, arg: float) -> None:
    import logging

    logging.disable(logging.WARNING)
    result = [case_lookup(10), case_lookup(int(arg))] if case == "lookup" else CASES[case](arg)
    print("RESULT " + json.dumps(result))


# --- the driver ----------------------------------------------------------------------


def run(checkout: Path, case: str, arg: float) -> Any:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", case, str(arg)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{case} on {checkout} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], float(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", type=Path, help="another checkout to measure in the same run")
    parser.add_argument("--cases", default="swap,unload,lookup")
    parser.add_argument("--load-seconds", type=float, default=1.0)
    parser.add_argument("--objects", type=float, default=3.0, help="live objects, in millions (unload)")
    parser.add_argument("--models", type=int, default=10000, help="models in the big tree (lookup)")
    args = parser.parse_args()
    checkouts = {"this": ROOT, **({"against": args.against.resolve()} if args.against else {})}
    argument = {"swap": args.load_seconds, "unload": args.objects, "lookup": args.models}
    for case in args.cases.split(","):
        results = {label: run(path, case, argument[case]) for label, path in checkouts.items()}
        print(f"\n== {case}")
        for label, result in results.items():
            print(f"{label:>8}: {_show(case, result)}")


def _show(case: str, r: Any) -> str:
    if case == "swap":
        return (
            f"requests during a {r['requests']}-request swap waited max {r['wait_max_s'] * 1000:.0f} ms, "
            f"median {r['wait_median_s'] * 1000:.1f} ms; a broken next version: {r['broken_retries']} "
            f"retries, {r['cold_reloads_of_serving']} cold reloads of the version serving"
        )
    if case == "unload":
        return (
            f"10 loads+evictions: {r['full_collections']} full collections, {r['stalls']} loop stalls "
            f"over 20 ms, {r['loop_stalled_s']:.2f} s in all (max {r['loop_max_lag_s'] * 1000:.0f} ms); "
            f"baseline one gc.collect() {r['baseline_one_gc_s'] * 1000:.0f} ms"
        )
    small, big = r
    return (
        f"on the loop {small['on_loop_us']:.1f} us ({small['models']} models) / {big['on_loop_us']:.1f} us "
        f"({big['models']} models), x{big['on_loop_us'] / small['on_loop_us']:.1f}; awaited get "
        f"{small['awaited_get_us']:.1f} / {big['awaited_get_us']:.1f} us"
    )


if __name__ == "__main__":
    main()
