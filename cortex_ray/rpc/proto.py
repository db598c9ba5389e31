"""A gRPC API's ``.proto``: what it declares (read once, with ``protoc``) and its Python module.

:func:`describe` compiles the file to a descriptor set in a child process (``protoc`` from
grpcio-tools; its errors are the message) and returns the :class:`ProtoService` it declares,
with Cortex's rules checked by the spec (:mod:`cortex_ray.spec.rules`). :func:`compile_module`
writes the ``<name>_pb2`` module (and those of the project's ``.proto`` files it imports) into a
folder and imports it: the handler receives it as ``proto_module_pb2``.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from cortex_ray.errors import ProtoError

__all__ = ["ProtoService", "RpcKind", "compile_module", "describe", "package_of"]

RpcKind = Literal["unary", "stream"]
"""``unary``: one request, one response; ``stream``: one request, a stream of responses."""

_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ProtoService:
    """The one service a gRPC API's ``.proto`` declares."""

    file: str
    """The ``.proto`` file (absolute)."""
    package: str
    name: str
    methods: dict[str, RpcKind]
    """Each RPC by name, in the file's order."""
    sources: tuple[str, ...] = field(default=())
    """The project's ``.proto`` files to compile, relative to the file's folder (the file and
    those it imports from there; Google's well-known types come with protobuf)."""
    problems: tuple[str, ...] = field(default=())
    """What keeps the file from serving (Cortex's rules; said by the spec's checks)."""

    @property
    def full_name(self) -> str:
        """``package.Service``: the first part of every RPC's path (``/package.Service/Method``)."""
        return f"{self.package}.{self.name}" if self.package else self.name

    @property
    def module_name(self) -> str:
        """The Python module ``protoc`` writes for the file (``handler.proto``: ``handler_pb2``)."""
        return module_of(os.path.basename(self.file))


def package_of(api_name: str) -> str:
    """The package a gRPC API's ``.proto`` must declare (Cortex's rule): the name, ``-`` as ``_``."""
    return api_name.replace("-", "_")


def module_of(source: str) -> str:
    """``a/b-c.proto`` -> ``a.b_c_pb2`` (protoc's naming)."""
    return source[: -len(".proto")].replace("-", "_").replace("/", ".") + "_pb2"


def describe(path: str) -> ProtoService:
    """The service ``path`` declares; raises :class:`ProtoError` when protoc cannot read it.

    Rules that Cortex checked (exactly one service; only unary and server-streaming RPCs) are
    returned as ``problems``, not raised, so a spec says them with its other problems."""
    from google.protobuf import descriptor_pb2

    file = Path(path)
    with tempfile.TemporaryDirectory(prefix="cortex-ray-proto-") as out:
        target = os.path.join(out, "set.pb")
        _protoc(file, [f"--descriptor_set_out={target}", "--include_imports"], [file.name])
        descriptors = descriptor_pb2.FileDescriptorSet.FromString(Path(target).read_bytes())
    own = [f for f in descriptors.file if f.name == file.name]
    if not own:  # (protoc names the file as given, relative to its folder)
        raise ProtoError(f"{path}: protoc described no file named {file.name}")
    proto = own[0]
    local = [f.name for f in descriptors.file if (file.parent / f.name).is_file()]
    problems = []
    if len(proto.service) != 1:
        problems.append(f"the file must declare exactly one service, and it declares {len(proto.service)}")
    if not proto.service:
        return ProtoService(str(file), proto.package, "", {}, tuple(local), tuple(problems))
    service = proto.service[0]
    methods: dict[str, RpcKind] = {}
    for method in service.method:
        if method.client_streaming:
            kind = "bidirectional streaming" if method.server_streaming else "client streaming"
            problems.append(
                f"rpc {method.name} is {kind}: a gRPC API serves unary and server-streaming RPCs only"
            )
        methods[method.name] = "stream" if method.server_streaming else "unary"
    if not methods:
        problems.append(f"service {service.name} declares no rpc")
    return ProtoService(str(file), proto.package, service.name, methods, tuple(local), tuple(problems))


def compile_module(service: ProtoService, out_dir: str) -> ModuleType:
    """Write the ``_pb2`` modules of ``service``'s sources into ``out_dir`` (put first on
    ``sys.path``) and import the file's own."""
    os.makedirs(out_dir, exist_ok=True)
    file = Path(service.file)
    _protoc(file, [f"--python_out={out_dir}"], list(service.sources) or [file.name])
    if out_dir not in sys.path:
        sys.path.insert(0, out_dir)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(service.module_name)
    except Exception as exc:  # e.g. the file's messages clash with ones already imported
        raise ProtoError(f"{service.file}: cannot import {service.module_name}: {exc}") from exc


def message_class(descriptor: Any) -> Any:
    """The generated class of a message descriptor (the request or response of an RPC)."""
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def _protoc(file: Path, outputs: list[str], sources: list[str]) -> None:
    """Run grpcio-tools' protoc on ``sources`` (relative to ``file``'s folder) in a child process
    (its errors go to stderr, which becomes the message)."""
    try:
        import grpc_tools  # noqa: F401  (only to say it is missing, here)
    except ImportError as exc:
        raise ProtoError("gRPC APIs need grpcio-tools (pip install grpcio-tools)") from exc
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{file.parent}", *outputs, *sources]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProtoError(f"{file}: protoc did not run: {exc}") from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().replace(f"{file.parent}{os.sep}", "")
        raise ProtoError(f"{file}: protoc cannot compile it: {said or f'exit status {done.returncode}'}")
