"""Live model reloading: the per-API reloader actor and the replicas' subscription."""

from cortex_ray.reload.publisher import ModelProblem, Publisher
from cortex_ray.reload.reloader import ModelReloader
from cortex_ray.reload.subscriber import Subscriber

__all__ = ["ModelProblem", "ModelReloader", "Publisher", "Subscriber"]
