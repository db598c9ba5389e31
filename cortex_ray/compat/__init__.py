"""Cortex's in-handler modules, for handlers written against Cortex 0.35.

Inside replicas and workers only (:func:`install`, before the handler is imported), never as
installed top-level packages (they would hide the real ``cortex`` client on a user's machine):

- ``from cortex_internal.lib.log import logger``: Cortex's structured logger (:mod:`.log`);
- ``import cortex; cortex.client()``: a client whose calls go to cortex-ray's SDK (:mod:`.client`).
"""

from cortex_ray.compat.modules import install

__all__ = ["install"]
