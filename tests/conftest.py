"""Shared fixtures: the S3 test server (tests/support) is available everywhere."""

from tests.support.fixtures import *  # noqa: F403
