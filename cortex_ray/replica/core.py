"""One API's core in one replica: the user's handler and its models.

The core lives on its own event loop (:class:`~cortex_ray.replica.loop.CoreLoop`) and knows
nothing of how calls arrive: its :attr:`ApiCore.endpoint` answers the fast path, Serve's proxy
path, Serve handles and AsyncAPI workloads (:class:`~cortex_ray.endpoint.Endpoint`), through
the narrow interface it implements (:class:`~cortex_ray.endpoint.HandlerCore`: the handler's
methods, :meth:`ApiCore.call_handler`, :meth:`ApiCore.run_callback`).

At start it enters the project, lists the API's models through the reloader (which pushes
later trees to :meth:`ApiCore.update_models`), builds the model cache, downloads every model
before it reports ready when no cache limit is set (as Cortex did) and constructs the
``Handler``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cortex_ray.cache import Holder, ModelCache
from cortex_ray.cache.root import private_cache_root
from cortex_ray.endpoint import Endpoint, Method
from cortex_ray.endpoint.batching import BatchingCore
from cortex_ray.endpoint.endpoint import HandlerCore
from cortex_ray.errors import CortexRayError, UserHandlerError
from cortex_ray.metrics.cache import CacheMetrics
from cortex_ray.metrics.custom import MetricsClient
from cortex_ray.metrics.requests import RequestMetrics
from cortex_ray.models import ModelTree
from cortex_ray.project import ProjectRef
from cortex_ray.protocols import ProtocolRoutes
from cortex_ray.reload.subscriber import Subscriber
from cortex_ray.replica.enter import enter_project
from cortex_ray.replica.info import api_info, cluster_view, replica_report
from cortex_ray.replica.invoke import HandlerEscape, Invoker
from cortex_ray.replica.model_client import ModelClient, holder_var, served_versions_var, warming_var
from cortex_ray.replica.protocols import ReplicaModels, protocols_of
from cortex_ray.replica.rpc import RpcService
from cortex_ray.replica.user_code import check_handler, construct_handler, handler_methods, load_handler_class
from cortex_ray.replica.warmup import WarmUp
from cortex_ray.spec import ApiSpec
from cortex_ray.tensorflow.client import TensorFlowClient

__all__ = ["ApiCore"]

log = logging.getLogger("cortex_ray.replica")

BATCHES_CLOSE_TIMEOUT_S = 2.0
"""How long a stopping replica waits for the batches it still runs (server-side batching)."""


class ApiCore:
    def __init__(self, api: ApiSpec, info_details: bool = False, project: ProjectRef | None = None) -> None:
        self.api = api
        self.project = project
        handler = api.handler
        # AsyncAPI workers run sync handlers in a thread: a timeout must be able to fire
        inline = api.kind != "AsyncAPI"
        waiting = api.autoscaling.max_replica_concurrency
        self.invoker = Invoker(handler.threads_per_process, waiting, api.name, inline=inline)
        self.cache: ModelCache | None = None
        self.model_client: ModelClient | None = None
        self.batching: BatchingCore | None = None
        self.subscriber: Subscriber | None = None
        self.handler: Any = None
        self.methods: dict[str, Method] = {}
        self.rpc: RpcService | None = None
        """A gRPC API's service (``handler.protobuf_path``)."""
        self.disk_root = ""
        batching = handler.server_side_batching
        core: HandlerCore = self
        if batching is not None:  # handle_post calls grouped (Cortex's server-side batching)
            core = self.batching = BatchingCore(
                self,
                batching.max_batch_size,
                batching.batch_interval,
                alone=lambda: warming_var.get() is not None,  # (warm-up requests: never with clients')
            )
        self.endpoint = Endpoint(core, api.name, self.info, info_details, RequestMetrics(api.name))

    async def start(self) -> None:
        """Load the handler and its models (on the core loop)."""
        api, handler = self.api, self.api.handler
        loop = asyncio.get_running_loop()
        # (.env and handler.env are in the environment from the process's start: runtime_env)
        handler_file = await loop.run_in_executor(None, enter_project, api, self.project)
        cls = load_handler_class(handler_file)
        self._handler_cls = cls
        models = handler.model_spec
        tensorflow = handler.type == "tensorflow"
        client_arg = "tensorflow_client" if tensorflow else "model_client"
        grpc = handler.protobuf_path is not None
        check_handler(cls, has_models=models is not None, client_arg=client_arg, kind=api.kind, grpc=grpc)
        self.disk_root = private_cache_root(api.name)
        available: dict[str, Any] = {"config": handler.config, "metrics_client": MetricsClient(api.name)}
        if handler.protobuf_path is not None:
            proto = handler.protobuf_path
            self.rpc = await loop.run_in_executor(None, RpcService.load, proto, self.disk_root)
            self.rpc.check(cls)
            available["proto_module_pb2"] = self.rpc.module
        if models is not None:
            self.subscriber = Subscriber(
                api.name, self.update_models, lambda: self.cache.tree if self.cache else None
            )
            tree = await self.subscriber.initial_tree()
            self.cache = ModelCache(
                loader=self._load_saved_model if tensorflow else self._load_model,
                root=self.disk_root,
                memory=models.memory_budget,
                disk=models.disk_budget,
                gpu=models.gpu_budget,
                tree=tree,
                events=CacheMetrics(api.name),
                idle_timeout=models.idle_timeout,
                pinned=models.pins,
            )
            self.cache.tiers.warm_up = WarmUp(self.endpoint)  # a version's warmup.json, before it serves
            if not models.caching_enabled:
                await self.cache.download_all()
            model_client = self.model_client = ModelClient(self.cache, loop, self.invoker.slots)
            available[client_arg] = TensorFlowClient(model_client) if tensorflow else model_client
            self.subscriber.start(lambda: replica_report(self.cache) if self.cache else {})
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{api.name}-init") as init:
            self.use_handler(await loop.run_in_executor(init, construct_handler, cls, available))
        if self.cache is not None:
            await self.cache.load_pinned()  # before the replica takes traffic
        log.info("api %s ready (%s)", api.name, _tree_summary(self.cache.tree if self.cache else None))

    def use_handler(self, handler: Any) -> None:
        """Serve this constructed ``Handler`` (what :meth:`start` ends with; tests give their own)."""
        self.handler = handler
        self.methods = handler_methods(handler)
        if self.rpc is not None:
            metrics = self.endpoint.metrics
            self.rpc.bind(handler, metrics.record if metrics is not None else None)
        if self.batching is not None and "POST" not in self.methods:
            raise UserHandlerError(
                "server_side_batching groups handle_post requests, and the handler has no handle_post"
            )
        tensorflow = self.api.handler.type == "tensorflow"
        protocols = protocols_of(self.api.handler.protocols, tensorflow, handler)
        if protocols and self.cache is not None and self.model_client is not None:
            models = ReplicaModels(
                self.api.name, tensorflow, self.cache, self.model_client, self.call_handler, handler
            )
            self.endpoint.routes = ProtocolRoutes(models, protocols)

    def _load_saved_model(self, path: str, name: str, version: int) -> Any:
        """The cache's loader for the TensorFlow handler."""
        from cortex_ray.tensorflow import SavedModel

        assert self.cache is not None
        model = self.cache.tree.models.get(name)
        return SavedModel(path, name, version, model.signature_key if model else None)

    def _load_model(self, path: str, name: str, version: int) -> Any:
        """The cache's loader: the user's ``load_model`` (also usable during ``__init__``)."""
        try:
            return self._handler_cls.load_model(self.handler, path)  # type: ignore[attr-defined]
        except BaseException as exc:
            raise UserHandlerError(f"load_model raised {type(exc).__name__}: {exc}") from exc

    # --- calls (the endpoint's interface) ------------------------------------------

    async def call_handler(self, method: Method, kwargs: dict[str, Any], used: dict[str, Any]) -> Any:
        """Run a handler method; user errors become 500s; the model versions it used are
        written into ``used`` (kept when the handler raises)."""
        token = served_versions_var.set(used)
        holder = Holder() if self.cache is not None else None  # (an API without models holds none)
        holding = holder_var.set(holder)
        try:
            return await self.invoker(method, kwargs)
        except CortexRayError:
            raise
        except HandlerEscape as escaped:  # SystemExit, KeyboardInterrupt...: answered, the loop goes on
            raised = escaped.raised
            raise UserHandlerError(
                f"{type(raised).__name__}: {raised}", type=type(raised).__name__
            ) from raised
        except asyncio.CancelledError as exc:
            cancelling = getattr(asyncio.current_task(), "cancelling", None)  # (Python 3.11+)
            if cancelling is not None and cancelling():  # this request is being cancelled: let it go
                raise
            raise UserHandlerError("CancelledError: raised by the handler", type="CancelledError") from exc
        except Exception as exc:
            raise UserHandlerError(f"{type(exc).__name__}: {exc}", type=type(exc).__name__) from exc
        finally:
            served_versions_var.reset(token)
            holder_var.reset(holding)
            if self.cache is not None and holder is not None:
                self.cache.let_go(holder)  # what it used can be evicted again

    async def run_callback(self, callback: Callable[[], Any]) -> None:
        await self.invoker.run_sync(callback)

    # --- models ------------------------------------------------------------

    def update_models(self, tree: ModelTree, changed: Collection[str] | None = None) -> None:
        """Take a new model tree (the reloader publishes these); ``changed``: the names of the
        models that changed (``None``: any may have)."""
        if self.cache is None:
            return
        for change in self.cache.set_tree(tree, changed):
            log.info("api %s: %s", self.api.name, change)

    async def info(self, details: bool = True, cluster: bool = False) -> dict[str, Any]:
        """The ``/info`` body; ``details``: the operator's view (states, reasons, reloader);
        ``cluster`` (with ``details``): every replica's view too, as reported to the reloader."""
        if self.cache is None:
            return {}
        body = await api_info(self.cache, self.subscriber, self.disk_root, details)
        if cluster and details and self.subscriber is not None:
            body["cluster"] = cluster_view(await self.subscriber.replica_reports())
        return body

    # --- the end -------------------------------------------------------------

    async def close(self) -> None:
        if self.batching is not None:  # (what waits for its group is called now, not dropped)
            await self.batching.close(BATCHES_CLOSE_TIMEOUT_S)
        if self.subscriber is not None:
            await self.subscriber.stop()
        if self.cache is not None:
            await self.cache.close()
        self.invoker.close()

    def remove_files(self) -> None:
        """Free the disk tier (the replica is stopping; no loop needed)."""
        if self.disk_root:
            shutil.rmtree(self.disk_root, ignore_errors=True)


def _tree_summary(tree: ModelTree | None) -> str:
    if tree is None:
        return "no models configured"
    return (
        f"{len(tree.models)} model(s): "
        + ", ".join(f"{n} {list(m.valid_versions)}" for n, m in sorted(tree.models.items()))[:500]
    )
