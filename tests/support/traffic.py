"""A client that sends requests the whole time a live change happens, and records every answer."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["Answer", "Traffic"]


@dataclass
class Answer:
    at: float
    status: int
    body: Any
    model: str | None = None
    sent: float = 0.0
    """When the request was sent (``at`` is when its answer came)."""


@dataclass
class Traffic:
    """POSTs each payload in turn to ``url`` until stopped (bounded by ``max_seconds``)."""

    url: str
    payloads: list[dict[str, Any]]
    max_seconds: float = 180.0
    pause: float = 0.02
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self._stop.is_set() and time.monotonic() < deadline:
                payload = self.payloads[i % len(self.payloads)]
                i += 1
                sent = time.time()
                try:
                    r = client.post(self.url, json=payload)
                    body = (
                        r.json()
                        if r.headers.get("content-type", "").startswith("application/json")
                        else r.text
                    )
                    self.answers.append(Answer(time.time(), r.status_code, body, payload.get("model"), sent))
                except httpx.HTTPError as exc:
                    self.answers.append(Answer(time.time(), 0, repr(exc), payload.get("model"), sent))
                time.sleep(self.pause)

    def since(self, t: float, model: str | None = None) -> list[Answer]:
        return [a for a in self.answers if a.at >= t and (model is None or a.model == model)]

    def failures(self, model: str | None = None) -> list[Answer]:
        return [a for a in self.answers if a.status != 200 and (model is None or a.model == model)]

    def wait_for(self, predicate: Any, timeout: float = 60.0, model: str | None = None) -> float:
        """Wait until an answer (for ``model``) sent from now on satisfies ``predicate``.

        Returns the time that answer came.
        """
        start = time.time()
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            answers = [a for a in self.answers if a.at >= start and (model is None or a.model == model)]
            for a in answers[seen:]:
                if predicate(a):
                    return a.at
            seen = len(answers)
            time.sleep(0.05)
        last = self.answers[-3:]
        raise AssertionError(f"no matching answer within {timeout}s; last answers: {last}")
