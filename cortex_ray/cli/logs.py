"""``cortex-ray logs API [--follow] [--tail N] [--address]``: the API's replica and reloader logs
from Ray's log files on this node, oldest file first (newest last), then new lines as they come."""

from __future__ import annotations

import argparse
import sys

from cortex_ray.cli.deploy import run_work
from cortex_ray.cli.options import add_address_option
from cortex_ray.errors import DeploymentError

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "logs",
        help="print an API's replica and reloader logs (from Ray's log files on this node)",
    )
    p.add_argument("api", metavar="API", help="the API name")
    add_address_option(p)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    p.add_argument(
        "--tail", type=_lines, default=200, help="lines per file to start with (default 200; 0: none)"
    )
    p.set_defaults(func=_logs)


def _lines(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"--tail takes a number of lines (0 or more), got {value!r}")
    return int(value)


def _logs(a: argparse.Namespace) -> int:
    def work() -> None:
        from cortex_ray import cluster
        from cortex_ray.cluster.inspect import api_pids
        from cortex_ray.cluster.logs import api_log_files, follow, tail

        cluster.connect(a.address)
        pids = api_pids(a.api)
        if pids is None:
            raise DeploymentError(f"no API named {a.api!r} is running")
        files = api_log_files(a.api, pids)
        if not files:
            print(
                f"no log files of {a.api} on this node (its replicas may run on other nodes)", file=sys.stderr
            )
        for f in files:
            print(f"==> {f} <==", flush=True)
            for line in tail(f, a.tail):
                print(line)
        if a.follow:
            try:
                for f, line in follow(files):
                    print(f"[{f.name}] {line}", flush=True)
            except KeyboardInterrupt:  # Ctrl-C ends --follow: a normal end
                pass

    return run_work(work)
