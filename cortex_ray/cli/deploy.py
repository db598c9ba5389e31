"""``cortex-ray deploy SPEC``, ``cortex-ray delete API...``, ``cortex-ray refresh API``: a running
Ray cluster (``ray start``, or Ray's usual address resolution), as Cortex's CLI did it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from cortex_ray.cli.options import (
    add_address_option,
    add_grpc_port_option,
    add_ingress_option,
    add_requirements_option,
)
from cortex_ray.cli.report import print_errors
from cortex_ray.errors import CortexRayError, SpecErrors
from cortex_ray.net import base_url

__all__ = ["add_parsers", "run_work"]


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "deploy",
        help="deploy (or update) a spec's APIs on a running Ray cluster, sending the project folder",
        description="Deploy every API of SPEC onto a running Ray cluster; exit 0 once all are ready, "
        "1 naming each API that failed.",
    )
    p.add_argument("spec", help="path to the spec file (cortex.yaml)")
    add_address_option(p)
    p.add_argument("--host", default="127.0.0.1", help="listen address of the APIs (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument(
        "--shared-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder every node mounts at the same path: local models and workload stores under "
        "it are allowed on a cluster of several nodes (repeatable)",
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for the APIs (default 900)")
    add_ingress_option(p)
    add_requirements_option(p)
    add_grpc_port_option(p)
    p.set_defaults(func=_deploy)

    p = subparsers.add_parser("delete", help="delete APIs from the cluster")
    p.add_argument("apis", nargs="+", metavar="API", help="API names")
    add_address_option(p)
    p.set_defaults(func=_delete)

    p = subparsers.add_parser(
        "refresh", help="restart an API's replicas (new ones start first: no request fails)"
    )
    p.add_argument("api", metavar="API", help="the API name")
    add_address_option(p)
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait (default 900)")
    p.set_defaults(func=_refresh)


def _deploy(a: argparse.Namespace) -> int:
    def work() -> None:
        from cortex_ray import cluster
        from cortex_ray.cli.report import load_checked

        spec = load_checked(a.spec, a.requirements)
        cluster.connect(a.address)
        results = cluster.deploy_apis(
            spec,
            host=a.host,
            port=a.port,
            ingress=a.ingress,
            shared_dirs=a.shared_dir,
            timeout_s=a.timeout,
            requirements=a.requirements,
            grpc_port=a.grpc_port,
        )
        base = base_url(a.host, a.port)
        for item in results:
            print(f"{item['name']}: {item['status'].lower()} at {base}{item['endpoint'] or ''}")

    return run_work(work)


def _delete(a: argparse.Namespace) -> int:
    def work() -> None:
        from cortex_ray import cluster

        cluster.connect(a.address)
        cluster.delete(a.apis)
        for name in a.apis:
            print(f"deleted {name}")

    return run_work(work)


def _refresh(a: argparse.Namespace) -> int:
    def work() -> None:
        from cortex_ray import cluster

        cluster.connect(a.address)
        cluster.refresh(a.api, timeout_s=a.timeout)
        print(f"refreshed {a.api}")

    return run_work(work)


def run_work(work: Callable[[], Any]) -> int:
    try:
        work()
    except SpecErrors as exc:
        return print_errors(exc)
    except CortexRayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
