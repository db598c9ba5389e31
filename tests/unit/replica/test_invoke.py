"""Running handler methods: sync ones inline in reused greenlets, suspended while they wait."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from typing import Any

import pytest

from cortex_ray.clock import ManualClock
from cortex_ray.endpoint import Method
from cortex_ray.replica.invoke import (
    DEMOTE_AFTER,
    DEMOTE_AT_ONCE,
    DEMOTE_SHARE,
    DEMOTE_STRIKES,
    DEMOTE_WINDOW,
    INLINE_AFTER,
    INLINE_BUDGET,
    INLINE_WALL_BUDGET,
    Invoker,
    _Pace,
    await_in_handler,
    in_inline_handler,
)

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


class Handler:
    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.cold: dict[str, asyncio.Future[str]] = {}

    def handle_post(self, payload: dict[str, str]) -> dict[str, object]:
        self.threads.add(threading.get_ident())
        assert in_inline_handler()
        waited = None
        if payload.get("model"):  # a cold model: the handler waits for its load, off the loop's back
            waited = await_in_handler(self.cold[payload["model"]])
        if payload.get("fail"):
            raise ValueError("asked to fail")
        return {"waited": waited, "who": WHO.get()}


def test_sync_handlers_run_inline_and_others_go_on_while_one_waits() -> None:
    handler = Handler()
    method = Method.of(handler.handle_post, ("payload",))
    invoker = Invoker(threads=1, max_waiting=8, name="t", inline_after=0)  # inline from the first call

    async def one(who: str, model: str = "") -> object:
        WHO.set(who)  # each request's own context reaches its handler call
        return await invoker(method, {"payload": {"model": model}})

    async def main() -> None:
        loop_thread = threading.get_ident()
        load = handler.cold["m"] = asyncio.get_running_loop().create_future()
        slow = asyncio.create_task(one("slow", "m"))
        await asyncio.sleep(0)  # the slow request starts, and waits for its model
        assert len(handler.threads) == 1 and not slow.done()
        fast = [await one(f"fast{i}") for i in range(5)]  # served while the slow one waits
        assert [f["who"] for f in fast] == [f"fast{i}" for i in range(5)]  # type: ignore[index]
        assert not slow.done()  # still waiting for its model: nothing queued behind it
        load.set_result("loaded")
        assert await slow == {"waited": "loaded", "who": "slow"}
        assert handler.threads == {loop_thread}  # no thread hop
        with pytest.raises(ValueError, match="asked to fail"):
            await invoker(method, {"payload": {"fail": "yes"}})
        for _ in range(50):
            await one("again")
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


def test_a_failed_wait_is_raised_inside_the_handler_that_waited() -> None:
    seen: list[str] = []

    def handle(payload: asyncio.Future[str]) -> str:
        try:
            return str(await_in_handler(payload))
        except LookupError as exc:  # the handler may catch what the load raised
            seen.append(str(exc))
            raise

    invoker = Invoker(threads=1, max_waiting=2, name="t", inline_after=0)
    method = Method.of(handle, ("payload",))

    async def main() -> None:
        load: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        call = asyncio.create_task(invoker(method, {"payload": load}))
        await asyncio.sleep(0)
        load.set_exception(LookupError("no such model"))
        with pytest.raises(LookupError, match="no such model"):
            await call
        assert seen == ["no such model"]
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        done.set_result("fine")
        assert await invoker(method, {"payload": done}) == "fine"  # the greenlet pool still works

    asyncio.run(main())
    invoker.close()


def test_a_fast_method_runs_in_the_thread_at_first_then_inline() -> None:
    clock = ManualClock()
    where: list[bool] = []

    def handle(payload: float) -> None:
        where.append(in_inline_handler())
        clock.skip(payload)  # the call "takes" this long

    invoker = Invoker(threads=1, max_waiting=2, name="t", clock=clock)
    method = Method.of(handle, ("payload",))

    async def main() -> None:
        for _ in range(INLINE_AFTER + 3):
            await invoker(method, {"payload": INLINE_BUDGET / 2})

    asyncio.run(main())
    invoker.close()
    assert where == [False] * INLINE_AFTER + [True] * 3


def test_a_method_that_takes_its_time_never_runs_on_the_loop() -> None:
    clock = ManualClock()
    where: list[bool] = []

    def handle(payload: float) -> None:
        where.append(in_inline_handler())
        clock.skip(payload)

    invoker = Invoker(threads=1, max_waiting=2, name="t", clock=clock)
    method = Method.of(handle, ("payload",))

    async def main() -> None:
        waits = [INLINE_BUDGET / 2] * (INLINE_AFTER - 2) + [INLINE_BUDGET * 2] * 2  # two slow calls
        for wait in waits + [0.0] * 5:
            await invoker(method, {"payload": wait})

    asyncio.run(main())
    invoker.close()
    assert not any(where) and not invoker.runs_inline(method)


def test_one_slow_call_among_the_first_is_forgiven() -> None:
    """A first call that warms something up (or meets a garbage collection) does not keep a
    quick method off the loop for good."""
    clock = ManualClock()
    where: list[bool] = []

    def handle(payload: float) -> None:
        where.append(in_inline_handler())
        clock.skip(payload)

    invoker = Invoker(threads=1, max_waiting=2, name="t", clock=clock)
    method = Method.of(handle, ("payload",))

    async def main() -> None:
        for wait in [0.3] + [INLINE_BUDGET / 2] * (INLINE_AFTER - 1) + [0.0] * 3:
            await invoker(method, {"payload": wait})

    asyncio.run(main())
    invoker.close()
    assert where == [False] * INLINE_AFTER + [True] * 3


def test_an_inline_method_that_turns_slow_goes_back_to_the_thread_for_good(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    where: list[bool] = []
    cold: dict[str, asyncio.Future[str]] = {}

    def handle(payload: dict[str, Any]) -> None:
        where.append(in_inline_handler())
        if payload.get("model"):  # waiting for a model is no time on the loop
            await_in_handler(cold["m"])
        clock.skip(payload["ran"])

    invoker = Invoker(threads=1, max_waiting=2, name="t", clock=clock, inline_after=0)
    method = Method.of(handle, ("payload",))

    async def main() -> None:
        cold["m"] = asyncio.get_running_loop().create_future()
        waiting = asyncio.create_task(invoker(method, {"payload": {"model": "m", "ran": 0.0}}))
        await asyncio.sleep(0)
        await clock.advance(60)  # a minute of loading: the method stays inline
        cold["m"].set_result("loaded")
        await waiting
        assert invoker.runs_inline(method)
        slow = {"payload": {"ran": DEMOTE_AFTER * 3}}  # 30 ms on the loop
        for _ in range(DEMOTE_STRIKES - 1):  # slow now and then (a collection, stolen time): inline
            await invoker(method, slow)
            await clock.advance(DEMOTE_WINDOW)
        assert invoker.runs_inline(method)
        for _ in range(DEMOTE_STRIKES - 1):
            await invoker(method, slow)
            assert invoker.runs_inline(method)
            await clock.advance(DEMOTE_WINDOW / DEMOTE_STRIKES)
        await invoker(method, slow)  # slow again and again: back to the thread
        assert not invoker.runs_inline(method)
        for _ in range(INLINE_AFTER * 2):
            await invoker(method, {"payload": {"ran": 0.0}})

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    invoker.close()
    inline = 1 + 2 * (DEMOTE_STRIKES - 1) + 1  # (the cold call, the slow ones)
    assert where[:inline] == [True] * inline and not any(where[inline:])
    assert f"({DEMOTE_STRIKES} slow calls within 10 s)" in caplog.text
    assert "runs in the handler's thread from now on" in caplog.text


def test_slow_calls_rare_among_quick_ones_do_not_demote_unless_they_hold_the_loop_long() -> None:
    """Stolen time on a busy machine stretches a few calls of a trivial model past the budgets
    (three 60 ms calls among thousands within 10 s): it stays inline. Slow calls that are a
    share of the calls, or that together held the loop ``DEMOTE_AT_ONCE``, still demote."""
    clock = ManualClock()

    def handle(payload: float) -> None:
        clock.skip(payload)

    async def calls(invoker: Invoker, method: Method, quick: int, slow: float, rounds: int) -> None:
        for _ in range(rounds):
            for _ in range(quick):
                await invoker(method, {"payload": 0.0001})
            await invoker(method, {"payload": slow})
            await clock.advance(DEMOTE_WINDOW / (DEMOTE_STRIKES * 2))

    async def main() -> list[bool]:
        kept = []
        for quick, slow in ((1000, 0.06), (int(1 / DEMOTE_SHARE) // 2, 0.06), (1000, 0.2)):
            invoker = Invoker(threads=1, max_waiting=2, name="t", clock=clock, inline_after=0)
            method = Method.of(handle, ("payload",))
            await calls(invoker, method, quick, slow, DEMOTE_STRIKES)
            kept.append(invoker.runs_inline(method))
            invoker.close()
        return kept

    async def clustered() -> tuple[bool, bool]:  # three slow calls in a row, after 5 s of quick ones
        kept = []
        for seconds in (5, 0):
            invoker = Invoker(threads=1, max_waiting=2, name="t", clock=clock, inline_after=0)
            method = Method.of(handle, ("payload",))
            for _ in range(seconds):
                for _ in range(500):
                    await invoker(method, {"payload": 0.0001})
                await clock.advance(1.0)
            for _ in range(DEMOTE_STRIKES):
                await invoker(method, {"payload": 0.06})
            kept.append(invoker.runs_inline(method))
            invoker.close()
        return kept[0], kept[1]

    # rare and short: inline; a share of 2%: demoted; rare but 0.6 s of the loop in all: demoted
    assert asyncio.run(main()) == [True, False, False]
    # a stall that stretches three calls in a row after thousands: inline; the same from the start:
    # every call so far was slow, demoted
    assert asyncio.run(clustered()) == (True, False)


def test_one_call_that_holds_the_loop_long_is_enough() -> None:
    clock = ManualClock()
    where: list[bool] = []

    def handle(payload: float) -> None:
        where.append(in_inline_handler())
        clock.skip(payload)

    invoker = Invoker(threads=1, max_waiting=2, name="t", clock=clock, inline_after=0)
    method = Method.of(handle, ("payload",))

    async def main() -> None:
        await invoker(method, {"payload": DEMOTE_AT_ONCE * 0.9})
        assert invoker.runs_inline(method)
        await invoker(method, {"payload": DEMOTE_AT_ONCE * 1.1})
        assert not invoker.runs_inline(method)
        await invoker(method, {"payload": 0.0})

    asyncio.run(main())
    invoker.close()
    assert where == [True, True, False]


def test_one_handler_thread_means_one_call_at_a_time_inline_or_in_the_thread() -> None:
    clock = ManualClock()
    gate = threading.Event()
    running: list[str] = []
    seen_running: list[list[str]] = []

    def slow(payload: str) -> None:
        running.append("slow")
        clock.skip(1.0)  # long: demoted to the thread after its first call
        if payload == "hold":
            gate.wait(10)
        running.remove("slow")

    inline: list[bool] = []

    def fast(payload: str) -> str:
        seen_running.append(list(running))
        inline.append(in_inline_handler())
        return payload

    invoker = Invoker(threads=1, max_waiting=4, name="t", clock=clock, inline_after=0)
    slow_method, fast_method = Method.of(slow, ("payload",)), Method.of(fast, ("payload",))

    async def main() -> None:
        await invoker(slow_method, {"payload": "first"})
        assert not invoker.runs_inline(slow_method) and invoker.runs_inline(fast_method) is False
        await invoker(fast_method, {"payload": "warm"})
        assert invoker.runs_inline(fast_method)
        held = asyncio.create_task(invoker(slow_method, {"payload": "hold"}))  # in the thread
        for _ in range(500):
            if running:
                break
            await asyncio.sleep(0.001)
        assert running == ["slow"]
        quick = asyncio.create_task(invoker(fast_method, {"payload": "during"}))
        await asyncio.sleep(0.05)
        assert not quick.done()  # it waits for the slot: never beside the running call
        gate.set()
        assert await quick == "during"
        await held
        assert invoker.runs_inline(fast_method)

    asyncio.run(main())
    invoker.close()
    assert seen_running == [[], []]
    assert inline == [True, True]  # (and then it ran inline: not sent to the thread)


def test_a_call_that_finds_the_slot_taken_by_the_thread_waits_and_runs_inline() -> None:
    """Calls still in the thread when the method turns inline hold the slot for a while: calls
    arriving meanwhile wait for it and run inline. (Sent to the thread, each would take the slot
    for the next to find taken: under steady load the method would never run inline again.)"""
    clock = ManualClock()
    gates = {"a": threading.Event(), "b": threading.Event()}
    where: list[tuple[str, bool]] = []

    def handle(payload: str) -> str:
        where.append((payload, in_inline_handler()))
        if payload in gates:
            gates[payload].wait(10)
        return payload

    invoker = Invoker(threads=1, max_waiting=8, name="t", clock=clock, inline_after=1)
    method = Method.of(handle, ("payload",))

    async def until(count: int) -> None:
        for _ in range(1000):
            if len(where) >= count:
                return
            await asyncio.sleep(0.001)
        raise AssertionError(f"no call {count}: {where}")

    async def main() -> None:
        a = asyncio.create_task(invoker(method, {"payload": "a"}))  # in the thread, timed
        await until(1)
        b = asyncio.create_task(invoker(method, {"payload": "b"}))  # in the thread too, after a
        await asyncio.sleep(0.01)
        gates["a"].set()
        await a
        assert invoker.runs_inline(method)  # (its first call was quick)
        await until(2)  # b runs in the thread, holding the slot
        later = [asyncio.create_task(invoker(method, {"payload": str(i)})) for i in range(3)]
        await asyncio.sleep(0.02)
        assert not any(t.done() for t in later)
        gates["b"].set()
        assert [await t for t in [b, *later]] == ["b", "0", "1", "2"]

    asyncio.run(main())
    invoker.close()
    assert where == [("a", False), ("b", False), ("0", True), ("1", True), ("2", True)]


def test_waiting_for_the_loop_to_hand_over_a_model_is_not_the_methods_time() -> None:
    from cortex_ray.replica.slots import HandlerSlots

    clock = ManualClock()
    slots = HandlerSlots(1, clock)

    def method() -> str:
        clock.skip(0.001)  # its own work
        with slots.untimed():  # the loop answering get_model (busy: 50 ms), the slot kept
            clock.skip(0.050)
        return "ok"

    result, ran, _ = slots.run_timed(method)
    assert result == "ok" and ran == pytest.approx(0.001)
    with slots.untimed():  # outside a timed call: nothing to leave out
        clock.skip(1.0)
    assert slots.run_timed(lambda: "again")[1] == pytest.approx(0.0)


class CpuClock(ManualClock):
    """A manual clock whose threads' CPU time moves on its own (``cpu``)."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu = 0.0

    def thread_time(self) -> float:
        return self.cpu


@pytest.mark.parametrize(
    ("wall", "cpu", "inline"),
    [
        (0.010, 0.0005, True),  # quick, but its calls wait for the GIL (a busy loop): inline
        (0.200, 0.0005, False),  # waits on something else (a socket, a sleep): stays in the thread
        (0.004, 0.004, False),  # works longer than the budget: stays in the thread
    ],
)
def test_cpu_time_decides_whether_a_method_runs_inline(wall: float, cpu: float, inline: bool) -> None:
    clock = CpuClock()
    where: list[bool] = []

    def handle() -> None:
        where.append(in_inline_handler())
        clock.skip(wall)
        clock.cpu += cpu

    invoker = Invoker(threads=1, max_waiting=2, name="t", clock=clock)
    method = Method.of(handle, ())

    async def main() -> None:
        for _ in range(INLINE_AFTER + 2):
            await invoker(method, {})

    asyncio.run(main())
    invoker.close()
    assert where[-2:] == [inline, inline]


class _BusyMachine(ManualClock):
    """A clock whose process gets no CPU while the wall clock moves: the machine is busy
    elsewhere (other processes), or the call waits."""

    def thread_time(self) -> float:
        return 0.0


def test_a_loaded_machine_stretching_inline_calls_does_not_demote_but_a_long_wait_does() -> None:
    clock = _BusyMachine()
    where: list[bool] = []

    def handle(payload: float) -> None:
        where.append(in_inline_handler())
        clock.skip(payload)

    invoker = Invoker(threads=1, max_waiting=2, name="t", clock=clock, inline_after=0)
    method = Method.of(handle, ("payload",))

    async def main() -> None:
        await invoker(method, {"payload": 0.0})
        for _ in range(DEMOTE_STRIKES * 3):  # 30 ms each, none of it the loop thread's CPU
            await invoker(method, {"payload": DEMOTE_AFTER * 3})
        assert invoker.runs_inline(method)
        for _ in range(DEMOTE_STRIKES):  # waits longer than a quick method's wall budget
            await invoker(method, {"payload": INLINE_WALL_BUDGET * 1.5})
        assert not invoker.runs_inline(method)

    asyncio.run(main())
    invoker.close()
    assert where == [True] * (1 + DEMOTE_STRIKES * 4)


def test_a_call_cancelled_while_it_waits_for_the_slot_after_a_model_gives_back_nothing() -> None:
    """An inline call waits for a model (the slot given back), a call in the thread takes the
    slot, the model arrives, and the inline call, waiting for the slot again, is cancelled (its
    client went away): it must not give back the slot the thread holds."""
    clock = ManualClock()
    gate = threading.Event()
    running: list[str] = []
    overlaps: list[list[str]] = []
    cold: dict[str, asyncio.Future[str]] = {}

    def inline(payload: str) -> str:
        overlaps.append(list(running))
        if payload == "cold":
            await_in_handler(cold["m"])
        return payload

    def slow(payload: str) -> str:
        running.append("slow")
        gate.wait(10)
        running.remove("slow")
        return payload

    invoker = Invoker(threads=1, max_waiting=8, name="t", clock=clock, inline_after=0)
    inline_method, slow_method = Method.of(inline, ("payload",)), Method.of(slow, ("payload",))

    async def main() -> None:
        invoker._paces[slow_method] = _Pace(inline=False)  # (a demoted method: in the thread)
        invoker._paces[slow_method].demoted = True
        cold["m"] = asyncio.get_running_loop().create_future()
        waiting = asyncio.create_task(invoker(inline_method, {"payload": "cold"}))
        await asyncio.sleep(0)
        assert not waiting.done() and invoker.slots.try_take()  # (the slot is free while it waits)
        invoker.slots.give_back()
        held = asyncio.create_task(invoker(slow_method, {"payload": "held"}))
        for _ in range(1000):
            if running:
                break
            await asyncio.sleep(0.001)
        cold["m"].set_result("loaded")
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()  # it waits for the slot the thread holds
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not invoker.slots.try_take()  # the thread still holds it
        gate.set()
        assert await held == "held"
        assert await invoker(inline_method, {"payload": "after"}) == "after"
        assert invoker.slots.try_take() and not invoker.slots.try_take()  # one slot, free again
        invoker.slots.give_back()

    asyncio.run(main())
    invoker.close()
    assert overlaps == [[], []]
