"""A gRPC API (``handler.protobuf_path``) on a real local Ray Serve, on both ingress paths (HAProxy
to the replica's own gRPC server; Serve's gRPC proxy), called by a real gRPC client built from the
same ``.proto`` (no ``application`` metadata: routed by the service's path), with a model reloaded
live behind it, a server-streaming RPC, and errors as gRPC status codes."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.project import write_handler

pytestmark = pytest.mark.ray

PROTO = """
syntax = "proto3";
package grpc_iris;
service Handler {
  rpc Predict (Sample) returns (Response);
  rpc Primes (Limit) returns (stream Prime);
}
message Sample { string model = 1; float x = 2; }
message Response { string answer = 1; }
message Limit { int32 below = 1; }
message Prime { int32 value = 1; }
"""

HANDLER = """
import grpc


class Handler:
    def __init__(self, config, model_client, proto_module_pb2):
        self.client = model_client
        self.pb2 = proto_module_pb2

    def load_model(self, model_path):
        with open(f"{model_path}/scale.txt") as f:
            return float(f.read())

    def Predict(self, payload, context):
        if payload.model == "abort":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "told to abort")
        if payload.model == "raise":
            raise ValueError("asked to raise")
        scale = self.client.get_model(payload.model)
        return self.pb2.Response(answer=f"{scale * payload.x:g}")

    def Primes(self, payload):
        for n in range(2, payload.below):
            if all(n % d for d in range(2, n)):
                yield self.pb2.Prime(value=n)
"""


def write_model(root: Path, version: int, scale: float) -> None:
    folder = root / "scale" / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scale.txt").write_text(str(scale))


def client_modules(project: Path, out: Path) -> tuple[Any, Any]:
    """The client's stubs, generated from the API's own .proto as a user would."""
    out.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{project}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "grpc_iris.proto",
        ],
        check=True,
        timeout=60,
    )
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("grpc_iris_pb2"), importlib.import_module("grpc_iris_pb2_grpc")
    finally:
        sys.path.remove(str(out))


@pytest.mark.parametrize("ingress", ["fast", "proxy"])
def test_a_grpc_api_serves_its_rpcs_with_models_reloaded_live(
    tmp_path: Path, deploy: Any, grpc_address: str, proxy_grpc_address: str, ingress: str
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write_handler(project, HANDLER)
    (project / "grpc_iris.proto").write_text(PROTO)
    models = project / "models"
    write_model(models, 1, 2.0)
    spec = {
        "name": "grpc-iris",
        "kind": "RealtimeAPI",
        "handler": {
            "type": "python",
            "path": "handler.py",
            "protobuf_path": "grpc_iris.proto",
            "multi_model_reloading": {"dir": str(models), "poll_interval": 0.5, "settle_time": 0.5},
        },
    }
    deploy(project, [spec], ingress=ingress)
    pb2, pb2_grpc = client_modules(project, tmp_path / "client")
    with grpc.insecure_channel(grpc_address if ingress == "fast" else proxy_grpc_address) as channel:
        stub = pb2_grpc.HandlerStub(channel)
        reply, done = stub.Predict.with_call(pb2.Sample(model="scale", x=1.5), timeout=60)
        assert reply.answer == "3"
        assert ("x-cortex-model-version", "scale=1") in done.trailing_metadata()
        primes = [p.value for p in stub.Primes(pb2.Limit(below=20), timeout=60)]
        assert primes == [2, 3, 5, 7, 11, 13, 17, 19]

        def status(model: str) -> tuple[grpc.StatusCode, str]:
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(pb2.Sample(model=model), timeout=60)
            return info.value.code(), info.value.details()

        assert status("abort") == (grpc.StatusCode.FAILED_PRECONDITION, "told to abort")
        assert status("raise") == (grpc.StatusCode.INTERNAL, "ValueError: asked to raise")
        code, details = status("missing")
        assert code == grpc.StatusCode.NOT_FOUND and "'missing' model wasn't found" in details
        with pytest.raises(grpc.RpcError) as info:  # bytes that are no Sample
            channel.unary_unary("/grpc_iris.Handler/Predict")(b"\xff\xff\xff", timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:  # a method the service does not have
            channel.unary_unary("/grpc_iris.Handler/Nope")(b"", timeout=60)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

        write_model(models, 2, 10.0)  # a new version, live: no failed call while it comes
        deadline = time.monotonic() + 60
        answers = []
        while time.monotonic() < deadline:
            answers.append(stub.Predict(pb2.Sample(model="scale", x=1.5), timeout=60).answer)
            if answers[-1] == "15":
                break
            time.sleep(0.1)
        assert answers[-1] == "15" and set(answers) <= {"3", "15"}
    from cortex_ray.rpc.routes import lookup
    from cortex_ray.sdk import delete

    assert lookup("grpc_iris.Handler") is not None  # (the route Serve's proxy reads)
    delete("grpc-iris")
    assert lookup("grpc_iris.Handler") is None  # a deleted API's route goes with it
