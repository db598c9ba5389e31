"""Cortex's cross-field rules, checked after each API parsed field by field.

Each check yields ``(field_path, message)``; the loader adds the file and the
API. Messages keep Cortex 0.35's wording where it had one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from cortex_ray.errors import ProtoError
from cortex_ray.rpc.proto import describe, package_of
from cortex_ray.spec.paths import is_local_uri
from cortex_ray.spec.quantity import format_bytes
from cortex_ray.spec.schema import ApiSpec, MultiModelsSpec

__all__ = ["api_warnings", "check_api", "check_apis"]

Problem = tuple[str, str]


def check_api(api: ApiSpec) -> list[Problem]:
    """Every cross-field problem of one API."""
    return [*_handler(api), *_models(api), *_compute(api), *_autoscaling(api)]


def check_apis(apis: list[ApiSpec]) -> list[tuple[int, Problem]]:
    """Problems between APIs of one file: duplicate names and endpoints."""
    problems: list[tuple[int, Problem]] = []
    names: dict[str, int] = {}
    endpoints: dict[str, int] = {}
    for index, api in enumerate(apis):
        if api.name in names:
            problems.append(
                (index, ("name", f"api name {api.name!r} is already used by api #{names[api.name]}"))
            )
        names.setdefault(api.name, index)
        if api.endpoint in endpoints:
            first = apis[endpoints[api.endpoint]].name
            problems.append(
                (
                    index,
                    (
                        "networking.endpoint",
                        f"endpoint {api.endpoint!r} is already used by api {first!r}",
                    ),
                )
            )
        endpoints.setdefault(api.endpoint, index)
    return problems


_UNMAPPED_DEFAULTS = {
    "max_downscale_factor": 0.75,
    "max_upscale_factor": 1.5,
    "downscale_tolerance": 0.05,
    "upscale_tolerance": 0.05,
}


def api_warnings(api: ApiSpec) -> list[Problem]:
    """Cortex fields that cortex-ray accepts but ignores (the platform does their job, or Ray
    Serve has no equivalent), and values that are allowed but unwise."""
    h = api.handler
    ignored = {
        "handler.image": (h.image, "install the handler's dependencies with requirements.txt"),
        "handler.tensorflow_serving_image": (h.tensorflow_serving_image, "TensorFlow runs in-process"),
        "handler.shm_size": (h.shm_size, "Ray manages shared memory"),
        "compute.node_groups": (api.compute.node_groups, "use Ray resources or labels"),
    }
    problems = [
        (field, f"accepted but ignored by cortex-ray ({hint})")
        for field, (value, hint) in ignored.items()
        if value is not None
    ]
    problems += [
        (
            f"autoscaling.{key}",
            f"autoscaling.{key} ({getattr(api.autoscaling, key):g}) has no Ray Serve equivalent "
            "and is ignored",
        )
        for key, default in _UNMAPPED_DEFAULTS.items()
        if getattr(api.autoscaling, key) != default
    ]
    problems += _cache_size_room(api)
    return problems


_CACHE_SHARE_OF_MEM = 0.9
"""A ``cache_size`` in bytes above this share of ``compute.mem`` leaves no room for the rest."""


def _cache_size_room(api: ApiSpec) -> list[Problem]:
    """A ``cache_size`` in bytes that fits in ``compute.mem`` (more is an error) but leaves it
    no room for the handler, Python and Ray."""
    spec, mem = api.handler.model_spec, api.compute.mem
    cache = spec.memory_budget if spec is not None else None
    if spec is None or cache is None or cache.unit != "bytes" or mem is None:
        return []
    if not mem * _CACHE_SHARE_OF_MEM < cache.amount <= mem:
        return []
    field = "handler.models" if api.handler.type == "tensorflow" else "handler.multi_model_reloading"
    limit = f"{_CACHE_SHARE_OF_MEM:.0%}"
    share = "equal to" if cache.amount == mem else f"above {limit} of"
    below = int(mem * _CACHE_SHARE_OF_MEM) // 2**20  # (in Mi, rounded down: under the line)
    return [
        (
            f"{field}.cache_size",
            f"cache_size ({spec.cache_size}) is {share} the replica's memory compute.mem "
            f"({format_bytes(mem)}), which leaves no room for the handler, Python and Ray: "
            f"use a lower cache_size ({below}Mi, {limit} of compute.mem, or less)",
        )
    ]


def _handler(api: ApiSpec) -> Iterator[Problem]:
    h = api.handler
    if not os.path.isfile(h.path):
        yield "handler.path", f"file {h.path!r} does not exist"
    if h.python_path is not None and not os.path.isdir(h.python_path):
        yield "handler.python_path", f"folder {h.python_path!r} does not exist"
    if h.type == "tensorflow":
        if h.models is None:
            yield "handler.models", "models field must be defined for the tensorflow handler type"
        if h.multi_model_reloading is not None:
            yield (
                "handler.multi_model_reloading",
                "multi_model_reloading is not a supported field for the tensorflow handler type",
            )
    else:
        if h.models is not None:
            yield "handler.models", "models is not a supported field for the python handler type"
        if h.tensorflow_serving_image is not None:
            yield (
                "handler.tensorflow_serving_image",
                "tensorflow_serving_image is not a supported field for the python handler type",
            )
    caching = h.model_spec is not None and h.model_spec.caching_enabled
    # (with caching, or for an AsyncAPI, Cortex's own rules below say it)
    if h.processes_per_replica > 1 and not caching and api.kind != "AsyncAPI":
        yield (
            "handler.processes_per_replica",
            f"processes_per_replica ({h.processes_per_replica}) cannot map to Ray Serve, where a "
            "replica is one process: use autoscaling replicas (and threads_per_process) instead",
        )
    for key in ("pip", "conda", "shell"):
        file = getattr(h.dependencies, key)
        if h.dependencies.given(key) and not os.path.isfile(file):
            yield f"handler.dependencies.{key}", f"file {file!r} does not exist"
    if h.protobuf_path is not None:
        yield from _proto(api, h.protobuf_path)
    if h.server_side_batching is not None and api.kind != "RealtimeAPI":
        yield "handler.server_side_batching", f"server_side_batching key is not supported for {api.kind} kind"
    if h.protocols:
        if api.kind != "RealtimeAPI":
            yield "handler.protocols", f"protocol routes are served by RealtimeAPIs, not {api.kind}"
        elif "v1" in h.protocols and h.type != "tensorflow":
            yield (
                "handler.protocols",
                "v1 (TF Serving's REST API) runs a SavedModel's signatures: it needs handler.type tensorflow "
                "(a Python API can serve v2 with handle_infer)",
            )
        elif h.model_spec is None:
            yield (
                "handler.protocols",
                "the protocol routes serve the API's models, and it has none (multi_model_reloading)",
            )
    if api.kind != "AsyncAPI" and api.workloads is not None:
        yield "workloads", "workloads is only supported for the AsyncAPI kind"
    if api.kind == "AsyncAPI":
        for key in ("processes_per_replica", "threads_per_process"):
            value = getattr(h, key)
            if value != 1:
                yield f"handler.{key}", f"{key} ({value}) must be 1 for the AsyncAPI kind"


def _proto(api: ApiSpec, path: str) -> Iterator[Problem]:
    """Cortex's rules for a gRPC API (``handler.protobuf_path``)."""
    field = "handler.protobuf_path"
    if api.kind != "RealtimeAPI":
        yield field, f"protobuf_path is not supported for the {api.kind} kind (gRPC APIs are RealtimeAPIs)"
        return
    if api.handler.server_side_batching is not None:
        yield field, "server_side_batching is not supported for gRPC APIs (protobuf_path)"
    if not os.path.isfile(path):
        yield field, f"file {path!r} does not exist"
        return
    try:
        service = describe(path)
    except ProtoError as exc:
        yield field, exc.message
        return
    for problem in service.problems:
        yield field, f"{os.path.basename(path)}: {problem}"
    package = package_of(api.name)
    if service.package != package:
        yield (
            field,
            f"{os.path.basename(path)}: the package must be the API's name with - replaced by _ "
            f"({package!r}), and it is {service.package or 'not given'!r}",
        )


def _models(api: ApiSpec) -> Iterator[Problem]:
    h = api.handler
    field = "handler.models" if h.type == "tensorflow" else "handler.multi_model_reloading"
    spec: MultiModelsSpec | None = h.model_spec
    if spec is None:
        return
    given = [k for k in ("path", "paths", "dir") if getattr(spec, k) is not None]
    if len(given) != 1 and len(given) != 2:
        yield field, 'specify only one of "path", "paths" or "dir"'
    elif len(given) == 2:
        yield (
            field,
            f"please specify either the {given[0]} or {given[1]} field "
            "(both cannot be specified at the same time)",
        )
    if spec.paths is not None:
        if not spec.paths:
            yield f"{field}.paths", "must list at least one model"
        seen: set[str] = set()
        for i, entry in enumerate(spec.paths):
            if entry.name in seen:
                yield (
                    f"{field}.paths[{i}].name",
                    f"cannot have multiple models with the same name ({entry.name})",
                )
            seen.add(entry.name)
            if h.type == "python" and entry.signature_key is not None:
                yield (
                    f"{field}.paths[{i}].signature_key",
                    "signature_key is not a supported field for the python handler type",
                )
    if h.type == "python" and spec.signature_key is not None:
        yield (
            f"{field}.signature_key",
            "signature_key is not a supported field for the python handler type",
        )
    if spec.pinned:
        if spec.path is not None:
            yield f"{field}.pinned", "pinned names models of `paths` or `dir`; a single `path` is one model"
        elif spec.paths is not None:
            names = [p.name for p in spec.paths]
            for i, (name, _) in enumerate(spec.pins):
                if name not in names:
                    yield (
                        f"{field}.pinned[{i}]",
                        f"model {name!r} is not in paths (it has {', '.join(names)})",
                    )
        budget = spec.memory_budget
        if budget is not None and budget.unit == "versions" and len(spec.pinned) > budget.amount:
            yield (
                f"{field}.pinned",
                f"{len(spec.pinned)} pinned models cannot fit in cache_size ({spec.cache_size})",
            )
    if spec.events is not None and not isinstance(spec.events, str):
        uris = [spec.dir] if spec.dir else [spec.path] if spec.path else [p.path for p in spec.paths or []]
        local = [u for u in uris if u is not None and not u.startswith("s3://")]
        if local:
            yield (
                f"{field}.events.sqs",
                f"events from SQS are S3 event notifications; {local[0]} is not in S3 (use events: watch)",
            )
    if spec.events == "watch":
        uris = [spec.dir] if spec.dir else [spec.path] if spec.path else [p.path for p in spec.paths or []]
        remote = [u for u in uris if u is not None and not is_local_uri(u)]
        if remote:
            yield (
                f"{field}.events",
                f"events: watch watches local folders; {remote[0]} is not one (models in S3 are polled)",
            )
    cache, disk = spec.memory_budget, spec.disk_budget
    if spec.gpu_cache_size is not None:
        if cache is None:
            yield (
                f"{field}.gpu_cache_size",
                "gpu_cache_size budgets the GPU memory of a model cache: set cache_size and "
                "disk_cache_size too",
            )
        if api.compute.gpu <= 0:
            yield (
                f"{field}.gpu_cache_size",
                f"gpu_cache_size ({spec.gpu_cache_size}) needs a GPU: compute.gpu is {api.compute.gpu:g}",
            )
    if (cache is None) != (disk is None):
        yield field, 'please specify both "cache_size" and "disk_cache_size" or neither of them'
    elif cache is not None and disk is not None:
        if cache.unit == disk.unit and cache.amount > disk.amount:
            yield (
                f"{field}.cache_size",
                f"cache_size ({spec.cache_size}) cannot be greater than "
                f"disk_cache_size ({spec.disk_cache_size})",
            )
        mem = api.compute.mem
        if cache.unit == "bytes" and mem is not None and cache.amount > mem:
            yield (
                f"{field}.cache_size",
                f"cache_size ({spec.cache_size}) cannot be greater than the replica's memory "
                f"compute.mem ({format_bytes(mem)})",
            )
        if h.processes_per_replica > 1:
            yield (
                "handler.processes_per_replica",
                "when model caching is enabled, the max value processes_per_replica can take "
                f"is 1, while currently it's set to {h.processes_per_replica}",
            )


def _compute(api: ApiSpec) -> Iterator[Problem]:
    c = api.compute
    if c.gpu > 0 and c.inf > 0:
        yield "compute", "gpu and inf resources cannot be used together"
    shm = api.handler.shm_size
    if shm is not None and c.mem is not None and shm > c.mem:
        yield "handler.shm_size", f"handler.shm_size ({shm}) cannot exceed compute.mem ({c.mem})"


def _autoscaling(api: ApiSpec) -> Iterator[Problem]:
    a = api.autoscaling
    if a.min_replicas > a.max_replicas:
        yield (
            "autoscaling.min_replicas",
            f"min_replicas cannot be greater than max_replicas ({a.min_replicas} > {a.max_replicas})",
        )
    if a.init_replicas is not None:
        if a.init_replicas > a.max_replicas:
            yield (
                "autoscaling.init_replicas",
                f"init_replicas cannot be greater than max_replicas ({a.init_replicas} > {a.max_replicas})",
            )
        if a.init_replicas < a.min_replicas:
            yield (
                "autoscaling.init_replicas",
                f"init_replicas cannot be less than min_replicas ({a.init_replicas} < {a.min_replicas})",
            )
    target = a.target_replica_concurrency
    if target is not None and target > a.max_replica_concurrency:
        yield (
            "autoscaling.target_replica_concurrency",
            f"target_replica_concurrency ({target:g}) cannot be greater than "
            f"max_replica_concurrency ({a.max_replica_concurrency})",
        )
