"""The Cortex API spec: its schema (pydantic models), cross-field rules, the file loader, and
the names derived from it."""

from cortex_ray.spec.loader import Spec, load_spec, parse_spec
from cortex_ray.spec.names import SINGLE_MODEL_NAME
from cortex_ray.spec.schema import (
    NEURON_CORES_PER_CHIP,
    ApiSpec,
    AutoscalingSpec,
    ComputeSpec,
    HandlerSpec,
    ModelPathSpec,
    MultiModelsSpec,
    NetworkingSpec,
)

__all__ = [
    "NEURON_CORES_PER_CHIP",
    "SINGLE_MODEL_NAME",
    "ApiSpec",
    "AutoscalingSpec",
    "ComputeSpec",
    "HandlerSpec",
    "ModelPathSpec",
    "MultiModelsSpec",
    "NetworkingSpec",
    "Spec",
    "load_spec",
    "parse_spec",
]
