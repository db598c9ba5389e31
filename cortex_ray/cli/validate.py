"""``cortex-ray validate SPEC [--check-models]``."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from cortex_ray.cli.options import add_requirements_option
from cortex_ray.cli.report import load_checked, print_errors
from cortex_ray.errors import CortexRayError, SpecErrors
from cortex_ray.models import ModelTree, discover_models, layout_for
from cortex_ray.project.runtime_env import INSTALL
from cortex_ray.spec import ApiSpec

__all__ = ["add_parser", "run_validate"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "validate",
        help="check a spec file (and, with --check-models, its model folders)",
        description="Check a cortex.yaml; exit 0 when valid, 1 when not.",
    )
    p.add_argument("spec", help="path to the spec file (cortex.yaml)")
    p.add_argument(
        "--check-models",
        action="store_true",
        help="also list model storage and check every model and version",
    )
    add_requirements_option(p)
    p.set_defaults(
        func=lambda args: run_validate(args.spec, args.check_models, requirements=args.requirements)
    )


def run_validate(
    path: str, check_models: bool = False, out: TextIO | None = None, requirements: str = INSTALL
) -> int:
    out = out or sys.stdout
    try:
        spec = load_checked(path, requirements)
    except SpecErrors as exc:
        print_errors(exc)
        print(f"{path}: invalid ({len(exc.errors)} problem{'s' * (len(exc.errors) != 1)})", file=sys.stderr)
        return 1
    ok = True
    for api in spec.apis:
        print(_describe_api(api), file=out)
        models = api.handler.model_spec
        if not check_models or models is None:
            continue
        layout = layout_for(api.handler.type, api.compute.inf > 0)
        try:
            tree = discover_models(models, layout)
        except CortexRayError as exc:
            print(f"  error: {exc}", file=out)
            ok = False
            continue
        ok = _print_tree(tree, out) and ok
    verdict = "valid" if ok else "invalid"
    print(f"{path}: {verdict} ({len(spec.apis)} API{'s' * (len(spec.apis) != 1)})", file=out)
    return 0 if ok else 1


def _describe_api(api: ApiSpec) -> str:
    h = api.handler
    line = f"{api.name} ({api.kind}, {h.type} handler) at {api.endpoint}"
    models = h.model_spec
    if models is not None:
        source = (
            next(f"{k}: {v}" for k in ("path", "dir") if (v := getattr(models, k)) is not None)
            if models.paths is None
            else f"paths: {len(models.paths)} models"
        )
        cache = (
            f", cache: {models.memory_budget} in memory / {models.disk_budget} on disk"
            if models.caching_enabled
            else ""
        )
        line += f"\n  models from {source}{cache}"
    return line


def _print_tree(tree: ModelTree, out: TextIO) -> bool:
    for warning in tree.warnings:
        print(f"  warning: {warning}", file=out)
    if not tree.models:
        print("  error: no models found: the folder is empty or absent", file=out)
        return False
    for name in tree.names:
        model = tree.models[name]
        size = sum(v.size for v in model.versions.values())
        versions = ", ".join(str(v) for v in sorted(model.versions)) or "none"
        latest = model.latest if model.latest is not None else "none"
        kind = "versioned" if model.versioned else "unversioned"
        print(f"  {name}: {kind}, versions {versions}, latest {latest}, {_size(size)}", file=out)
        for problem in model.problems:
            print(f"    problem: {problem}", file=out)
    return tree.valid


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
