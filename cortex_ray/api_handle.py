"""A deployed API, called through a Serve handle (no HTTP): what :func:`cortex_ray.deploy` returns."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["ApiHandle"]


class ApiHandle:
    """Calls one deployed API through a Serve handle (no HTTP)."""

    def __init__(self, name: str, endpoint: str | None = None, url: str | None = None) -> None:
        from ray import serve

        self.name = name
        self.endpoint = endpoint
        self.url = url
        self._handle = serve.get_app_handle(name)

    def call(
        self,
        method: str,
        payload: Any = None,
        query_params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        return _wait(self._handle.call.remote(method, payload, query_params, headers))

    def post(self, payload: Any = None, **kw: Any) -> Any:
        return self.call("post", payload, **kw)

    def get(self, **kw: Any) -> Any:
        return self.call("get", **kw)

    def put(self, payload: Any = None, **kw: Any) -> Any:
        return self.call("put", payload, **kw)

    def patch(self, payload: Any = None, **kw: Any) -> Any:
        return self.call("patch", payload, **kw)

    def delete(self, **kw: Any) -> Any:
        return self.call("delete", **kw)

    def info(self) -> dict[str, Any]:
        return dict(_wait(self._handle.info.remote()))

    def __repr__(self) -> str:
        return f"ApiHandle({self.name!r}, url={self.url!r})"


def _wait(response: Any) -> Any:
    """A Serve response's result, also from a thread that runs an event loop (a notebook's
    kernel runs one: waiting there is what a cell does)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return response.result()
    return response.result(_skip_asyncio_check=True)
