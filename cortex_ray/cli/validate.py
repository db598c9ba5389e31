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
from cortex_ray.spec import ApiSpec, MultiModelsSpec
from cortex_ray.spec.paths import is_local_uri, local_path_of
from cortex_ray.spec.quantity import format_bytes

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
        if tree.models:
            ok = _check_models(models, tree, out) and ok
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


def _check_models(spec: MultiModelsSpec, tree: ModelTree, out: TextIO) -> bool:
    """What the spec asks of the tree that only storage can answer: its pins are there, every
    version fits the cache's byte budgets, every local ``warmup.json`` is valid."""
    from cortex_ray.replica.warmup import WARMUP_FILE, read_warmup

    ok = True
    for entry, (name, version) in zip(spec.pinned, spec.pins, strict=True):
        model = tree.models.get(name)
        if model is None:
            print(f"  error: pinned {entry!r}: no model {name!r} (models: {', '.join(tree.names)})", file=out)
            ok = False
        elif version is not None and version not in model.versions:
            versions = ", ".join(str(v) for v in sorted(model.versions)) or "none"
            print(
                f"  error: pinned {entry!r}: model {name!r} has no version {version} (versions: {versions})",
                file=out,
            )
            ok = False
    memory, disk = spec.memory_budget, spec.disk_budget
    unchecked = 0
    for name in tree.names:
        for version, info in sorted(tree.models[name].versions.items()):
            where = f"model {name!r} version {version}"
            if info.valid and disk is not None and disk.unit == "bytes" and info.size > disk.amount:
                print(
                    f"  error: {where}: its files ({_compare(info.size, disk.amount)}) are larger than "
                    f"disk_cache_size ({spec.disk_cache_size}): it can never be downloaded",
                    file=out,
                )
                ok = False
            elif info.valid and memory is not None and memory.unit == "bytes" and info.size > memory.amount:
                print(
                    f"  warning: {where}: its files ({_compare(info.size, memory.amount)}) are larger than "
                    f"cache_size ({spec.cache_size}): in memory it usually takes at least as much, so it "
                    "would fail to load",
                    file=out,
                )
            if not any(f.key == WARMUP_FILE for f in info.files or ()):
                continue
            if not is_local_uri(info.uri):
                unchecked += 1  # (it would have to be downloaded)
                continue
            try:
                read_warmup(local_path_of(info.uri))
            except (OSError, ValueError) as exc:
                print(f"  error: {where}: {exc}", file=out)
                ok = False
    if unchecked:
        print(
            f"  note: {unchecked} {WARMUP_FILE} file(s) in remote storage not checked (only local "
            "model folders are; each is read when its version loads)",
            file=out,
        )
    return ok


def _compare(size: int, limit: int) -> str:
    """``size`` for a message beside ``limit``: exact bytes when rounding would show them equal."""
    shown = format_bytes(size)
    return f"{shown}, {size} bytes" if shown == format_bytes(limit) else shown


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
