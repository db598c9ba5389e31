"""The Cortex API spec: pydantic models, cross-field rules and the file loader."""

from cortex_ray.spec.loader import Spec, load_spec, parse_spec
from cortex_ray.spec.models import (
    NEURON_CORES_PER_CHIP,
    SINGLE_MODEL_NAME,
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
