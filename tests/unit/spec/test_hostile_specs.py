"""Malformed specs, generated (Hypothesis): every one is answered with spec errors naming the
file, never with another exception (the path ``validate``, ``run`` and ``deploy`` share:
``load_checked``), and ``cortex-ray validate`` exits 1 with ``error:`` lines, no traceback."""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex_ray.cli.main import main
from cortex_ray.cli.report import load_checked
from cortex_ray.errors import SpecErrors

FIELDS = [
    "name", "kind", "handler", "compute", "autoscaling", "networking", "update_strategy", "workloads",
    "type", "path", "config", "env", "python_path", "log_level", "processes_per_replica",
    "threads_per_process", "multi_model_reloading", "models", "server_side_batching", "protocols",
    "dir", "paths", "cache_size", "disk_cache_size", "poll_interval", "settle_time", "events", "sqs",
    "cpu", "gpu", "inf", "mem", "min_replicas", "max_replicas", "init_replicas", "endpoint",
    "model_routing", "max_batch_size", "batch_interval", "signature_key", "pinned", "idle_timeout",
    "max_body_size", "timeout", "target_replica_concurrency", "max_replica_concurrency",
]  # fmt: skip
VALID: dict[str, Any] = {
    "name": "api",
    "kind": "RealtimeAPI",
    "handler": {
        "type": "python",
        "path": "handler.py",
        "config": {"k": "v"},
        "multi_model_reloading": {"dir": "models", "cache_size": 2, "poll_interval": "5s"},
        "threads_per_process": 2,
    },
    "compute": {"cpu": 1, "mem": "1Gi"},
    "autoscaling": {"min_replicas": 1, "max_replicas": 2},
    "networking": {"endpoint": "/api"},
}
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(
        alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF, exclude_categories=["Cs"]),
        max_size=20,
    ),
    st.sampled_from(
        ["", " ", "../../etc/passwd", "/", "s3://", "s3://b/../x", "-1Gi", "1e400", "NaN", "5ss", "\x00"]
    ),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(FIELDS), st.integers(), max_size=3),
)
VALUES = st.recursive(
    HOSTILE,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=20,
)


def paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at]
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths(v, (*at, k))
    return found


def project(tmp_path: Path, text: str | bytes) -> Path:
    (tmp_path / "handler.py").write_text("class Handler:\n    def __init__(self, config):\n        pass\n")
    (tmp_path / "models").mkdir(exist_ok=True)
    spec = tmp_path / "cortex.yaml"
    spec.write_bytes(text if isinstance(text, bytes) else text.encode())
    return spec


def answered(spec: Path) -> None:
    """The spec loads, or is refused with SpecErrors that name the file; nothing else."""
    try:
        load_checked(str(spec))
    except SpecErrors as exc:
        assert exc.errors and all(str(spec) in str(e) for e in exc.errors), exc.errors


def dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True)


SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(data=st.data())
def test_a_valid_spec_with_one_field_made_hostile(tmp_path: Path, data: st.DataObject) -> None:
    spec = copy.deepcopy(VALID)
    where = data.draw(st.sampled_from(paths(spec)[1:]))
    parent = spec
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = data.draw(VALUES)
    answered(project(tmp_path, dump([spec])))


@SETTINGS
@given(value=VALUES)
def test_any_yaml_value(tmp_path: Path, value: Any) -> None:
    answered(project(tmp_path, dump(value)))


@SETTINGS
@given(
    raw=st.one_of(st.binary(max_size=200), st.text(alphabet="-:[]{}&*!|>'\"#%@`, \n\tabc0123", max_size=200))
)
def test_any_bytes(tmp_path: Path, raw: bytes | str) -> None:
    answered(project(tmp_path, raw))


BOMB = "\n".join(
    [
        "- name: api",
        "  kind: RealtimeAPI",
        "  handler:",
        "    type: python",
        "    path: handler.py",
        "    config:",
    ]
    + ['      l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BOMB, "expands to more than 1,000,000 values"),
        # (whether the YAML parser's recursion or the shape check stops it first depends on the
        # recursion limit that modules imported before set: either message says it)
        ("- name: api\n  handler: {config: {a: " + "[" * 3000 + "]" * 3000 + "}}", "the YAML nests "),
        ("- name: api\n  handler: {config: {a: " + "[" * 80 + "]" * 80 + "}}", "nests deeper than 64 levels"),
        ("- &a [*a]", "contains itself"),
        (b"\xff\xfe garbage", "not UTF-8"),
        ("a: [", "YAML syntax error"),
        ("", "a spec must be a list of APIs"),
    ],
)
def test_hostile_yaml_gets_one_clear_error(tmp_path: Path, text: str | bytes, message: str) -> None:
    spec = project(tmp_path, text)
    with pytest.raises(SpecErrors) as raised:
        load_checked(str(spec))
    assert message in str(raised.value.errors[0]) and str(spec) in str(raised.value.errors[0])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["validate", str(spec)]) == 1
    assert "error: " in err.getvalue() and "Traceback" not in err.getvalue()


def test_a_spec_that_is_not_a_readable_file(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.yaml", tmp_path):
        with pytest.raises(SpecErrors, match="cannot read the spec"):
            load_checked(str(path))
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    with pytest.raises(SpecErrors, match="cannot read the spec"):
        load_checked(str(loop))


@pytest.mark.parametrize("command", ["validate", "run", "deploy", "build-config"])
def test_every_command_that_reads_a_spec_refuses_a_hostile_one_without_a_traceback(
    tmp_path: Path, command: str
) -> None:
    """As a user runs them (a subprocess each): refused before anything starts (no Ray: the
    commands that would connect or start one never get there)."""
    import subprocess
    import sys

    for name, text in (("bomb.yaml", BOMB), ("binary.yaml", b"\xff\xfe garbage")):
        spec = tmp_path / name
        spec.write_bytes(text if isinstance(text, bytes) else text.encode())
        (tmp_path / "handler.py").write_text("class Handler:\n    pass\n")
        result = subprocess.run(
            [sys.executable, "-m", "cortex_ray", command, str(spec)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1, (command, name, result.stdout, result.stderr)
        assert f"error: {spec}" in result.stderr and "Traceback" not in result.stderr + result.stdout
