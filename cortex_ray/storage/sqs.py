"""An SQS queue receiving a bucket's S3 event notifications (sent directly, or through
EventBridge): which objects changed, as (bucket, key).

Messages are hints: at least once, unordered, sometimes late. The reader long-polls the queue
and hands each batch's keys to its caller, which confirms them (by listing) and only then
deletes the messages (:meth:`SqsQueue.delete`): a batch whose handling failed comes back after
the queue's visibility timeout. ``s3:TestEvent`` messages (sent when a notification is
configured) carry no key and are deleted as handled. boto3 reads the endpoint, region and
credentials as it does for S3 (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_SQS`` for an
SQS-compatible server).
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from cortex_ray.errors import (
    StorageAccessDeniedError,
    StorageError,
    StorageNotFoundError,
    StorageUnreachableError,
)

__all__ = ["QueueBatch", "SqsQueue", "object_keys"]

WAIT_SECONDS = 20
"""Long-poll time of one receive (SQS's maximum)."""


@dataclass
class QueueBatch:
    keys: list[tuple[str, str]] = field(default_factory=list)
    """(bucket, key) of every object the messages name, keys URL-decoded."""
    receipts: list[str] = field(default_factory=list)
    unreadable: int = 0
    """Messages that are neither an S3 notification nor an EventBridge S3 event (deleted too)."""


def object_keys(body: str) -> list[tuple[str, str]] | None:
    """The (bucket, key) pairs an S3 notification or EventBridge event names; ``[]`` for a test
    event; ``None`` for a message of another kind."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    if message.get("Event") == "s3:TestEvent":
        return []
    if isinstance(message.get("Message"), str) and message.get("Type") == "Notification":  # via SNS
        return object_keys(message["Message"])
    records = message.get("Records")
    if isinstance(records, list):
        keys = []
        for record in records:
            s3 = record.get("s3", {}) if isinstance(record, dict) else {}
            bucket, key = s3.get("bucket", {}).get("name"), s3.get("object", {}).get("key")
            if isinstance(bucket, str) and isinstance(key, str):
                keys.append((bucket, urllib.parse.unquote_plus(key)))  # (S3 notifications encode keys)
        return keys
    detail = message.get("detail")
    if message.get("source") == "aws.s3" and isinstance(detail, dict):  # EventBridge (keys as written)
        bucket, key = detail.get("bucket", {}).get("name"), detail.get("object", {}).get("key")
        if isinstance(bucket, str) and isinstance(key, str):
            return [(bucket, key)]
        return []
    return None


class SqsQueue:
    """One queue, by URL (``https://sqs.<region>.amazonaws.com/<account>/<name>``) or ARN
    (``arn:aws:sqs:<region>:<account>:<name>``). Blocking calls: run them in a thread."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self._client: Any = None
        self._url: str | None = None

    def receive(self, wait: float = WAIT_SECONDS) -> QueueBatch:
        """Up to 10 messages, waiting at most ``wait`` seconds for the first."""
        response = self._call(
            "receive_message",
            QueueUrl=self._queue_url(),
            WaitTimeSeconds=int(wait),
            MaxNumberOfMessages=10,
        )
        batch = QueueBatch()
        for message in response.get("Messages", []):
            batch.receipts.append(message["ReceiptHandle"])
            keys = object_keys(message.get("Body", ""))
            if keys is None:
                batch.unreadable += 1
            else:
                batch.keys += keys
        return batch

    def delete(self, receipts: list[str]) -> None:
        """The messages were handled: they never come back."""
        for start in range(0, len(receipts), 10):
            entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts[start : start + 10])]
            self._call("delete_message_batch", QueueUrl=self._queue_url(), Entries=entries)

    def _queue_url(self) -> str:
        if self._url is None:
            if self.queue.startswith("arn:"):
                parts = self.queue.split(":")
                if len(parts) != 6 or parts[2] != "sqs":
                    raise StorageError(f"events: {self.queue!r} is not an SQS queue ARN")
                answer = self._call("get_queue_url", QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])
                self._url = str(answer["QueueUrl"])
            else:
                self._url = self.queue
        return self._url

    def _call(self, method: str, **kwargs: Any) -> Any:
        import botocore.exceptions as bce

        try:
            if self._client is None:
                import boto3

                region = self.queue.split(":")[3] if self.queue.startswith("arn:") else None
                client: Any = boto3.client
                self._client = client("sqs", region_name=region)
            return getattr(self._client, method)(**kwargs)
        except bce.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
                raise StorageNotFoundError(
                    f"events: the SQS queue {self.queue} does not exist (check its URL or ARN and region)"
                ) from exc
            if (
                "AccessDenied" in code
                or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403
            ):
                raise StorageAccessDeniedError(
                    f"events: access denied to the SQS queue {self.queue} ({code}); the credentials need "
                    "sqs:ReceiveMessage, sqs:DeleteMessage and sqs:GetQueueUrl on it"
                ) from exc
            raise StorageError(f"events: SQS error on {self.queue} ({code})") from exc
        except (bce.BotoCoreError, OSError) as exc:
            raise StorageUnreachableError(f"events: cannot reach SQS for {self.queue}: {exc}") from exc
