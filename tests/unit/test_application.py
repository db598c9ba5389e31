"""The Serve application of an API, as built (no Ray running): its control actors."""

from __future__ import annotations

from pathlib import Path

from cortex_ray.application import build_api
from cortex_ray.ingress.control import HEAD_RESOURCE
from cortex_ray.spec import parse_spec


def test_an_apis_reloader_and_dispatcher_are_placed_on_the_head_node(tmp_path: Path) -> None:
    (tmp_path / "handler.py").write_text("class Handler:\n    pass\n")
    (tmp_path / "models").mkdir()
    models = {"multi_model_reloading": {"dir": str(tmp_path / "models")}}
    handler = {"type": "python", "path": "handler.py"}
    apis = parse_spec(
        [
            {"name": "realtime", "kind": "RealtimeAPI", "handler": {**handler, **models}},
            {"name": "async", "kind": "AsyncAPI", "handler": handler},
        ],
        base_dir=tmp_path,
    ).apis
    placed = {}
    for api in apis:
        app = build_api(api)
        for actor in app._bound_deployment._deployment_config.deployment_actors:
            placed[(api.name, actor.name)] = actor.actor_options
    assert set(placed) == {("realtime", "reloader"), ("async", "dispatcher")}
    for options in placed.values():
        assert options["num_cpus"] == 0 and 0 < options["resources"][HEAD_RESOURCE] <= 0.001
        # every call to them, Serve's own checks of them included, leaves no task event in the GCS
        assert options["enable_task_events"] is False
