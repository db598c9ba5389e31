"""One replica of a RealtimeAPI: the user's handler behind Ray Serve's HTTP ingress.

The replica lists the API's models once at start (the live reloader will push
later trees through :meth:`ApiReplica.update_models`), builds its model cache,
downloads every model before it reports ready when no cache limit is set (as
Cortex did), constructs the user's ``Handler`` and answers requests:
``<endpoint>/info`` and ``handle_<method>`` for everything else.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cortex_ray.cache import ModelCache
from cortex_ray.cache.root import private_cache_root
from cortex_ray.errors import CortexRayError, MethodNotAllowedError, UserHandlerError
from cortex_ray.models import ModelTree, diff_trees
from cortex_ray.reload.subscriber import Subscriber
from cortex_ray.serving.affinity import Affinity
from cortex_ray.serving.http import decode_payload, encode_response, error_response
from cortex_ray.serving.info import api_info
from cortex_ray.serving.metrics import MetricsClient
from cortex_ray.serving.model_client import ModelClient, served_versions_var
from cortex_ray.serving.slots import HandlerSlots
from cortex_ray.serving.user_code import (
    HTTP_METHODS,
    call_with,
    check_handler,
    construct_handler,
    load_handler_class,
)
from cortex_ray.spec import ApiSpec
from cortex_ray.tensorflow.client import TensorFlowClient

__all__ = ["VERSION_HEADER", "ApiReplica"]

log = logging.getLogger("cortex_ray.replica")
VERSION_HEADER = "X-Cortex-Model-Version"


class ApiReplica:
    """The class behind every API's Serve deployment (see :mod:`cortex_ray.serving.app`)."""

    async def __init__(self, api: ApiSpec, info_details: bool = False) -> None:  # type: ignore[misc]
        # (Serve awaits async constructors)
        self.api = api
        self._info_details = info_details
        handler = api.handler
        os.environ.update(handler.env)
        logging.getLogger("cortex_ray").setLevel(handler.log_level.upper())
        self._loop = asyncio.get_running_loop()
        self._slots = HandlerSlots(handler.threads_per_process)
        self._pool = ThreadPoolExecutor(
            # threads waiting for a cold model give their slot back but keep their thread: allow as
            # many threads as requests a replica takes (created only when needed)
            max_workers=handler.threads_per_process + api.autoscaling.max_replica_concurrency,
            thread_name_prefix=f"{api.name}-handler",
        )
        self._loader_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"{api.name}-init")
        cls = load_handler_class(handler.path, handler.python_path)
        self._handler_cls = cls
        self._handler: Any = None
        models = handler.model_spec
        tensorflow = handler.type == "tensorflow"
        client_arg = "tensorflow_client" if tensorflow else "model_client"
        check_handler(cls, has_models=models is not None, client_arg=client_arg, kind=api.kind)
        self._disk_root = private_cache_root(api.name)
        self.cache: ModelCache | None = None
        available: dict[str, Any] = {"config": handler.config, "metrics_client": MetricsClient(api.name)}
        self.subscriber: Subscriber | None = None
        self._affinity: Affinity | None = None
        if models is not None:
            self.subscriber = Subscriber(
                api.name, self.update_models, lambda: self.cache.tree if self.cache else None
            )
            tree = await self.subscriber.initial_tree()
            self.cache = ModelCache(
                loader=self._load_saved_model if tensorflow else self._load_model,
                root=self._disk_root,
                memory_limit=models.cache_size,
                disk_limit=models.disk_cache_size,
                tree=tree,
            )
            if not models.caching_enabled:
                await self.cache.download_all()
            model_client = ModelClient(self.cache, self._loop, self._slots)
            available[client_arg] = TensorFlowClient(model_client) if tensorflow else model_client
            self.subscriber.start()
            self._affinity = Affinity(models.cache_size)
        self._handler = await self._loop.run_in_executor(self._loader_pool, construct_handler, cls, available)
        log.info("api %s ready (%s)", api.name, _tree_summary(self.cache.tree if self.cache else None))

    def _load_saved_model(self, path: str, name: str, version: int) -> Any:
        """The cache's loader for the TensorFlow handler."""
        from cortex_ray.tensorflow import SavedModel

        assert self.cache is not None
        model = self.cache.tree.models.get(name)
        return SavedModel(path, name, version, model.signature_key if model else None)

    def _load_model(self, path: str, name: str, version: int) -> Any:
        """The cache's loader: the user's ``load_model`` (also usable during ``__init__``)."""
        target = self._handler if self._handler is not None else None
        try:
            return self._handler_cls.load_model(target, path)  # type: ignore[attr-defined]
        except BaseException as exc:
            raise UserHandlerError(f"load_model raised {type(exc).__name__}: {exc}") from exc

    # --- requests ----------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        path = request.scope.get("path", "/")
        root = request.scope.get("root_path", "")
        sub = path[len(root) :] if root and path.startswith(root) else path
        try:
            if sub.rstrip("/") == "/info" and request.method == "GET":
                return JSONResponse(await self.info(self._info_details))
            if self._affinity is not None and self.cache is not None:
                await self._affinity.note(self.cache.tree.models)
            return await self._handle(request)
        except Exception as exc:
            return error_response(exc)

    async def _handle(self, request: Request) -> Response:
        method = request.method.lower()
        func = getattr(self._handler, f"handle_{method}", None) if method in HTTP_METHODS else None
        if func is None:
            allowed = [m.upper() for m in HTTP_METHODS if hasattr(self._handler, f"handle_{m}")]
            raise MethodNotAllowedError(
                f"this API does not handle {request.method} requests (it handles {', '.join(allowed)})",
                allowed=allowed,
            )
        payload = await decode_payload(request) if method in ("post", "put", "patch") else None
        available = {
            "payload": payload,
            "query_params": dict(request.query_params),
            "headers": dict(request.headers),
        }
        result, used = await self.call_handler(func, available)
        response = encode_response(result)
        if used:
            response.headers[VERSION_HEADER] = ", ".join(f"{n}={v}" for n, v in sorted(used.items()))
        return response

    async def call_handler(self, func: Any, available: dict[str, Any]) -> tuple[Any, dict[str, int]]:
        """Run a handler method (sync ones in the handler pool); user errors become 500s."""
        used: dict[str, int] = {}
        token = served_versions_var.set(used)
        try:
            if inspect.iscoroutinefunction(func):
                result = await call_with(func, available)
            else:
                ctx = contextvars.copy_context()
                result = await self._loop.run_in_executor(
                    self._pool, functools.partial(ctx.run, self._slots.run, call_with, func, available)
                )
        except CortexRayError:
            raise
        except Exception as exc:
            raise UserHandlerError(f"{type(exc).__name__}: {exc}", type=type(exc).__name__) from exc
        finally:
            served_versions_var.reset(token)
        return result, used

    async def call(
        self,
        method: str = "post",
        payload: Any = None,
        query_params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Call the handler without HTTP (through a Serve handle, e.g. from a notebook)."""
        func = getattr(self._handler, f"handle_{method.lower()}", None)
        if func is None:
            raise MethodNotAllowedError(f"this API does not handle {method.upper()} requests")
        available = {"payload": payload, "query_params": query_params or {}, "headers": headers or {}}
        return (await self.call_handler(func, available))[0]

    # --- models ------------------------------------------------------------

    def update_models(self, tree: ModelTree) -> None:
        """Take a new model tree (the reloader publishes these)."""
        if self.cache is None:
            return
        changes = diff_trees(self.cache.tree, tree)
        self.cache.set_tree(tree)
        for change in changes:
            log.info("api %s: %s", self.api.name, change)

    async def info(self, details: bool = True) -> dict[str, Any]:
        """The ``/info`` body; ``details``: the operator's view (states, reasons, reloader)."""
        if self.cache is None:
            return {}
        return await api_info(self.cache, self.subscriber, self._disk_root, details)

    def __del__(self) -> None:
        root = getattr(self, "_disk_root", None)
        if root:
            shutil.rmtree(root, ignore_errors=True)


def _tree_summary(tree: ModelTree | None) -> str:
    if tree is None:
        return "no models configured"
    return (
        f"{len(tree.models)} model(s): "
        + ", ".join(f"{n} {list(m.valid_versions)}" for n, m in sorted(tree.models.items()))[:500]
    )
