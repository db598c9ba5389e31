"""Options several sub-commands share, each defined once."""

from __future__ import annotations

import argparse

from cortex_ray.ingress.control import DEFAULT_INGRESS, INGRESS_MODES
from cortex_ray.project.runtime_env import INSTALL, REQUIREMENTS_MODES
from cortex_ray.rpc import DEFAULT_GRPC_PORT

__all__ = ["add_address_option", "add_grpc_port_option", "add_ingress_option", "add_requirements_option"]


def add_address_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        help="the cluster (ray://host:10001, host:6379; default: RAY_ADDRESS, then the cluster "
        "`ray start` started on this machine, then the Ray of a `cortex-ray run` here)",
    )


def add_ingress_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ingress",
        choices=INGRESS_MODES,
        default=DEFAULT_INGRESS,
        help="fast: replicas serve HTTP behind cortex-ray's balancer (default); proxy: Ray Serve's proxy",
    )


def add_grpc_port_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--grpc-port",
        type=int,
        default=DEFAULT_GRPC_PORT,
        help=f"where the spec's gRPC APIs (handler.protobuf_path) are served (default {DEFAULT_GRPC_PORT}): "
        "the fast ingress's balancer listens there on --host; with --ingress proxy, Serve's gRPC proxy, "
        "which binds every interface",
    )


def add_requirements_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--requirements",
        choices=REQUIREMENTS_MODES,
        default=INSTALL,
        help="install: check each API's requirements.txt against this Python first (pip's resolver, "
        "nothing installed), then have Ray install it for the API's replicas (default); installed: "
        "install nothing, run with the environment as it is (a local run, or a cluster image that "
        "has what the project needs), and only check that each requirement is there",
    )
