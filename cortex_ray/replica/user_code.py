"""Load the user's ``handler.py``, check its ``Handler`` class, construct it, find its methods.

The handler's folder (and ``python_path``) go on ``sys.path`` so ``handler.py``
can import its sibling modules. ``__init__`` and the ``handle_*`` methods get
whichever of the known arguments their signature asks for, in any order
(:class:`~cortex_ray.endpoint.arguments.Method`).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cortex_ray.endpoint.arguments import ASYNC_ARGS, HTTP_ARGS, Method, signature_params
from cortex_ray.endpoint.endpoint import ASYNC
from cortex_ray.errors import UserHandlerError

__all__ = ["HTTP_METHODS", "check_handler", "construct_handler", "handler_methods", "load_handler_class"]

HTTP_METHODS = ("post", "get", "put", "patch", "delete")
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


def load_handler_class(path: str, python_path: str | None = None) -> type:
    """Import ``path`` as a module and return its ``Handler`` class."""
    file = Path(path)
    for folder in filter(None, [python_path, str(file.parent)]):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    module_name = f"cortex_ray_user_handler_{abs(hash(str(file))):x}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise UserHandlerError(f"cannot import the handler file {path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        raise UserHandlerError(
            f"error importing {file.name}: {type(exc).__name__}: {exc}\n{_user_traceback(exc)}"
        ) from exc
    handler = getattr(module, "Handler", None)
    if not inspect.isclass(handler):
        raise UserHandlerError(f"{file.name} must define a class named Handler")
    return handler


def check_handler(cls: type, *, has_models: bool, client_arg: str, kind: str, grpc: bool = False) -> None:
    """Cortex's checks of the Handler class against the spec (clear messages, early; a gRPC API's
    RPC methods: :meth:`cortex_ray.replica.rpc.RpcService.check`)."""
    params = signature_params(cls.__init__)  # type: ignore[misc]
    if has_models:
        if client_arg not in params:
            raise UserHandlerError(
                f"Handler.__init__ must accept a {client_arg!r} argument when models are configured"
            )
        if client_arg == "model_client" and not callable(getattr(cls, "load_model", None)):
            raise UserHandlerError(
                "Handler must define load_model(self, model_path) when models are configured"
            )
    if kind == "AsyncAPI":
        if not callable(getattr(cls, "handle_async", None)):
            raise UserHandlerError("Handler must define handle_async(self, payload, request_id)")
    elif not grpc and not any(callable(getattr(cls, f"handle_{m}", None)) for m in (*HTTP_METHODS, "infer")):
        raise UserHandlerError(
            "Handler must define at least one of "
            + ", ".join(f"handle_{m}" for m in HTTP_METHODS)
            + " (or handle_infer, for the v2 infer route)"
        )


def construct_handler(cls: type, available: Mapping[str, Any]) -> Any:
    """``cls(**the arguments its __init__ asks for)``; user errors keep their traceback."""
    init = cls.__init__  # type: ignore[misc]
    kwargs = (
        {}
        if init is object.__init__
        else Method.of(init, tuple(available), "Handler.__init__").kwargs(available)
    )
    try:
        return cls(**kwargs)
    except BaseException as exc:
        raise UserHandlerError(
            f"error in Handler.__init__: {type(exc).__name__}: {exc}\n{_user_traceback(exc)}"
        ) from exc


def handler_methods(handler: Any) -> dict[str, Method]:
    """The handler's ``handle_<verb>`` methods by verb in upper case, and ``handle_async``."""
    methods = {}
    for name in [*HTTP_METHODS, "async"]:
        func = getattr(handler, f"handle_{name}", None)
        if callable(func):
            key = ASYNC if name == "async" else name.upper()
            methods[key] = Method.of(func, ASYNC_ARGS if name == "async" else HTTP_ARGS)
    return methods


def _user_traceback(exc: BaseException) -> str:
    """The traceback without cortex-ray's own frames at the top."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if not f.filename.startswith(_PACKAGE_DIR)] or frames
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(user)]
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()
