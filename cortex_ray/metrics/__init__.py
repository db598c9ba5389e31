"""cortex-ray's own metrics, on Ray's Prometheus endpoint (see :mod:`.catalogue`)."""

from cortex_ray.metrics.catalogue import CATALOGUE, MetricSpec
from cortex_ray.metrics.recorder import MemorySink, Recorder

__all__ = ["CATALOGUE", "MemorySink", "MetricSpec", "Recorder"]
