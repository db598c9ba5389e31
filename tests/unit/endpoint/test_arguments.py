"""What a handler method is given: worked out once per method, built only when asked."""

from __future__ import annotations

from typing import Any

import pytest

from cortex_ray.endpoint.arguments import ASYNC_ARGS, HTTP_ARGS, Arguments, Method
from cortex_ray.errors import UserHandlerError


def test_a_method_names_what_it_takes_in_any_order() -> None:
    def handle(query_params: Any, payload: Any, optional: int = 3) -> None: ...

    method = Method.of(handle, HTTP_ARGS)
    assert method.wants == ("query_params", "payload") and not method.is_async
    args = method.kwargs(Arguments({"x": 1}, query=b"a=1&a=2"))
    assert args["payload"] == {"x": 1} and args["query_params"].getlist("a") == ["1", "2"]
    assert set(args) == {"query_params", "payload"}


def test_a_method_asking_for_something_unknown_is_refused_naming_it() -> None:
    def handle(payload: Any, user: str) -> None: ...

    with pytest.raises(UserHandlerError, match=r"asks for 'user', which cortex-ray cannot give"):
        Method.of(handle, HTTP_ARGS)
    with pytest.raises(UserHandlerError, match=r"known: payload, request_id"):
        Method.of(handle, ASYNC_ARGS)


def test_keyword_catch_alls_get_every_known_argument() -> None:
    async def handle(**kwargs: Any) -> None: ...

    method = Method.of(handle, ASYNC_ARGS)
    assert method.wants is None and method.is_async
    assert method.kwargs(Arguments("p", request_id="id-1")) == {"payload": "p", "request_id": "id-1"}


def test_arguments_of_a_call_without_http() -> None:
    args = Arguments.of_call(b"bytes", {"q": "a b&c"}, {"X-Key": "v"})
    assert args["payload"] == b"bytes"
    assert args["query_params"]["q"] == "a b&c"  # encoded and decoded back, not split
    assert args["headers"]["x-key"] == "v" and args["path"] == "" and args["request_id"] is None
    with pytest.raises(KeyError):
        args["config"]
