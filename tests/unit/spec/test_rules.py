"""Every spec rule: a bad spec and the exact message it must give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cortex_ray.errors import SpecErrors
from cortex_ray.spec import load_spec


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "handler.py").write_text("class Handler:\n    pass\n")
    (tmp_path / "models" / "iris").mkdir(parents=True)
    (tmp_path / "libs").mkdir()
    return tmp_path


def api(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "iris",
        "kind": "RealtimeAPI",
        "handler": {"type": "python", "path": "handler.py"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def errors_of(project: Path, *apis: dict[str, Any]) -> list[str]:
    spec = project / "cortex.yaml"
    spec.write_text(yaml.safe_dump(list(apis)))
    with pytest.raises(SpecErrors) as info:
        load_spec(spec)
    return [str(e) for e in info.value.errors]


def one_error(project: Path, *apis: dict[str, Any]) -> str:
    errors = errors_of(project, *apis)
    assert len(errors) == 1, errors
    return errors[0]


def test_valid_minimal_spec_gets_cortex_defaults(project: Path) -> None:
    (project / "cortex.yaml").write_text(yaml.safe_dump([api()]))
    spec = load_spec(project / "cortex.yaml")
    (a,) = spec.apis
    assert a.endpoint == "/iris"
    assert a.compute.cpu == pytest.approx(0.2)
    assert a.compute.gpu == 0 and a.compute.inf == 0 and a.compute.mem is None
    assert a.autoscaling.min_replicas == 1 and a.autoscaling.max_replicas == 100
    assert a.autoscaling.max_replica_concurrency == 1024
    assert a.autoscaling.window == 60
    assert a.autoscaling.downscale_stabilization_period == 300
    assert a.autoscaling.upscale_stabilization_period == 60
    assert a.autoscaling.max_downscale_factor == 0.75 and a.autoscaling.max_upscale_factor == 1.5
    assert a.handler.processes_per_replica == 1 and a.handler.threads_per_process == 1
    assert a.handler.log_level == "info" and a.handler.config == {}
    assert a.handler.path == str(project / "handler.py")


def test_single_mapping_is_accepted(project: Path) -> None:
    (project / "cortex.yaml").write_text(yaml.safe_dump(api()))
    assert [a.name for a in load_spec(project / "cortex.yaml").apis] == ["iris"]


def test_quantities_and_durations_are_parsed(project: Path) -> None:
    (project / "cortex.yaml").write_text(
        yaml.safe_dump([api(compute={"cpu": "1500m", "mem": "2Gi"}, autoscaling={"window": "1m35s"})])
    )
    with pytest.raises(SpecErrors) as info:
        load_spec(project / "cortex.yaml")
    assert "multiple of 10s, got 95s" in str(info.value)
    (project / "cortex.yaml").write_text(
        yaml.safe_dump([api(compute={"cpu": "1500m", "mem": "2Gi"}, autoscaling={"window": "2m"})])
    )
    a = load_spec(project / "cortex.yaml").apis[0]
    assert a.compute.cpu == pytest.approx(1.5)
    assert a.compute.mem == 2 * 1024**3
    assert a.autoscaling.window == 120


def test_message_names_file_api_index_field(project: Path) -> None:
    message = one_error(
        project,
        api(
            handler={
                "multi_model_reloading": {
                    "path": "models/iris",
                    "paths": [{"name": "a", "path": "m"}],
                    "dir": "models",
                }
            }
        ),
    )
    assert message == (
        f"{project / 'cortex.yaml'}: api 'iris' (#0): handler.multi_model_reloading: "
        'specify only one of "path", "paths" or "dir"'
    )


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        (
            {"handler": {"multi_model_reloading": {}}},
            "handler.multi_model_reloading",
            'specify only one of "path", "paths" or "dir"',
        ),
        (
            {"handler": {"multi_model_reloading": {"path": "models/iris", "dir": "models"}}},
            "handler.multi_model_reloading",
            "please specify either the path or dir field (both cannot be specified at the same time)",
        ),
        (
            {"handler": {"models": {"path": "models/iris"}}},
            "handler.models",
            "models is not a supported field for the python handler type",
        ),
        (
            {"handler": {"type": "tensorflow"}},
            "handler.models",
            "models field must be defined for the tensorflow handler type",
        ),
        (
            {"handler": {"multi_model_reloading": {"path": "models/iris", "cache_size": 2}}},
            "handler.multi_model_reloading",
            'please specify both "cache_size" and "disk_cache_size" or neither of them',
        ),
        (
            {"handler": {"multi_model_reloading": {"dir": "models", "cache_size": 3, "disk_cache_size": 2}}},
            "handler.multi_model_reloading.cache_size",
            "cache_size (3) cannot be greater than disk_cache_size (2)",
        ),
        (
            {"handler": {"multi_model_reloading": {"dir": "models", "signature_key": "serve"}}},
            "handler.multi_model_reloading.signature_key",
            "signature_key is not a supported field for the python handler type",
        ),
        (
            {
                "handler": {
                    "multi_model_reloading": {
                        "paths": [{"name": "a", "path": "m"}, {"name": "a", "path": "n"}]
                    }
                }
            },
            "handler.multi_model_reloading.paths[1].name",
            "cannot have multiple models with the same name (a)",
        ),
        ({"compute": {"gpu": 1, "inf": 1}}, "compute", "gpu and inf resources cannot be used together"),
        (
            {"autoscaling": {"min_replicas": 5, "max_replicas": 2}},
            "autoscaling.min_replicas",
            "min_replicas cannot be greater than max_replicas (5 > 2)",
        ),
        (
            {"autoscaling": {"init_replicas": 7, "max_replicas": 5}},
            "autoscaling.init_replicas",
            "init_replicas cannot be greater than max_replicas (7 > 5)",
        ),
        (
            {"autoscaling": {"init_replicas": 1, "min_replicas": 2}},
            "autoscaling.init_replicas",
            "init_replicas cannot be less than min_replicas (1 < 2)",
        ),
        (
            {"autoscaling": {"target_replica_concurrency": 20, "max_replica_concurrency": 10}},
            "autoscaling.target_replica_concurrency",
            "target_replica_concurrency (20) cannot be greater than max_replica_concurrency (10)",
        ),
        (
            {"kind": "AsyncAPI", "handler": {"threads_per_process": 4}},
            "handler.threads_per_process",
            "threads_per_process (4) must be 1 for the AsyncAPI kind",
        ),
        (
            {
                "kind": "AsyncAPI",
                "handler": {"server_side_batching": {"max_batch_size": 4, "batch_interval": 0.1}},
            },
            "handler.server_side_batching",
            "server_side_batching key is not supported for AsyncAPI kind",
        ),
        (
            {"handler": {"protocols": ["v1"], "multi_model_reloading": {"dir": "models"}}},
            "handler.protocols",
            "v1 (TF Serving's REST API) runs a SavedModel's signatures: it needs handler.type tensorflow",
        ),
        ({"handler": {"protocols": ["v2"]}}, "handler.protocols", "it has none"),
        (
            {
                "kind": "AsyncAPI",
                "handler": {"protocols": ["v2"], "multi_model_reloading": {"dir": "models"}},
            },
            "handler.protocols",
            "served by RealtimeAPIs, not AsyncAPI",
        ),
        (
            {"handler": {"protocols": ["v3"]}},
            "handler.protocols[0]",
            "input should be 'v1' or 'v2' (got 'v3')",
        ),
        ({"handler": {"path": "missing.py"}}, "handler.path", "does not exist"),
        ({"handler": {"python_path": "nowhere"}}, "handler.python_path", "does not exist"),
        (
            {"handler": {"protobuf_path": "api.proto"}},
            "handler.protobuf_path",
            "does not exist",
        ),
        (
            {
                "handler": {"multi_model_reloading": {"dir": "models", "gpu_cache_size": "20Gi"}},
                "compute": {"gpu": 1},
            },
            "handler.multi_model_reloading.gpu_cache_size",
            "gpu_cache_size budgets the GPU memory of a model cache: set cache_size and disk_cache_size too",
        ),
        (
            {
                "handler": {
                    "multi_model_reloading": {
                        "dir": "models",
                        "cache_size": 2,
                        "disk_cache_size": 4,
                        "gpu_cache_size": "20Gi",
                    }
                }
            },
            "handler.multi_model_reloading.gpu_cache_size",
            "gpu_cache_size (20Gi) needs a GPU: compute.gpu is 0",
        ),
        (
            {
                "handler": {
                    "processes_per_replica": 2,
                    "multi_model_reloading": {"dir": "models", "cache_size": 1, "disk_cache_size": 2},
                }
            },
            "handler.processes_per_replica",
            "the max value processes_per_replica can take is 1, while currently it's set to 2",
        ),
    ],
)
def test_cross_field_rules(project: Path, overrides: dict[str, Any], field: str, text: str) -> None:
    message = one_error(project, api(**overrides))
    assert f"api 'iris' (#0): {field}: " in message
    assert text in message


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"name": "Iris_API"}, "name", "'Iris_API' must contain only lower case letters"),
        ({"name": "b-iris"}, "name", "names starting with 'b-' are reserved"),
        ({"name": "a" * 43}, "name", "is longer than 42 characters"),
        ({"kind": "BatchAPI"}, "kind", "kind 'BatchAPI' is not supported by cortex-ray"),
        ({"kind": "TaskAPI"}, "kind", "kind 'TaskAPI' is not supported by cortex-ray"),
        ({"kind": "TrafficSplitter"}, "kind", "kind 'TrafficSplitter' is not supported by cortex-ray"),
        ({"kind": "RealTimeAPI"}, "kind", "invalid kind 'RealTimeAPI'"),
        ({"handler": {"type": "onnx"}}, "handler.type", "the onnx handler type has been replaced"),
        ({"handler": {"type": "pytorch"}}, "handler.type", "'pytorch'"),
        ({"handler": {"path": "handler.txt"}}, "handler.path", "must be a .py file"),
        (
            {"handler": {"env": {"CORTEX_X": "1"}}},
            "handler.env",
            "environment variables starting with CORTEX_ are reserved (got CORTEX_X)",
        ),
        ({"handler": {"log_level": "verbose"}}, "handler.log_level", "'verbose'"),
        ({"handler": {"processes_per_replica": 0}}, "handler.processes_per_replica", "(got 0)"),
        ({"compute": {"cpu": "2x"}}, "compute.cpu", "got '2x'"),
        ({"compute": {"cpu": "10m"}}, "compute.cpu", "greater than or equal to 0.02"),
        ({"compute": {"mem": "10Mi"}}, "compute.mem", "greater than or equal to 20971520"),
        ({"compute": {"gpu": -1}}, "compute.gpu", "(got -1)"),
        ({"autoscaling": {"window": "15s"}}, "autoscaling.window", "got 15s"),
        ({"autoscaling": {"max_upscale_factor": 1}}, "autoscaling.max_upscale_factor", "(got 1)"),
        ({"autoscaling": {"max_downscale_factor": 1}}, "autoscaling.max_downscale_factor", "(got 1)"),
        (
            {"autoscaling": {"max_replica_concurrency": 40000}},
            "autoscaling.max_replica_concurrency",
            "(got 40000)",
        ),
        ({"autoscaling": {"min_replicas": 0}}, "autoscaling.min_replicas", "(got 0)"),
        ({"networking": {"endpoint": "iris"}}, "networking.endpoint", "must be a URL path"),
        (
            {"handler": {"multi_model_reloading": {"path": "gs://bucket/model"}}},
            "handler.multi_model_reloading.path",
            "path must be an S3 path",
        ),
        (
            {"handler": {"multi_model_reloading": {"paths": [{"name": "_cortex_default", "path": "m"}]}}},
            "handler.multi_model_reloading.paths[0].name",
            "'_cortex_default' is a reserved name",
        ),
        (
            {"handler": {"multi_model_reloading": {"path": "m", "cache_size": 0, "disk_cache_size": 1}}},
            "handler.multi_model_reloading.cache_size",
            "(got 0)",
        ),
        (
            {"handler": {"multi_model_reloading": {"dir": "m", "cache_size": "1.5", "disk_cache_size": 1}}},
            "handler.multi_model_reloading.cache_size",
            "must be a number of model versions (3) or a size with its unit (512Mi, 6Gi) (got '1.5')",
        ),
        (
            {
                "compute": {"mem": "4Gi"},
                "handler": {
                    "multi_model_reloading": {"dir": "m", "cache_size": "6Gi", "disk_cache_size": "50Gi"}
                },
            },
            "handler.multi_model_reloading.cache_size",
            "cache_size (6Gi) cannot be greater than the replica's memory compute.mem (4.0Gi)",
        ),
        (
            {
                "handler": {
                    "multi_model_reloading": {"dir": "m", "cache_size": "60Gi", "disk_cache_size": "50Gi"}
                }
            },
            "handler.multi_model_reloading.cache_size",
            "cache_size (60Gi) cannot be greater than disk_cache_size (50Gi)",
        ),
    ],
)
def test_field_rules_quote_the_value(project: Path, overrides: dict[str, Any], field: str, text: str) -> None:
    errors = errors_of(project, api(**overrides))
    matching = [e for e in errors if f": {field}: " in e]
    assert matching, errors
    assert text in matching[0], matching[0]


def test_unknown_field_suggests_nearest(project: Path) -> None:
    message = one_error(project, api(handler={"conifg": {"a": 1}}))
    assert message.endswith("handler.conifg: unknown field 'conifg'; did you mean 'config'?")
    message = one_error(project, api(autoscaling={"min_replica": 1}))
    assert "did you mean 'min_replicas'?" in message
    message = one_error(project, api(handler={"multi_model_reloading": {"dir": "models", "cache_sise": 1}}))
    assert (
        "handler.multi_model_reloading.cache_sise: unknown field 'cache_sise'; did you mean 'cache_size'?"
        in message
    )
    message = one_error(project, api(zzz=1))
    assert "unknown field 'zzz'; valid fields: name, kind, handler" in message


def test_required_fields(project: Path) -> None:
    errors = errors_of(project, {"kind": "RealtimeAPI"})
    assert any("api <unnamed> (#0): name: field is required" in e for e in errors)
    assert any("handler: field is required" in e for e in errors)


def test_one_message_per_problem_across_apis(project: Path) -> None:
    errors = errors_of(
        project,
        api(),
        api(name="second", compute={"cpu": "lots"}),
        api(name="third", kind="BatchAPI"),
    )
    assert len(errors) == 2
    assert "api 'second' (#1): compute.cpu" in errors[0]
    assert "api 'third' (#2): kind" in errors[1]


def test_duplicate_api_names_and_endpoints(project: Path) -> None:
    errors = errors_of(project, api(), api(), api(name="other", networking={"endpoint": "/iris"}))
    assert any("api 'iris' (#1): name: api name 'iris' is already used by api #0" in e for e in errors)
    assert any("api 'other' (#2): networking.endpoint: endpoint '/iris' is already used" in e for e in errors)


def test_yaml_syntax_error_names_the_line(project: Path) -> None:
    spec = project / "cortex.yaml"
    spec.write_text("- name: iris\n  kind: RealtimeAPI\n  handler: {type: python\n")
    with pytest.raises(SpecErrors) as info:
        load_spec(spec)
    message = str(info.value)
    assert message.startswith(f"{spec}: line ")
    assert "YAML syntax error" in message


def test_not_a_list(project: Path) -> None:
    spec = project / "cortex.yaml"
    spec.write_text("just a string\n")
    with pytest.raises(SpecErrors, match="a spec must be a list of APIs"):
        load_spec(spec)


def test_missing_file() -> None:
    with pytest.raises(SpecErrors, match="cannot read the spec"):
        load_spec("/nonexistent/cortex.yaml")


def test_model_paths_resolve(project: Path) -> None:
    (project / "cortex.yaml").write_text(
        yaml.safe_dump(
            [
                api(handler={"multi_model_reloading": {"path": "models/iris"}}),
                api(name="b", handler={"multi_model_reloading": {"dir": "s3://bucket/prefix"}}),
                api(name="c", handler={"multi_model_reloading": {"dir": f"file://{project}/models"}}),
                api(
                    name="d",
                    handler={
                        "multi_model_reloading": {
                            "paths": [{"name": "x", "path": str(project / "models/iris")}]
                        }
                    },
                ),
            ]
        )
    )
    a, b, c, d = load_spec(project / "cortex.yaml").apis
    assert a.handler.multi_model_reloading.path == f"file://{project}/models/iris/"  # type: ignore[union-attr]
    assert b.handler.multi_model_reloading.dir == "s3://bucket/prefix/"  # type: ignore[union-attr]
    assert c.handler.multi_model_reloading.dir == f"file://{project}/models/"  # type: ignore[union-attr]
    assert d.handler.multi_model_reloading.paths[0].path == f"file://{project}/models/iris/"  # type: ignore[union-attr, index]


def test_ignored_cortex_fields_warn(project: Path) -> None:
    (project / "cortex.yaml").write_text(
        yaml.safe_dump([api(handler={"image": "quay.io/x/y"}, compute={"node_groups": ["ng"]})])
    )
    spec = load_spec(project / "cortex.yaml")
    assert any("handler.image: accepted but ignored" in w for w in spec.warnings)
    assert any("compute.node_groups: accepted but ignored" in w for w in spec.warnings)


def test_poll_interval(project: Path) -> None:
    (project / "cortex.yaml").write_text(
        yaml.safe_dump([api(handler={"multi_model_reloading": {"dir": "models", "poll_interval": "2s"}})])
    )
    spec = load_spec(project / "cortex.yaml")
    assert spec.apis[0].handler.multi_model_reloading.poll_interval == 2  # type: ignore[union-attr]


def test_cache_sizes_count_versions_or_bytes(project: Path) -> None:
    from cortex_ray.spec import parse_spec
    from cortex_ray.spec.quantity import Budget

    models = {"dir": "models", "cache_size": "6Gi", "disk_cache_size": 3}  # bytes in memory, versions on disk
    (spec,) = parse_spec([api(handler={"multi_model_reloading": models})], base_dir=project).apis
    model_spec = spec.handler.model_spec
    assert model_spec is not None
    assert model_spec.memory_budget == Budget(6 * 1024**3, "bytes")
    assert model_spec.disk_budget == Budget(3, "versions")
    assert model_spec.cache_size == "6Gi"  # as written (the spec travels to clusters as data)


def test_events_watch_is_for_local_folders(project: Path) -> None:
    from cortex_ray.spec import parse_spec

    local = api(handler={"multi_model_reloading": {"dir": "models", "events": "watch"}})
    (parsed,) = parse_spec([local], base_dir=project).apis
    assert parsed.handler.model_spec is not None and parsed.handler.model_spec.events == "watch"
    remote = api(handler={"multi_model_reloading": {"dir": "s3://bucket/models/", "events": "watch"}})
    message = one_error(project, remote)
    assert "handler.multi_model_reloading.events" in message
    assert "events: watch watches local folders; s3://bucket/models/ is not one" in message
    other = api(handler={"multi_model_reloading": {"dir": "models", "events": "sqs"}})
    assert "handler.multi_model_reloading.events" in one_error(project, other)
    queue = {"sqs": "arn:aws:sqs:us-east-1:123456789012:models"}
    s3 = api(handler={"multi_model_reloading": {"dir": "s3://bucket/models/", "events": queue}})
    (parsed,) = parse_spec([s3], base_dir=project).apis
    assert parsed.handler.model_spec is not None and parsed.handler.model_spec.events.sqs == queue["sqs"]  # type: ignore[union-attr]
    local_sqs = api(handler={"multi_model_reloading": {"dir": "models", "events": queue}})
    assert "events from SQS are S3 event notifications" in one_error(project, local_sqs)


def test_a_gpu_cache_size_is_bytes_of_its_own(project: Path) -> None:
    from cortex_ray.spec import parse_spec
    from cortex_ray.spec.quantity import Budget

    models = {"dir": "models", "cache_size": 4, "disk_cache_size": 8, "gpu_cache_size": "20Gi"}
    spec = api(handler={"multi_model_reloading": models}, compute={"gpu": 1})
    (parsed,) = parse_spec([spec], base_dir=project).apis
    assert parsed.handler.model_spec is not None
    assert parsed.handler.model_spec.gpu_budget == Budget(20 * 1024**3, "bytes")
    counted = api(handler={"multi_model_reloading": {**models, "gpu_cache_size": 3}}, compute={"gpu": 1})
    message = one_error(project, counted)
    assert "handler.multi_model_reloading.gpu_cache_size" in message
    assert "GPU memory is budgeted in bytes (got 3)" in message


@pytest.mark.parametrize(
    ("value", "budget"),
    [
        (3, (3, "versions")),
        (3.0, (3, "versions")),
        (" 3 ", (3, "versions")),
        ("0.5Gi", (512 * 1024**2, "bytes")),
        ("6 Gi", (6 * 1024**3, "bytes")),  # (a space, as compute.mem takes it, is not a mistake)
    ],
)
def test_cache_size_values(value: Any, budget: tuple[int, str]) -> None:
    from cortex_ray.spec.quantity import parse_budget

    assert tuple(parse_budget(value)) == budget


@pytest.mark.parametrize("value", ["1.5", "500m", "6gi", "٣", True, 0, -2, "0Gi"])
def test_bad_cache_sizes_say_what_a_cache_size_is(value: Any) -> None:
    from cortex_ray.spec.quantity import parse_budget

    with pytest.raises(ValueError, match=r"must be|greater than 0"):
        parse_budget(value)


@pytest.mark.parametrize(
    ("value", "meant"),
    [
        ("6GB", "6Gi"),
        ("6gb", "6Gi"),
        ("6gi", "6Gi"),
        ("6g", "6Gi"),
        ("6 GB", "6Gi"),
        ("512MB", "512Mi"),
        ("512mi", "512Mi"),
        ("500m", "500Mi"),
        ("1.5GiB", "1.5Gi"),
        ("2kb", "2Ki"),
        ("1TB", "1Ti"),
    ],
)
def test_a_size_with_a_wrong_unit_suggests_the_quantity_it_meant(value: str, meant: str) -> None:
    from cortex_ray.spec.quantity import parse_budget

    with pytest.raises(ValueError) as info:
        parse_budget(value)
    assert str(info.value).endswith(f"(got {value!r}); did you mean {meant!r}?")
    assert parse_budget(meant).unit == "bytes"  # the suggestion itself is accepted


@pytest.mark.parametrize("value", ["1.5", "6B", "6x", "0GB", "GB", "6GBs"])
def test_values_that_are_not_a_misspelled_size_get_no_suggestion(value: str) -> None:
    from cortex_ray.spec.quantity import parse_budget

    with pytest.raises(ValueError, match="must be") as info:
        parse_budget(value)
    assert "did you mean" not in str(info.value)


def test_the_suggestion_reaches_the_spec_error_naming_file_api_and_field(project: Path) -> None:
    models = {"dir": "models", "cache_size": "6GB", "disk_cache_size": "50Gi"}
    message = one_error(project, api(handler={"multi_model_reloading": models}))
    assert message == (
        f"{project / 'cortex.yaml'}: api 'iris' (#0): handler.multi_model_reloading.cache_size: "
        "must be a number of model versions (3) or a size with its unit (512Mi, 6Gi) (got '6GB'); "
        "did you mean '6Gi'?"
    )


def warnings_of(project: Path, *apis: dict[str, Any]) -> list[str]:
    (project / "cortex.yaml").write_text(yaml.safe_dump(list(apis)))
    return load_spec(project / "cortex.yaml").warnings


@pytest.mark.parametrize(
    ("cache_size", "share"),
    [("4Gi", "equal to"), ("3900Mi", "above 90% of"), ("3687Mi", "above 90% of")],
)
def test_a_cache_size_near_compute_mem_warns_that_it_leaves_no_room(
    project: Path, cache_size: str, share: str
) -> None:
    models = {"dir": "models", "cache_size": cache_size, "disk_cache_size": "50Gi"}
    warnings = warnings_of(project, api(compute={"mem": "4Gi"}, handler={"multi_model_reloading": models}))
    assert warnings == [
        f"{project / 'cortex.yaml'}: api 'iris' (#0): handler.multi_model_reloading.cache_size: "
        f"cache_size ({cache_size}) is {share} the replica's memory compute.mem (4.0Gi), which leaves "
        "no room for the handler, Python and Ray: use a lower cache_size (3686Mi, 90% of compute.mem, "
        "or less)"
    ]


@pytest.mark.parametrize(
    ("compute", "models"),
    [
        ({"mem": "4Gi"}, {"cache_size": "3686Mi", "disk_cache_size": "50Gi"}),  # 90%, not above
        ({"mem": "4Gi"}, {"cache_size": 3, "disk_cache_size": 5}),  # versions, not bytes
        ({}, {"cache_size": "4Gi", "disk_cache_size": "50Gi"}),  # no compute.mem
    ],
)
def test_a_cache_size_with_room_left_does_not_warn(
    project: Path, compute: dict[str, Any], models: dict[str, Any]
) -> None:
    overrides = {"compute": compute, "handler": {"multi_model_reloading": {"dir": "models", **models}}}
    assert warnings_of(project, api(**overrides)) == []


def test_a_cache_size_above_compute_mem_stays_an_error_without_the_warning(project: Path) -> None:
    models = {"dir": "models", "cache_size": "5Gi", "disk_cache_size": "50Gi"}
    (project / "cortex.yaml").write_text(
        yaml.safe_dump([api(compute={"mem": "4Gi"}, handler={"multi_model_reloading": models})])
    )
    with pytest.raises(SpecErrors) as info:
        load_spec(project / "cortex.yaml")
    (error,) = info.value.errors
    assert "cache_size (5Gi) cannot be greater than the replica's memory compute.mem (4.0Gi)" in str(error)
    # the warning alone, for the tensorflow handler's field
    tf = {"type": "tensorflow", "models": {**models, "cache_size": "4Gi"}}
    (warning,) = warnings_of(project, api(compute={"mem": "4Gi"}, handler=tf))
    assert "handler.models.cache_size: cache_size (4Gi) is equal to the replica's memory" in warning


def test_settle_time_defaults_to_the_poll_interval_and_with_file_events_to_at_most_two_seconds() -> None:
    from cortex_ray.spec import MultiModelsSpec
    from cortex_ray.spec.schema import EVENT_SETTLE

    assert MultiModelsSpec(dir="/m", poll_interval=5).settle_seconds == 5
    assert MultiModelsSpec(dir="/m", poll_interval=60, events="watch").settle_seconds == EVENT_SETTLE == 2
    assert MultiModelsSpec(dir="/m", poll_interval=1, events="watch").settle_seconds == 1
    assert MultiModelsSpec(dir="/m", poll_interval=60, events="watch", settle_time=30).settle_seconds == 30
    assert MultiModelsSpec(dir="/m", settle_time=0).settle_seconds == 0
    # S3 tells of an object once it is complete: quiet is no proof that an upload paused
    sqs = {"sqs": "https://sqs.us-east-1.amazonaws.com/1/q"}
    assert MultiModelsSpec(dir="s3://b/m/", poll_interval=60, events=sqs).settle_seconds == 60
