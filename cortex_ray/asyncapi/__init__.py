"""The AsyncAPI: a gateway that stores workloads, a dispatcher, and workers."""

from cortex_ray.asyncapi.dispatcher import Dispatcher
from cortex_ray.asyncapi.gateway import AsyncGateway
from cortex_ray.asyncapi.store import WorkloadStore
from cortex_ray.asyncapi.worker import AsyncWorker

__all__ = ["AsyncGateway", "AsyncWorker", "Dispatcher", "WorkloadStore"]
