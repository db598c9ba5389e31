"""cortex-ray: Cortex-style model APIs served on Ray Serve."""

from cortex_ray.errors import CortexRayError, SpecError, SpecErrors
from cortex_ray.spec import ApiSpec, Spec, load_spec, parse_spec

__version__ = "0.1.0"

__all__ = [
    "ApiSpec",
    "CortexRayError",
    "Spec",
    "SpecError",
    "SpecErrors",
    "__version__",
    "load_spec",
    "parse_spec",
]
