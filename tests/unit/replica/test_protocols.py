"""The replica's choice of protocol routes and its check of the handler (no Ray)."""

from __future__ import annotations

import pytest

from cortex_ray.errors import UserHandlerError
from cortex_ray.replica.protocols import protocols_of
from cortex_ray.replica.user_code import check_handler


class InferOnly:
    def __init__(self, config: object, model_client: object) -> None:
        pass

    def load_model(self, model_path: str) -> object:
        return None

    def handle_infer(self, inputs: object, model_name: str, model_version: object) -> object:
        return {}


class PostOnly:
    def handle_post(self, payload: object) -> object:
        return payload


def test_a_handler_with_only_handle_infer_is_a_handler() -> None:
    check_handler(InferOnly, has_models=True, client_arg="model_client", kind="RealtimeAPI")
    with pytest.raises(UserHandlerError, match="or handle_infer"):
        check_handler(object, has_models=False, client_arg="model_client", kind="RealtimeAPI")


def test_the_protocols_served_by_default_and_as_configured() -> None:
    assert protocols_of(None, tensorflow=True, handler=PostOnly()) == ("v1", "v2")
    assert protocols_of(None, tensorflow=False, handler=PostOnly()) == ()
    assert protocols_of(None, tensorflow=False, handler=InferOnly(None, None)) == ("v2",)
    assert protocols_of([], tensorflow=True, handler=PostOnly()) == ()
    assert protocols_of(["v2"], tensorflow=True, handler=PostOnly()) == ("v2",)
    with pytest.raises(UserHandlerError, match="no handle_infer"):
        protocols_of(["v2"], tensorflow=False, handler=PostOnly())
