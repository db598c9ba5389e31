"""S3 event messages as they reach SQS: direct notifications (keys URL-encoded), EventBridge
events, SNS-wrapped notifications, test events and messages of another kind."""

from __future__ import annotations

import json

from cortex_ray.storage.sqs import object_keys


def notification(*keys: str, bucket: str = "b") -> str:
    records = [
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {"key": k}}}
        for k in keys
    ]
    return json.dumps({"Records": records})


def test_notification_keys_are_url_decoded() -> None:
    assert object_keys(notification("models/a+b/1/m%C3%A9.bin", "models/c/2/x")) == [
        ("b", "models/a b/1/mé.bin"),
        ("b", "models/c/2/x"),
    ]


def test_eventbridge_and_sns_wrapped_events_name_their_object() -> None:
    bridge = {"source": "aws.s3", "detail": {"bucket": {"name": "b"}, "object": {"key": "models/a b/1/m"}}}
    assert object_keys(json.dumps(bridge)) == [("b", "models/a b/1/m")]  # (EventBridge: keys as written)
    sns = {"Type": "Notification", "Message": notification("models/a/1/m")}
    assert object_keys(json.dumps(sns)) == [("b", "models/a/1/m")]


def test_test_events_name_nothing_and_other_messages_are_not_s3_events() -> None:
    assert object_keys(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})) == []
    assert object_keys("not json") is None and object_keys(json.dumps({"hello": 1})) is None
    assert object_keys(json.dumps([1, 2])) is None
