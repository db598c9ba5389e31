"""gRPC APIs (``handler.protobuf_path``): the ``.proto`` read and compiled, where each service is
served (a route per service, in Ray's store), and cortex-ray's part of Serve's gRPC proxy.

:mod:`~cortex_ray.rpc.proto` knows the file, :mod:`~cortex_ray.rpc.routes` the routes,
:mod:`~cortex_ray.rpc.proxy` the proxy's side, :mod:`~cortex_ray.rpc.status` the status codes.
The replica's side (the handler's RPC methods) is :mod:`cortex_ray.replica.rpc`.
"""

from cortex_ray.rpc.proto import ProtoService, RpcKind, compile_module, describe, package_of

__all__ = ["DEFAULT_GRPC_PORT", "ProtoService", "RpcKind", "compile_module", "describe", "package_of"]

DEFAULT_GRPC_PORT = 9000
"""Where Serve's gRPC proxy listens for a spec's gRPC APIs, unless told (Serve's own default)."""
