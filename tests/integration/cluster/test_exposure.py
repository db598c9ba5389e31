"""What a local run exposes.

Every socket that the session's Ray, Serve, the balancer and the replicas listen on is on
127.0.0.1, but two that Ray Serve binds on every interface whatever it is told: each replica's
inter-deployment gRPC server (protected by Ray's token authentication) and Serve's gRPC proxy
(only APIs deployed with ``ingress="proxy"`` use it; the README says so). From another address
(a network namespace joined by a veth pair, as another machine would be), the replica's server
refuses a call without the token, and the balancer's HTTP port cannot be reached at all.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.ray

HANDLER = "class Handler:\n    def handle_post(self, payload):\n        return payload\n"


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _listening() -> list[Any]:
    """The listening TCP sockets of this process and every process under it (Ray's, here)."""
    ours = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    return [
        c
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in ours and c.laddr
    ]


def _name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return "?"


@pytest.fixture
def exposure_api(deploy: Any, tmp_path: Any) -> str:
    from tests.support.project import write_handler

    write_handler(tmp_path, HANDLER)
    deploy(
        tmp_path,
        [{"name": "exposure", "kind": "RealtimeAPI", "handler": {"type": "python", "path": "handler.py"}}],
    )
    return "exposure"


def test_a_local_run_listens_on_loopback_only_but_where_ray_serve_binds_everywhere(
    ray_serve: dict[str, Any], exposure_api: str
) -> None:
    listening = _listening()
    assert len(listening) >= 8  # (GCS, raylet, agents, the balancer, replicas...: the check sees them)
    serve_grpc = int(ray_serve["proxy_grpc_address"].rsplit(":", 1)[1])
    exposed = sorted(
        f"{_name(c.pid)} {c.laddr.ip}:{c.laddr.port}"
        for c in listening
        if not _loopback(c.laddr.ip) and c.laddr.port != serve_grpc
    )
    # what is left: Serve's replicas' inter-deployment gRPC servers ("[::]:0" in Ray Serve)
    assert exposed and all(e.startswith("ray::ServeReplica") for e in exposed), exposed
    balancer = int(ray_serve["url"].rsplit(":", 1)[1])
    assert any(c.laddr.port == balancer and _loopback(c.laddr.ip) for c in listening)


@pytest.fixture
def other_host() -> Iterator[tuple[str, str]]:
    """A network namespace joined to this one by a veth pair: (its name, this side's address)."""
    name = f"crx{os.getpid() % 100000}"
    host_if, ns_if = f"{name}a", f"{name}b"
    net = f"10.{(os.getpid() >> 8) % 200 + 20}.{os.getpid() % 250}"
    setup = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
        ["ip", "link", "set", ns_if, "netns", name],
        ["ip", "addr", "add", f"{net}.1/24", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", f"{net}.2/24", "dev", ns_if],
        ["ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up"],
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
    ]
    try:
        for command in setup:
            done = subprocess.run(command, capture_output=True, text=True, timeout=20)
            if done.returncode != 0:
                pytest.skip(
                    f"cannot make a network namespace here ({' '.join(command)}: {done.stderr.strip()})"
                )
        yield name, f"{net}.1"
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


PROBE = """
import socket, sys, grpc
host, grpc_port, http_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
channel = grpc.insecure_channel(f"{host}:{grpc_port}")
try:
    channel.unary_unary("/ray.serve.ASGIService/HandleRequest")(b"", timeout=10)
    print("grpc:answered")
except grpc.RpcError as exc:
    print(f"grpc:{exc.code().name}")
try:
    socket.create_connection((host, http_port), timeout=5).close()
    print("http:connected")
except OSError as exc:
    print(f"http:{type(exc).__name__}")
"""


def test_from_another_address_ray_serve_wants_the_token_and_the_balancer_is_unreachable(
    ray_serve: dict[str, Any], exposure_api: str, other_host: tuple[str, str]
) -> None:
    namespace, here = other_host
    serve_grpc = int(ray_serve["proxy_grpc_address"].rsplit(":", 1)[1])
    replica_ports = [
        c.laddr.port
        for c in _listening()
        if not _loopback(c.laddr.ip)
        and c.laddr.port != serve_grpc
        and _name(c.pid).startswith("ray::ServeReplica")
    ]
    assert replica_ports
    balancer = int(ray_serve["url"].rsplit(":", 1)[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # (no token goes with it)
    probe = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            namespace,
            sys.executable,
            "-c",
            PROBE,
            here,
            str(replica_ports[0]),
            str(balancer),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["grpc:UNAUTHENTICATED", "http:ConnectionRefusedError"]
