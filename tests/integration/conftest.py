"""One local Ray cluster and one Serve instance for the whole test session.

Ray binds 127.0.0.1 only. The product's default, the fast ingress (HAProxy in front of the
replicas' own HTTP ports), listens on a free port of 127.0.0.1 (``serve_url``); Serve's
own proxy listens on another (``proxy_url``) for APIs deployed with ``ingress="proxy"``,
so both paths are tested in one session; gRPC has a port on each (``grpc_address``,
``proxy_grpc_address``). The cluster declares 4 logical ``neuron_cores`` (two inf2 chips) so that
an Inferentia replica can be scheduled without hardware.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.s3_server import free_port

ROOT = Path(__file__).resolve().parents[2]

SERVE_HOST = "127.0.0.1"


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[dict[str, Any]]:
    from cortex_ray import sdk

    metrics_port = free_port()
    proxy_port = free_port()
    grpc_port, proxy_grpc_port = free_port(), free_port()
    url = sdk.start(  # the product's own local start: Ray and Serve on 127.0.0.1
        host=SERVE_HOST,
        port=free_port(),
        ingress="fast",
        proxy_port=proxy_port,
        grpc_port=grpc_port,
        proxy_grpc_port=proxy_grpc_port,
        num_cpus=8,
        resources={"neuron_cores": 4},
        _metrics_export_port=metrics_port,
        configure_logging=False,
        log_to_driver=True,
    )
    yield {
        "url": url,
        "proxy_url": f"http://{SERVE_HOST}:{proxy_port}",
        "metrics_port": metrics_port,
        "grpc_address": f"{SERVE_HOST}:{grpc_port}",
        "proxy_grpc_address": f"{SERVE_HOST}:{proxy_grpc_port}",
    }
    sdk.shutdown()


@pytest.fixture(scope="session")
def serve_url(ray_serve: dict[str, Any]) -> str:
    return str(ray_serve["url"])


@pytest.fixture(scope="session")
def grpc_address(ray_serve: dict[str, Any]) -> str:
    """The fast ingress's gRPC port (HAProxy, HTTP/2 to the replicas' own gRPC servers)."""
    return str(ray_serve["grpc_address"])


@pytest.fixture(scope="session")
def proxy_grpc_address(ray_serve: dict[str, Any]) -> str:
    """Serve's gRPC proxy (gRPC APIs deployed with ``ingress="proxy"``, routed by cortex-ray)."""
    return str(ray_serve["proxy_grpc_address"])


@pytest.fixture(scope="session")
def proxy_url(ray_serve: dict[str, Any]) -> str:
    return str(ray_serve["proxy_url"])


@pytest.fixture
def http(serve_url: str) -> Iterator[httpx.Client]:
    """A client of the fast ingress (the default)."""
    with httpx.Client(base_url=serve_url, timeout=60) as client:
        yield client


@pytest.fixture
def proxy_http(proxy_url: str) -> Iterator[httpx.Client]:
    """A client of Serve's proxy, for APIs deployed with ``ingress="proxy"``."""
    with httpx.Client(base_url=proxy_url, timeout=60) as client:
        yield client


Deployer = Callable[..., list[str]]


@pytest.fixture
def deploy(ray_serve: dict[str, Any]) -> Iterator[Deployer]:
    """Deploy APIs from a spec (list of dicts) written into a project folder.

    ``deploy(project, apis, **overrides)`` writes ``cortex.yaml`` into
    ``project``, validates it and serves each API as its own application (on the fast
    ingress unless ``ingress="proxy"``); the applications are deleted after the test.
    """
    from cortex_ray.sdk import delete, run_api
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
            delete(name)
        except Exception:
            pass


@pytest.fixture(scope="session")
def examples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repo's ``deployments/`` (and ``notebooks/``) with the example models built
    into it, once per session: ``<root>/deployments``."""
    import shutil
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("examples")
    project = root / "deployments"
    shutil.copytree(ROOT / "deployments", project, ignore=shutil.ignore_patterns("model-store"))
    shutil.copytree(
        ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints")
    )
    built = subprocess.run(
        [sys.executable, str(project / "build_models.py"), "--out", str(project / "model-store")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return project
