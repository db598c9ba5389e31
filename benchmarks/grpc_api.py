"""gRPC APIs against HTTP, on both ingress paths: one trivial handler, four ways in, same run.

The same handler answers ``handle_post`` and the unary rpc ``Predict``, deployed twice (one
replica each): ``grpc-bench`` on the fast ingress, ``grpc-bench-proxy`` on Serve's proxy.

* ``http-fast``: ``POST /grpc-bench`` through HAProxy to the replica's own HTTP server (wrk);
* ``grpc-fast``: ``/grpc_bench.Handler/Predict`` through HAProxy (HTTP/2) to the replica's own
  gRPC server (h2load);
* ``http-proxy``: ``POST /grpc-bench-proxy`` through Serve's HTTP proxy (wrk);
* ``grpc-proxy``: ``/grpc_bench_proxy.Handler/Predict`` through Serve's gRPC proxy, routed by
  cortex-ray (h2load).

h2load (``apt-get install nghttp2-client``) sends gRPC's framing over HTTP/2 from a file, one
stream per connection. Rounds alternate the four (``--rounds`` x ``--seconds`` each, 2 threads,
``--connections`` connections), so drift hits all of them. Each gRPC round's answer is checked once
with a real grpcio client first (h2load sees HTTP 200 even for a gRPC error). Figures: requests per
second, and each gRPC way against the HTTP way on the same path.

    .venv/bin/python benchmarks/grpc_api.py [--seconds 10] [--rounds 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# (this folder holds a tensorflow.py of its own: it must not stand for TensorFlow)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from benchmarks.overhead import wait_ok, wrk  # noqa: E402
from tests.support.s3_server import free_port  # noqa: E402

PROTO = """
syntax = "proto3";
package {package};
service Handler {{ rpc Predict (Sample) returns (Response); }}
message Sample {{ float x = 1; }}
message Response {{ float y = 1; }}
"""
HANDLER = """
class Handler:
    def __init__(self, proto_module_pb2):
        self.pb2 = proto_module_pb2

    def handle_post(self, payload):
        return {"y": payload["x"] * 2}

    def Predict(self, payload):
        return self.pb2.Response(y=payload.x * 2)
"""
WAYS = ("http-fast", "grpc-fast", "http-proxy", "grpc-proxy")


def h2load(url: str, body: Path, seconds: float, connections: int) -> float:
    """Requests per second h2load reached (0 when it said nothing)."""
    out = subprocess.run(
        [
            "h2load",
            f"-D{seconds:g}",
            f"-c{connections}",
            "-m1",
            "-t2",
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    failed = re.search(r"(\d+) failed", out)
    if failed and int(failed.group(1)):
        print(f"  h2load: {failed.group(1)} failed", file=sys.stderr)
    return float(match.group(1)) if match else 0.0


def api(name: str, proto: str) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "RealtimeAPI",
        "handler": {"type": "python", "path": "handler.py", "protobuf_path": proto},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            sys.exit(f"needs {tool} (apt-get install {package})")

    import grpc

    from cortex_ray.sdk import run_api, shutdown, start
    from cortex_ray.spec import parse_spec

    rps: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "handler.py").write_text(HANDLER)
        for package in ("grpc_bench", "grpc_bench_proxy"):
            (project / f"{package}.proto").write_text(PROTO.format(package=package))
        client = project / "client"
        client.mkdir()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{project}",
                f"--python_out={client}",
                "grpc_bench.proto",
            ],
            check=True,
        )
        sys.path.insert(0, str(client))
        import grpc_bench_pb2 as pb2  # type: ignore[import-not-found]

        message = pb2.Sample(x=1.5).SerializeToString()
        body = project / "request.grpc"
        body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
        ports = {name: free_port() for name in ("port", "proxy_port", "grpc_port", "proxy_grpc_port")}
        base = start(**ports, num_cpus=4, log_to_driver=False)
        try:
            spec = parse_spec(
                [api("grpc-bench", "grpc_bench.proto"), api("grpc-bench-proxy", "grpc_bench_proxy.proto")],
                base_dir=project,
            )
            options = {"ray_actor_options": {"num_cpus": 0.5}}
            run_api(spec.apis[0], **options)
            run_api(spec.apis[1], ingress="proxy", **options)
            http = {
                "http-fast": (f"{base}/grpc-bench", '{"x": 1.5}'),
                "http-proxy": (f"http://127.0.0.1:{ports['proxy_port']}/grpc-bench-proxy", '{"x": 1.5}'),
            }
            grpc_ways = {
                "grpc-fast": (ports["grpc_port"], "grpc_bench"),
                "grpc-proxy": (ports["proxy_grpc_port"], "grpc_bench_proxy"),
            }
            channels = {
                way: grpc.insecure_channel(f"127.0.0.1:{port}") for way, (port, _) in grpc_ways.items()
            }

            def check(way: str) -> None:
                package = grpc_ways[way][1]
                predict = channels[way].unary_unary(
                    f"/{package}.Handler/Predict", response_deserializer=pb2.Response.FromString
                )
                assert predict(message, timeout=60).y == 3.0

            def grpc_url(way: str) -> str:
                port, package = grpc_ways[way]
                return f"http://127.0.0.1:{port}/{package}.Handler/Predict"

            for url, payload in http.values():
                wait_ok(url, payload)
                wrk(url, payload, 2, 2, args.connections)  # (warm)
            for way in grpc_ways:
                check(way)
                h2load(grpc_url(way), body, 2, args.connections)  # (warm)
            for _ in range(args.rounds):
                for way in WAYS:
                    if way in http:
                        rps[way] += wrk(*http[way], args.seconds, 2, args.connections).rps
                    else:
                        check(way)
                        rps[way].append(h2load(grpc_url(way), body, args.seconds, args.connections))
            for channel in channels.values():
                channel.close()
        finally:
            shutdown()
    print(
        f"\ntrivial handler, one replica per API; {args.connections} connections, 2 threads, "
        f"{args.rounds} rounds x {args.seconds:g}s, alternating"
    )
    means = {way: statistics.mean(values) for way, values in rps.items()}
    print(f"{'way in':<12}{'req/s':>10}   rounds")
    for way, values in rps.items():
        print(f"{way:<12}{means[way]:>10.0f}   {' '.join(f'{v:.0f}' for v in values)}")
    print(
        f"grpc-fast / http-fast: {means['grpc-fast'] / means['http-fast']:.2f}   "
        f"grpc-proxy / http-proxy: {means['grpc-proxy'] / means['http-proxy']:.2f}   "
        f"grpc-fast / grpc-proxy: {means['grpc-fast'] / means['grpc-proxy']:.1f}"
    )


if __name__ == "__main__":
    main()
