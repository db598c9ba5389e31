"""Joining a cluster by its address sends Ray's token, as Ray does for a cluster it finds itself."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.errors import DeploymentError

connect_module = importlib.import_module(
    "cortex_ray.cluster.connect"
)  # (the package exports a function by that name)


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """``ray.init`` recorded, with the auth mode it saw; no token anywhere unless a test puts one."""
    import ray

    seen: dict[str, Any] = {"fail": None}

    def init(**kwargs: Any) -> None:
        import os

        seen["address"], seen["mode"] = kwargs.get("address"), os.environ.get("RAY_AUTH_MODE")
        if seen["fail"]:
            raise ConnectionError(seen["fail"])

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(connect_module, "_auth_mode", lambda mode: monkeypatch.setenv("RAY_AUTH_MODE", mode))
    monkeypatch.setattr(connect_module.local_run, "use_loopback", lambda: None)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_an_address_gets_the_token_ray_would_send(fake_ray: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("secret\n")
    connect_module.connect("127.0.0.1:6379")
    assert fake_ray == {"fail": None, "address": "127.0.0.1:6379", "mode": "token"}


def test_a_token_in_the_environment_counts(fake_ray: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret")
    connect_module.connect("127.0.0.1:6379")
    assert fake_ray["mode"] == "token"


def test_an_explicit_mode_is_left_as_it_is(fake_ray: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    connect_module.connect("127.0.0.1:6379")
    assert fake_ray["mode"] == "disabled"


def test_without_a_token_the_error_says_what_to_set(fake_ray: dict[str, Any]) -> None:
    fake_ray["fail"] = "Failed to connect to GCS at address 127.0.0.1:6379"
    with pytest.raises(DeploymentError) as info:
        connect_module.connect("127.0.0.1:6379")
    message = str(info.value)
    assert fake_ray["mode"] is None
    assert (
        "127.0.0.1:6379" in message and "RAY_AUTH_TOKEN=<token>" in message and "~/.ray/auth_token" in message
    )
