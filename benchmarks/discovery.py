"""Benchmark model discovery (``discover_models`` on a ``dir``) on a local folder and on S3.

Builds a ``dir`` of ``--models`` models x ``--versions`` versions x ``--files``
small files, then times, as the median of ``--repeat`` runs:

* ``raw``: the cost of just walking the storage, outside cortex-ray
  (``os.walk`` + ``os.stat`` of every file locally; a plain boto3
  ``list_objects_v2`` paginator loop on S3): the baseline every ratio is taken
  against, so that the figures mean something on any machine;
* ``open``: ``open_storage(uri)`` (with its boto3 client on S3);
* ``list``: ``storage.list()`` alone, on the opened storage;
* ``tree``: building the :class:`ModelTree` alone, i.e. ``discover_models`` fed
  a listing taken beforehand (an opener whose storage returns it);
* ``discover``: ``discover_models(MultiModelsSpec(dir=uri), "python")``: all three;
* ``repoll``: ``discover`` again with the reloader's
  :class:`~cortex_ray.models.discovery.RememberingBuilder`, storage unchanged since its last
  call (a poll that finds nothing new: listed, nothing rebuilt);
* ``diff``: ``diff_trees(tree, tree2)`` after one file changed;

and, for the local folder, the memory a replica's copy of the tree takes per model version.

The S3 part runs against the moto test server of ``tests/support/s3_server.py``
(a subprocess on 127.0.0.1), which is slow to seed (170-190 uploads per
second on 2 cores): ``--s3-models`` uploads fewer models there, ``--skip-s3`` skips it.

Run from the repository root::

    python benchmarks/discovery.py [--models 10000] [--versions 2] [--files 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import cProfile
import gc
import io
import os
import platform
import pstats
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from cortex_ray.models import ModelTree, diff_trees, discover_models
from cortex_ray.models.discovery import RememberingBuilder
from cortex_ray.spec.schema import MultiModelsSpec
from cortex_ray.storage import ObjectInfo, Storage, open_storage

REPO_ROOT = Path(__file__).resolve().parent.parent
BUCKET = "cortex-ray-bench"
PREFIX = "models"


# --- the tree -----------------------------------------------------------------


def tree_keys(models: int, versions: int, files: int) -> Iterator[tuple[str, bytes]]:
    """``(key, content)`` of every file: ``model-00042/2/file-1.bin`` -> a few bytes."""
    width = max(5, len(str(models - 1)))
    for m in range(models):
        name = f"model-{m:0{width}d}"
        for v in range(1, versions + 1):
            for f in range(files):
                yield f"{name}/{v}/file-{f}.bin", f"{m}.{v}.{f}".encode()


def changed_key(models: int, versions: int) -> str:
    """The file the diff step rewrites: one in the middle of the tree."""
    width = max(5, len(str(models - 1)))
    return f"model-{models // 2:0{width}d}/{versions}/file-0.bin"


class PrefetchedStorage(Storage):
    """A storage whose ``list()`` returns a listing taken beforehand (nothing else works)."""

    def __init__(self, uri: str, listing: list[ObjectInfo]) -> None:
        self.uri = uri
        self._listing = listing

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return self._listing

    def read(self, key: str) -> bytes:
        raise NotImplementedError

    def upload(self, key: str, data: bytes, content_type: str | None = None) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def create(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        raise NotImplementedError

    def list_folders(self, prefix: str = "") -> builtins.list[str]:
        raise NotImplementedError

    def _download_object(self, key: str, dest: Path, expected: ObjectInfo) -> None:
        raise NotImplementedError


# --- timing -------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    step: str
    what: str
    times: list[float] = field(default_factory=list)
    items: int = 0
    pages: int | None = None
    gc_times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def gc_median(self) -> float | None:
        return statistics.median(self.gc_times) if self.gc_times else None


class GcClock:
    """Seconds spent in Python's cyclic garbage collector (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._start


GC_CLOCK: GcClock | None = None


def timed(fn: Callable[[], Any], row: Row | None = None) -> tuple[float, Any]:
    """Run ``fn``; append its wall time (and the GC time within it) to ``row``."""
    gc_before = GC_CLOCK.total if GC_CLOCK else 0.0
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    if row is not None:
        row.times.append(seconds)
        if GC_CLOCK:
            row.gc_times.append(GC_CLOCK.total - gc_before)
    return seconds, result


def bench_backend(
    backend: str,
    uri: str,
    raw: Callable[[], tuple[int, int | None]],
    raw_what: str,
    change_one: Callable[[], None],
    objects: int,
    repeat: int,
    count_pages: Callable[[Any], Callable[[], int]] | None = None,
    prepare: Callable[[Any], Any] | None = None,
) -> list[Row]:
    """Time raw / open / list / tree / discover (interleaved, ``repeat`` times), then diff.

    ``prepare`` does the storage's lazy set-up (the S3 client) so that ``open``
    holds it and ``list`` does not.
    """
    spec = MultiModelsSpec(dir=uri)
    rows = {
        "raw": Row(backend, "raw", raw_what),
        "open": Row(backend, "open", "open_storage(uri)" + (" + its boto3 client" if prepare else "")),
        "list": Row(backend, "list", "storage.list() (storage opened)"),
        "tree": Row(backend, "tree", "discover_models on a prefetched listing"),
        "discover": Row(backend, "discover", 'discover_models(MultiModelsSpec(dir=uri), "python")'),
        "repoll": Row(backend, "repoll", "discover, nothing new: the reloader's RememberingBuilder"),
    }
    remembering = RememberingBuilder()
    discover_models(spec, "python", build=remembering)  # (what the reloader's last poll built)
    tree: ModelTree | None = None
    for i in range(repeat):
        print(f"  [{backend}] run {i + 1}/{repeat}: raw", end="", flush=True)
        _, (count, pages) = timed(raw, rows["raw"])
        rows["raw"].items, rows["raw"].pages = count, pages

        print(", open", end="", flush=True)
        _, storage = timed(lambda: _opened(uri, prepare), rows["open"])

        print(", list", end="", flush=True)
        pages_of = count_pages(storage) if count_pages else None
        _, listing = timed(storage.list, rows["list"])
        rows["list"].items = len(listing)
        rows["list"].pages = pages_of() if pages_of else None

        print(", tree", end="", flush=True)
        timed(partial(tree_from_listing, spec, uri, listing), rows["tree"])
        rows["tree"].items = len(listing)

        print(", discover", end="", flush=True)
        _, tree = timed(lambda: discover_models(spec, "python"), rows["discover"])
        rows["discover"].items = sum(v.file_count for m in tree.models.values() for v in m.versions.values())
        print(", repoll", end="", flush=True)
        reused = remembering.reused
        _, again = timed(lambda: discover_models(spec, "python", build=remembering), rows["repoll"])
        rows["repoll"].items = sum(v.file_count for m in again.models.values() for v in m.versions.values())
        if remembering.reused - reused != len(again.models):
            raise RuntimeError(f"{backend}: a poll with nothing new rebuilt models")
        print(f" ({rows['raw'].times[-1]:.3f}s / {rows['discover'].times[-1]:.3f}s)", flush=True)
        if rows["list"].items != objects or rows["raw"].items != objects or rows["discover"].items != objects:
            raise RuntimeError(
                f"{backend}: expected {objects} objects, raw saw {rows['raw'].items}, "
                f"list {rows['list'].items}, discover {rows['discover'].items}"
            )
    assert tree is not None
    if not tree.valid or tree.warnings:
        raise RuntimeError(f"{backend}: the benchmark tree is not valid: {tree.warnings}")

    change_one()
    tree2 = discover_models(spec, "python")
    diff = Row(backend, "diff", "diff_trees(tree, tree2), one file changed")
    diff.items = sum(len(m.versions) for m in tree.models.values())
    changes: list[Any] = []
    for _ in range(repeat):
        _, changes = timed(lambda: diff_trees(tree, tree2), diff)
    if [c.kind for c in changes] != ["version_changed"]:
        raise RuntimeError(f"{backend}: expected one version_changed, got {[str(c) for c in changes]}")
    return [*rows.values(), diff]


def tree_from_listing(spec: MultiModelsSpec, uri: str, listing: list[ObjectInfo]) -> ModelTree:
    """``discover_models`` exactly, minus the listing (its storage returns ``listing``)."""
    prefetched = PrefetchedStorage(uri, listing)
    return discover_models(spec, "python", opener=lambda _uri: prefetched)


def _opened(uri: str, prepare: Callable[[Any], Any] | None) -> Storage:
    storage = open_storage(uri)
    if prepare is not None:
        prepare(storage)
    return storage


def profile_discover(uri: str, top: int) -> str:
    """The ``top`` functions of one ``discover_models`` call by own time (cProfile)."""
    spec = MultiModelsSpec(dir=uri)
    profiler = cProfile.Profile()
    profiler.enable()
    discover_models(spec, "python")
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


# --- local --------------------------------------------------------------------


def build_local(root: Path, models: int, versions: int, files: int) -> int:
    count = 0
    made: set[Path] = set()
    for key, data in tree_keys(models, versions, files):
        path = root / key
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)
        count += 1
    return count


def raw_walk(root: Path) -> Callable[[], tuple[int, int | None]]:
    def walk() -> tuple[int, int | None]:
        count = 0
        for folder, _dirs, names in os.walk(root):
            for name in names:
                os.stat(os.path.join(folder, name))
                count += 1
        return count, None

    return walk


def run_local(args: argparse.Namespace, tmp: Path) -> tuple[list[Row], str]:
    root = tmp / "models"
    objects = args.models * args.versions * args.files
    print(f"local: writing {objects:,} files to {root} ...", flush=True)
    seconds, _ = timed(lambda: build_local(root, args.models, args.versions, args.files))
    print(f"local: written in {seconds:.1f}s", flush=True)
    uri = f"file://{root}/"

    def change_one() -> None:
        (root / changed_key(args.models, args.versions)).write_bytes(b"changed, and longer")

    rows = bench_backend(
        "local", uri, raw_walk(root), "os.walk + os.stat of every file", change_one, objects, args.repeat
    )
    print(tree_memory(uri), flush=True)
    print(collector_pause(uri), flush=True)
    prof = profile_discover(uri, args.profile) if args.profile else ""
    return rows, prof


def collector_pause(uri: str, polls: int = 6, rounds: int = 2) -> str:
    """CPU of consecutive polls with nothing new, with the collector held off during each
    listing (as discovery does) and without, alternating; the process allocates between polls,
    so the collection the listing's objects still owe is paid inside the measurement."""
    from cortex_ray.models import discovery

    paused = discovery._collection_paused
    spec = MultiModelsSpec(dir=uri)
    seconds: dict[str, list[float]] = {"no pause": [], "collector paused": []}
    try:
        for _ in range(rounds):
            for label, pause in (("no pause", contextlib.nullcontext), ("collector paused", paused)):
                discovery._collection_paused = pause  # type: ignore[assignment]
                builder = RememberingBuilder()
                discover_models(spec, "python", build=builder)
                gc.collect()
                started = time.process_time()
                for _ in range(polls):
                    discover_models(spec, "python", build=builder)
                    junk = [[i] for i in range(20_000)]  # (the process's other work between polls)
                    del junk
                seconds[label].append((time.process_time() - started) / polls)
    finally:
        discovery._collection_paused = paused
    return (
        "local: CPU per poll with nothing new, collector included: "
        + ", ".join(f"{label} {statistics.median(v):.2f} s" for label, v in seconds.items())
        + f" (median of {rounds} x {polls} polls)"
    )


def tree_memory(uri: str) -> str:
    """What a replica holds: the tree as it arrives (unpickled), in memory, per model version; the
    tree the reloader publishes (no file lists) beside one with file lists (before 2026-12-07)."""
    import pickle
    import tracemalloc

    out = []
    for label, build in (
        ("published", RememberingBuilder(keep_files=False)),
        ("with file lists", RememberingBuilder(keep_files=True)),
    ):
        data = pickle.dumps(discover_models(MultiModelsSpec(dir=uri), "python", build=build))
        gc.collect()
        tracemalloc.start()
        try:
            tree = pickle.loads(data)
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        versions = sum(len(m.versions) for m in tree.models.values())
        out.append(
            f"{label} {held / versions:,.0f} B per model version in memory "
            f"({held / 2**20:.1f} MiB for {versions:,} versions; {len(data) / versions:,.0f} B pickled)"
        )
        del tree
    return "local: a replica's tree (unpickled): " + "; ".join(out)


# --- S3 (moto test server) ----------------------------------------------------


class Progress:
    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.done = 0
        self.start = self.last = time.monotonic()
        self.lock = threading.Lock()

    def tick(self) -> None:
        with self.lock:
            self.done += 1
            now = time.monotonic()
            if now - self.last >= 10 or self.done == self.total:
                self.last = now
                rate = self.done / max(now - self.start, 1e-9)
                eta = (self.total - self.done) / rate if rate else 0.0
                print(
                    f"  {self.label}: {self.done:,}/{self.total:,} ({rate:.0f}/s, {eta:.0f}s left)",
                    flush=True,
                )


def upload_tree(client: Any, models: int, versions: int, files: int, threads: int) -> float:
    items = list(tree_keys(models, versions, files))
    progress = Progress(len(items), "s3 upload")

    def put(item: tuple[str, bytes]) -> None:
        key, data = item
        client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=data)
        progress.tick()

    start = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        for future in [pool.submit(put, item) for item in items]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C: drop the queued uploads
    return time.monotonic() - start


def page_counter(storage: Any) -> Callable[[], int]:
    """Count the ListObjectsV2 requests the storage's own boto3 client makes."""
    calls = [0]

    def count(**_kwargs: Any) -> None:
        calls[0] += 1

    storage.client.meta.events.register("after-call.s3.ListObjectsV2", count)
    return lambda: calls[0]


def run_s3(args: argparse.Namespace, server: Any) -> tuple[list[Row], str, float]:
    from botocore.config import Config

    models = args.s3_models
    objects = models * args.versions * args.files
    os.environ.update(server.env())
    client = server.client(
        config=Config(
            max_pool_connections=args.upload_threads,
            retries={"max_attempts": 10, "mode": "standard"},
        )
    )
    client.create_bucket(Bucket=BUCKET)
    print(f"s3: uploading {objects:,} objects with {args.upload_threads} threads to {server.endpoint_url}")
    upload_s = upload_tree(client, models, args.versions, args.files, args.upload_threads)
    print(f"s3: uploaded in {upload_s:.0f}s ({objects / upload_s:.0f} objects/s)", flush=True)
    uri = f"s3://{BUCKET}/{PREFIX}/"
    raw_client = server.client()

    def raw() -> tuple[int, int | None]:
        count = pages = 0
        paginator = raw_client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/"):
            pages += 1
            count += len(page.get("Contents", []))
        return count, pages

    def change_one() -> None:
        key = f"{PREFIX}/{changed_key(models, args.versions)}"
        client.put_object(Bucket=BUCKET, Key=key, Body=b"changed, and longer")

    rows = bench_backend(
        "s3",
        uri,
        raw,
        "boto3 list_objects_v2 paginator loop",
        change_one,
        objects,
        args.repeat,
        page_counter,
        prepare=lambda storage: storage.client,
    )
    prof = profile_discover(uri, args.profile) if args.profile else ""
    return rows, prof, upload_s


# --- report -------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    raw = {r.backend: r.median for r in rows if r.step == "raw"}
    columns = ("backend", "step", "items", "pages", "median s", "gc s", "items/s", "x raw")
    header = "{:<8} {:<9} {:>8} {:>5} {:>9} {:>6} {:>10} {:>6}  what".format(*columns)
    print(header)
    print("-" * len(header))
    for r in rows:
        items = f"{r.items:,}" if r.items else ""
        per_s = f"{r.items / r.median:,.0f}" if r.items and r.median > 0 else ""
        ratio = "" if r.step in ("raw", "open", "diff") else f"{r.median / raw[r.backend]:.2f}"
        pages = "" if r.pages is None else str(r.pages)
        gc_s = "" if r.gc_median is None else f"{r.gc_median:.3f}"
        cells = (r.backend, r.step, items, pages, f"{r.median:.4f}", gc_s, per_s, ratio, r.what)
        print("{:<8} {:<9} {:>8} {:>5} {:>9} {:>6} {:>10} {:>6}  {}".format(*cells))
    print(
        "items: objects listed (diff: versions compared); pages: ListObjectsV2 requests; gc s: median "
        "time in Python's cyclic GC within the step; x raw: median / the raw baseline's median"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=10000, help="models in the dir (default 10000)")
    parser.add_argument("--versions", type=int, default=2, help="versions per model (default 2)")
    parser.add_argument("--files", type=int, default=3, help="files per version (default 3)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per step; the median is shown (default 3)"
    )
    parser.add_argument("--skip-s3", action="store_true", help="only the local folder")
    parser.add_argument(
        "--s3-models",
        type=int,
        default=None,
        help="models uploaded to the S3 test server (default: --models; moto takes ~200 uploads/s)",
    )
    parser.add_argument("--upload-threads", type=int, default=8, help="threads seeding S3 (default 8)")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="also print the top N functions of one discover"
    )
    args = parser.parse_args(argv)
    if args.s3_models is None:
        args.s3_models = args.models
    if min(args.models, args.versions, args.files, args.repeat, args.s3_models, args.upload_threads) < 1:
        parser.error("every count must be at least 1")
    return args


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    global GC_CLOCK
    args = parse_args(argv)
    GC_CLOCK = GcClock()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    print(
        f"cortex-ray discovery benchmark: {args.models:,} models x {args.versions} versions x "
        f"{args.files} files, median of {args.repeat}"
        + ("" if args.skip_s3 else f"; S3: {args.s3_models:,} models")
    )
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    rows: list[Row] = []
    profiles: list[tuple[str, str]] = []
    upload_s = None
    server = None
    tmp = Path(tempfile.mkdtemp(prefix="cortex-ray-bench-"))
    try:
        local_rows, prof = run_local(args, tmp)
        rows += local_rows
        profiles.append(("local", prof))
        shutil.rmtree(tmp, ignore_errors=True)
        if not args.skip_s3:
            if str(REPO_ROOT) not in sys.path:
                sys.path.insert(0, str(REPO_ROOT))
            from tests.support.s3_server import S3TestServer

            server = S3TestServer()
            print(f"s3: starting the moto test server on {server.endpoint_url} ...", flush=True)
            server.start()
            s3_rows, prof, upload_s = run_s3(args, server)
            rows += s3_rows
            profiles.append(("s3", prof))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print_table(rows)
    if upload_s is not None:
        print(f"(seeding S3 took {upload_s:.0f}s; not part of any figure)")
    for backend, text in profiles:
        if text:
            print(f"\n--- cProfile of one discover_models, {backend}, by own time ---")
            print(text.strip())
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
