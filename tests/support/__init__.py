"""Helpers shared by the test suites (test servers, fixtures)."""
