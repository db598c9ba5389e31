"""Faults, measured: one command, one table (issue 27, the first scenarios).

Each scenario runs on one real local Ray (the product's own ``sdk.start``, fast ingress), with
real HTTP, models in a local folder or on the S3 test server (moto, 127.0.0.1), a bounded client
(``--clients`` threads POSTing without pause, each request within 30 s, the scenario within its
time), a fault injected under load, and prints one row:

* ``sent``: requests sent; ``non-2xx``: answers that were not 200 (and requests that got no
  answer at all); ``wrong``: 200s whose content was not allowed at that moment (a version never
  written, or one removed more than ``STALE_S`` before the answer);
* ``recover s``: from the end of the fault to the first answer that shows the system whole again
  (what that means is in the scenario's note); ``lost``: what the fault lost for good.

Scenarios:

* ``swaps``: a new version every ``--swap-every`` s for ``--swap-for`` s, the oldest removed
  (two kept), python handler; ``recover`` is the last swap's latency.
* ``s3-paused``: the S3 server frozen (SIGSTOP: every request hangs) for ``--outage`` s under
  load, then a new version uploaded; ``recover``: until it is served.
* ``s3-refused``: the S3 server stopped (connections refused) for ``--outage`` s, then started with
  its data; ``recover`` as above.
* ``replica-killed``: one of two replicas killed (``ray.kill``) under load; ``recover``: until the
  balancer routes Serve's replacement (it registered with the ingress).
* ``replica-frozen``: one of two replicas frozen (SIGSTOP: a paused VM, a swap storm, a long
  stop-the-world pause) for ``--freeze`` s while versions swap every ``--swap-every`` s (it misses
  every publication meanwhile), then thawed and the swaps go on for 10 s; ``wrong`` also counts
  any answer from a version removed before its request was sent; ``recover``: from the thaw to
  the last such stale answer (0: none); the note gives the slowest answer.
* ``reloader-killed``: the API's reloader killed while versions swap; ``recover``: from the kill to
  the first answer from a version written after it.
* ``corrupt-version``: a new version whose file the handler cannot load; then the file fixed;
  ``recover``: from the fix to the first answer from it.
* ``s3-errors``: S3 answering 503 ``SlowDown`` and 500 for ``--outage`` s (a fault-injecting proxy
  in front of the S3 test server), then a new version; ``recover`` as for ``s3-paused``.
* ``disk-full``: the disk tier on a 4 MiB tmpfs (root only), a new version with an 8 MiB file; then
  a smaller one in its place; ``recover``: from the fix to the first answer from it.
* ``haproxy-killed``: the balancer's HAProxy processes killed (SIGKILL); ``recover``: until served.
* ``ingress-killed``: the ingress actor killed (``ray.kill``; Ray restarts it), two replicas;
  ``recover``: until served; the note says when both replicas were routed again.
* ``node-removed``: a Ray of its own (a head with no CPUs, two worker nodes, all on 127.0.0.1),
  two replicas, versions swapping every 2 s, and the worker node holding the reloader (else one
  holding a replica) removed with everything on it; ``recover``: the last version written until
  served; the note says when both replicas were routed again.
* ``soak-cycles``: ``--cycles`` unload/load cycles of two 8 MiB numpy models with room for one;
  ``lost`` is the replica's resident memory growth after the first 100 cycles.
* ``async-none``, ``async-worker``, ``async-dispatcher``, ``async-redeploy``: 200 AsyncAPI workloads
  at once (two workers, 0.2 s each); once 30 completed, nothing (the baseline), a worker replica
  killed, the dispatcher killed, or the application deleted and deployed again; ``lost``:
  acknowledged workloads never completed; the note counts workloads started twice.

``swaps-tf`` and ``soak-cycles-tf``: the same with the TensorFlow handler and SavedModels (built
first, in a child process). The one-hour mixed soak with wrk is ``benchmarks/soak.py``.

    .venv/bin/python benchmarks/faults.py [--only swaps,s3-paused] [--outage 30] [--swap-for 120]
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# (this folder holds a tensorflow.py of its own: it must not stand for TensorFlow)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from tests.support.s3_server import S3TestServer, free_port  # noqa: E402

HANDLER = """
import json, os


class Handler:
    def __init__(self, config, model_client):
        self.client = model_client

    def load_model(self, model_path):
        with open(os.path.join(model_path, "model.json")) as f:
            return json.load(f)["content"]

    def handle_post(self, payload):
        return {"content": self.client.get_model(payload.get("model", "m"))}
"""
STALE_S = 10.0
"""A removed version may still answer this long after its removal (the reload's own latency)."""
REQUEST_TIMEOUT_S = 30.0


@dataclass
class Row:
    scenario: str
    sent: int = 0
    non_2xx: int = 0
    wrong: int = 0
    recover_s: float | None = None
    lost: str = "-"
    note: str = ""


@dataclass
class Versions:
    """What was written when and removed when: what an answer may say at a moment."""

    written: dict[str, float] = field(default_factory=dict)
    removed: dict[str, float] = field(default_factory=dict)

    def allowed(self, content: str, at: float) -> bool:
        if content not in self.written:
            return False
        gone = self.removed.get(content)
        return gone is None or at <= gone + STALE_S


@dataclass
class Answer:
    sent: float
    at: float
    status: int
    content: str | None


class Load:
    """``clients`` threads POSTing to ``url`` until stopped (bounded by ``max_s``)."""

    def __init__(self, url: str, clients: int, max_s: float, payload: dict[str, Any] | None = None) -> None:
        self.url, self.clients, self.max_s = url, clients, max_s
        self.payload = payload or {"model": "m"}
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(REQUEST_TIMEOUT_S + 5)

    def _run(self) -> None:
        import httpx

        deadline = time.monotonic() + self.max_s
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                sent = time.time()
                try:
                    r = client.post(self.url, json=self.payload)
                    content = r.json().get("content") if r.status_code == 200 else None
                    answer = Answer(sent, time.time(), r.status_code, content)
                except Exception:
                    answer = Answer(sent, time.time(), 0, None)
                with self._lock:
                    self.answers.append(answer)

    def first(self, since: float, test: Callable[[Answer], bool], timeout: float) -> float | None:
        """When the first answer sent after ``since`` passing ``test`` came (waits up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [a.at for a in self.answers if a.sent >= since and test(a)]
            if found:
                return min(found)
            time.sleep(0.05)
        return None

    def row(self, scenario: str, versions: Versions | None = None) -> Row:
        with self._lock:
            answers = list(self.answers)
        wrong = 0
        if versions is not None:
            wrong = sum(
                1
                for a in answers
                if a.status == 200 and (a.content is None or not versions.allowed(a.content, a.sent))
            )
        return Row(scenario, len(answers), sum(1 for a in answers if a.status != 200), wrong)


class Models:
    """One model's versions in a local folder or an S3 bucket, each holding ``model.json``."""

    def __init__(self, root: Path | None = None, s3: S3TestServer | None = None, bucket: str = "") -> None:
        self.root, self.s3, self.bucket = root, s3, bucket
        self.versions = Versions()
        self.next = 1

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/models/" if self.s3 is not None else str(self.root)

    def write(
        self,
        content: str | None = None,
        raw: bytes | None = None,
        version: int | None = None,
        extra: bytes | None = None,
        model: str = "m",
    ) -> int:
        """Version ``version`` (default: the next) of ``model``: ``model.json`` holding ``content``
        (or ``raw`` bytes), and ``extra`` bytes in ``blob.bin``."""
        number = version if version is not None else self.next
        self.next = max(self.next, number + 1)
        data = raw if raw is not None else json.dumps({"content": content}).encode()
        files = {"model.json": data, **({"blob.bin": extra} if extra is not None else {})}
        for file, body in files.items():
            key = f"{model}/{number}/{file}"
            if self.s3 is not None:
                self.s3.client().put_object(Bucket=self.bucket, Key=f"models/{key}", Body=body)
            else:
                assert self.root is not None
                path = self.root / key
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(body)
                tmp.replace(path)
        if content is not None:
            self.versions.written[content] = time.time()
        return number

    def write_dir(self, source: Path, content: str, version: int | None = None, model: str = "m") -> int:
        """Version ``version`` (default: the next) of ``model``: a copy of the folder ``source``
        (a SavedModel), which answers ``content``; local only, moved into place whole."""
        assert self.root is not None
        number = version if version is not None else self.next
        self.next = max(self.next, number + 1)
        dest = self.root / model / str(number)
        staging = self.root / f".{model}-{number}.tmp"
        shutil.copytree(source, staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(dest)
        self.versions.written[content] = time.time()
        return number

    def remove(self, number: int, content: str) -> None:
        if self.s3 is not None:
            self.s3.client().delete_object(Bucket=self.bucket, Key=f"models/m/{number}/model.json")
        else:
            assert self.root is not None
            shutil.rmtree(self.root / "m" / str(number), ignore_errors=True)
        self.versions.removed[content] = time.time()


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, base: str, s3: S3TestServer) -> None:
        self.args, self.work, self.base, self.s3 = args, work, base, s3
        self.count = 0

    @contextmanager
    def api(
        self,
        models: Models,
        replicas: int = 1,
        poll: float = 1.0,
        handler: str = HANDLER,
        env: dict[str, str] | None = None,
        handler_type: str = "python",
        replica_env: dict[str, str] | None = None,
        **model_fields: Any,
    ) -> Iterator[str]:
        """An API serving ``models``; yields its URL; deleted after. ``env``: ``handler.env`` (its
        replicas and reloader); ``replica_env``: its replicas' only."""
        from cortex_ray.sdk import delete, run_api
        from cortex_ray.spec import parse_spec

        self.count += 1
        name = f"faults-{self.count}"
        project = self.work / name
        project.mkdir()
        (project / "handler.py").write_text(handler)
        spec = {
            "name": name,
            "kind": "RealtimeAPI",
            "handler": {
                "type": handler_type,
                "path": "handler.py",
                "env": env or {},
                "multi_model_reloading" if handler_type == "python" else "models": {
                    "dir": models.uri,
                    "poll_interval": poll,
                    "settle_time": 0.5,
                    **model_fields,
                },
            },
            "autoscaling": {"min_replicas": replicas, "max_replicas": replicas},
        }
        api = parse_spec([spec], base_dir=project).apis[0]
        actor: dict[str, Any] = {"num_cpus": 0.2}
        if replica_env:
            actor["runtime_env"] = {"env_vars": replica_env}
        run_api(api, ray_actor_options=actor)
        try:
            yield f"{self.base}/{name}"
        finally:
            delete(name)

    def models(self, s3: bool = False) -> Models:
        self.count += 1
        if s3:
            bucket = self.s3.create_bucket(f"faults-{self.count}-{os.getpid()}")
            return Models(s3=self.s3, bucket=bucket)
        return Models(root=self.work / f"models-{self.count}")

    def load(self, url: str, max_s: float) -> Load:
        return Load(url, self.args.clients, max_s)


def content_is(expected: str) -> Callable[[Answer], bool]:
    return lambda a: a.status == 200 and a.content == expected


def swaps(bench: Bench, handler: str = "python") -> Row:
    a = bench.args
    models = bench.models()
    count = int(a.swap_for / a.swap_every) + 2
    if handler == "tensorflow":  # SavedModels answering v1, v2...: built first, copied in at each swap
        built = saved_models(bench.work / "saved-swaps", {f"v{i}": 0 for i in range(1, count + 1)})

        def write(content: str) -> int:
            return models.write_dir(built[content], content)

        options: dict[str, Any] = {"handler": TF_HANDLER, "handler_type": "tensorflow"}
    else:

        def write(content: str) -> int:
            return models.write(content)

        options = {}
    kept: list[tuple[int, str]] = [(write("v1"), "v1")]
    with bench.api(models, **options) as url, bench.load(url, a.swap_for + 60) as load:
        load.first(0, content_is("v1"), 90)
        last_swap = 0.0
        end = time.monotonic() + a.swap_for
        while time.monotonic() < end and models.next <= count:
            time.sleep(a.swap_every)
            content = f"v{models.next}"
            kept.append((write(content), content))
            last_swap = time.time()
            if len(kept) > 2:
                models.remove(*kept.pop(0))
        served = load.first(last_swap, content_is(kept[-1][1]), 60)
    row = load.row("swaps" if handler == "python" else "swaps-tf", models.versions)
    row.recover_s = served - last_swap if served else None
    written = len(models.versions.written)
    row.note = f"{handler} handler; {written} versions, one every {a.swap_every:g}s, 1s poll"
    return row


def s3_outage(bench: Bench, how: str) -> Row:
    a = bench.args
    models = bench.models(s3=True)
    models.write("v1")
    with bench.api(models) as url, bench.load(url, a.outage + 120) as load:
        load.first(0, content_is("v1"), 60)
        time.sleep(3)
        if how == "paused":
            bench.s3.pause()
        else:
            bench.s3.stop(keep_data=True)
        time.sleep(a.outage)
        if how == "paused":
            bench.s3.resume()
        else:
            bench.s3.start()
        back = time.time()
        models.write("v2")
        served = load.first(back, content_is("v2"), 90)
        info = _info(url)
    row = load.row(f"s3-{how}", models.versions)
    row.recover_s = served - back if served else None
    loaded = info.get("cache", {}).get("in_memory", [])
    row.lost = "nothing" if row.non_2xx == 0 else f"{row.non_2xx} requests"
    row.note = (
        f"S3 {how} {a.outage:g}s; in memory after it: {' '.join(loaded) or 'none'}; recover = v2 -> served"
    )
    return row


def replica_killed(bench: Bench) -> Row:
    import ray

    models = bench.models()
    models.write("v1")
    with bench.api(models, replicas=2) as url, bench.load(url, 150) as load:
        load.first(0, content_is("v1"), 60)
        time.sleep(3)
        name = url.rsplit("/", 1)[1]
        victim = _replica_actors(name)[0]
        before = _routed_now(name)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        killed = time.time()
        routed = _wait(_replaced(name, before), 120)
        served = load.first(time.time(), content_is("v1"), 30) if routed else None
    row = load.row("replica-killed", models.versions)
    row.recover_s = (served - killed) if served else None
    row.lost = f"{row.non_2xx} requests" if row.non_2xx else "nothing"
    row.note = "1 of 2 replicas (ray.kill); recover = kill -> replacement routed by the balancer"
    return row


def _replica_processes(app: str) -> list[Any]:
    import psutil

    return sorted(
        (
            p
            for p in psutil.process_iter(["cmdline"])
            if " ".join(p.info["cmdline"] or []).startswith(f"ray::ServeReplica:{app}:")
        ),
        key=lambda p: p.pid,
    )


def replica_frozen(bench: Bench) -> Row:
    import signal

    a = bench.args
    models = bench.models()
    kept: list[tuple[int, str]] = [(models.write("v1"), "v1")]

    def swap() -> None:
        content = f"v{models.next}"
        kept.append((models.write(content), content))
        if len(kept) > 2:
            models.remove(*kept.pop(0))

    with bench.api(models, replicas=2) as url, bench.load(url, a.freeze + 120) as load:
        load.first(0, content_is("v1"), 60)
        name = url.rsplit("/", 1)[1]
        if not _wait(lambda: _routed(name) == 2 and len(_replica_processes(name)) == 2, 60):
            raise RuntimeError(f"{name}: two replicas were not routed within 60 s")
        time.sleep(2)
        victim = _replica_processes(name)[0]
        victim.send_signal(signal.SIGSTOP)
        frozen = time.time()
        try:
            while time.time() + a.swap_every <= frozen + a.freeze:
                time.sleep(a.swap_every)
                swap()
            time.sleep(max(0.0, frozen + a.freeze - time.time()))
        finally:
            victim.send_signal(signal.SIGCONT)
        thawed = time.time()
        for _ in range(int(10 / a.swap_every)):
            time.sleep(a.swap_every)
            swap()
        last = time.time()
        served = load.first(last, content_is(kept[-1][1]), 30)
        time.sleep(2)
    row = load.row("replica-frozen", models.versions)
    answers = list(load.answers)
    removed = models.versions.removed
    stale = [x for x in answers if x.status == 200 and x.content in removed and removed[x.content] < x.sent]
    row.wrong = max(row.wrong, len(stale))
    late = [x.at for x in stale if x.at >= thawed]
    row.recover_s = (max(late) - thawed) if late else 0.0
    slowest = max((x.at - x.sent for x in answers), default=0.0)
    waited = sum(1 for x in answers if x.at - x.sent > 2.0)
    row.lost = f"{row.non_2xx} requests" if row.non_2xx else "nothing"
    row.note = (
        f"1 of 2 replicas frozen {a.freeze:g}s during swaps every {a.swap_every:g}s; "
        f"{len(stale)} answers from a version removed before the request ({len(late)} after the thaw); "
        f"{waited} answers took over 2s (slowest {slowest:.1f}s); last version served "
        f"{'%.1fs after it was written' % (served - last) if served else 'NOT within 30 s'}"
    )
    return row


def reloader_killed(bench: Bench) -> Row:
    import ray

    models = bench.models()
    models.write("v1")
    with bench.api(models) as url, bench.load(url, 150) as load:
        load.first(0, content_is("v1"), 60)
        models.write("v2")
        time.sleep(0.7)  # (inside the settle time: the reloader is publishing v2)
        name = url.rsplit("/", 1)[1]
        (actor,) = [
            a
            for a in ray.util.list_named_actors(all_namespaces=True)
            if f"{name}::{name}::" in a["name"] and a["name"].endswith("::reloader")
        ]
        epoch = _info(url).get("reloader", {}).get("epoch")
        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
        killed = time.time()
        models.write("v3")
        back = _wait(lambda: _info(url).get("reloader", {}).get("epoch") not in (None, epoch), 90)
        restarted = time.time() - killed if back else None
        served = load.first(killed, content_is("v3"), 90)
    row = load.row("reloader-killed", models.versions)
    row.recover_s = served - killed if served else None
    row.lost = "nothing" if served else "v3 never served"
    again = f"{restarted:.1f}s" if restarted is not None else "never"
    row.note = (
        f"killed while publishing v2; a new reloader answered after {again}; recover = kill -> v3 served"
    )
    return row


def corrupt_version(bench: Bench) -> Row:
    models = bench.models()
    models.write("v1")
    with bench.api(models) as url, bench.load(url, 150) as load:
        load.first(0, content_is("v1"), 60)
        broken = models.write(raw=b"\x00garbage, not JSON")
        time.sleep(8)  # (several polls: the broken version is found, tried, refused)
        info = _info(url)
        fixed_at = time.time()
        models.write("v2-fixed", version=broken)
        served = load.first(fixed_at, content_is("v2-fixed"), 90)
    row = load.row("corrupt-version", models.versions)
    row.recover_s = served - fixed_at if served else None
    details = info.get("model_metadata", {}).get("m", {}).get("details", {})
    states = [f"v{v}:{d.get('state')}" for v, d in sorted(details.items())]
    row.lost = "nothing" if row.non_2xx == 0 else f"{row.non_2xx} requests"
    row.note = f"while broken: {' '.join(states) or '?'}; recover = fixed file -> served"
    return row


class FaultyS3:
    """An HTTP proxy in front of the S3 test server that passes requests on, or (``failing``)
    answers each with a 503 ``SlowDown`` or a 500 ``InternalError``, as S3 does when it throttles
    or fails."""

    def __init__(self, target: str) -> None:
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        self.failing = False
        self.failed = 0
        proxy = self
        target_host, target_port = urlsplit(target).hostname, urlsplit(target).port

        class Forward(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if proxy.failing:
                    proxy.failed += 1
                    status, code = (503, "SlowDown") if proxy.failed % 2 else (500, "InternalError")
                    error = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                    self.send_response(status)
                    self.send_header("content-type", "application/xml")
                    self.send_header("content-length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                upstream = http.client.HTTPConnection(target_host, target_port, timeout=30)
                upstream.request(self.command, self.path, body, dict(self.headers))
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def s3_errors(bench: Bench) -> Row:
    a = bench.args
    models = bench.models(s3=True)
    models.write("v1")
    faulty = FaultyS3(bench.s3.endpoint_url)
    try:
        with (
            bench.api(models, env={"AWS_ENDPOINT_URL": faulty.url}) as url,
            bench.load(url, a.outage + 120) as load,
        ):
            load.first(0, content_is("v1"), 60)
            time.sleep(3)
            faulty.failing = True
            time.sleep(a.outage)
            faulty.failing = False
            back = time.time()
            models.write("v2")
            served = load.first(back, content_is("v2"), 90)
            loaded = _info(url).get("cache", {}).get("in_memory", [])
    finally:
        faulty.close()
    row = load.row("s3-errors", models.versions)
    row.recover_s = served - back if served else None
    row.lost = "nothing" if row.non_2xx == 0 else f"{row.non_2xx} requests"
    row.note = (
        f"S3 answered 503 SlowDown / 500 for {a.outage:g}s ({faulty.failed} answers); in memory after: "
        f"{' '.join(loaded) or 'none'}; recover = v2 -> served"
    )
    return row


def disk_full(bench: Bench) -> Row:
    """The disk tier on a 4 MiB tmpfs; a new version with an 8 MiB file cannot be downloaded."""
    import subprocess

    disk = bench.work / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        return Row("disk-full", note=f"skipped: cannot mount a tmpfs ({mounted.stderr.decode().strip()})")
    try:
        models = bench.models()
        models.write("v1")
        with (
            bench.api(models, replica_env={"CORTEX_RAY_CACHE_DIR": str(disk)}) as url,
            bench.load(url, 150) as load,
        ):
            load.first(0, content_is("v1"), 60)
            big = models.write("v2-big", extra=os.urandom(8 * 2**20))
            time.sleep(8)  # (found, downloaded into a full disk, refused)
            details = _info(url).get("model_metadata", {}).get("m", {}).get("details", {})
            while_full = shutil.disk_usage(disk).used
            fixed_at = time.time()
            models.write("v2-small", version=big, extra=b"small")
            served = load.first(fixed_at, content_is("v2-small"), 90)
            after = shutil.disk_usage(disk).used
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    row = load.row("disk-full", models.versions)
    row.recover_s = served - fixed_at if served else None
    row.lost = "nothing" if row.non_2xx == 0 else f"{row.non_2xx} requests"
    states = " ".join(f"v{v}:{d.get('state')}" for v, d in sorted(details.items()))
    reason = next((d.get("reason") for d in details.values() if d.get("reason")), "")
    row.note = (
        f"4 MiB disk tier, v2 with 8 MiB: {states} ({str(reason)[:80]}); disk used while full "
        f"{while_full // 1024} KiB, after the fix {after // 1024} KiB; recover = smaller v2 -> served"
    )
    return row


def haproxy_killed(bench: Bench) -> Row:
    """The balancer's HAProxy killed (SIGKILL, master and workers) under load."""
    import signal
    import subprocess

    models = bench.models()
    models.write("v1")
    with bench.api(models) as url, bench.load(url, 150) as load:
        load.first(0, content_is("v1"), 60)
        time.sleep(3)
        found = subprocess.run(
            ["pgrep", "-f", "cortex-ray-ingress-.*haproxy.cfg"], capture_output=True, text=True
        )
        pids = [int(p) for p in found.stdout.split()]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed = time.time()
        served = load.first(killed + 0.5, content_is("v1"), 60)
    row = load.row("haproxy-killed", models.versions)
    row.recover_s = served - killed if served else None
    row.lost = f"{row.non_2xx} requests" if row.non_2xx else "nothing"
    row.note = (
        f"{len(pids)} HAProxy processes killed; the ingress starts it again; non-2xx: connections refused "
        "meanwhile (the clients retry at once); recover = kill -> served"
    )
    return row


def ingress_killed(bench: Bench) -> Row:
    """The ingress actor itself killed (``ray.kill``: its HAProxy dies with it) under load; Ray
    restarts it, and the replicas' heartbeats register them again."""
    import ray

    from cortex_ray.ingress.control import get_ingress

    models = bench.models()
    models.write("v1")
    with bench.api(models, replicas=2) as url, bench.load(url, 150) as load:
        load.first(0, content_is("v1"), 60)
        time.sleep(3)
        name = url.rsplit("/", 1)[1]
        ray.kill(get_ingress(), no_restart=False)
        killed = time.time()
        served = load.first(killed + 0.5, content_is("v1"), 60)
        listening = load.first(killed + 0.5, lambda a: a.status != 0, 1)
        both = _wait(lambda: _routed(name) == 2, 60)
        routed = time.time() - killed
        time.sleep(3)  # (served steadily after)
    row = load.row("ingress-killed", models.versions)
    row.recover_s = served - killed if served else None
    answering = (listening - killed) if listening else float("nan")
    after = [a for a in load.answers if served is not None and a.sent > served]
    failed_after = sum(1 for a in after if a.status != 200)
    row.lost = f"{row.non_2xx} requests" if row.non_2xx else "nothing"
    row.note = (
        f"Ray restarts the actor and its HAProxy (answering after {answering:.1f}s), which routes its "
        f"kept routes; both replicas routed after {routed:.1f}s{'' if both else ' (NOT within 60 s)'}; "
        f"{failed_after} non-2xx after the first answer; non-2xx: connections refused meanwhile; "
        "recover = kill -> served"
    )
    return row


def node_removed(args: argparse.Namespace, work: Path, s3: S3TestServer) -> Row:
    """A node removed from a local cluster (its own Ray: a head with no CPUs and two worker nodes,
    every one on 127.0.0.1) under load, while versions swap every 2 s: the node holding the
    reloader when it is on a worker (else one holding a replica) goes, with everything on it."""
    import psutil
    from ray.cluster_utils import Cluster

    from cortex_ray.cluster.local_run import use_loopback
    from cortex_ray.sdk import shutdown, start

    os.environ.setdefault("RAY_SERVE_DEPLOYMENT_ACTOR_HEALTH_CHECK_PERIOD_S", "2")
    use_loopback()  # (every node on 127.0.0.1: Ray otherwise takes the machine's address)
    loopback = {"node_ip_address": "127.0.0.1", "include_dashboard": False}
    head: dict[str, Any] = {"num_cpus": 0, **loopback}
    if args.node_health:  # how soon the GCS declares a node dead: "period_ms,failures"
        period, failures = (int(x) for x in args.node_health.split(","))
        head["_system_config"] = {
            "health_check_period_ms": period,
            "health_check_failure_threshold": failures,
        }
    cluster = Cluster(initialize_head=True, head_node_args=head)
    workers = [cluster.add_node(num_cpus=2, **loopback) for _ in range(2)]
    base = start(port=free_port(), address=cluster.address, log_to_driver=False)
    bench = Bench(args, work, base, s3)
    try:
        models = bench.models()
        kept: list[tuple[int, str]] = [(models.write("v1"), "v1")]
        with bench.api(models, replicas=2) as url, bench.load(url, 240) as load:
            name = url.rsplit("/", 1)[1]
            load.first(0, content_is("v1"), 120)
            _wait(lambda: _routed(name) == 2, 60)

            def on(node: Any, marker: str) -> bool:
                raylet = node.all_processes["raylet"][0].process.pid
                for proc in psutil.process_iter(["cmdline"]):
                    if marker in " ".join(proc.info["cmdline"] or []):
                        try:
                            if raylet in [p.pid for p in proc.parents()]:
                                return True
                        except psutil.Error:
                            continue
                return False

            def swap() -> None:
                content = f"v{models.next}"
                kept.append((models.write(content), content))
                if len(kept) > 2:
                    models.remove(*kept.pop(0))

            for _ in range(5):  # versions reach both nodes' replicas
                time.sleep(2)
                swap()
            holding_reloader = [w for w in workers if on(w, "ModelReloader")]
            victim = (
                holding_reloader[0]
                if holding_reloader
                else next(w for w in workers if on(w, f"ServeReplica:{name}:"))
            )
            replicas_there = on(victim, f"ServeReplica:{name}:")
            epoch = _info(url).get("reloader", {}).get("epoch")
            before = _routed_now(name)
            cluster.remove_node(victim, allow_graceful=False)
            removed = time.time()
            reloader_back: float | None = None
            routed: float | None = None
            replaced = _replaced(name, before)
            for _ in range(15):  # versions keep coming while the cluster heals
                swap_at = time.monotonic() + 2
                while time.monotonic() < swap_at:  # (the replacement's routing, watched meanwhile)
                    if routed is None and replaced():
                        routed = time.time() - removed
                    time.sleep(0.2)
                swap()
                if reloader_back is None and _info(url).get("reloader", {}).get("epoch") not in (None, epoch):
                    reloader_back = time.time() - removed
            last = time.time()
            served = load.first(last, content_is(kept[-1][1]), 90)
            healed = routed is not None or _wait(replaced, 120)
            if routed is None and healed:
                routed = time.time() - removed
        row = load.row("node-removed", models.versions)
        row.recover_s = served - last if served else None
        row.lost = f"{row.non_2xx} requests" if row.non_2xx else "nothing"
        failed = [a.sent - removed for a in load.answers if a.status != 200]
        stale = [
            a.sent - removed
            for a in load.answers
            if a.status == 200 and (a.content is None or not models.versions.allowed(a.content, a.sent))
        ]

        def span(xs: list[float]) -> str:
            return f"{min(xs):+.1f}..{max(xs):+.1f}s" if xs else "none"

        row.note = (
            f"removed the worker node holding {'the reloader' if holding_reloader else 'a replica only'}"
            f"{' and a replica' if holding_reloader and replicas_there else ''}"
            + (
                f"; reloader back after {f'{reloader_back:.0f}s' if reloader_back else 'NEVER'}"
                if holding_reloader
                else " (the reloader is on the head)"
            )
            + (
                f"; GCS node checks every {period} ms, dead after {failures} failed"
                if args.node_health
                else ""
            )
            + f"; 20 versions, one every 2s; the replacement routed {routed or 0:.1f}s after"
            + ("" if healed else " (NOT within 120 s)")
            + "; "
            f"non-2xx sent at {span(failed)}, wrong at {span(stale)} of the removal; "
            "recover = last version written -> served"
        )
        return row
    finally:
        shutdown()
        cluster.shutdown()


TF_HANDLER = """
class Handler:
    def __init__(self, config, tensorflow_client):
        self.client = tensorflow_client

    def handle_post(self, payload):
        out = self.client.predict({"x": [1.0]}, payload["model"])
        tag = out["tag"][0]
        with open("/proc/self/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return {
            "content": tag.decode() if isinstance(tag, bytes) else str(tag),
            "sum": float(out["total"][0]),
            "rss_kib": rss,
        }
"""


def saved_models(root: Path, tags: dict[str, int]) -> dict[str, Path]:
    """One SavedModel per tag (``tests/support/tf_models.save_tagged``, holding that many float32
    weights), built in a child process (TensorFlow stays out of this one)."""
    import subprocess

    root.mkdir(parents=True, exist_ok=True)
    script = (
        "import json, sys; from pathlib import Path; from tests.support.tf_models import save_tagged\n"
        "root, tags = Path(sys.argv[1]), json.loads(sys.argv[2])\n"
        "for tag, weights in tags.items(): save_tagged(root / tag, tag, weights)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(root), json.dumps(tags)],
        check=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)},
        capture_output=True,
    )
    return {tag: root / tag for tag in tags}


SOAK_HANDLER = """
import os
import numpy as np


class Handler:
    def __init__(self, config, model_client):
        self.client = model_client

    def load_model(self, model_path):
        return np.load(os.path.join(model_path, "weights.npy"))

    def handle_post(self, payload):
        weights = self.client.get_model(payload["model"])
        with open("/proc/self/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return {"content": payload["model"], "sum": float(weights[:10].sum()), "rss_kib": rss}
"""


def soak_cycles(bench: Bench, handler: str = "python") -> Row:
    """Two models of 8 MiB each with room for one in memory: every request unloads one and loads
    the other; the replica's resident memory after ``--cycles`` cycles against after the first 100."""
    import io

    import httpx
    import numpy as np

    cycles = bench.args.cycles
    models = bench.models()
    options: dict[str, Any] = {"handler": SOAK_HANDLER}
    if handler == "tensorflow":
        built = saved_models(bench.work / "saved-soak", {"a": 2**21, "b": 2**21})  # 8 MiB of float32
        for name in ("a", "b"):
            models.write_dir(built[name], name, version=1, model=name)
        options = {"handler": TF_HANDLER, "handler_type": "tensorflow"}
    else:
        for name in ("a", "b"):
            buffer = io.BytesIO()
            np.save(buffer, np.random.default_rng(0).random(2**20))  # 8 MiB of float64
            models.write(raw=b"{}", version=1, model=name)
            assert models.root is not None
            (models.root / name / "1" / "weights.npy").write_bytes(buffer.getvalue())
    rss: list[int] = []
    failures = 0
    with bench.api(models, cache_size=1, disk_cache_size=2, **options) as url:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            for i in range(cycles * 2):
                r = client.post(url, json={"model": "ab"[i % 2]})
                if r.status_code != 200:
                    failures += 1
                    continue
                if i % 2:
                    rss.append(int(r.json()["rss_kib"]))
        cache = _info(url).get("cache", {})
        loads, reclaim = cache.get("loads"), cache.get("reclaim", {})
    base = rss[min(99, len(rss) - 1)] if rss else 0
    growth = (rss[-1] - base) / base if base else 0.0
    row = Row("soak-cycles" if handler == "python" else "soak-cycles-tf", cycles * 2, failures, 0)
    row.lost = f"RSS {growth:+.1%}"
    kind = "numpy models" if handler == "python" else "SavedModels"
    row.note = (
        f"{cycles} unload/load cycles of two 8 MiB {kind}, one in memory: RSS {base // 1024} MiB "
        f"after 100 cycles, {rss[-1] // 1024 if rss else 0} MiB at the end (goal: under +5%); loads {loads}; "
        f"collections {reclaim.get('collections')} ({reclaim.get('urgent_collections')} for the backlog), "
        f"{reclaim.get('freed_by_refcount')} freed without one"
    )
    return row


ASYNC_HANDLER = """
import time


class Handler:
    def __init__(self, config):
        self.log = config["log"]

    def handle_async(self, payload, request_id):
        with open(self.log, "a") as f:  # every start of a workload, one line
            f.write(request_id + "\\n")
        time.sleep(payload["sleep"])
        return {"n": payload["n"]}
"""


def asyncapi(bench: Bench, fault: str) -> Row:
    """200 workloads submitted at once to an AsyncAPI (two workers, each workload 0.2 s), a fault
    once 30 have completed: ``worker`` (one worker replica killed), ``dispatcher`` (the dispatcher
    killed), ``redeploy`` (the application deleted and deployed again); ``none``: the baseline (the
    same moment, no fault). Lost: acknowledged workloads that never completed; the note counts the
    workloads that started twice. ``recover`` includes working off the ~170 workloads left."""
    import concurrent.futures

    import httpx
    import ray

    from cortex_ray.sdk import delete, run_api
    from cortex_ray.spec import parse_spec

    bench.count += 1
    name = f"faults-async-{bench.count}"
    project = bench.work / name
    project.mkdir()
    (project / "handler.py").write_text(ASYNC_HANDLER)
    log = project / "starts.log"
    spec = {
        "name": name,
        "kind": "AsyncAPI",
        "handler": {"type": "python", "path": "handler.py", "config": {"log": str(log)}},
        "autoscaling": {"min_replicas": 2, "max_replicas": 2},
    }
    api = parse_spec([spec], base_dir=project).apis[0]
    options = {"ray_actor_options": {"num_cpus": 0.2}, "graceful_shutdown_timeout_s": 1}
    run_api(api, **options)
    url = f"{bench.base}/{name}"
    failed_posts = 0

    def submit(n: int) -> str | None:
        nonlocal failed_posts
        r = httpx.post(url, json={"n": n, "sleep": 0.2}, timeout=REQUEST_TIMEOUT_S)
        if r.status_code != 200:
            failed_posts += 1
            return None
        return str(r.json()["id"])

    def status(client: httpx.Client, workload: str) -> str:
        try:
            return str(client.get(f"{url}/{workload}").json().get("status"))
        except Exception:
            return "unreachable"

    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ids = [i for i in pool.map(submit, range(200)) if i is not None]
    recovered: float | None = None
    try:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            _wait(lambda: sum(status(client, i) == "completed" for i in ids[:60]) >= 30, 120)
            at_fault = time.time()
            if fault == "worker":
                victim = next(a for a in _replica_actors(name) if "worker" in a)
                ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
            elif fault == "dispatcher":
                (actor,) = [
                    a
                    for a in ray.util.list_named_actors(all_namespaces=True)
                    if f"{name}::{name}::" in a["name"] and a["name"].endswith("::dispatcher")
                ]
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            elif fault == "redeploy":
                delete(name)
                run_api(api, **options)
            pending = list(ids)
            deadline = time.monotonic() + 300
            final: dict[str, str] = {}
            while pending and time.monotonic() < deadline:
                for workload in list(pending):
                    state = status(client, workload)
                    if state in ("completed", "failed"):
                        final[workload] = state
                        pending.remove(workload)
                time.sleep(0.5)
            recovered = time.time() - at_fault if not pending else None
    finally:
        delete(name)
    starts = log.read_text().split() if log.exists() else []
    twice = sum(1 for n in collections.Counter(starts).values() if n > 1)
    completed = sum(1 for state in final.values() if state == "completed")
    row = Row(f"async-{fault}", len(ids) + failed_posts, failed_posts, 0)
    row.recover_s = recovered
    lost = len(ids) - completed
    row.lost = "nothing" if lost == 0 else f"{lost} workloads"
    failed = sum(1 for state in final.values() if state == "failed")
    row.note = (
        f"200 workloads, {completed} completed, {failed} failed, {len(pending)} unfinished, {twice} started "
        f"twice; recover = fault -> all finished ({time.time() - started:.0f}s in all)"
    )
    return row


SCENARIOS: dict[str, Callable[[Bench], Row]] = {
    "swaps": swaps,
    "swaps-tf": lambda b: swaps(b, "tensorflow"),
    "s3-paused": lambda b: s3_outage(b, "paused"),
    "s3-refused": lambda b: s3_outage(b, "refused"),
    "replica-killed": replica_killed,
    "replica-frozen": replica_frozen,
    "reloader-killed": reloader_killed,
    "corrupt-version": corrupt_version,
    "s3-errors": s3_errors,
    "disk-full": disk_full,
    "haproxy-killed": haproxy_killed,
    "ingress-killed": ingress_killed,
    "soak-cycles": soak_cycles,
    "soak-cycles-tf": lambda b: soak_cycles(b, "tensorflow"),
    "async-none": lambda b: asyncapi(b, "none"),
    "async-worker": lambda b: asyncapi(b, "worker"),
    "async-dispatcher": lambda b: asyncapi(b, "dispatcher"),
    "async-redeploy": lambda b: asyncapi(b, "redeploy"),
}


OWN_RAY: dict[str, Callable[[argparse.Namespace, Path, S3TestServer], Row]] = {
    "node-removed": node_removed,
}
"""Scenarios that start a Ray of their own (after the others, which share one)."""


def _info(url: str) -> dict[str, Any]:
    import httpx

    try:
        body = httpx.get(f"{url}/info", timeout=10).json()
        return body if isinstance(body, dict) else {}
    except Exception:
        return {}


def _replica_actors(app: str) -> list[str]:
    import ray

    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{app}#")
    )


def _routed(api: str) -> int:
    names = _routed_names(api)
    return -1 if names is None else len(names)


def _routed_names(api: str) -> set[str] | None:
    """The replicas the balancer routes ``api`` to (``None`` while the ingress restarts)."""
    import ray

    from cortex_ray.ingress.control import get_ingress

    try:
        status = ray.get(get_ingress().status.remote(), timeout=10)
    except Exception:  # (restarting)
        return None
    return set(status["apis"].get(api, {}).get("replicas", {}))


def _routed_now(api: str) -> set[str]:
    """The replicas routed now, asked until the ingress answers."""
    deadline = time.monotonic() + 60
    while (names := _routed_names(api)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the ingress did not answer within 60 s")
        time.sleep(0.2)
    return names


def _replaced(api: str, before: set[str]) -> Callable[[], bool]:
    """Whether a replica not in ``before`` is routed (the dead one may still be listed: HAProxy's
    checks keep traffic off it until its registration lapses)."""

    def check() -> bool:
        names = _routed_names(api)
        return names is not None and bool(names - before)

    return check


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join([*SCENARIOS, *OWN_RAY]), help="comma-separated scenarios")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--swap-every", type=float, default=2.0)
    parser.add_argument("--swap-for", type=float, default=120.0)
    parser.add_argument(
        "--node-health",
        default="",
        help="node-removed: the GCS's node checks, 'period_ms,failures' (Ray's default: 3000,5)",
    )
    parser.add_argument("--freeze", type=float, default=15.0, help="replica-frozen: seconds frozen")
    parser.add_argument("--cycles", type=int, default=1000, help="soak-cycles: unload/load cycles")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS and s not in OWN_RAY]
    if unknown:
        sys.exit(f"unknown scenarios: {', '.join(unknown)} (known: {', '.join([*SCENARIOS, *OWN_RAY])})")

    from cortex_ray.sdk import shutdown, start

    rows: list[Row] = []

    def measure(name: str, scenario: Callable[[], Row], s3: S3TestServer) -> None:
        started = time.monotonic()
        try:
            row = scenario()
        except Exception as exc:  # a scenario that breaks is a finding, not the end
            row = Row(name, note=f"FAILED: {type(exc).__name__}: {exc}")
            s3.ensure_ready()
        row.note += f" ({time.monotonic() - started:.0f}s)"
        rows.append(row)
        print(_format(row), flush=True)

    with tempfile.TemporaryDirectory(prefix="cortex-ray-faults-") as tmp, S3TestServer() as s3:
        os.environ.update(s3.env())  # (the replicas and reloaders Ray starts inherit it)
        shared = [n for n in chosen if n in SCENARIOS]
        if shared:
            base = start(port=free_port(), num_cpus=4, log_to_driver=False)
            try:
                bench = Bench(args, Path(tmp), base, s3)
                for name in shared:
                    measure(name, functools.partial(SCENARIOS[name], bench), s3)
            finally:
                shutdown()
        for name in chosen:
            if name in OWN_RAY:
                measure(name, functools.partial(OWN_RAY[name], args, Path(tmp), s3), s3)
    print(
        f"\n{args.clients} clients; outage {args.outage:g}s; a swap every {args.swap_every:g}s "
        f"for {args.swap_for:g}s"
    )
    print(f"{'scenario':<17}{'sent':>7}{'non-2xx':>9}{'wrong':>7}{'recover s':>11}  {'lost':<14}note")
    for row in rows:
        print(_format(row))


def _format(row: Row) -> str:
    recover = f"{row.recover_s:.2f}" if row.recover_s is not None else "-"
    counts = f"{row.sent:>7}{row.non_2xx:>9}{row.wrong:>7}"
    return f"{row.scenario:<17}{counts}{recover:>11}  {row.lost:<14}{row.note}"


if __name__ == "__main__":
    main()
