"""translate_error: botocore/boto3 errors that are hard to provoke against a real server."""

from __future__ import annotations

from typing import Any

import botocore.exceptions as bce
import pytest
from boto3.exceptions import RetriesExceededError

from cortex_ray.errors import (
    StorageAccessDeniedError,
    StorageError,
    StorageNotFoundError,
    StorageUnreachableError,
)
from cortex_ray.storage.s3 import translate_error


def client_error(code: str, status: int) -> bce.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "msg"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return bce.ClientError(response, "GetObject")


_closed: Any = bce.ConnectionClosedError(endpoint_url="x")  # stubs want a Boto3Error


@pytest.mark.parametrize(
    ("exc", "expected", "text"),
    [
        (client_error("SlowDown", 503), StorageUnreachableError, "busy"),
        (client_error("ThrottlingException", 400), StorageUnreachableError, "busy"),
        (client_error("ExpiredToken", 400), StorageAccessDeniedError, "AWS_PROFILE"),
        (client_error("403", 403), StorageAccessDeniedError, "access denied"),
        (client_error("404", 404), StorageNotFoundError, "no such object"),
        (client_error("InternalError", 500), StorageError, "InternalError"),
        (bce.NoCredentialsError(), StorageAccessDeniedError, "AWS_ACCESS_KEY_ID"),
        (bce.ProfileNotFound(profile="nope"), StorageAccessDeniedError, "AWS_PROFILE"),
        (bce.ConnectTimeoutError(endpoint_url="http://h"), StorageUnreachableError, "http://e"),
        (bce.ReadTimeoutError(endpoint_url="http://h"), StorageUnreachableError, "AWS_ENDPOINT_URL"),
        (bce.ConnectionClosedError(endpoint_url="http://h"), StorageUnreachableError, "reach"),
        (RetriesExceededError(_closed), StorageUnreachableError, "reach"),
        (bce.ParamValidationError(report="bad"), StorageError, "bad"),
    ],
)
def test_translate_error(exc: Exception, expected: type[StorageError], text: str) -> None:
    error = translate_error(exc, bucket="b", key="models/k", endpoint="http://e")
    assert type(error) is expected
    assert "s3://b/models/k" in str(error)
    assert text in str(error)
