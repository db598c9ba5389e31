"""Cortex's in-handler modules: the structured logger and the client."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from cortex_ray import compat
from cortex_ray.compat.client import Client
from cortex_ray.compat.log import JsonFormatter


@pytest.fixture
def installed() -> Iterator[None]:
    before = {
        k: sys.modules.get(k)
        for k in ("cortex", "cortex_internal", "cortex_internal.lib", "cortex_internal.lib.log")
    }
    compat.install({"apiName": "a", "apiKind": "RealtimeAPI"}, "info")
    yield
    for key, module in before.items():
        if module is None:
            sys.modules.pop(key, None)
        else:
            sys.modules[key] = module


def test_the_handler_logger_writes_cortex_json_lines(
    capsys: pytest.CaptureFixture[str], installed: None
) -> None:
    # (capsys first: the logger's handler takes standard error as it is when installed)
    from cortex_internal.lib.log import logger  # type: ignore[import-not-found]

    logger.info("loaded", extra={"model": "m", "version": 2, "obj": object()})
    logger.debug("hidden at info")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["message"] == "loaded" and record["levelname"] == "INFO"
    assert record["model"] == "m" and record["version"] == 2 and record["obj"].startswith("<object")
    assert record["labels"] == {"apiName": "a", "apiKind": "RealtimeAPI"}
    assert {"asctime", "process"} <= set(record)
    assert logger.propagate is False


def test_exceptions_are_kept_in_the_line() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("cortex", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    out = json.loads(JsonFormatter().format(record))
    assert "ValueError: bad" in out["exception"] and "labels" not in out


def test_import_cortex_gives_a_client_that_names_what_it_lacks(installed: None) -> None:
    import cortex  # type: ignore[import-not-found]

    client = cortex.client()
    assert isinstance(client, Client)
    with pytest.raises(NotImplementedError, match=r"cortex.client\(\).create_api\(\) is not implemented"):
        client.create_api("x")
    for name in ("deploy", "deploy_from_file", "get_api", "list_apis", "refresh", "delete"):
        assert callable(getattr(client, name))
