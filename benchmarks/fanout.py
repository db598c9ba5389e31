"""What one model change costs from the reloader to every replica: deltas against whole trees.

A local ``dir`` of N models x 2 versions x 3 small files; the project's own
:class:`~cortex_ray.reload.reloader.ModelReloader` as a named Ray actor (polled by hand, so each
poll is one change), and K replicas simulated by the project's own
:class:`~cortex_ray.reload.subscriber.Subscriber`, each feeding a
:class:`~cortex_ray.cache.model_cache.ModelCache` (``cache_size: 4``, nothing loaded), spread
over 4 Ray actors standing for replica processes. Each change adds a version to one model.
Two modes, same run, same storage:

* ``tree``: today's design before deltas, kept for the comparison: the reloader's delta log
  is off, so every replica gets the whole tree and reconciles with all of it;
* ``delta``: the reloader sends each replica what changed since the version it holds (and a
  whole tree, when one is needed, through one copy in Ray's object store).

Per mode, N and K (the median of ``--changes`` changes): the time from the reloader
publishing the change to the last replica having applied it; the reloader's CPU per change
beyond the listing (its CPU across the change, less that of a poll that finds nothing new);
the bytes one replica receives (the pickled answer of its long poll); the longest stall of a
replica process's event loop during the change (a 1 ms ticker's lateness).

    .venv/bin/python benchmarks/fanout.py [--models 100,2000,10000] [--replicas 1,8,32] [--changes 3]
        [--modes tree,delta]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_VERSIONS = itertools.count(3)
HOSTS = 4
"""Ray actors standing for replica processes (the K subscribers are spread over them)."""


def build_dir(root: Path, models: int) -> None:
    for m in range(models):
        for v in (1, 2):
            folder = root / f"m{m:05d}" / str(v)
            folder.mkdir(parents=True)
            for f in range(3):
                (folder / f"f{f}.bin").write_bytes(b"x")


def api_spec(models_dir: Path, work: Path) -> Any:
    from cortex_ray.spec import parse_spec

    (work / "handler.py").write_text("class Handler:\n    pass\n")
    spec = {
        "name": "fanout",
        "kind": "RealtimeAPI",
        "handler": {
            "type": "python",
            "path": "handler.py",
            "multi_model_reloading": {
                "dir": str(models_dir),
                "poll_interval": 3600,  # polled by hand: one poll, one change
                "settle_time": 0,
                "cache_size": 4,
                "disk_cache_size": 8,
            },
        },
    }
    return parse_spec([spec], base_dir=work).apis[0]


def make_actors() -> tuple[Any, Any]:
    import ray

    from cortex_ray.reload.deltas import DeltaLog
    from cortex_ray.reload.reloader import ModelReloader

    class BenchReloader(ModelReloader):
        def __init__(self, api: Any, deltas: bool) -> None:
            super().__init__(api, share_trees=deltas)  # (whole trees, for new replicas: one copy)
            if not deltas:
                self.deltas = DeltaLog(capacity=0)  # nothing logged: whole trees, as before deltas

        async def cpu(self) -> float:
            return time.process_time()

        async def published(self, key: str) -> float:
            name, _, version = key.rpartition(":")
            return self._publisher.published_at[(name, int(version))]

    class Host:
        """One replica process holding several subscribers (each with its own cache)."""

        def __init__(self) -> None:
            self.subs: list[Any] = []
            self.applied_at: list[float] = []
            self.late = 0.0
            self._ticker: asyncio.Task[None] | None = None

        async def start(self, count: int, reloader: str, root: str) -> None:
            from cortex_ray.cache import ModelCache
            from cortex_ray.reload.subscriber import Subscriber

            for i in range(count):
                holder: dict[str, Any] = {}

                def on_tree(tree: Any, changed: Any, holder: dict[str, Any] = holder) -> None:
                    holder["cache"].set_tree(tree, changed)
                    self.applied_at.append(time.time())

                sub = Subscriber(
                    "fanout",
                    on_tree,
                    lambda holder=holder: holder["cache"].tree if "cache" in holder else None,
                    find_actor=lambda: ray.get_actor(reloader),
                )
                tree = await sub.initial_tree()
                holder["cache"] = ModelCache(
                    lambda *a: None, f"{root}/{i}", memory_limit=4, disk_limit=8, tree=tree
                )
                sub.start()
                self.subs.append(sub)
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

        async def _tick(self) -> None:
            while True:
                before = time.perf_counter()
                await asyncio.sleep(0.001)
                self.late = max(self.late, time.perf_counter() - before - 0.001)

        async def reset(self) -> None:
            self.late, self.applied_at = 0.0, []

        async def reached(self, version: int) -> tuple[float, float]:
            """Once every subscriber holds ``version``: when the last applied it, and the
            longest loop stall since :meth:`reset`."""
            while any(s.version < version for s in self.subs):
                await asyncio.sleep(0.002)
            return max(self.applied_at, default=0.0), self.late

        async def stop(self) -> None:
            for sub in self.subs:
                await sub.stop()

    return ray.remote(BenchReloader), ray.remote(Host)


def run_case(
    mode: str, models: int, replicas: int, changes: int, models_dir: Path, work: Path
) -> dict[str, Any]:
    import ray

    reloader_cls, host_cls = make_actors()
    name = f"reloader-{mode}-{models}-{replicas}"
    reloader = reloader_cls.options(name=name).remote(api_spec(models_dir, work), mode == "delta")
    ray.get(reloader.poll_now.remote())
    hosts = [host_cls.remote() for _ in range(min(HOSTS, replicas))]
    counts = [replicas // len(hosts) + (1 if i < replicas % len(hosts) else 0) for i in range(len(hosts))]
    ray.get(
        [
            h.start.remote(c, name, str(work / f"cache-{name}-{i}"))
            for i, (h, c) in enumerate(zip(hosts, counts, strict=True))
        ]
    )
    cpu0 = ray.get(reloader.cpu.remote())
    ray.get(reloader.poll_now.remote())  # nothing new: the listing's own cost
    idle_cpu = ray.get(reloader.cpu.remote()) - cpu0
    rows: list[dict[str, float]] = []
    for c in range(changes):
        model = f"m{(c * 7919) % models:05d}"
        version = next(_VERSIONS)  # (new in every case: the dir is shared by the cases)
        ray.get([h.reset.remote() for h in hosts])
        cpu0 = ray.get(reloader.cpu.remote())
        folder = models_dir / model / str(version)
        folder.mkdir()
        for f in range(3):
            (folder / f"f{f}.bin").write_bytes(b"y")
        published_version = ray.get(reloader.poll_now.remote())
        done = ray.get([h.reached.remote(published_version) for h in hosts])
        cpu = ray.get(reloader.cpu.remote()) - cpu0
        published_at = ray.get(reloader.published.remote(f"{model}:{version}"))
        status = ray.get(reloader.status.remote())
        answer = ray.get(reloader.snapshot.remote(status["epoch"], published_version - 1, 0.0))
        rows.append(
            {
                "fanout": max(t for t, _ in done) - published_at,
                "cpu": max(0.0, cpu - idle_cpu),
                "bytes": len(pickle.dumps(answer)),
                "stall": max(late for _, late in done),
            }
        )
    ray.get([h.stop.remote() for h in hosts])
    for actor in (*hosts, reloader):
        ray.kill(actor)
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]} | {"listing_cpu": idle_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="100,2000,10000")
    parser.add_argument("--replicas", default="1,8,32")
    parser.add_argument("--changes", type=int, default=3)
    parser.add_argument(
        "--modes",
        default="tree,delta",
        help="tree,delta (default) or one of them: delta alone for K the tree mode has no memory for",
    )
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - {"tree", "delta"}:
        parser.error("--modes: tree, delta or both")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(
        f"{'N':>6} {'K':>4} {'mode':>6} {'fan-out s':>10} {'reloader CPU s':>15} {'bytes':>11} "
        f"{'stall ms':>9}"
    )
    results: dict[tuple[int, int, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for models in (int(x) for x in args.models.split(",")):
            models_dir = Path(tmp) / f"models-{models}"
            build_dir(models_dir, models)
            for replicas in (int(x) for x in args.replicas.split(",")):
                for mode in modes:
                    r = run_case(mode, models, replicas, args.changes, models_dir, Path(tmp))
                    results[(models, replicas, mode)] = r
                    print(
                        f"{models:>6} {replicas:>4} {mode:>6} {r['fanout']:>10.3f} {r['cpu']:>15.3f} "
                        f"{r['bytes']:>11,.0f} {r['stall'] * 1000:>9.1f}",
                        flush=True,
                    )
                if len(modes) < 2:
                    listing = (
                        f"listing: {results[(models, replicas, modes[0])]['listing_cpu']:.2f} s CPU per poll"
                    )
                    print(f"{'':>11} ({listing})", flush=True)
                    continue
                t, d = results[(models, replicas, "tree")], results[(models, replicas, "delta")]
                ratios = ", ".join(
                    f"{what} x{d[key] / max(t[key], 1e-9):.{digits}f}"
                    for what, key, digits in (
                        ("fan-out", "fanout", 2),
                        ("CPU", "cpu", 2),
                        ("bytes", "bytes", 4),
                        ("stall", "stall", 2),
                    )
                )
                listing = f"listing: {t['listing_cpu']:.2f} s CPU per poll"
                print(f"{'':>11} delta/tree: {ratios}   ({listing})", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
