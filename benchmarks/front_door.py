"""What the front door holds a client to, probed with raw sockets: cortex-ray beside Triton and nginx.

Each target gets the same probes, and the table says what it answered (status) or did:

* ``head 64K``: one header field of 64 KiB; ``url 64K``: a 64 KiB request target;
  ``200 fields``: 200 header fields;
* ``300M body``: ``Content-Length: 300 MiB`` with ``Expect: 100-continue`` (a ``100`` means the
  server asked for the body it will refuse later);
* ``slow head``: a head that never ends (slowloris): seconds until the server closes (``>N``:
  still open after ``--patience`` seconds);
* ``idle``: seconds a keep-alive connection is kept after an answer;
* ``bad JSON`` / ``deep JSON``: a malformed body, and one nested 100,000 deep.

Targets: ``triton`` (2.51 from PyPI's nvidia-pytriton, its v2 infer route); ``cortex-ray`` (the fast
path: HAProxy, then the replica; a local Ray); ``replica`` (the replica's own port, behind no
balancer); ``nginx`` (``apt-get install nginx``: a reverse proxy in front of the replica, default
settings), when installed.

    .venv/bin/python benchmarks/front_door.py [--patience 20]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.peers import Triton  # noqa: E402
from tests.support.s3_server import free_port  # noqa: E402

HANDLER = """
class Handler:
    def handle_post(self, payload):
        return {"ok": True}
"""

NGINX = """
daemon off;
user root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://127.0.0.1:{upstream}; }}
    }}
}}
"""


def status_of(port: int, data: bytes, timeout: float = 10.0) -> str:
    """The status line's code of the first answer (``100`` included), ``closed`` or ``timeout``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            try:
                sock.sendall(data)
            except OSError:
                pass
            received = b""
            while b"\r\n" not in received:
                chunk = sock.recv(4096)
                if not chunk:
                    return "closed" if not received else received.split(b" ")[1].decode()
                received += chunk
            return received.split(b" ")[1].decode()
    except TimeoutError:
        return "timeout"
    except ConnectionResetError:
        return "reset"
    except OSError as exc:
        return type(exc).__name__


def seconds_until_closed(port: int, data: bytes, patience: float) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=patience + 5) as sock:
        sock.sendall(data)
        started = time.monotonic()
        sock.settimeout(0.25)
        while time.monotonic() - started < patience:
            try:
                if sock.recv(65536) == b"":
                    return f"{time.monotonic() - started:.0f} s"
            except TimeoutError:
                continue
            except OSError:
                return f"{time.monotonic() - started:.0f} s"
    return f">{patience:g} s"


def probe(port: int, path: str, patience: float) -> dict[str, str]:
    p = path.encode()
    post = b"POST " + p + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    return {
        "head 64K": status_of(
            port, b"GET " + p + b" HTTP/1.1\r\nhost: x\r\nx-big: " + b"v" * 65536 + b"\r\n\r\n"
        ),
        "url 64K": status_of(port, b"GET " + p + b"?" + b"a" * 65536 + b" HTTP/1.1\r\nhost: x\r\n\r\n"),
        "200 fields": status_of(
            port,
            b"GET "
            + p
            + b" HTTP/1.1\r\nhost: x\r\n"
            + b"".join(b"x-%d: v\r\n" % i for i in range(200))
            + b"\r\n",
        ),
        "300M body": status_of(port, post + b"expect: 100-continue\r\ncontent-length: 314572800\r\n\r\n"),
        "slow head": seconds_until_closed(port, b"POST " + p + b" HTTP/1.1\r\nhost: x\r\n", patience),
        "idle": seconds_until_closed(port, b"GET " + p + b" HTTP/1.1\r\nhost: x\r\n\r\n", patience),
        "bad JSON": status_of(port, post + b"content-length: 9\r\n\r\n{not json"),
        "deep JSON": status_of(
            port, post + b"content-length: 200000\r\n\r\n" + b"[" * 100_000 + b"]" * 100_000
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patience", type=float, default=20.0, help="seconds to wait for a close")
    args = parser.parse_args()
    rows: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp, Triton(free_port()) as triton:
        project = Path(tmp)
        (project / "handler.py").write_text(textwrap.dedent(HANDLER))
        triton_port = int(triton.url.rsplit(":", 1)[1].split("/")[0])
        rows["triton"] = probe(triton_port, "/v2/models/half_plus_two/infer", args.patience)

        from cortex_ray import sdk
        from cortex_ray.spec import parse_spec

        port = free_port()
        sdk.start(port=port, ingress="fast", num_cpus=4, log_to_driver=False)
        try:
            spec = parse_spec(
                [{"name": "api", "kind": "RealtimeAPI", "handler": {"type": "python", "path": "handler.py"}}],
                base_dir=project,
            )
            sdk.run_api(spec.apis[0], ingress="fast", ray_actor_options={"num_cpus": 0.5})
            rows["cortex-ray"] = probe(port, "/api", args.patience)
            import ray

            from cortex_ray.ingress.control import get_ingress

            replica = next(iter(ray.get(get_ingress().status.remote())["apis"]["api"]["replicas"].values()))
            replica_port = int(replica.rsplit(":", 1)[1])
            rows["replica"] = probe(replica_port, "/api", args.patience)
            nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
            if nginx:
                nginx_port = free_port()
                conf = project / "nginx.conf"
                conf.write_text(NGINX.format(dir=project, port=nginx_port, upstream=replica_port))
                proc = subprocess.Popen([nginx, "-c", str(conf)], stderr=subprocess.DEVNULL)
                try:
                    time.sleep(1)
                    rows["nginx"] = probe(nginx_port, "/api", args.patience)
                finally:
                    proc.terminate()
                    proc.wait(10)
        finally:
            sdk.shutdown()
    columns = list(next(iter(rows.values())))
    print(f"\n{'target':<12}" + "".join(f"{c:>12}" for c in columns))
    for name, row in rows.items():
        print(f"{name:<12}" + "".join(f"{row[c]:>12}" for c in columns))


if __name__ == "__main__":
    main()
