"""One replica of a RealtimeAPI, as Ray Serve sees it: a thin shell around the API's core.

Serve creates, scales, health-checks and places this class; the API's serving core
(:class:`~cortex_ray.serving.core.ApiCore`) runs on a loop of its own in this process.
On the proxy path Serve hands ``__call__`` a Starlette request, which hops onto the
core's loop; on the fast path (``ingress="fast"``) the replica also serves HTTP on a port
of its own, on the core's loop, and registers it with cortex-ray's ingress, so requests
reach the handler without Serve's proxy or request path.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from cortex_ray.ingress.attach import start_fast_path, stop_fast_path
from cortex_ray.project import ProjectRef
from cortex_ray.serving.affinity import Affinity
from cortex_ray.serving.core import VERSION_HEADER, ApiCore
from cortex_ray.serving.loop import CoreLoop
from cortex_ray.serving.requests import from_starlette
from cortex_ray.spec import ApiSpec

__all__ = ["VERSION_HEADER", "ApiReplica"]

log = logging.getLogger("cortex_ray.replica")


class ApiReplica:
    """The class behind every RealtimeAPI's Serve deployment."""

    async def __init__(  # type: ignore[misc]  # (Serve awaits async constructors)
        self,
        api: ApiSpec,
        info_details: bool = False,
        ingress: str = "proxy",
        project: ProjectRef | None = None,
    ) -> None:
        self.api = api
        self.loop = CoreLoop(f"{api.name}-core")
        self.core = ApiCore(api, info_details, project)
        await self.loop.run(self.core.start())
        models = api.handler.model_spec
        self._affinity = Affinity(models.cache_size) if models is not None else None
        self.fast = await start_fast_path(self.loop, api, self.core.handle) if ingress == "fast" else None
        if self.fast is not None:
            self.record_autoscaling_stats = self._autoscaling_stats  # Serve looks for it after init

    async def __call__(self, request: Request) -> Response:
        """The proxy path: Serve's proxy routed a request here."""
        if self._affinity is not None and self.core.cache is not None:
            await self._affinity.note(self.core.cache.tree.models)
        incoming = await from_starlette(request)
        out = await self.loop.run(self.core.handle(incoming))
        response = out.to_starlette()
        if out.after is not None:  # the handler's callback, once the answer is sent
            after = out.after

            async def after_sent() -> None:
                await self.loop.run(after())

            response.background = BackgroundTask(after_sent)
        return response

    async def call(
        self,
        method: str = "post",
        payload: Any = None,
        query_params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Call the handler without HTTP (through a Serve handle, e.g. from a notebook)."""
        return await self.loop.run(self.core.call(method, payload, query_params, headers))

    async def info(self, details: bool = True, cluster: bool = False) -> dict[str, Any]:
        return await self.loop.run(self.core.info(details, cluster))

    def check_health(self) -> None:
        """Serve calls this periodically; raising makes it replace the replica."""
        if not self.loop.alive:
            raise RuntimeError(f"api {self.api.name}: the serving loop stopped")

    async def _autoscaling_stats(self) -> dict[str, float]:
        assert self.fast is not None
        return self.fast.autoscaling_stats()

    def __del__(self) -> None:
        """Serve's graceful stop: leave the balancer, finish what runs, free the disk cache."""
        stop_fast_path(self)
        loop, core = getattr(self, "loop", None), getattr(self, "core", None)
        if loop is not None:
            loop.stop()
        if core is not None and core.disk_root:
            shutil.rmtree(core.disk_root, ignore_errors=True)
