"""An API spec carried intact, and byte for byte the same, through Serve's config of deployment
actors.

Serve turns a deployed application into its config schema, and ``model_dump`` there turns a
pydantic ``ApiSpec`` among an actor's ``init_args`` into a plain dict (a declarative deploy:
``serve deploy``, ``cortex-ray deploy``); a plain object passes through. Serve also compares
versions by the pickled ``init_args``: a re-pickled spec may differ in bytes (set order), which
Serve would take for a new version on every loop, so the pickle is taken once and kept.
"""

from __future__ import annotations

import pickle

from cortex_ray.spec.schema import ApiSpec

__all__ = ["Sealed", "unseal"]


class Sealed:
    __slots__ = ("_api", "blob")

    def __init__(self, api: ApiSpec | None = None, blob: bytes | None = None) -> None:
        self._api = api
        self.blob = blob if blob is not None else pickle.dumps(api)

    @property
    def api(self) -> ApiSpec:
        if self._api is None:
            self._api = pickle.loads(self.blob)
        return self._api

    def __reduce__(self) -> tuple[type[Sealed], tuple[None, bytes]]:
        return (Sealed, (None, self.blob))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sealed) and other.blob == self.blob

    def __hash__(self) -> int:
        return hash(self.blob)

    def __repr__(self) -> str:
        return f"Sealed({len(self.blob)} bytes)"


def unseal(value: ApiSpec | Sealed) -> ApiSpec:
    return value.api if isinstance(value, Sealed) else value
