"""``events: {sqs: ...}`` against the S3 test server (moto, with SQS and the bucket's event
notifications; the project's own reloader, no Ray): a version uploaded to S3 is published from
its event with no full listing, handled messages are deleted, and a queue deleted mid-run
leaves the API on polling with the reason in its status."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.reload.events import SqsEvents
from cortex_ray.reload.reloader import ModelReloader
from cortex_ray.spec import parse_spec

pytestmark = pytest.mark.s3

EVENTS = SqsEvents.__init__.__globals__


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ModelReloader, "seed_grace", 0.0)
    monkeypatch.setitem(EVENTS, "WAIT_SECONDS", 1)  # (a test ends within one receive)


def queue_for(s3_server: Any, bucket: str) -> tuple[Any, str]:
    sqs = s3_server.client("sqs")
    url = sqs.create_queue(QueueName=f"{bucket}-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3_server.client().put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]
        },
    )
    return sqs, url


def api(tmp_path: Path, bucket: str, queue: str) -> Any:
    (tmp_path / "handler.py").write_text("class Handler:\n    pass\n")
    spec = {
        "name": "s3-events",
        "kind": "RealtimeAPI",
        "handler": {
            "type": "python",
            "path": "handler.py",
            "multi_model_reloading": {
                "dir": f"s3://{bucket}/models/",
                "events": {"sqs": queue},
                "poll_interval": 3600,  # no full listing after the first: events alone
                "settle_time": 0,
            },
        },
    }
    return parse_spec([spec], base_dir=tmp_path).apis[0]


async def until(condition: Any, what: str, seconds: float = 30.0) -> None:
    for _ in range(int(seconds * 100)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def test_a_version_uploaded_to_s3_is_published_from_its_event(
    tmp_path: Path, s3_server: Any, s3_bucket: str
) -> None:
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="models/a/1/m.bin", Body=b"a1")
    sqs, url = queue_for(s3_server, s3_bucket)

    def waiting() -> int:
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    async def main() -> None:
        r = ModelReloader(api(tmp_path, s3_bucket, url))
        first = await r.snapshot(None, -1, timeout=10)
        assert first is not None and r.poll_count == 1
        s3.put_object(Bucket=s3_bucket, Key="models/a b/1/m.bin", Body=b"ab1")  # (an encoded key)
        s3.put_object(Bucket=s3_bucket, Key="elsewhere/x/1/m.bin", Body=b"x")  # not this API's
        change = await r.snapshot(first["epoch"], first["version"], timeout=20)
        assert change is not None and list(change["delta"].models) == ["a b"]
        assert r.poll_count == 1  # from the event: its model's prefix listed, not the bucket
        await until(lambda: waiting() == 0, "the handled messages deleted")
        status = await r.status()
        assert status["events"] == f"sqs: {url}" and status["events_error"] is None

        sqs.delete_queue(QueueUrl=url)  # events gone: serving goes on, polling takes over
        await until(lambda: r.events_error is not None, "the queue's loss noticed")
        assert "does not exist" in r.events_error  # type: ignore[operator]
        s3.put_object(Bucket=s3_bucket, Key="models/c/1/m.bin", Body=b"c1")
        await r.poll_now()
        assert r.tree is not None and sorted(r.tree.models) == ["a", "a b", "c"]
        r.events.close()  # type: ignore[union-attr]

    asyncio.run(main())
