"""Running handler methods: sync ones inline in reused greenlets, suspended while they wait."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
from cortex_ray.replica.invoke import Invoker, await_in_handler, in_inline_handler
from cortex_ray.endpoint import Method

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


class Handler:
    def __init__(self) -> None:
        self.threads: set[int] = set()

    def handle_post(self, payload: dict[str, int]) -> dict[str, object]:
        self.threads.add(threading.get_ident())
        assert in_inline_handler()
        waited = await_in_handler(asyncio.sleep(payload["wait"], result=payload["wait"]))  # a cold model
        if payload.get("fail"):
            raise ValueError("asked to fail")
        return {"waited": waited, "who": WHO.get()}


def test_sync_handlers_run_inline_and_others_go_on_while_one_waits() -> None:
    handler = Handler()
    method = Method.of(handler.handle_post, ("payload",))
    invoker = Invoker(threads=1, max_waiting=8, name="t")

    async def one(who: str, wait: float) -> object:
        WHO.set(who)  # each request's own context reaches its handler call
        return await invoker(method, {"payload": {"wait": wait}})

    async def main() -> None:
        loop_thread = threading.get_ident()
        started = asyncio.get_running_loop().time()
        slow = asyncio.create_task(one("slow", 0.3))
        fast = [await one(f"fast{i}", 0) for i in range(5)]  # served while the slow one waits
        assert [f["who"] for f in fast] == [f"fast{i}" for i in range(5)]  # type: ignore[index]
        assert asyncio.get_running_loop().time() - started < 0.25 and not slow.done()
        assert await slow == {"waited": 0.3, "who": "slow"}
        assert handler.threads == {loop_thread}  # no thread hop
        with pytest.raises(ValueError, match="asked to fail"):
            await invoker(method, {"payload": {"wait": 0, "fail": 1}})
        for _ in range(50):
            await one("again", 0)
        assert len(invoker._idle) <= 2  # greenlets are reused, not made per call

    asyncio.run(main())
    invoker.close()


def test_with_several_threads_sync_handlers_run_in_the_pool() -> None:
    seen: list[int] = []

    def work(payload: int) -> int:
        seen.append(threading.get_ident())
        assert not in_inline_handler()
        return payload * 2

    invoker = Invoker(threads=2, max_waiting=4, name="t")

    async def main() -> None:
        assert await invoker(Method.of(work, ("payload",)), {"payload": 21}) == 42
        assert seen and seen[0] != threading.get_ident()

    asyncio.run(main())
    invoker.close()
