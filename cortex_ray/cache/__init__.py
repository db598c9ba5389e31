"""The per-replica model cache and version resolution."""

from cortex_ray.cache.model_cache import Holder, LoadedModel, ModelCache
from cortex_ray.cache.resolve import parse_version, resolve_model, resolve_version

__all__ = ["Holder", "LoadedModel", "ModelCache", "parse_version", "resolve_model", "resolve_version"]
