"""Server-side batching between the endpoint and the core, on a fake core and a manual clock:
groups by size or by interval, answers in order, errors for the whole group, cancelled
requests leave their group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from cortex_ray.clock import ManualClock
from cortex_ray.endpoint.arguments import HTTP_ARGS, Method
from cortex_ray.endpoint.batching import BatchingCore
from cortex_ray.errors import ShuttingDownError, UserHandlerError


class FakeCore:
    """A handler whose ``handle_post`` doubles each payload (or what ``reply`` says)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.reply: Callable[[list[Any]], Any] = lambda payloads: [p * 2 for p in payloads]

        def handle_post(payload: Any, query_params: Any) -> Any: ...

        def handle_get() -> Any: ...

        self.methods: Mapping[str, Method] = {
            "POST": Method.of(handle_post, HTTP_ARGS),
            "GET": Method.of(handle_get, HTTP_ARGS),
        }

    async def call_handler(self, method: Method, kwargs: dict[str, Any], used: dict[str, Any]) -> Any:
        self.calls.append(kwargs)
        used["m"] = 3
        if method is self.methods["GET"]:
            return "got"
        return self.reply(kwargs["payload"])

    async def run_callback(self, callback: Callable[[], Any]) -> None:
        callback()


async def turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def post(
    core: BatchingCore, fake: FakeCore, payload: Any, used: dict[str, Any] | None = None
) -> asyncio.Task[Any]:
    kwargs = {"payload": payload, "query_params": {"i": str(payload)}}
    return asyncio.ensure_future(
        core.call_handler(fake.methods["POST"], kwargs, used if used is not None else {})
    )


def test_a_full_group_is_called_at_once_and_the_rest_after_the_interval() -> None:
    async def main() -> None:
        clock, fake = ManualClock(), FakeCore()
        core = BatchingCore(fake, max_batch_size=4, batch_interval=0.5, clock=clock)
        used: list[dict[str, Any]] = [{} for _ in range(5)]
        tasks = [post(core, fake, i, used[i]) for i in range(5)]
        await turns()
        assert [c["payload"] for c in fake.calls] == [[0, 1, 2, 3]]  # full: no waiting
        assert fake.calls[0]["query_params"] == [{"i": "0"}, {"i": "1"}, {"i": "2"}, {"i": "3"}]
        assert [t.result() for t in tasks[:4]] == [0, 2, 4, 6] and not tasks[4].done()
        await clock.advance(0.4)
        assert not tasks[4].done()
        await clock.advance(0.1)
        assert await tasks[4] == 8 and [c["payload"] for c in fake.calls] == [[0, 1, 2, 3], [4]]
        assert all(u == {"m": 3} for u in used)  # each request knows the models its group used
        assert core.batcher.sizes == [4, 1]

    asyncio.run(main())


def test_a_wrong_number_of_results_fails_the_group_saying_why() -> None:
    async def main() -> None:
        clock, fake = ManualClock(), FakeCore()
        fake.reply = lambda payloads: payloads[:1]
        core = BatchingCore(fake, max_batch_size=2, batch_interval=1.0, clock=clock)
        tasks = [post(core, fake, i) for i in range(2)]
        for task in tasks:
            with pytest.raises(
                UserHandlerError, match=r"must return a list of 2 results.*returned a list of 1"
            ):
                await task

    asyncio.run(main())


def test_a_handler_that_raises_fails_every_request_of_its_group() -> None:
    def broken(payloads: list[Any]) -> Any:
        raise UserHandlerError("ValueError: bad batch")

    async def main() -> None:
        clock, fake = ManualClock(), FakeCore()
        fake.reply = broken
        core = BatchingCore(fake, max_batch_size=3, batch_interval=1.0, clock=clock)
        tasks = [post(core, fake, i) for i in range(2)]
        await turns()
        await clock.advance(1.0)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [str(r) for r in results] == ["ValueError: bad batch"] * 2

    asyncio.run(main())


def test_a_request_cancelled_while_waiting_leaves_its_group_and_other_methods_are_not_batched() -> None:
    async def main() -> None:
        clock, fake = ManualClock(), FakeCore()
        core = BatchingCore(fake, max_batch_size=3, batch_interval=1.0, clock=clock)
        gone, kept = post(core, fake, 1), post(core, fake, 2)
        await turns()
        gone.cancel()
        await turns()
        assert await core.call_handler(fake.methods["GET"], {}, {}) == "got"  # at once, alone
        await clock.advance(1.0)
        assert await kept == 4 and fake.calls[-1]["payload"] == [2]

    asyncio.run(main())


def test_closing_calls_what_waits_at_once_and_refuses_later_requests() -> None:
    async def main() -> None:
        clock, fake = ManualClock(), FakeCore()
        core = BatchingCore(fake, max_batch_size=2, batch_interval=60.0, clock=clock)
        tasks = [post(core, fake, i) for i in range(3)]
        await turns()
        assert [c["payload"] for c in fake.calls] == [[0, 1]] and not tasks[2].done()
        await core.close(timeout=5.0)  # (the clock never moves: the interval is not waited out)
        assert [c["payload"] for c in fake.calls] == [[0, 1], [2]]
        assert [t.result() for t in tasks] == [0, 2, 4]
        with pytest.raises(ShuttingDownError, match="shutting down") as refused:
            await post(core, fake, 3)
        assert refused.value.status_code == 503 and len(fake.calls) == 2

    asyncio.run(main())


def test_a_group_still_running_when_closing_times_out_is_answered_with_a_503() -> None:
    async def main() -> None:
        clock, fake = ManualClock(), FakeCore()
        release = asyncio.Event()

        async def slow_call(method: Method, kwargs: dict[str, Any], used: dict[str, Any]) -> Any:
            fake.calls.append(kwargs)
            await release.wait()
            return kwargs["payload"]

        fake.call_handler = slow_call  # type: ignore[method-assign]
        core = BatchingCore(fake, max_batch_size=2, batch_interval=60.0, clock=clock)
        tasks = [post(core, fake, i) for i in range(2)]
        await turns()
        assert len(fake.calls) == 1
        await core.close(timeout=0)
        for task in tasks:
            with pytest.raises(ShuttingDownError, match="stopped before this request's batch finished"):
                await task

    asyncio.run(main())
