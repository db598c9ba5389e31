"""Cortex's rules for a gRPC API's ``handler.protobuf_path``, on real ``.proto`` files (protoc
from grpcio-tools reads them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cortex_ray.errors import SpecErrors
from cortex_ray.spec import load_spec

SERVICE = """
syntax = "proto3";
package {package};
service Handler {{
  rpc Predict (Sample) returns (Response);
  rpc Count (Sample) returns (stream Response);
}}
message Sample {{ float x = 1; }}
message Response {{ string y = 1; }}
"""


def write_spec(project: Path, **handler: Any) -> Path:
    (project / "handler.py").write_text("class Handler:\n    pass\n")
    api = {
        "name": "iris-classifier",
        "kind": handler.pop("kind", "RealtimeAPI"),
        "handler": {"type": "python", "path": "handler.py", **handler},
    }
    spec = project / "cortex.yaml"
    spec.write_text(yaml.safe_dump([api]))
    return spec


def problems(spec: Path) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        load_spec(spec)
    return [str(e) for e in info.value.errors]


def test_a_valid_proto_passes_and_resolves_against_the_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "handler.proto").write_text(SERVICE.format(package="iris_classifier"))
    spec = load_spec(write_spec(tmp_path, protobuf_path="handler.proto"))
    assert spec.apis[0].handler.protobuf_path == str(tmp_path / "handler.proto")


def test_the_package_must_be_the_api_name_with_underscores(tmp_path: Path) -> None:
    (tmp_path / "handler.proto").write_text(SERVICE.format(package="iris"))
    [error] = problems(write_spec(tmp_path, protobuf_path="handler.proto"))
    assert "api 'iris-classifier' (#0): handler.protobuf_path" in error
    assert (
        "the package must be the API's name with - replaced by _ ('iris_classifier'), and it is 'iris'"
        in error
    )


def test_one_service_exactly(tmp_path: Path) -> None:
    text = SERVICE.format(package="iris_classifier") + "service Other { rpc A (Sample) returns (Sample); }\n"
    (tmp_path / "two.proto").write_text(text)
    [error] = problems(write_spec(tmp_path, protobuf_path="two.proto"))
    assert "two.proto: the file must declare exactly one service, and it declares 2" in error


def test_client_streaming_is_refused_by_name(tmp_path: Path) -> None:
    text = SERVICE.format(package="iris_classifier").replace(
        "rpc Count (Sample)", "rpc Count (stream Sample)"
    )
    (tmp_path / "h.proto").write_text(text)
    [error] = problems(write_spec(tmp_path, protobuf_path="h.proto"))
    assert (
        "rpc Count is bidirectional streaming: a gRPC API serves unary and server-streaming RPCs only"
        in error
    )


def test_protoc_errors_are_the_message(tmp_path: Path) -> None:
    (tmp_path / "bad.proto").write_text(
        'syntax = "proto3";\npackage iris_classifier;\nmessage A { int32 a = 1 }\n'
    )
    [error] = problems(write_spec(tmp_path, protobuf_path="bad.proto"))
    assert "handler.protobuf_path: " in error and "protoc cannot compile it: bad.proto:3:" in error


@pytest.mark.parametrize(
    ("handler", "text"),
    [
        ({"protobuf_path": "handler.txt"}, "the protobuf_path must be a .proto file"),
        ({"protobuf_path": "missing.proto"}, "does not exist"),
        (
            {
                "protobuf_path": "handler.proto",
                "server_side_batching": {"max_batch_size": 2, "batch_interval": "1s"},
            },
            "server_side_batching is not supported for gRPC APIs",
        ),
        ({"protobuf_path": "handler.proto", "kind": "AsyncAPI"}, "not supported for the AsyncAPI kind"),
    ],
)
def test_cortex_rules(tmp_path: Path, handler: dict[str, Any], text: str) -> None:
    (tmp_path / "handler.proto").write_text(SERVICE.format(package="iris_classifier"))
    errors = problems(write_spec(tmp_path, **handler))
    assert any(text in e for e in errors), errors
