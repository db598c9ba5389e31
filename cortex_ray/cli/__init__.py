"""The ``cortex-ray`` command line."""

from cortex_ray.cli.main import main

__all__ = ["main"]
