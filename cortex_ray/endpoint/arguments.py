"""What a handler method is given: the one set of rules, for every way a call comes in.

A handler method names the arguments it wants, in any order (Cortex's contract):

* ``payload``: the decoded body (:mod:`cortex_ray.endpoint.codec`), or what the caller passed;
* ``query_params``: Starlette ``QueryParams`` (``getlist`` for repeated keys);
* ``headers``: Starlette ``Headers`` (case-insensitive);
* ``path``: the path below the API's endpoint (a cortex-ray addition);
* ``request_id``: the workload's id (``handle_async`` of an AsyncAPI).

Which of them a method takes is worked out once per method (:class:`Method`); a call builds
only those (:class:`Arguments` computes each on access). HTTP requests on both ingress
paths, calls through a Serve handle and AsyncAPI workloads all go through here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import Headers, QueryParams

from cortex_ray.errors import UserHandlerError

__all__ = ["ASYNC_ARGS", "HTTP_ARGS", "Arguments", "Method", "signature_params"]

HTTP_ARGS = ("payload", "query_params", "headers", "path")
"""What a ``handle_<verb>`` method may ask for."""
ASYNC_ARGS = ("payload", "request_id")
"""What ``handle_async`` may ask for."""


class Arguments(Mapping[str, Any]):
    """One call's arguments, each built only if the method asks for it."""

    __slots__ = ("_headers", "_path", "_payload", "_query", "_request_id")

    def __init__(
        self,
        payload: Any = None,
        *,
        query: bytes = b"",
        headers: Sequence[tuple[bytes, bytes]] = (),
        path: str = "",
        request_id: str | None = None,
    ) -> None:
        self._payload = payload
        self._query = query
        self._headers = headers
        self._path = path
        self._request_id = request_id

    @classmethod
    def of_call(
        cls,
        payload: Any = None,
        query_params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Arguments:
        """A call without HTTP (a Serve handle): the payload as given, query and headers as dicts."""
        query = urlencode(dict(query_params or {})).encode("latin-1")
        raw = [(str(k).encode("latin-1"), str(v).encode("latin-1")) for k, v in (headers or {}).items()]
        return cls(payload, query=query, headers=raw)

    def __getitem__(self, key: str) -> Any:
        if key == "payload":
            return self._payload
        if key == "query_params":
            return QueryParams(self._query.decode("latin-1"))
        if key == "headers":
            return Headers(raw=[(k.lower(), v) for k, v in self._headers])
        if key == "path":
            return self._path
        if key == "request_id":
            return self._request_id
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter((*HTTP_ARGS, "request_id"))

    def __len__(self) -> int:
        return len(HTTP_ARGS) + 1


@dataclass(frozen=True)
class Method:
    """A method of the user's code and the names of the arguments it asks for (worked out once;
    ``wants`` is ``None`` for a method taking ``**kwargs``, which gets every known one)."""

    func: Callable[..., Any]
    wants: tuple[str, ...] | None
    is_async: bool
    known: tuple[str, ...] = HTTP_ARGS

    @classmethod
    def of(cls, func: Callable[..., Any], known: tuple[str, ...], what: str | None = None) -> Method:
        """Refuses (:class:`UserHandlerError`) a method that asks for something not ``known``."""
        params = signature_params(func)
        is_async = inspect.iscoroutinefunction(func)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return cls(func, None, is_async, known)
        names = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        for name in names:
            if name not in known and params[name].default is inspect.Parameter.empty:
                what = what or getattr(func, "__qualname__", "handler method")
                raise UserHandlerError(
                    f"{what} asks for {name!r}, which cortex-ray cannot give (known: {', '.join(known)})"
                )
        return cls(func, tuple(n for n in names if n in known), is_async, known)

    def wants_payload(self) -> bool:
        return self.wants is None or "payload" in self.wants

    def kwargs(self, available: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments of one call (``available`` may compute its values on access)."""
        if self.wants is None:
            return {name: available[name] for name in self.known}
        return {name: available[name] for name in self.wants}


def signature_params(func: Any) -> dict[str, inspect.Parameter]:
    """``func``'s parameters, without ``self`` (none when it has no signature to read)."""
    try:
        params = dict(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return {}
    params.pop("self", None)
    return params
