"""A ``.proto`` read by protoc (grpcio-tools): the service, its RPCs' kinds, the project files it
imports, and the module compiled from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_ray.errors import ProtoError
from cortex_ray.rpc.proto import compile_module, describe, module_of


def test_the_service_its_kinds_and_the_files_it_imports(tmp_path: Path) -> None:
    (tmp_path / "rpc_proto_types.proto").write_text(
        'syntax = "proto3";\npackage shop;\nmessage Extra { int32 n = 1; }\n'
    )
    (tmp_path / "rpc-proto-shop.proto").write_text(
        """syntax = "proto3";
package shop;
import "google/protobuf/empty.proto";
import "rpc_proto_types.proto";
service Store {
  rpc Get (google.protobuf.Empty) returns (Extra);
  rpc Watch (Extra) returns (stream Extra);
}
"""
    )
    service = describe(str(tmp_path / "rpc-proto-shop.proto"))
    assert (service.full_name, service.methods, service.problems) == (
        "shop.Store",
        {"Get": "unary", "Watch": "stream"},
        (),
    )
    assert sorted(service.sources) == ["rpc-proto-shop.proto", "rpc_proto_types.proto"]
    assert service.module_name == "rpc_proto_shop_pb2" == module_of("rpc-proto-shop.proto")
    module = compile_module(service, str(tmp_path / "out"))
    assert module.DESCRIPTOR.services_by_name["Store"].methods_by_name["Watch"].server_streaming
    assert (tmp_path / "out" / "rpc_proto_types_pb2.py").is_file()  # (the import, compiled too)


def test_no_service_is_a_problem_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "rpc_proto_empty.proto").write_text(
        'syntax = "proto3";\npackage p;\nmessage A { int32 a = 1; }\n'
    )
    service = describe(str(tmp_path / "rpc_proto_empty.proto"))
    assert service.problems == ("the file must declare exactly one service, and it declares 0",)


def test_a_missing_import_is_protocs_message(tmp_path: Path) -> None:
    (tmp_path / "rpc_proto_lost.proto").write_text('syntax = "proto3";\nimport "nowhere.proto";\n')
    with pytest.raises(ProtoError, match=r"protoc cannot compile it: nowhere\.proto: File not found"):
        describe(str(tmp_path / "rpc_proto_lost.proto"))
