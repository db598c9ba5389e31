"""`cortex-ray build-config`: the Serve config for CPU, GPU and Inferentia specs (no Ray cluster)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from cortex_ray.deployer.serve_config import serve_config
from cortex_ray.errors import SpecErrors
from cortex_ray.spec import load_spec


def write_spec(tmp_path: Path, apis: list[dict[str, Any]]) -> Path:
    (tmp_path / "handler.py").write_text(
        "class Handler:\n    def handle_post(self, payload):\n        return payload\n"
    )
    spec = tmp_path / "cortex.yaml"
    spec.write_text(yaml.safe_dump(apis))
    return spec


def api(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "RealtimeAPI",
        "handler": {"type": "python", "path": "handler.py"},
        **fields,
    }


def build(tmp_path: Path, *apis: dict[str, Any], ingress: str = "proxy") -> dict[str, Any]:
    spec = write_spec(tmp_path, list(apis))
    out = str(tmp_path / "serve.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "cortex_ray", "build-config", str(spec), "-o", out, "--ingress", ingress],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((tmp_path / "serve.yaml").read_text())
    ServeDeploySchema.model_validate(config)  # what `serve run` / `serve deploy` accept
    return config  # type: ignore[no-any-return]


def test_cpu_api(tmp_path: Path) -> None:
    config = build(
        tmp_path,
        api(
            "iris",
            compute={"cpu": "500m", "mem": "1Gi"},
            autoscaling={
                "min_replicas": 2,
                "max_replicas": 5,
                "init_replicas": 3,
                "target_replica_concurrency": 4,
                "max_replica_concurrency": 64,
                "window": "30s",
                "upscale_stabilization_period": "10s",
                "downscale_stabilization_period": "2m",
            },
        ),
    )
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8000}
    (app,) = config["applications"]
    assert app["name"] == "iris" and app["route_prefix"] == "/iris"
    assert app["import_path"] == "cortex_ray.app:build"
    assert app["args"] == {"spec": str(tmp_path / "cortex.yaml"), "api": "iris", "info_details": True}
    (dep,) = app["deployments"]
    assert dep["ray_actor_options"] == {"num_cpus": 0.5, "memory": 1024**3}
    assert dep["max_ongoing_requests"] == 128  # twice max_replica_concurrency: the replica refuses the excess
    assert dep["max_queued_requests"] == 256  # a burst waits its turn to be refused, not dropped by Serve
    assert dep["health_check_period_s"] == 2.0  # a dead replica is found (and replaced) within 2 s
    assert dep["autoscaling_config"] == {
        "min_replicas": 2,
        "max_replicas": 5,
        "initial_replicas": 3,
        "target_ongoing_requests": 4,
        "look_back_period_s": 30.0,
        "upscale_delay_s": 10.0,
        "downscale_delay_s": 120.0,
    }


def test_gpu_and_inferentia_apis_and_custom_endpoint(tmp_path: Path) -> None:
    config = build(
        tmp_path,
        api("gpu-api", compute={"gpu": 1, "cpu": 2}),
        api("inf-api", compute={"inf": 2}, networking={"endpoint": "/v1/inf"}),
    )
    gpu, inf = config["applications"]
    assert gpu["deployments"][0]["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 1.0}
    # 2 Inferentia chips, 4 NeuronCores each
    assert inf["deployments"][0]["ray_actor_options"] == {"num_cpus": 0.2, "resources": {"neuron_cores": 4}}
    assert inf["route_prefix"] == "/v1/inf"


def test_default_target_concurrency_is_threads(tmp_path: Path) -> None:
    config = build(
        tmp_path, api("t", handler={"type": "python", "path": "handler.py", "threads_per_process": 8})
    )
    assert config["applications"][0]["deployments"][0]["autoscaling_config"]["target_ongoing_requests"] == 8


def test_what_cannot_map_is_refused(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        [api("multi-proc", handler={"type": "python", "path": "handler.py", "processes_per_replica": 4})],
    )
    with pytest.raises(SpecErrors) as info:
        serve_config(load_spec(spec), str(spec))
    assert (
        "api 'multi-proc' (#0): handler.processes_per_replica: processes_per_replica (4) cannot map"
        in str(info.value)
    )
    result = subprocess.run(
        [sys.executable, "-m", "cortex_ray", "build-config", str(spec)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "cannot map to Ray Serve" in result.stderr
    assert "Traceback" not in result.stderr


def test_unmapped_autoscaling_fields_warn(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, [api("w", autoscaling={"max_upscale_factor": 3})])
    assert load_spec(spec).warnings == [
        f"{spec}: api 'w' (#0): autoscaling.max_upscale_factor: autoscaling.max_upscale_factor (3) "
        "has no Ray Serve equivalent and is ignored"
    ]


def test_committed_example_config_matches_the_spec() -> None:
    root = Path(__file__).resolve().parents[3]
    committed = yaml.safe_load((root / "deployments" / "serve_config.yaml").read_text())
    fresh = serve_config(load_spec(root / "deployments" / "cortex.yaml"), "deployments/cortex.yaml")
    assert committed == fresh
    ServeDeploySchema.model_validate(committed)


def test_info_details_are_on_only_for_a_loopback_host(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, [api("iris")]))
    local = serve_config(spec, "cortex.yaml", host="127.0.0.1")
    exposed = serve_config(spec, "cortex.yaml", host="0.0.0.0")
    assert local["applications"][0]["args"]["info_details"] is True
    assert exposed["applications"][0]["args"]["info_details"] is False


def test_the_fast_ingress_disables_serve_s_proxy_and_scales_on_the_replicas_counts(tmp_path: Path) -> None:
    config = build(tmp_path, api("iris"), ingress="fast")
    assert config["proxy_location"] == "Disabled" and "http_options" not in config
    (app,) = config["applications"]
    assert app["args"] == {
        "spec": str(tmp_path / "cortex.yaml"),
        "api": "iris",
        "info_details": True,
        "ingress": "fast",
        "host": "127.0.0.1",
        "port": 8000,
    }
    (dep,) = app["deployments"]
    assert dep["autoscaling_config"]["policy"] == {
        "policy_function": "cortex_ray.ingress.autoscaling:fast_path_policy"
    }


def test_a_grpc_api_takes_grpc_on_the_ingress_it_is_deployed_on(tmp_path: Path) -> None:
    (tmp_path / "handler.proto").write_text(
        'syntax = "proto3";\npackage iris;\n'
        "service H { rpc P (M) returns (M); }\nmessage M { int32 a = 1; }\n"
    )
    handler = {"type": "python", "path": "handler.py", "protobuf_path": "handler.proto"}
    fast = build(tmp_path, api("iris", handler=handler), ingress="fast")
    # the balancer takes gRPC beside HTTP (the application's builder starts it so): no Serve proxy
    assert fast["proxy_location"] == "Disabled" and "grpc_options" not in fast
    assert fast["applications"][0]["args"]["grpc_port"] == 9000
    proxied = build(tmp_path, api("iris", handler=handler), ingress="proxy")
    assert proxied["grpc_options"] == {
        "port": 9000,
        "grpc_servicer_functions": ["cortex_ray.rpc.proxy.add_services"],
    }
    assert proxied["proxy_location"] == "EveryNode"
    assert proxied["http_options"] == {"host": "127.0.0.1", "port": 8000}
    assert "grpc_port" not in proxied["applications"][0]["args"]


def test_every_deployment_of_an_async_api_is_checked_every_2_s(tmp_path: Path) -> None:
    config = build(tmp_path, {**api("jobs"), "kind": "AsyncAPI"}, ingress="fast")
    (app,) = config["applications"]
    assert len(app["deployments"]) == 2  # the gateway and the workers
    assert all(d["health_check_period_s"] == 2.0 for d in app["deployments"]), app["deployments"]
