"""A :class:`Storage` on an S3 bucket (``s3://bucket/prefix/``) through boto3.

Credentials and region come from the standard chain (environment, shared
config/credentials files and ``AWS_PROFILE``, instance/container roles). An
S3-compatible server (MinIO, moto, ...) is selected with the standard
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` environment variables, which
boto3 (>= 1.28) honours by itself.

The boto3 client is created lazily and is not pickled, so a storage object can
be sent to Ray actors; each process creates its own client. Every botocore /
boto3 error is translated into the project's errors by :func:`translate_error`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import boto3.exceptions
import botocore.exceptions as bce
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from cortex_ray.errors import (
    StorageAccessDeniedError,
    StorageError,
    StorageNotFoundError,
    StorageUnreachableError,
)
from cortex_ray.storage.base import ObjectInfo, Storage, join_key

__all__ = ["CLIENT_CONFIG", "DEFAULT_TRANSFER_CONFIG", "S3Storage", "translate_error"]

MiB = 1024 * 1024

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60

CLIENT_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT,
    read_timeout=READ_TIMEOUT,
    retries={"max_attempts": 3, "mode": "standard"},
    max_pool_connections=32,
)
"""Few retries and a short connect timeout: a stopped endpoint fails in seconds."""

DEFAULT_TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=64 * MiB,
    multipart_chunksize=16 * MiB,
    max_concurrency=8,
)
"""Objects of 64 MiB or more are downloaded in parallel 16 MiB parts."""

_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "ExpiredToken",
        "ExpiredTokenException",
        "Forbidden",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "403",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_BUSY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "RequestTimeout",
        "503",
    }
)
_CREDENTIAL_ERRORS: tuple[type[Exception], ...] = (
    bce.NoCredentialsError,
    bce.PartialCredentialsError,
    bce.CredentialRetrievalError,
    bce.ProfileNotFound,
    bce.TokenRetrievalError,
    bce.SSOError,
)
_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    bce.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, SSLError, proxy
    bce.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
    bce.IncompleteReadError,
)
_BOTO_ERRORS = (bce.BotoCoreError, bce.ClientError, boto3.exceptions.Boto3Error)

_CREDENTIALS_HINT = (
    "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
    "or the instance role) and that they grant access to bucket '{bucket}'"
)


def translate_error(exc: BaseException, *, bucket: str, key: str, endpoint: str) -> StorageError:
    """The project error for a botocore/boto3 error on ``s3://bucket/key`` (not raised)."""
    if isinstance(exc, boto3.exceptions.RetriesExceededError):
        exc = getattr(exc, "last_exception", None) or exc
    where = f"s3://{bucket}/{key}"
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = error.get("Message") or ""
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        detail = f"{code}: {message}" if message and message != code else code
        if code == "NoSuchBucket":
            return StorageNotFoundError(
                f"{where}: bucket '{bucket}' does not exist; check the bucket name "
                f"and the endpoint ({endpoint})"
            )
        if code in _NOT_FOUND_CODES or status == 404:
            return StorageNotFoundError(f"{where}: no such object")
        if code in _ACCESS_CODES or status == 403:
            hint = _CREDENTIALS_HINT.format(bucket=bucket)
            return StorageAccessDeniedError(f"{where}: access denied ({detail}); {hint}")
        if code in _BUSY_CODES or status == 503:
            return StorageUnreachableError(
                f"{where}: the S3 endpoint {endpoint} is busy or unavailable ({detail}); try again later"
            )
        return StorageError(f"{where}: S3 error ({detail})")
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return StorageAccessDeniedError(
            f"{where}: no usable AWS credentials ({exc}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an instance role"
        )
    if isinstance(exc, _CONNECTION_ERRORS):
        return StorageUnreachableError(
            f"{where}: cannot reach the S3 endpoint {endpoint} ({exc}); check the network, "
            "or set AWS_ENDPOINT_URL for an S3-compatible server"
        )
    return StorageError(f"{where}: {type(exc).__name__}: {exc}")


class S3Storage(Storage):
    """Objects below ``prefix`` in ``bucket``; keys are relative to ``prefix``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        *,
        transfer_config: TransferConfig | None = None,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"an S3 bucket name must be non-empty without '/', got {bucket!r}")
        self.bucket = bucket
        self.prefix = join_key(prefix)
        self.uri = f"s3://{bucket}/" + (f"{self.prefix}/" if self.prefix else "")
        self.transfer_config = transfer_config or DEFAULT_TRANSFER_CONFIG
        self._client = client
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Storage({self.bucket!r}, {self.prefix!r})"

    # --- pickling: the client stays behind, each process makes its own ------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # --- helpers ------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 S3 client, created on first use (standard credential chain)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    session = boto3.session.Session()
                    self._client = session.client("s3", config=_client_config())
        return self._client

    @property
    def endpoint_url(self) -> str:
        """Where requests go (for messages); the env setting when there is no client yet."""
        if self._client is not None:
            return str(self._client.meta.endpoint_url)
        env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return env or "the default AWS S3 endpoint"

    def _full(self, key: str) -> str:
        return join_key(self.prefix, key)

    @contextmanager
    def _boundary(self, key: str) -> Iterator[None]:
        try:
            yield
        except _BOTO_ERRORS as exc:
            raise translate_error(
                exc, bucket=self.bucket, key=self._full(key), endpoint=self.endpoint_url
            ) from exc

    # --- the interface ------------------------------------------------------

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        base = self._full(prefix)
        start = f"{base}/" if base else ""
        found: list[ObjectInfo] = []
        with self._boundary(prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if key.endswith("/"):
                        continue  # a folder placeholder
                    found.append(
                        ObjectInfo(
                            key=key[len(start) :],
                            size=int(item["Size"]),
                            etag=str(item.get("ETag", "")).strip('"'),
                            mtime=item["LastModified"].timestamp(),
                        )
                    )
        found.sort(key=_by_key)
        return found

    def read(self, key: str) -> bytes:
        with self._boundary(key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            body = response["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

    def upload(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        with self._boundary(key):
            self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, **extra)

    def delete(self, key: str) -> None:
        with self._boundary(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def content_type(self, key: str) -> str | None:
        with self._boundary(key):
            response = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        value = response.get("ContentType")
        return str(value) if value else None

    def _download_object(self, key: str, dest: Path, size: int) -> None:
        """Small objects in one GET; from ``multipart_threshold`` on, in parallel parts."""
        with self._boundary(key):
            if size < self.transfer_config.multipart_threshold:
                response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
                body = response["Body"]
                try:
                    with open(dest, "wb") as fh:
                        for chunk in body.iter_chunks(chunk_size=MiB):
                            fh.write(chunk)
                finally:
                    body.close()
            else:
                self.client.download_file(
                    self.bucket, self._full(key), str(dest), Config=self.transfer_config
                )


def _client_config() -> Config:
    """:data:`CLIENT_CONFIG`, leaving retries to ``AWS_MAX_ATTEMPTS``/``AWS_RETRY_MODE`` when set."""
    if os.environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_RETRY_MODE"):
        return Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT, max_pool_connections=32)
    return CLIENT_CONFIG


def _by_key(obj: ObjectInfo) -> str:
    return obj.key
