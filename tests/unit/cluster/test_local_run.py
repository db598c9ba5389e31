"""Finding the Ray of a local cortex-ray run from another process (no Ray needed)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex_ray.cluster import local_run


@pytest.fixture
def ray_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    return tmp_path / "ray"


@pytest.fixture
def listening() -> Iterator[str]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_a_recorded_run_is_found_while_it_listens(
    ray_tmp: Path, listening: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert local_run.find() is None
    local_run.record(listening)
    assert local_run.find() == (listening, "token")
    local_run.forget()
    assert local_run.find() is None and not (ray_tmp / "cortex_ray_current_cluster.json").exists()


def test_a_dead_or_silent_run_is_not_found(ray_tmp: Path, listening: str) -> None:
    ray_tmp.mkdir(parents=True)
    record = ray_tmp / "cortex_ray_current_cluster.json"
    record.write_text(json.dumps({"address": listening, "pid": 2**22 + 12345}))  # no such process
    assert local_run.find() is None
    local_run.record("127.0.0.1:1")  # nothing listens there
    assert local_run.find() is None


def test_forget_leaves_another_processs_record(ray_tmp: Path, listening: str) -> None:
    ray_tmp.mkdir(parents=True)
    record = ray_tmp / "cortex_ray_current_cluster.json"
    record.write_text(json.dumps({"address": listening, "pid": 1}))
    local_run.forget()
    assert record.exists()


def test_ray_starts_own_record_counts_only_while_it_listens(ray_tmp: Path, listening: str) -> None:
    ray_tmp.mkdir(parents=True)
    (ray_tmp / "ray_current_cluster").write_text(listening)
    assert local_run.ray_start_address() == listening
    (ray_tmp / "ray_current_cluster").write_text("127.0.0.1:1")
    assert local_run.ray_start_address() is None
