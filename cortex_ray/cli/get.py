"""``cortex-ray get [API] [--address] [-o json]``: the running APIs, as ``cortex get`` showed them.

Without an API: a table of every API (status, replicas running/target, endpoint, requests).
With one: its models, each version's state (the worst any replica reports, with the reason),
which replicas hold it in memory or on disk, the reloader's last poll and error, and each
replica's lag. Exit 0 when every API shown is healthy (running, its reloader's last poll
worked, no version failed), 1 when not.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from cortex_ray.cli.deploy import run_work
from cortex_ray.cli.options import add_address_option
from cortex_ray.errors import DeploymentError

__all__ = ["add_parser", "render_api", "render_apis"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "get",
        help="show the running APIs (or one API's models, per replica)",
        description="Show the running APIs; exit 0 when every one shown is healthy, 1 when not.",
    )
    p.add_argument("api", nargs="?", metavar="API", help="one API: its models, versions and replicas")
    add_address_option(p)
    p.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")
    p.set_defaults(func=_get)


def _get(a: argparse.Namespace) -> int:
    healthy = [True]

    def work() -> None:
        from cortex_ray import cluster
        from cortex_ray.cluster.inspect import inspect_api, inspect_apis

        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # not Serve's handle chatter
        cluster.connect(a.address)
        if a.api:
            item = inspect_api(a.api)
            if item is None:
                raise DeploymentError(f"no API named {a.api!r} is running")
            healthy[0] = bool(item["healthy"])
            print(json.dumps(item, indent=2, default=str) if a.output == "json" else render_api(item))
        else:
            items = inspect_apis(details=True)
            healthy[0] = all(i["healthy"] for i in items)
            print(json.dumps(items, indent=2, default=str) if a.output == "json" else render_apis(items))

    code = run_work(work)
    return code if code else (0 if healthy[0] else 1)


def render_apis(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no APIs are running"
    rows = [
        [
            i["name"],
            i["status"].lower(),
            f"{i['running']}/{i['target']}",
            i["endpoint"] or "-",
            "-" if i["requests"] is None else f"{i['requests']:.0f}",
        ]
        for i in items
    ]
    lines = [_table(["api", "status", "replicas", "endpoint", "requests"], rows)]
    for i in items:
        if i["message"] and not i["healthy"]:
            lines.append(f"\n{i['name']}: {i['message']}")
    return "\n".join(lines)


def render_api(item: dict[str, Any]) -> str:
    out = [render_apis([item])]
    if item.get("error"):
        out.append(f"\nerror: {item['error']}")
    names = {r: r[:8] for r in item.get("replica_reports", {})}
    models = item.get("models")
    if models:
        rows = []
        for name, model in sorted(models.items()):
            for v, info in model["versions"].items():
                state = info["state"] + (f": {info['reason']}" if info.get("reason") else "")
                rows.append(
                    [
                        name,
                        v + (" (latest)" if v == model.get("latest") else ""),
                        state[:100],
                        ",".join(names.get(r, r[:8]) for r in info["in_memory"]) or "-",
                        ",".join(names.get(r, r[:8]) for r in info["on_disk"]) or "-",
                    ]
                )
            if model.get("error"):
                rows.append([name, "-", f"error: {model['error']}"[:100], "-", "-"])
        out.append("\n" + _table(["model", "version", "state", "in memory on", "on disk on"], rows))
    elif models is not None:
        out.append("\nno models")
    reloader = item.get("reloader")
    if reloader:
        last = reloader.get("last_successful_poll")
        line = f"\nreloader: last poll {_ago(last)}"
        if reloader.get("last_error"):
            line += f"; last error {_ago(reloader.get('last_error_at'))}: {reloader['last_error']}"
        out.append(line)
        for p in reloader.get("problems") or []:
            out.append(
                f"  {p['model']}{'' if p['version'] is None else ':' + str(p['version'])}: {p['reason']}"
            )
    reports = item.get("replica_reports")
    if reports:
        rows = [
            [
                names[r],
                (e.get("node_id") or "")[:8],
                str(e.get("lag_versions")),
                f"{e.get('lag_seconds') or 0:.1f}s",
            ]
            for r, e in reports.items()
        ]
        out.append("\n" + _table(["replica", "node", "trees behind", "behind for"], rows))
    if item.get("queue"):
        q = item["queue"]
        out.append(
            f"\nqueue: {q.get('queued')} queued, {q.get('with_workers')} with workers, "
            f"{q.get('dispatched')} dispatched, {q.get('retried_after_worker_failure')} retried"
        )
    return "\n".join(out)


def _ago(ts: float | None) -> str:
    return "never" if not ts else f"{max(0.0, time.time() - float(ts)):.0f}s ago"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in [header, *rows]
    ]
    return "\n".join(lines)
