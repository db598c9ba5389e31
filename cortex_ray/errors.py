"""The one exception tree of cortex-ray.

Every error raised on purpose by the package derives from :class:`CortexRayError`
and knows the HTTP status it maps to (``status_code``) and a short machine
readable ``error_type``. Third-party errors (botocore, TensorFlow, ...) are
translated at the boundary with ``raise ... from exc``; one place
(:func:`cortex_ray.errors.to_response_body`) turns an error into a JSON body.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AtCapacityError",
    "BadRequestError",
    "CortexRayError",
    "DeploymentError",
    "InvalidVersionError",
    "MethodNotAllowedError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ProtoError",
    "SpecError",
    "SpecErrors",
    "StorageAccessDeniedError",
    "StorageChangedError",
    "StorageError",
    "StorageNotFoundError",
    "StorageUnreachableError",
    "UserHandlerError",
    "VersionNotFoundError",
    "to_response_body",
]


class CortexRayError(Exception):
    """Base of every error cortex-ray raises on purpose."""

    status_code: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


# --- the spec --------------------------------------------------------------


class SpecError(CortexRayError):
    """One problem in a spec file: names the file, the API, the field and the value."""

    status_code = 400
    error_type = "invalid_spec"

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        api_name: str | None = None,
        api_index: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.api_name = api_name
        self.api_index = api_index
        self.field = field
        self.reason = message
        super().__init__(self._render())

    def _render(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        if self.api_index is not None:
            name = f"'{self.api_name}'" if self.api_name else "<unnamed>"
            parts.append(f"api {name} (#{self.api_index})")
        if self.field:
            parts.append(self.field)
        parts.append(self.reason)
        return ": ".join(parts)


class SpecErrors(CortexRayError):
    """All the problems found in one spec file (one message per problem)."""

    status_code = 400
    error_type = "invalid_spec"

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class ProtoError(CortexRayError):
    """A gRPC API's ``.proto`` cannot be compiled or imported (protoc's message)."""

    status_code = 400
    error_type = "invalid_proto"


# --- storage ---------------------------------------------------------------


class StorageError(CortexRayError):
    """A storage operation failed; the message names the bucket/key and a hint."""

    status_code = 503
    error_type = "storage_error"


class StorageNotFoundError(StorageError):
    status_code = 404
    error_type = "storage_not_found"


class StorageAccessDeniedError(StorageError):
    status_code = 503
    error_type = "storage_access_denied"


class StorageUnreachableError(StorageError):
    status_code = 503
    error_type = "storage_unreachable"


class StorageChangedError(StorageError):
    """An object no longer holds the bytes it was listed with (it changed since the listing)."""

    status_code = 503
    error_type = "storage_changed"


# --- requests --------------------------------------------------------------


class BadRequestError(CortexRayError):
    status_code = 400
    error_type = "bad_request"


class InvalidVersionError(BadRequestError):
    error_type = "invalid_model_version"


class ModelNotFoundError(CortexRayError):
    status_code = 404
    error_type = "model_not_found"


class VersionNotFoundError(ModelNotFoundError):
    error_type = "model_version_not_found"


class ModelLoadError(CortexRayError):
    """The model could not be downloaded or its ``load_model`` raised."""

    status_code = 503
    error_type = "model_load_failed"


class CacheFullError(CortexRayError):
    """No memory slot came free for a load in time: every one is held by a model that running
    requests use, or by a load in flight."""

    status_code = 503
    error_type = "model_cache_full"


class MethodNotAllowedError(CortexRayError):
    status_code = 405
    error_type = "method_not_allowed"


class AtCapacityError(CortexRayError):
    """More requests than the API takes at once (Cortex's ``max_replica_concurrency``)."""

    status_code = 503
    error_type = "too_many_requests"


class ShuttingDownError(CortexRayError):
    """The replica is stopping and takes no new work (the client may retry elsewhere)."""

    status_code = 503
    error_type = "shutting_down"


class UserHandlerError(CortexRayError):
    """The user's handler code raised (import, ``__init__`` or a request method)."""

    status_code = 500
    error_type = "handler_error"


class DeploymentError(CortexRayError):
    """An API could not be deployed (its replicas failed to start)."""

    error_type = "deployment_failed"


def to_response_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The one place an exception becomes an HTTP status and a JSON body."""
    if isinstance(exc, CortexRayError):
        body: dict[str, Any] = {"error": exc.error_type, "message": exc.message}
        body.update({k: v for k, v in exc.details.items() if v is not None})
        return exc.status_code, body
    # not ours and not the user's: what Python said stays in the replica's log, not in the answer
    return 500, {"error": "internal_error", "message": "the replica failed to answer (its log says why)"}
