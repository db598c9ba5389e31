"""The Cortex 0.35 API spec: its schema, as pydantic v2 models (``extra="forbid"``).

Field names, defaults and single-field rules follow Cortex 0.35; rules that
involve several fields live in :mod:`cortex_ray.spec.rules`. Paths are resolved
while validating, relative to the spec file (passed as validation context
``{"base_dir": Path}``), so a validated spec is self-contained and can be sent
to Ray actors as it is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cortex_ray.spec.names import model_name_problem
from cortex_ray.spec.paths import resolve_local_file, resolve_model_uri
from cortex_ray.spec.quantity import Budget, parse_budget, parse_cpu, parse_duration, parse_memory

__all__ = [
    "NEURON_CORES_PER_CHIP",
    "SUPPORTED_KINDS",
    "UNSUPPORTED_KINDS",
    "ApiSpec",
    "AutoscalingSpec",
    "ComputeSpec",
    "DependenciesSpec",
    "HandlerSpec",
    "ModelPathSpec",
    "ModelRoutingSpec",
    "MultiModelsSpec",
    "NetworkingSpec",
    "ServerSideBatchingSpec",
    "UpdateStrategySpec",
    "WorkloadsSpec",
    "kind_problem",
]

NEURON_CORES_PER_CHIP = int(os.environ.get("CORTEX_RAY_NEURON_CORES_PER_CHIP", "2"))
"""NeuronCores per Inferentia chip: 2 on inf2 (and trn1), as Ray counts ``neuron_cores`` there
(inf2.xlarge: 2, inf2.24xlarge: 12); inf1, the family Cortex ran on, had 4 (set
``CORTEX_RAY_NEURON_CORES_PER_CHIP=4`` there)."""
SUPPORTED_KINDS = ("RealtimeAPI", "AsyncAPI")
UNSUPPORTED_KINDS = ("BatchAPI", "TaskAPI", "TrafficSplitter")

_API_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

Cpu = Annotated[float, BeforeValidator(parse_cpu)]
Memory = Annotated[int, BeforeValidator(parse_memory)]
Duration = Annotated[float, BeforeValidator(parse_duration)]


def _cache_size(value: object) -> int | str:
    budget = parse_budget(value)  # (raises ValueError saying what it must be)
    return budget.amount if budget.unit == "versions" else str(value).strip()


CacheSize = Annotated[int | str, BeforeValidator(_cache_size)]
"""``cache_size`` as written (a count, or a size string); read it through ``memory_budget``."""


def _gpu_cache_size(value: object) -> str:
    budget = parse_budget(value)
    if budget.unit != "bytes":
        raise ValueError(
            f"must be a size with its unit, such as 20Gi: GPU memory is budgeted in bytes (got {value!r})"
        )
    return str(value).strip()


GpuCacheSize = Annotated[str, BeforeValidator(_gpu_cache_size)]


def _base_dir(info: ValidationInfo) -> Path | None:
    """Where the project's files (handler, python_path) are: the folder of the spec."""
    context = info.context or {}
    base = context.get("base_dir")
    return Path(base) if base is not None else None


def _data_dir(info: ValidationInfo) -> Path | None:
    """Where local data paths (model folders, the workload store) are relative to: the folder
    of the spec, unless the project was shipped to a cluster without them
    (:mod:`cortex_ray.cluster`): then the folder it was shipped from."""
    context = info.context or {}
    data = context.get("data_dir")
    return Path(data) if data is not None else _base_dir(info)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ModelPathSpec(_Spec):
    """One entry of ``paths``: a named model."""

    name: str
    path: str
    signature_key: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        problem = model_name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str, info: ValidationInfo) -> str:
        return resolve_model_uri(value, _data_dir(info))


class SqsEventsSpec(_Spec):
    sqs: str = Field(min_length=1)
    """The queue: its URL or its ARN."""


EVENT_SETTLE = 2.0
"""``settle_time``'s default with file events (``events: watch``; seconds): how long an upload may
pause between two files and still never be served half-written."""


class MultiModelsSpec(_Spec):
    """``handler.models`` (tensorflow) or ``handler.multi_model_reloading`` (python)."""

    path: str | None = None
    paths: list[ModelPathSpec] | None = None
    dir: str | None = None
    signature_key: str | None = None
    cache_size: CacheSize | None = None
    """Model versions in memory (an integer, Cortex's meaning) or, a cortex-ray addition, a
    memory budget in bytes (a size with its unit: ``6Gi``)."""
    disk_cache_size: CacheSize | None = None
    """The same for the disk tier (``50Gi``: bytes of model files)."""
    gpu_cache_size: GpuCacheSize | None = None
    """cortex-ray addition: the GPU memory the models in memory may take (``20Gi``), a budget of
    its own beside ``cache_size``."""
    poll_interval: Duration = Field(default=5.0, gt=0)
    """cortex-ray addition: how often the reloader lists storage (seconds or ``10s``)."""
    settle_time: Duration | None = Field(default=None, ge=0)
    """cortex-ray addition: how long a new or changed version's files must stay unchanged
    before it is served (default: ``poll_interval``, i.e. unchanged across two polls; with
    ``events: watch``, at most ``EVENT_SETTLE``: see :attr:`settle_seconds`)."""
    events: Literal["watch"] | SqsEventsSpec | None = None
    """cortex-ray addition: storage events as hints. ``watch``: local model folders are watched
    (file events); ``{sqs: <queue URL or ARN>}``: models in S3, from an SQS queue receiving the
    bucket's event notifications. A model an event names is listed (its prefix only) at once
    and ``settle_time`` after its last event; the full listing every ``poll_interval`` still
    runs, catching what an event missed."""
    idle_timeout: Duration | None = Field(default=None, gt=0)
    """cortex-ray addition: a version in memory that no request used for this long is unloaded
    (its files stay on disk), even when the cache has room; off by default."""
    pinned: list[str] = Field(default_factory=list)
    """cortex-ray addition: models loaded at start and never evicted nor expired: ``name`` (its
    latest version, following it as it moves) or ``name@version``; counted in ``cache_size``."""

    @field_validator("events", mode="before")
    @classmethod
    def _events(cls, value: object) -> object:
        if value is None or value == "watch" or isinstance(value, (dict, SqsEventsSpec)):
            return value
        raise ValueError(f"must be watch (local folders) or {{sqs: <queue URL or ARN>}} (S3) (got {value!r})")

    @field_validator("pinned")
    @classmethod
    def _pinned(cls, value: list[str]) -> list[str]:
        for entry in value:
            name, _, version = entry.partition("@")
            problem = model_name_problem(name)
            if problem is not None:
                raise ValueError(f"pinned entry {entry!r}: {problem}")
            if "@" in entry and not (version.isascii() and version.isdigit() and int(version) > 0):
                raise ValueError(f"pinned entry {entry!r}: the version after '@' must be a positive integer")
        if len(set(value)) != len(value):
            raise ValueError(f"pinned lists a model twice: {value}")
        return value

    @property
    def settle_seconds(self) -> float:
        """``settle_time``, or its default: ``poll_interval``, and with ``events: watch`` no more
        than ``EVENT_SETTLE`` (file events come while a file is written, so quiet means a pause
        between files: a new version need not wait for two polls, and ``poll_interval`` with
        events is the reconcile period, often minutes). Not with SQS: S3 tells of an object only
        once it is complete, so a big file uploaded after small ones is minutes of quiet."""
        if self.settle_time is not None:
            return self.settle_time
        return min(self.poll_interval, EVENT_SETTLE) if self.events == "watch" else self.poll_interval

    @property
    def pins(self) -> list[tuple[str, int | None]]:
        """``pinned`` as (name, version), ``None`` for the latest version."""
        out: list[tuple[str, int | None]] = []
        for entry in self.pinned:
            name, _, version = entry.partition("@")
            out.append((name, int(version) if version else None))
        return out

    @field_validator("path", "dir")
    @classmethod
    def _uri(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else resolve_model_uri(value, _data_dir(info))

    @property
    def caching_enabled(self) -> bool:
        return self.cache_size is not None and self.disk_cache_size is not None

    @property
    def memory_budget(self) -> Budget | None:
        return None if self.cache_size is None else parse_budget(self.cache_size)

    @property
    def disk_budget(self) -> Budget | None:
        return None if self.disk_cache_size is None else parse_budget(self.disk_cache_size)

    @property
    def gpu_budget(self) -> Budget | None:
        return None if self.gpu_cache_size is None else parse_budget(self.gpu_cache_size)


class ServerSideBatchingSpec(_Spec):
    max_batch_size: int = Field(ge=2, le=1024)
    batch_interval: Duration = Field(gt=0)


class DependenciesSpec(_Spec):
    """Project files that set up a replica, relative to the project folder (Cortex's names are
    the defaults; a file named here must exist, a default one may be absent)."""

    pip: str = "requirements.txt"
    conda: str = "conda-packages.txt"
    shell: str = "dependencies.sh"

    @field_validator("pip", "conda", "shell")
    @classmethod
    def _file(cls, value: str, info: ValidationInfo) -> str:
        return str(resolve_local_file(value, _base_dir(info)))

    def given(self, key: str) -> bool:
        """Whether the spec named this file (then it must exist)."""
        return key in self.model_fields_set


class HandlerSpec(_Spec):
    type: Literal["python", "tensorflow"]
    path: str
    config: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    python_path: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    processes_per_replica: int = Field(default=1, ge=1, le=100)
    threads_per_process: int = Field(default=1, ge=1)
    multi_model_reloading: MultiModelsSpec | None = None
    models: MultiModelsSpec | None = None
    server_side_batching: ServerSideBatchingSpec | None = None
    protocols: list[Literal["v1", "v2"]] | None = None
    """cortex-ray: the protocol routes served below the endpoint (``v1``: TF Serving's REST API,
    ``v2``: the Open Inference Protocol); ``None``: both for a TensorFlow API, ``v2`` for a Python
    API whose handler has ``handle_infer``."""
    protobuf_path: str | None = None
    """A ``.proto`` with one service: the API answers its RPCs over gRPC (on the ingress it is
    deployed on: the balancer's gRPC port, or Serve's gRPC proxy)."""
    shm_size: Memory | None = None
    image: str | None = None
    tensorflow_serving_image: str | None = None
    dependencies: DependenciesSpec = Field(default_factory=dict)  # type: ignore[assignment]  # (validated: paths resolve in the project)

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if value == "onnx":
            raise ValueError(
                "the onnx handler type has been replaced by the python handler type; please use "
                "the python handler type instead (all onnx models are fully supported by the "
                "python handler type)"
            )
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str, info: ValidationInfo) -> str:
        if not value.endswith(".py"):
            raise ValueError(f"{value!r}: the handler path must be a .py file")
        return str(resolve_local_file(value, _base_dir(info)))

    @field_validator("python_path")
    @classmethod
    def _python_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A folder put first on ``sys.path`` (the project folder is always on it, as Cortex's
        default; cortex-ray also takes ``.``, which Cortex refused, meaning that default)."""
        if value is None:
            return None
        return str(resolve_local_file(value, _base_dir(info)))

    @field_validator("protobuf_path")
    @classmethod
    def _protobuf_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A gRPC API's ``.proto`` (Cortex's field), relative to the spec's folder."""
        if value is None:
            return None
        if not value.endswith(".proto"):
            raise ValueError(f"{value!r}: the protobuf_path must be a .proto file")
        return str(resolve_local_file(value, _base_dir(info)))

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(k for k in value if k.startswith("CORTEX_"))
        if reserved:
            raise ValueError(
                f"environment variables starting with CORTEX_ are reserved (got {', '.join(reserved)})"
            )
        return value

    @property
    def model_spec(self) -> MultiModelsSpec | None:
        """The models of this handler, whichever field holds them."""
        return self.models if self.type == "tensorflow" else self.multi_model_reloading


class ComputeSpec(_Spec):
    cpu: Cpu = Field(default=0.2, ge=0.02)
    mem: Memory | None = Field(default=None, ge=20 * 1024 * 1024)
    gpu: float = Field(default=0, ge=0)
    inf: int = Field(default=0, ge=0)
    """Inferentia chips, as Cortex: each is :data:`NEURON_CORES_PER_CHIP` NeuronCores,
    which is what the replica asks Ray for (``neuron_cores``)."""
    node_groups: list[str] | None = None


class AutoscalingSpec(_Spec):
    min_replicas: int = Field(default=1, gt=0)
    max_replicas: int = Field(default=100, gt=0)
    init_replicas: int | None = Field(default=None, gt=0)
    max_replica_concurrency: int = Field(default=1024, ge=1, le=30000)
    target_replica_concurrency: float | None = Field(default=None, gt=0)
    window: Duration = 60.0
    downscale_stabilization_period: Duration = 300.0
    upscale_stabilization_period: Duration = 60.0
    max_downscale_factor: float = Field(default=0.75, ge=0, lt=1)
    max_upscale_factor: float = Field(default=1.5, gt=1)
    downscale_tolerance: float = Field(default=0.05, ge=0, lt=1)
    upscale_tolerance: float = Field(default=0.05, ge=0)

    @field_validator("window")
    @classmethod
    def _window(cls, value: float) -> float:
        if value < 10 or abs(value / 10 - round(value / 10)) > 1e-9:
            raise ValueError(f"window must be at least 10s and a multiple of 10s, got {value:g}s")
        return value


_ENDPOINT = re.compile(r"^/[A-Za-z0-9._~/-]*$")
_ROUTING_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ModelRoutingSpec(_Spec):
    """cortex-ray addition: where a request names its model, so that the request goes to the
    replica that holds that model (exactly one of the four; ``name@version`` names a version)."""

    query: str | None = None
    """A query parameter, e.g. ``model`` for ``?model=iris``."""
    header: str | None = None
    """A request header, e.g. ``x-model``."""
    json_field: str | None = Field(default=None, alias="json")
    """A field of a JSON body (dots for nested fields), e.g. ``model`` for ``{"model": "iris"}``."""
    path: int | None = Field(default=None, ge=0)
    """A path segment below the endpoint, 0 for the first: ``/<endpoint>/iris``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("query", "header", "json_field")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _ROUTING_NAME.match(value):
            raise ValueError(f"{value!r} must be 1-64 letters, digits, '_', '-' or '.'")
        return value

    @model_validator(mode="after")
    def _one(self) -> ModelRoutingSpec:
        given = [k for k in ("query", "header", "json_field", "path") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError('specify exactly one of "query", "header", "json" or "path"')
        return self

    def as_pair(self) -> tuple[str, str]:
        for kind, value in (("query", self.query), ("header", self.header), ("json", self.json_field)):
            if value is not None:
                return kind, value
        return "path", str(self.path)


class NetworkingSpec(_Spec):
    endpoint: str | None = None
    model_routing: ModelRoutingSpec | None = None
    max_body_size: Memory = Field(default=64 * 1024 * 1024, ge=1024, le=16 * 1024**3)
    """The largest request body the API takes (a cortex-ray addition; 413 above it, refused from
    ``Content-Length`` by the balancer and the replica before the body is read)."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _ENDPOINT.match(value):
            raise ValueError(
                f"endpoint must be a URL path starting with '/' (letters, digits, '.', '_', '~', '-', '/'), "
                f"got {value!r}"
            )
        return "/" + value.strip("/") if value.strip("/") else "/"


_PERCENT = re.compile(r"^(\d{1,3})%$")


class UpdateStrategySpec(_Spec):
    """How a changed API rolls (Cortex's defaults). ``max_surge`` maps to Serve's
    ``max_surge_percent`` (replacements start before old replicas stop); with ``max_surge: 0``,
    ``max_unavailable`` maps to Serve's ``rolling_update_percentage``. A replica count is taken
    relative to the API's initial replica count."""

    max_surge: int | str = "25%"
    max_unavailable: int | str = "25%"

    @field_validator("max_surge", "max_unavailable")
    @classmethod
    def _amount(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"must be a replica count >= 0 or a percentage, got {value}")
            return value
        match = _PERCENT.match(value.strip())
        if not match or int(match.group(1)) > 100:
            raise ValueError(f"must be a replica count or a percentage between 0% and 100%, got {value!r}")
        return value.strip()

    @model_validator(mode="after")
    def _not_both_zero(self) -> UpdateStrategySpec:
        if self.percent("max_surge", 1) == 0 and self.percent("max_unavailable", 1) == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0")
        return self

    def percent(self, field: str, replicas: int) -> int:
        """``max_surge`` or ``max_unavailable`` as a percentage of ``replicas`` (0-100)."""
        value = getattr(self, field)
        if isinstance(value, int):
            return min(100, -(-100 * value // max(1, replicas)))
        return int(value[:-1])


class WorkloadsSpec(_Spec):
    """cortex-ray addition, AsyncAPI only: where workloads live and for how long."""

    store: str | None = None
    """``s3://bucket/prefix/`` or a local folder; default: ``.cortex-ray/workloads/<api>/``
    beside the spec file (one machine only: use S3 on a multi-node cluster)."""
    result_ttl: Duration = Field(default=7 * 86400.0, gt=0)
    """How long finished workloads (and their results) are kept (default 7 days, as Cortex)."""
    max_attempts: int = Field(default=3, ge=1)
    """How many times a workload is tried (its worker died, or it timed out) before it fails."""
    timeout: Duration = Field(default=3600.0, gt=0)
    """How long ``handle_async`` may run for one attempt (default 1h); past it the attempt fails
    and is retried (a sync handler's worker is then replaced: its thread cannot be stopped)."""

    @field_validator("store")
    @classmethod
    def _store(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else resolve_model_uri(value, _data_dir(info))


def kind_problem(value: Any) -> str | None:
    """What is wrong with an API's ``kind`` (``None``: nothing)."""
    supported = ", ".join(SUPPORTED_KINDS)
    if value in UNSUPPORTED_KINDS:
        return f"kind {value!r} is not supported by cortex-ray (supported: {supported})"
    if value not in SUPPORTED_KINDS:
        return f"invalid kind {value!r} (supported: {supported})"
    return None


class ApiSpec(_Spec):
    name: str
    kind: str
    handler: HandlerSpec
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    networking: NetworkingSpec = Field(default_factory=NetworkingSpec)
    update_strategy: UpdateStrategySpec = Field(default_factory=dict)  # type: ignore[assignment]
    workloads: WorkloadsSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if len(value) > 42:
            raise ValueError(f"{value!r} is longer than 42 characters")
        if not _API_NAME.match(value):
            raise ValueError(
                f"{value!r} must contain only lower case letters, numbers and dashes, start with "
                "a letter and end with a letter or number"
            )
        if value.startswith("b-"):
            raise ValueError(f"{value!r}: names starting with 'b-' are reserved")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        problem = kind_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _defaults(self, info: ValidationInfo) -> ApiSpec:
        if self.networking.endpoint is None:
            self.networking.endpoint = f"/{self.name}"
        if self.kind == "AsyncAPI":
            if self.workloads is None:
                self.workloads = WorkloadsSpec()
            if self.workloads.store is None:
                base = _data_dir(info) or Path.cwd()
                self.workloads.store = resolve_model_uri(f".cortex-ray/workloads/{self.name}", base)
        return self

    @property
    def endpoint(self) -> str:
        return self.networking.endpoint or f"/{self.name}"

    @property
    def serves_grpc(self) -> bool:
        """A gRPC API (``handler.protobuf_path``): it needs an ingress that takes gRPC."""
        return self.handler.protobuf_path is not None
