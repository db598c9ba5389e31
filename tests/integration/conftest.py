"""One local Ray cluster and one Serve instance for the whole test session.

Ray binds 127.0.0.1 only and Serve listens on a free port of 127.0.0.1. The
cluster declares 2 logical ``neuron_cores`` so that an Inferentia replica can
be scheduled without hardware (Ray resources are logical).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.s3_server import free_port

SERVE_HOST = "127.0.0.1"


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[dict[str, Any]]:
    from cortex_ray import sdk

    metrics_port = free_port()
    url = sdk.start(  # the product's own local start: Ray and Serve on 127.0.0.1
        host=SERVE_HOST,
        port=free_port(),
        num_cpus=8,
        resources={"neuron_cores": 2},
        _metrics_export_port=metrics_port,
        configure_logging=False,
        log_to_driver=True,
    )
    yield {"url": url, "metrics_port": metrics_port}
    sdk.shutdown()


@pytest.fixture(scope="session")
def serve_url(ray_serve: dict[str, Any]) -> str:
    return str(ray_serve["url"])


@pytest.fixture
def http(serve_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_url, timeout=60) as client:
        yield client


Deployer = Callable[..., list[str]]


@pytest.fixture
def deploy(ray_serve: dict[str, Any]) -> Iterator[Deployer]:
    """Deploy APIs from a spec (list of dicts) written into a project folder.

    ``deploy(project, apis, **overrides)`` writes ``cortex.yaml`` into
    ``project``, validates it and serves each API as its own application; the
    applications are deleted after the test.
    """
    from ray import serve

    from cortex_ray.sdk import run_api
    from cortex_ray.spec import load_spec

    deployed: list[str] = []

    def _deploy(project: Path, apis: list[dict[str, Any]], **overrides: Any) -> list[str]:
        spec_file = project / "cortex.yaml"
        spec_file.write_text(yaml.safe_dump(apis))
        spec = load_spec(spec_file)
        overrides.setdefault("ray_actor_options", {"num_cpus": 0.1})
        for api in spec.apis:
            deployed.append(api.name)
            run_api(api, **overrides)
        return [a.name for a in spec.apis]

    yield _deploy
    for name in deployed:
        try:
            serve.delete(name)
        except Exception:
            pass
