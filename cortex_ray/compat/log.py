"""Cortex 0.35's handler logger: one JSON object per line.

``logger.info("msg", extra={"k": v})`` prints
``{"asctime": ..., "levelname": "INFO", "message": "msg", "process": 123, "k": v,
"labels": {"apiName": ..., "apiKind": ...}}``: ``extra`` flattened one level, as Cortex's
docs show; values JSON cannot hold are written as their ``str``.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

__all__ = ["LOGGER_NAME", "JsonFormatter", "configure", "logger"]

LOGGER_NAME = "cortex"
_RESERVED = {"asctime", "levelname", "message", "labels", "process"}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, labels: dict[str, str] | None = None) -> None:
        super().__init__()
        self.labels = labels or {}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "asctime": self.formatTime(record),
            "levelname": record.levelname,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if self.labels:
            out["labels"] = self.labels
        return json.dumps(out, default=str)


class _StandardError(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes (Ray may replace it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


logger = logging.getLogger(LOGGER_NAME)
"""The logger handlers import (``cortex_internal.lib.log.logger``)."""


def configure(level: str, labels: dict[str, str] | None = None) -> logging.Logger:
    """Give the handler logger its level and one JSON handler on standard error (which Ray
    writes to the replica's log file); it does not pass records on to Ray's loggers."""
    logger.setLevel(level.upper())
    logger.propagate = False
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler = _StandardError()
    handler.setFormatter(JsonFormatter(labels))
    logger.addHandler(handler)
    return logger
