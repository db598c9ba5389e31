"""Warm-up on (re)load, as TF Serving's and Triton's: requests shipped with a model version,
run through the handler before that version serves or becomes "latest".

A version's folder may hold ``warmup.json``: a JSON list of requests, each an object with
``payload`` (any JSON, given to the handler as a decoded JSON body) and optionally ``method``
(``post`` by default; ``get``, ``put``..., or ``async`` for an AsyncAPI's ``handle_async``),
``query_params`` and ``headers`` (objects of strings)::

    [{"payload": {"text": "hello"}}, {"payload": {"text": "a longer one"}, "query_params": {"model": "m"}}]

They run once the version's files are no longer read (a warm-up request may need other
models). While they run, every ``get_model`` / ``tensorflow_client.predict`` of the model being
warmed (its name, or no name, at ``latest`` or its version) returns the new object, whatever
serves now; a callback a warm-up request returns runs outside of it. The first request that
raises fails the load, with its error as the reason; the version serving meanwhile keeps
serving, and the new one is retried like any failed load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex_ray.cache import LoadedModel
from cortex_ray.cache.tiers import WarmUpRun
from cortex_ray.endpoint import Endpoint
from cortex_ray.errors import CortexRayError, ModelLoadError
from cortex_ray.replica.model_client import warming_var

__all__ = ["WARMUP_FILE", "WarmUp", "WarmupRequest", "read_warmup"]

log = logging.getLogger("cortex_ray.replica")
WARMUP_FILE = "warmup.json"
MAX_WARMUP_BYTES = 16 * 1024 * 1024
_KEYS = {"method", "payload", "query_params", "headers"}


@dataclass(frozen=True)
class WarmupRequest:
    payload: Any = None
    method: str = "post"
    query_params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def read_warmup(folder: Path) -> list[WarmupRequest] | None:
    """The version's warm-up requests (``None``: it has no ``warmup.json``). A file that is not
    what this module describes raises :class:`ValueError` saying why."""
    file = folder / WARMUP_FILE
    if not file.is_file():
        return None
    if file.stat().st_size > MAX_WARMUP_BYTES:
        raise ValueError(f"{WARMUP_FILE} is larger than {MAX_WARMUP_BYTES // 2**20} MiB")
    try:
        data = json.loads(file.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{WARMUP_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"{WARMUP_FILE} must be a JSON list of requests, not {type(data).__name__}")
    out = []
    for i, item in enumerate(data):
        where = f"{WARMUP_FILE}[{i}]"
        if not isinstance(item, dict) or not set(item) <= _KEYS or "payload" not in item:
            raise ValueError(f"{where} must be an object with payload (and method, query_params, headers)")
        method = item.get("method", "post")
        if not isinstance(method, str) or not method.isalpha():
            raise ValueError(f"{where}.method must be a word such as post, get or async, not {method!r}")
        for key in ("query_params", "headers"):
            value = item.get(key, {})
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ValueError(f"{where}.{key} must be an object of strings")
        out.append(
            WarmupRequest(
                item["payload"], method.lower(), item.get("query_params", {}), item.get("headers", {})
            )
        )
    return out


class WarmUp:
    """The cache's warm-up callback for one API: runs a loaded version's ``warmup.json``."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, loaded: LoadedModel, folder: Path) -> WarmUpRun | None:
        """Read the version's requests (its folder is still pinned); what runs them, or ``None``."""
        name, version = loaded.name, loaded.version
        if not self.endpoint.core.methods:  # the handler's __init__ asked for it: nothing to call yet
            if (folder / WARMUP_FILE).is_file():
                log.warning(
                    "model %s version %s loaded during the handler's __init__: not warmed up", name, version
                )
            return None
        try:
            requests = await asyncio.to_thread(read_warmup, folder)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"warm-up of model {name!r} version {version}: {exc}", model=name, version=version
            ) from exc
        if not requests:
            return None

        async def run() -> None:
            await self._run(loaded, requests)

        return run

    async def _run(self, loaded: LoadedModel, requests: list[WarmupRequest]) -> None:
        name, version = loaded.name, loaded.version
        started = time.perf_counter()
        token = warming_var.set(loaded)
        try:
            for i, request in enumerate(requests):
                try:
                    await self._send(request, f"warmup-{name}-{version}-{i}")
                except Exception as exc:
                    reason = (
                        exc.message if isinstance(exc, CortexRayError) else f"{type(exc).__name__}: {exc}"
                    )
                    raise ModelLoadError(
                        f"warm-up request {i} of {WARMUP_FILE} failed for model {name!r} "
                        f"version {version}: {reason}",
                        model=name,
                        version=version,
                    ) from exc
        finally:
            warming_var.reset(token)
        took = time.perf_counter() - started
        log.info("model %s version %s warmed up: %d request(s) in %.2fs", name, version, len(requests), took)

    async def _send(self, request: WarmupRequest, request_id: str) -> None:
        if request.method == "async":
            await self.endpoint.call_async(request.payload, request_id)
        else:
            await self.endpoint.call(request.method, request.payload, request.query_params, request.headers)
