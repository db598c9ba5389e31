"""Read a spec file (or a dict/list) into validated :class:`ApiSpec` objects.

Every problem becomes one :class:`SpecError` naming the file, the API (name and
index), the field path and the bad value; all of a file's problems are raised
together as :class:`SpecErrors`.
"""

from __future__ import annotations

import difflib
import os
import reprlib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cortex_ray.errors import SpecError, SpecErrors
from cortex_ray.spec.rules import api_warnings, check_api, check_apis
from cortex_ray.spec.schema import ApiSpec, kind_problem

__all__ = ["Spec", "load_spec", "parse_spec"]


@dataclass
class Spec:
    """A validated spec file: its APIs in file order, and warnings."""

    file: str
    apis: list[ApiSpec]
    warnings: list[str] = field(default_factory=list)

    def api(self, name: str) -> ApiSpec:
        for api in self.apis:
            if api.name == name:
                return api
        names = ", ".join(a.name for a in self.apis) or "none"
        raise SpecErrors([SpecError(f"no api named {name!r} (apis: {names})", file=self.file)])


def load_spec(path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None) -> Spec:
    """Read and validate a spec file; paths in it are relative to its folder (local data
    paths: to ``data_dir`` when given, see :func:`parse_spec`)."""
    file = Path(path)
    label = str(path)
    try:
        with file.open("rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecErrors([SpecError(f"cannot read the spec: {exc.strerror or exc}", file=label)]) from exc
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecErrors(
            [SpecError(f"the spec is over {MAX_SPEC_BYTES // 2**20} MiB: is it the right file?", file=label)]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecErrors(
            [
                SpecError(
                    f"the spec is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})",
                    file=label,
                )
            ]
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecErrors([SpecError(f"{where}YAML syntax error: {problem}", file=label)]) from exc
    except RecursionError as exc:
        raise SpecErrors(
            [SpecError(f"the YAML nests too deeply (a spec nests at most {MAX_DEPTH} levels)", file=label)]
        ) from exc
    return parse_spec(data, base_dir=file.resolve().parent, file=label, data_dir=data_dir)


MAX_SPEC_BYTES = 16 * 2**20
MAX_DEPTH = 64
MAX_VALUES = 1_000_000
"""A spec's YAML may hold at most this many values once its aliases are expanded."""


def _shape_problem(data: Any) -> str | None:
    """What makes parsed YAML unfit to be read further: nesting deeper than ``MAX_DEPTH``, a
    value that contains itself (``&a [*a]``), or anchors and aliases expanding to more than
    ``MAX_VALUES`` values (a "billion laughs"). Iterative, and each shared value is counted once
    with its expanded size, so a bomb costs what its text costs."""
    sizes: dict[int, int] = {}
    # (value, depth, children pushed?) on an explicit stack; "open" marks values on the path
    stack: list[tuple[Any, int, bool]] = [(data, 1, False)]
    open_: set[int] = set()
    while stack:
        value, depth, expanded = stack.pop()
        if not isinstance(value, list | dict):
            continue
        key = id(value)
        if expanded:
            open_.discard(key)
            children = value.values() if isinstance(value, dict) else value
            total = 1 + sum(sizes.get(id(c), 1) for c in children)
            if isinstance(value, dict):
                total += len(value)  # (the keys)
            sizes[key] = total
            if total > MAX_VALUES:
                return (
                    f"the YAML expands to more than {MAX_VALUES:,} values (anchors and aliases "
                    'repeating each other, a "billion laughs"?): a spec is not read that far'
                )
            continue
        if key in open_:
            return "the YAML holds a value that contains itself (an alias inside its own anchor)"
        if key in sizes:
            continue
        if depth > MAX_DEPTH:
            return f"the YAML nests deeper than {MAX_DEPTH} levels: a spec is not read that far"
        open_.add(key)
        stack.append((value, depth, True))
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1, False) for c in children)
    return None


def parse_spec(
    data: Any,
    base_dir: str | os.PathLike[str] | None = None,
    file: str = "<spec>",
    data_dir: str | os.PathLike[str] | None = None,
) -> Spec:
    """Validate an already-parsed spec (a list of APIs or a single mapping).

    Project files (the handler, ``python_path``, dependencies) are relative to ``base_dir``;
    local model folders and workload stores to ``data_dir`` (default: ``base_dir``), which
    differs when the project was shipped to a cluster without its local data.
    """
    problem = _shape_problem(data)
    if problem is not None:
        raise SpecErrors([SpecError(problem, file=file)])
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list) or not data:
        raise SpecErrors(
            [SpecError(f"a spec must be a list of APIs (or one API mapping), got {_show(data)}", file=file)]
        )
    # absolute: replicas resolve the paths in the project folder, not in this process's cwd
    context: dict[str, Any] = {"base_dir": Path(base_dir).resolve() if base_dir is not None else Path.cwd()}
    if data_dir is not None:
        context["data_dir"] = Path(data_dir).resolve()
    errors: list[SpecError] = []
    warnings: list[str] = []
    apis: list[ApiSpec] = []
    for index, raw in enumerate(data):
        name = raw.get("name") if isinstance(raw, Mapping) and isinstance(raw.get("name"), str) else None

        def err(field_path: str | None, message: str, _n: str | None = name, _i: int = index) -> SpecError:
            return SpecError(message, file=file, api_name=_n, api_index=_i, field=field_path)

        if not isinstance(raw, Mapping):
            errors.append(err(None, f"an API must be a mapping, got {_show(raw)}"))
            continue
        problem = kind_problem(raw.get("kind")) if "kind" in raw else None
        if problem:  # another kind has other fields: say only this
            errors.append(err("kind", problem))
            continue
        try:
            api = ApiSpec.model_validate(raw, context=context)
        except ValidationError as exc:
            errors.extend(err(*_from_pydantic(e)) for e in exc.errors())
            continue
        errors.extend(err(f, m) for f, m in check_api(api))
        warnings.extend(str(err(f, m)) for f, m in api_warnings(api))
        apis.append(api)
    if not errors:
        for index, (f, m) in check_apis(apis):
            errors.append(SpecError(m, file=file, api_name=apis[index].name, api_index=index, field=f))
    if errors:
        raise SpecErrors(errors)
    return Spec(file=file, apis=apis, warnings=warnings)


def _from_pydantic(error: Mapping[str, Any]) -> tuple[str | None, str]:
    """A pydantic error as (field path, message quoting the bad value)."""
    loc = tuple(error.get("loc", ()))
    path = _loc_to_path(loc)
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        other = _OTHER_VERSIONS.get(".".join(str(p) for p in loc if not isinstance(p, int)))
        if other:
            return path, f"unknown field {key!r}: {other}"
        choices = _fields_at(loc[:-1])
        near = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
        hint = (
            f"; did you mean {near[0]!r}?"
            if near
            else (f"; valid fields: {', '.join(choices)}" if choices else "")
        )
        return path, f"unknown field {key!r}{hint}"
    if kind == "missing":
        return path, "field is required"
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    value = error.get("input")
    if kind.startswith(("value_error", "assertion_error")):
        return path, message
    return path, f"{message[:1].lower()}{message[1:]} (got {_show(value)})"


_OTHER_VERSIONS = {
    "predictor": "Cortex 0.35 calls it 'handler' (and predict() is handle_post())",
    "networking.max_concurrency": "Cortex 0.35 calls it 'autoscaling.max_replica_concurrency'",
    "autoscaling.max_concurrency": "Cortex 0.35 calls it 'autoscaling.max_replica_concurrency'",
    "handler.model_path": (
        "Cortex 0.35 names models in 'handler.multi_model_reloading.path' (python) or "
        "'handler.models.path' (tensorflow)"
    ),
    "handler.dynamic_model_loading": "Cortex 0.35 calls it 'handler.multi_model_reloading'",
    "networking.api_gateway": (
        "a Cortex-on-AWS setting with no cortex-ray equivalent: the API listens where "
        "'cortex-ray run' / 'deploy' are told (--host)"
    ),
    "networking.local_port": "an older Cortex's local setting: use 'cortex-ray run --port'",
    "pod": "Cortex 0.36+ container APIs are not supported: cortex-ray runs Cortex 0.35 handlers",
}
"""Fields of other Cortex versions, and what Cortex 0.35 (which cortex-ray reads) has instead."""


def _loc_to_path(loc: Sequence[Any]) -> str | None:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or None


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """The field names of the model found at ``loc`` below :class:`ApiSpec`."""
    current: Any = ApiSpec
    for part in loc:
        if isinstance(part, int):
            continue
        model = _model_in(current)
        if model is None or part not in model.model_fields:
            return []
        current = model.model_fields[part].annotation
    model = _model_in(current)
    return list(model.model_fields) if model else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found:
                return found
    return None


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 60, 60


def _show(value: Any) -> str:
    text = _REPR.repr(value)  # (bounded: never walks a whole structure)
    return text if len(text) <= 80 else text[:77] + "..."
