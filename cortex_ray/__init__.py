"""cortex-ray: Cortex-style model APIs served on Ray Serve."""

from cortex_ray.errors import CortexRayError, DeploymentError, SpecError, SpecErrors
from cortex_ray.sdk import ApiHandle, Session, delete, deploy, get_api, shutdown, start
from cortex_ray.spec import ApiSpec, Spec, load_spec, parse_spec

__version__ = "0.1.0"

__all__ = [
    "ApiHandle",
    "ApiSpec",
    "CortexRayError",
    "DeploymentError",
    "Session",
    "Spec",
    "SpecError",
    "SpecErrors",
    "__version__",
    "delete",
    "deploy",
    "get_api",
    "load_spec",
    "parse_spec",
    "shutdown",
    "start",
]
