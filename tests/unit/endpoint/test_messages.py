"""Errors as answers: a JSON body, and a log line at most once a minute for the same error."""

from __future__ import annotations

import json
import logging

import pytest

from cortex_ray.endpoint.messages import _LogLimiter, error_outgoing
from cortex_ray.errors import AtCapacityError, UserHandlerError


def test_the_same_error_is_logged_once_a_minute_with_a_count_of_the_rest() -> None:
    limiter = _LogLimiter(every=60.0)
    key = ("UserHandlerError", "ValueError: boom")
    assert limiter.allow(key, now=0.0) == 0
    assert [limiter.allow(key, now=t) for t in (1.0, 30.0, 59.0)] == [None, None, None]
    assert limiter.allow(("Other", "x"), now=2.0) == 0  # another error is not held back
    assert limiter.allow(key, now=61.0) == 3  # logged again, saying how many were left out
    assert limiter.allow(key, now=62.0) is None


def test_a_handler_error_logs_the_users_traceback_and_overload_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        raise ValueError("inside the user's code")
    except ValueError as cause:
        error = UserHandlerError("ValueError: inside the user's code", type="ValueError")
        error.__cause__ = cause
    with caplog.at_level(logging.ERROR):
        out = error_outgoing(error)
        error_outgoing(AtCapacityError("full"))
    assert out.status == 500 and json.loads(out.body)["type"] == "ValueError"
    [record] = caplog.records
    assert record.exc_info is not None and record.exc_info[1] is error.__cause__
