"""``cortex-ray validate`` as a user runs it: a real subprocess, exit codes, output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cortex_ray", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def make_project(root: Path, models: dict[str, object]) -> Path:
    (root / "handler.py").write_text("class Handler:\n    pass\n")
    spec = root / "cortex.yaml"
    spec.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "multi",
                    "kind": "RealtimeAPI",
                    "handler": {"type": "python", "path": "handler.py", "multi_model_reloading": models},
                }
            ]
        )
    )
    return spec


def test_valid_spec_exits_0_and_describes_apis(tmp_path: Path) -> None:
    make_project(tmp_path, {"dir": "models", "cache_size": 1, "disk_cache_size": 2})
    result = run("validate", "cortex.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "multi (RealtimeAPI, python handler) at /multi" in result.stdout
    assert "cache: 1 model version(s) in memory / 2 model version(s) on disk" in result.stdout
    assert "cortex.yaml: valid (1 API)" in result.stdout


def test_invalid_spec_exits_1_without_traceback(tmp_path: Path) -> None:
    make_project(tmp_path, {"dir": "models", "path": "models/a"})
    result = run("validate", "cortex.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert (
        "error: cortex.yaml: api 'multi' (#0): handler.multi_model_reloading: please specify either "
        "the path or dir field" in result.stderr
    )
    assert "Traceback" not in result.stderr + result.stdout


def test_check_models_lists_models_versions_and_sizes(tmp_path: Path) -> None:
    make_project(tmp_path, {"dir": "models"})
    for rel, size in {"models/a/1/w.bin": 10, "models/a/3/w.bin": 2048, "models/b/w.bin": 5}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * size)
    result = run("validate", "cortex.yaml", "--check-models", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "a: versioned, versions 1, 3, latest 3, 2.0 KiB" in result.stdout
    assert "b: unversioned, versions 1, latest 1, 5 B" in result.stdout


def test_check_models_fails_on_an_invalid_model(tmp_path: Path) -> None:
    make_project(tmp_path, {"dir": "models"})
    for rel in ("models/a/1/w.bin", "models/a/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    result = run("validate", "cortex.yaml", "--check-models", cwd=tmp_path)
    assert result.returncode == 1
    assert "problem:" in result.stdout and "notes.txt" in result.stdout
    assert "cortex.yaml: invalid" in result.stdout
    # without --check-models the spec itself is valid
    assert run("validate", "cortex.yaml", cwd=tmp_path).returncode == 0


def test_check_models_reports_storage_errors_without_traceback(tmp_path: Path) -> None:
    make_project(tmp_path, {"path": "s3://no-such-bucket-for-cortex-ray/model"})
    env_cmd = [
        sys.executable,
        "-c",
        "import os,sys; os.environ.update(AWS_ENDPOINT_URL='http://127.0.0.1:9', AWS_ACCESS_KEY_ID='x', "
        "AWS_SECRET_ACCESS_KEY='y', AWS_DEFAULT_REGION='us-east-1'); "
        "from cortex_ray.cli.main import main; sys.exit(main(['validate','cortex.yaml','--check-models']))",
    ]
    result = subprocess.run(env_cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "error:" in result.stdout and "127.0.0.1:9" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_no_command_prints_help(tmp_path: Path) -> None:
    result = run(cwd=tmp_path)
    assert result.returncode == 2
    assert "validate" in result.stderr


def test_a_pin_of_its_day_fails_in_seconds_naming_it_and_the_versions_that_install(tmp_path: Path) -> None:
    """A Cortex project of 2021 pins a version with no build for this Python: validate says so at
    once, with the line, the versions that do install, and the ways forward."""
    import os
    import time

    from tests.support.cortex_project import make_project as make_cortex_project
    from tests.support.cortex_project import wheel

    project = tmp_path / "project"
    make_cortex_project(project, tmp_path / "marker")
    wheel(project / "wheels", version="0.2")  # tinypkg 0.1 and 0.2 install here; 0.0.9 does not
    (project / "requirements.txt").write_text("--no-index\n--find-links ./wheels\ntinypkg==0.0.9\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, CORTEX_RAY_PREFLIGHT_CACHE=str(tmp_path / "cache"))

    def validate(*extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "cortex_ray", "validate", "cortex.yaml", *extra],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        return done, time.monotonic() - started

    result, took = validate()
    assert result.returncode == 1 and took < 60, result.stderr
    error = result.stderr
    assert "api 'project' (#0)" in error and "requirements.txt:3: tinypkg==0.0.9" in error
    assert "try tinypkg==0.1" in error and "tinypkg==0.2" in error
    assert "--requirements installed" in error and "Traceback" not in error
    again, took_again = validate()
    assert again.stderr == result.stderr and took_again < took  # the preflight's cache
    installed, _ = validate("--requirements", "installed")  # tinypkg is not installed here either
    assert (
        installed.returncode == 1
        and "tinypkg==0.0.9 is not installed in this environment" in installed.stderr
    )


def write_files(root: Path, files: dict[str, bytes | str]) -> None:
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            (root / rel).write_text(content)
        else:
            (root / rel).write_bytes(content)


def test_check_models_fails_on_pins_that_storage_does_not_hold(tmp_path: Path) -> None:
    spec = {"dir": "models", "cache_size": 3, "disk_cache_size": 3, "pinned": ["a@3", "c", "a@2"]}
    make_project(tmp_path, spec)
    write_files(tmp_path, {"models/a/1/w.bin": b"x", "models/a/2/w.bin": b"x", "models/b/w.bin": b"x"})
    result = run("validate", "cortex.yaml", "--check-models", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "  error: pinned 'a@3': model 'a' has no version 3 (versions: 1, 2)\n" in result.stdout
    assert "  error: pinned 'c': no model 'c' (models: a, b)\n" in result.stdout
    assert "'a@2'" not in result.stdout  # a pin that storage holds says nothing
    assert "cortex.yaml: invalid (1 API)" in result.stdout
    make_project(tmp_path, {**spec, "pinned": ["a@2", "b"]})
    result = run("validate", "cortex.yaml", "--check-models", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pinned" not in result.stdout


def test_check_models_parses_every_local_warmup_json(tmp_path: Path) -> None:
    make_project(tmp_path, {"dir": "models"})
    write_files(
        tmp_path,
        {
            "models/a/1/w.bin": b"x",
            "models/a/1/warmup.json": '[{"payload": {"text": "hi"}}]',  # valid
            "models/a/2/w.bin": b"x",
            "models/a/2/warmup.json": '[{"payload": 1}',  # not JSON
            "models/b/w.bin": b"x",
            "models/b/warmup.json": '[{"method": "post"}]',  # no payload
        },
    )
    result = run("validate", "cortex.yaml", "--check-models", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("  error:")]
    assert len(errors) == 2, result.stdout
    assert errors[0].startswith("  error: model 'a' version 2: warmup.json is not valid JSON: ")
    assert errors[1] == (
        "  error: model 'b' version 1: warmup.json[0] must be an object with payload "
        "(and method, query_params, headers)"
    )
    assert "note:" not in result.stdout
    write_files(tmp_path, {"models/a/2/warmup.json": "[]", "models/b/warmup.json": '[{"payload": null}]'})
    result = run("validate", "cortex.yaml", "--check-models", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_models_measures_versions_against_byte_budgets(tmp_path: Path) -> None:
    """Files above disk_cache_size can never be downloaded (error); above cache_size in bytes
    they would fail to load (warning); budgets that count versions are not compared."""
    make_project(tmp_path, {"dir": "models", "cache_size": "1Ki", "disk_cache_size": "2Ki"})
    write_files(
        tmp_path,
        {
            "models/a/1/w.bin": b"x" * 1000,  # fits both
            "models/a/2/w.bin": b"x" * 1500,  # above cache_size only
            "models/b/w.bin": b"x" * 3072,  # above disk_cache_size
        },
    )
    result = run("validate", "cortex.yaml", "--check-models", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "  warning: model 'a' version 2: its files (1.5Ki) are larger than cache_size (1Ki): in memory it "
        "usually takes at least as much, so it would fail to load\n"
    ) in result.stdout
    assert (
        "  error: model 'b' version 1: its files (3.0Ki) are larger than disk_cache_size (2Ki): it can "
        "never be downloaded\n"
    ) in result.stdout
    assert "model 'a' version 1" not in result.stdout  # it fits both
    (tmp_path / "models/b/w.bin").write_bytes(b"x" * 2049)  # shown as 2.0Ki, like the budget
    result = run("validate", "cortex.yaml", "--check-models", cwd=tmp_path)
    assert "error: model 'b' version 1: its files (2.0Ki, 2049 bytes) are larger" in result.stdout
    (tmp_path / "models/b/w.bin").write_bytes(b"x" * 10)
    result = run("validate", "cortex.yaml", "--check-models", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr  # a warning alone does not fail
    assert "warning: model 'a' version 2" in result.stdout
    make_project(tmp_path, {"dir": "models", "cache_size": 1, "disk_cache_size": 1})
    (tmp_path / "models/b/w.bin").write_bytes(b"x" * 3072)
    result = run("validate", "cortex.yaml", "--check-models", cwd=tmp_path)
    assert result.returncode == 0 and "its files" not in result.stdout, result.stdout


def test_check_models_notes_once_that_remote_warmups_are_not_read(tmp_path: Path) -> None:
    """Models outside local folders (S3; here the in-memory fake) are listed, their warmup.json
    files are not downloaded: one note says so."""
    import io

    from cortex_ray.cli.validate import run_validate
    from cortex_ray.storage import MemoryStorage, reset_memory_storage

    make_project(tmp_path, {"dir": "mem://validate-warmups/models"})
    storage = MemoryStorage("validate-warmups", "models")
    for key in ("a/1/w.bin", "a/1/warmup.json", "a/2/w.bin", "a/2/warmup.json", "b/w.bin"):
        storage.upload(key, b"not json at all")
    out = io.StringIO()
    try:
        status = run_validate(str(tmp_path / "cortex.yaml"), check_models=True, out=out)
    finally:
        reset_memory_storage()
    assert status == 0, out.getvalue()
    notes = [line for line in out.getvalue().splitlines() if "note:" in line]
    assert notes == [
        "  note: 2 warmup.json file(s) in remote storage not checked (only local model folders are; "
        "each is read when its version loads)"
    ]
