"""The replica's subscription to its reloader, on a scripted fake reloader and a manual clock.

No Ray: the fake plays the actor (its methods are reached as ``.remote(...)``, as on a Ray
actor handle) and :class:`FakeServe` plays ``serve.get_deployment_actor`` (``ValueError``
while no reloader exists). Time moves only by ``ManualClock.advance``; the tests wait for
conditions (a bounded number of event-loop turns), never for time.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator
from typing import Any

import pytest

from cortex_ray.clock import ManualClock
from cortex_ray.errors import DeploymentError
from cortex_ray.metrics.recorder import MemorySink, recorder
from cortex_ray.models.delta import TreeDelta, delta_between
from cortex_ray.models.tree import ModelInfo, ModelTree
from cortex_ray.reload import subscriber as subscriber_module
from cortex_ray.reload.deltas import DeltaLog
from cortex_ray.reload.subscriber import (
    LONG_POLL_TIMEOUT,
    REPORT_EVERY,
    RESEND_EVERY,
    STATUS_TTL,
    Subscriber,
)

ME: dict[str, Any] = {"replica": "replica-1", "node_id": "", "pid": 1}


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Who this replica is, without asking Ray; metrics in memory whatever runs in this process
    (the whole suite runs these after the integration tests' Ray); and no test starts a Ray."""
    monkeypatch.setattr(subscriber_module, "replica_identity", lambda: dict(ME))
    monkeypatch.setattr(recorder(), "_sink", MemorySink())
    running = _ray_running()
    yield
    assert _ray_running() == running


# --- the fakes -------------------------------------------------------------------------------


class RecordingClock(ManualClock):
    """A manual clock that remembers every sleep asked of it (the subscriber's backoff; the
    fake reloader's long-poll timers are not recorded)."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await super().sleep(seconds)


class Remote:
    """One actor method: ``method.remote(*args)`` returns an awaitable, as Ray's does."""

    def __init__(self, fn: Callable[..., Coroutine[Any, Any, Any]]) -> None:
        self._fn = fn

    def remote(self, *args: Any) -> Awaitable[Any]:
        return self._fn(*args)


class FakeReloader:
    """One incarnation of the reloader actor (a restart is a new one, with a new epoch)."""

    def __init__(self, clock: ManualClock, epoch: str) -> None:
        self.clock = clock
        self.epoch = epoch
        self.version = 0
        self.tree: ModelTree | None = None
        self.dead = False
        self.broken: dict[str, Exception] = {}
        """Method name (or ``*``) -> the error its calls raise."""
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.seeds: list[ModelTree] = []
        self.seed_promised = False
        self.reports: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        self.lag = {"lag_versions": 0, "lag_seconds": 0.0}
        self.last_error: str | None = None
        self.status_gate: asyncio.Event | None = None
        self.cancelled_polls = 0
        self.waiting = 0
        """Long polls waiting now (on a change, or on the clock for their timeout)."""
        self.deltas: DeltaLog | None = None
        """With a log, long polls answer with deltas as ModelReloader's do (else whole trees)."""
        self._changed = asyncio.Event()
        self.snapshot = Remote(self._snapshot)
        self.seed = Remote(self._seed)
        self.wants_seed = Remote(self._wants_seed)
        self.report = Remote(self._report)
        self.status = Remote(self._status)
        self.replicas = Remote(self._replicas)

    # scripting

    def publish(self, tree: ModelTree) -> None:
        if self.deltas is not None:
            self.deltas.append(self.version + 1, delta_between(self.tree or ModelTree(), tree))
        self.tree, self.version = tree, self.version + 1
        self._wake()

    def kill(self) -> None:
        """The actor dies: pending and later calls raise."""
        self.dead = True
        self._wake()

    def break_calls(self, error: Exception, *methods: str) -> None:
        """Calls to ``methods`` (all of them by default) raise ``error``; pending long polls too."""
        for method in methods or ("*",):
            self.broken[method] = error
        self._wake()

    def heal(self) -> None:
        self.broken.clear()

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    def polling(self, n: int) -> bool:
        """Whether the ``n``-th long poll came and waits (time may move on)."""
        return self.count("snapshot") == n and self.waiting == 1

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _enter(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        self._check(method)

    def _check(self, method: str) -> None:
        if self.dead:
            raise RuntimeError(f"ActorDiedError: reloader {self.epoch} died")
        error = self.broken.get(method) or self.broken.get("*")
        if error is not None:
            raise error

    # the actor's methods (as ModelReloader answers them)

    async def _snapshot(self, epoch: str | None, known: int, timeout: float) -> dict[str, Any] | None:
        self._enter("snapshot", epoch, known, timeout)
        deadline = self.clock.monotonic() + timeout
        while self.tree is None or (epoch == self.epoch and known == self.version):
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                return None
            changed = asyncio.ensure_future(self._changed.wait())
            timer = asyncio.ensure_future(ManualClock.sleep(self.clock, remaining))  # not recorded
            try:
                await asyncio.sleep(0)  # the timer's first step: it sleeps on the clock from now on
                self.waiting += 1
                await asyncio.wait([changed, timer], return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                self.cancelled_polls += 1
                raise
            finally:
                self.waiting -= int(self.waiting > 0)
                changed.cancel()
                timer.cancel()
            self._check("snapshot")
        delta = self.deltas.since(known, self.version) if self.deltas and epoch == self.epoch else None
        if delta is not None:
            return {"epoch": self.epoch, "version": self.version, "base": known, "delta": delta}
        return {"epoch": self.epoch, "version": self.version, "tree": self.tree}

    async def _wants_seed(self) -> bool:
        self._enter("wants_seed")
        self._check("wants_seed")
        promised, self.seed_promised = self.seed_promised, True
        return self.tree is None and not promised

    async def _seed(self, tree: ModelTree) -> bool:
        self._enter("seed", tree)
        self.seeds.append(tree)
        return self.tree is None

    async def _report(self, meta: dict[str, Any], summary: dict[str, Any] | None) -> dict[str, float]:
        self._enter("report", meta, summary)
        self.reports.append((meta, summary))
        return dict(self.lag)

    async def _status(self) -> dict[str, Any]:
        self._enter("status")
        if self.status_gate is not None:
            await self.status_gate.wait()
        return {"epoch": self.epoch, "version": self.version, "last_error": self.last_error}

    async def _replicas(self) -> dict[str, dict[str, Any]]:
        self._enter("replicas")
        return {str(meta["replica"]): {**meta, **(summary or {})} for meta, summary in self.reports}


class FakeServe:
    """``serve.get_deployment_actor``: the live reloader, or ``ValueError`` while there is none."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.actor: FakeReloader | None = None
        self.finds = 0
        self._epochs = 0

    def start_reloader(self) -> FakeReloader:
        self._epochs += 1
        self.actor = FakeReloader(self.clock, f"epoch-{self._epochs}")
        return self.actor

    def restart_reloader(self) -> FakeReloader:
        assert self.actor is not None
        self.actor.kill()
        return self.start_reloader()

    def find(self) -> FakeReloader:
        self.finds += 1
        if self.actor is None:
            raise ValueError("Failed to look up actor 'reloader'")
        return self.actor


# --- helpers ---------------------------------------------------------------------------------


def tree(*names: str) -> ModelTree:
    return ModelTree(models={n: ModelInfo(n, f"mem://m/{n}/", versioned=True) for n in names})


async def until(condition: Callable[[], bool], what: str, turns: int = 200) -> None:
    """Let the event loop run until ``condition`` holds (a bounded number of turns)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def settle() -> None:
    """Let every runnable coroutine run up to its next wait."""
    for _ in range(20):
        await asyncio.sleep(0)


class Replica:
    """A subscriber wired as the replica wires it: it applies trees and knows what it holds."""

    def __init__(self, serve: FakeServe, clock: ManualClock) -> None:
        self.clock = clock
        self.applied: list[ModelTree] = []
        self.changed: list[list[str] | None] = []
        """With each tree applied: the models a delta changed (``None``: a whole tree)."""
        self.held: ModelTree | None = None
        self.fail_next: list[Exception] = []
        self.sub = Subscriber("api", self.on_tree, lambda: self.held, find_actor=serve.find, clock=clock)

    def on_tree(self, new: ModelTree, changed: Collection[str] | None = None) -> None:
        self.applied.append(new)
        self.changed.append(None if changed is None else sorted(changed))
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.held = new

    async def started(self, summary: Callable[[], dict[str, Any]] | None = None) -> None:
        self.held = await self.sub.initial_tree()
        self.sub.start(summary)
        loops = 1 if summary is None else 2
        await until(lambda: self.clock.sleepers == loops, "the long poll (and the report loop) waiting")

    async def lost(self) -> None:
        """Wait until the watch lost the reloader and sleeps its backoff."""
        await until(
            lambda: self.sub.info()["last_error"] is not None and self.clock.sleepers == 1, "the backoff"
        )


async def report_tick(clock: ManualClock, actor: FakeReloader) -> dict[str, Any] | None:
    """Let the report loop (asleep, beside the long poll) send its next report; what it sent."""
    reports = actor.count("report")
    await until(lambda: clock.sleepers == 2, "the report loop waiting")
    await clock.advance(REPORT_EVERY)
    await until(lambda: actor.count("report") == reports + 1, "a report")
    summary: dict[str, Any] | None = [args for name, args in actor.calls if name == "report"][-1][1]
    return summary


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


# --- the initial tree ------------------------------------------------------------------------


def test_initial_tree_waits_for_the_first_listing_and_skips_on_tree() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        replica = Replica(serve, clock)
        waiting = asyncio.ensure_future(replica.sub.initial_tree())
        await until(lambda: actor.polling(1), "the first long poll")
        assert actor.calls[0] == ("snapshot", (None, -1, 10.0))
        await clock.advance(10)  # the reloader's first listing takes longer than one poll
        await until(lambda: clock.sleepers == 1 and not waiting.done(), "the pause between polls")
        await clock.advance(0.5)
        await until(lambda: actor.polling(2), "the second long poll")
        first = tree("a")
        actor.publish(first)
        assert await waiting is first
        assert replica.applied == []  # the initial tree is the replica's to load, not a change
        info = replica.sub.info()
        assert (info["epoch"], info["tree_version"], info["updates"]) == ("epoch-1", 1, 1)
        assert info["last_update"] == clock.time() and info["last_error"] is None
        assert actor.seeds == []

    run(main)


def test_initial_tree_times_out_naming_the_reloaders_error() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.last_error = "StorageAccessDeniedError: s3://bucket/models/: access denied"
        sub = Subscriber("api", lambda t: None, find_actor=serve.find, clock=clock)
        waiting = asyncio.ensure_future(sub.initial_tree(timeout=30))
        for _ in range(200):
            if waiting.done():
                break
            await clock.advance(0.5)
        with pytest.raises(DeploymentError, match="access denied"):
            await waiting
        assert actor.count("status") == 1
        assert clock.monotonic() >= 1000 + 30

    run(main)


def test_initial_tree_times_out_when_no_reloader_exists() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)  # no reloader, ever
        sub = Subscriber("api", lambda t: None, find_actor=serve.find, clock=clock)
        waiting = asyncio.ensure_future(sub.initial_tree(timeout=5))
        for _ in range(200):
            if waiting.done():
                break
            await clock.advance(0.25)
        with pytest.raises(DeploymentError, match="ValueError: Failed to look up actor"):
            await waiting
        assert serve.finds > 10  # it kept looking until its deadline
        assert sub.info()["epoch"] is None

    run(main)


# --- following the reloader ------------------------------------------------------------------


def test_published_trees_reach_on_tree_in_order() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.publish(tree("a"))
        replica = Replica(serve, clock)
        await replica.started()
        await until(lambda: actor.polling(2), "the watch's long poll")
        assert actor.calls[-1] == ("snapshot", ("epoch-1", 1, LONG_POLL_TIMEOUT))
        await clock.advance(LONG_POLL_TIMEOUT)  # nothing new: the poll times out, and starts again
        await until(lambda: actor.polling(3), "the next long poll")
        assert replica.applied == [] and replica.sub.info()["updates"] == 1
        second, third = tree("a", "b"), tree("b")
        actor.publish(second)
        await until(lambda: len(replica.applied) == 1, "the second tree")
        actor.publish(third)
        await until(lambda: len(replica.applied) == 2, "the third tree")
        assert replica.applied == [second, third]
        info = replica.sub.info()
        assert (info["epoch"], info["tree_version"], info["updates"]) == ("epoch-1", 3, 3)
        assert info["connected"] is True and info["last_error"] is None
        assert info["last_update"] == clock.time()
        await until(lambda: actor.calls[-1] == ("snapshot", ("epoch-1", 3, LONG_POLL_TIMEOUT)), "poll v3")
        assert actor.seeds == []
        await replica.sub.stop()

    run(main)


def test_a_tree_that_fails_to_apply_is_fetched_again() -> None:
    async def main() -> None:
        clock = RecordingClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.publish(tree("a"))
        replica = Replica(serve, clock)
        await replica.started()
        await until(lambda: actor.polling(2), "the watch's long poll")
        replica.fail_next.append(OSError("disk full"))
        second = tree("a", "b")
        actor.publish(second)
        await until(lambda: len(replica.applied) == 1, "the first try")
        info = replica.sub.info()
        assert info["tree_version"] == 1 and info["updates"] == 1  # not taken: still on version 1
        assert info["last_error"] == "OSError: disk full"
        await clock.advance(0.2)
        await until(lambda: len(replica.applied) == 2, "the second try")
        assert replica.applied == [second, second] and replica.held is second
        snapshots = [args for name, args in actor.calls if name == "snapshot"]
        assert snapshots[1:3] == [("epoch-1", 1, LONG_POLL_TIMEOUT)] * 2  # asked again after v1
        info = replica.sub.info()
        assert (info["tree_version"], info["updates"], info["last_error"]) == (2, 2, None)
        await replica.sub.stop()

    run(main)


def test_a_restarted_reloader_is_seeded_once_and_followed() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        old = serve.start_reloader()
        first = tree("a")
        old.publish(first)
        replica = Replica(serve, clock)
        await replica.started()
        await until(lambda: old.polling(2), "the watch's long poll")
        new = serve.restart_reloader()
        await replica.lost()
        await clock.advance(0.2)  # the first backoff
        await until(lambda: new.polling(1), "the long poll on the new reloader")
        assert new.seeds == [first]  # our baseline, before its first listing
        assert [name for name, _ in new.calls[:2]] == ["wants_seed", "seed"]
        assert new.calls[2] == ("snapshot", ("epoch-1", 1, LONG_POLL_TIMEOUT))
        relisted = tree("a", "c")
        new.publish(relisted)  # version 1 again, but of a new epoch: a new tree all the same
        await until(lambda: len(replica.applied) == 1, "the new reloader's tree")
        assert replica.applied == [relisted]
        info = replica.sub.info()
        assert (info["epoch"], info["tree_version"], info["connected"]) == ("epoch-2", 1, True)
        newer = tree("c")
        new.publish(newer)
        await until(lambda: len(replica.applied) == 2 and new.polling(3), "the new reloader's next tree")
        await clock.advance(LONG_POLL_TIMEOUT)
        await until(lambda: new.polling(4), "a timed-out poll and the next")
        assert replica.applied == [relisted, newer]
        assert new.seeds == [first] and old.seeds == []
        await replica.sub.stop()

    run(main)


def test_a_reloader_resolved_elsewhere_during_the_backoff_is_still_seeded() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        old = serve.start_reloader()
        first = tree("a")
        old.publish(first)
        replica = Replica(serve, clock)
        await replica.started()
        await until(lambda: old.polling(2), "the watch's long poll")
        new = serve.restart_reloader()
        await replica.lost()
        await replica.sub.reloader_status()  # an /info call finds the new reloader first
        assert new.count("status") == 1
        await clock.advance(0.2)
        await until(lambda: new.polling(1), "the long poll on the new reloader")
        assert new.seeds == [first]
        await replica.sub.stop()

    run(main)


def test_unreachable_reloader_backs_off_keeps_serving_and_reconnects() -> None:
    async def main() -> None:
        clock = RecordingClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        first = tree("a")
        actor.publish(first)
        replica = Replica(serve, clock)
        await replica.started()
        await until(lambda: actor.polling(2), "the watch's long poll")
        clock.slept.clear()
        actor.break_calls(ConnectionError("reloader unreachable"))
        backoffs = [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]

        def backing_off(n: int) -> Callable[[], bool]:
            return lambda: len(clock.slept) == n and clock.sleepers == 1

        for i, delay in enumerate(backoffs):
            await until(backing_off(i + 1), f"backoff {i}")
            assert clock.slept[-1] == pytest.approx(delay)
            info = replica.sub.info()
            assert info["connected"] is False
            assert info["last_error"] == "ConnectionError: reloader unreachable"
            await clock.advance(delay)
        await until(lambda: len(clock.slept) == len(backoffs) + 1 and clock.sleepers == 1, "the cap")
        assert clock.slept == pytest.approx([*backoffs, 5.0])
        assert actor.count("wants_seed") == len(backoffs)  # every reconnection offers the baseline again
        assert replica.applied == [] and replica.held is first  # serving what it holds
        assert replica.sub.info()["tree_version"] == 1
        actor.heal()
        await clock.advance(5.0)
        await until(lambda: actor.calls[-1][0] == "snapshot" and actor.waiting == 1, "reconnected")
        second = tree("b")
        actor.publish(second)
        await until(lambda: len(replica.applied) == 1, "the next tree")
        info = replica.sub.info()
        assert (info["connected"], info["last_error"], info["tree_version"]) == (True, None, 2)
        clock.slept.clear()
        actor.break_calls(ConnectionError("again"))  # a success resets the backoff
        await until(lambda: len(clock.slept) == 1, "the first backoff again")
        assert clock.slept == [pytest.approx(0.2)]
        await replica.sub.stop()

    run(main)


def test_missing_reloader_is_looked_up_again_until_it_is_back() -> None:
    async def main() -> None:
        clock = RecordingClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        first = tree("a")
        actor.publish(first)
        replica = Replica(serve, clock)
        await replica.started()
        await until(lambda: actor.polling(2), "the watch's long poll")
        clock.slept.clear()
        actor.kill()
        serve.actor = None  # Serve has not recreated it yet: lookups raise ValueError
        await replica.lost()
        for _ in range(int(75 / 0.25)):
            await clock.advance(0.25)
        backoffs = [s for s in clock.slept if s != 0.25]
        assert backoffs == pytest.approx([0.2, 0.4, 0.8])  # after each 30 s of lookups, a longer pause
        assert clock.slept.count(0.25) > 200  # looked up every 0.25 s meanwhile
        info = replica.sub.info()
        assert info["connected"] is False and info["last_error"].startswith("ValueError: Failed to look up")
        assert replica.held is first and replica.applied == []
        new = serve.start_reloader()
        for _ in range(8):
            await clock.advance(0.25)
        await until(lambda: new.polling(1), "the long poll on the recreated reloader")
        assert new.seeds == [first]
        new.publish(tree("a", "b"))
        await until(lambda: len(replica.applied) == 1, "the recreated reloader's tree")
        assert replica.sub.info()["epoch"] == "epoch-2"
        await replica.sub.stop()

    run(main)


# --- reports ---------------------------------------------------------------------------------


def test_reports_carry_the_summary_only_when_changed_or_due() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.publish(tree("a"))
        actor.lag = {"lag_versions": 3, "lag_seconds": 1.5}
        held = {"in_memory": ["a"], "on_disk": ["a"], "memory_bytes": 10, "disk_bytes": 20}
        replica = Replica(serve, clock)
        await replica.started(lambda: dict(held))
        assert await report_tick(clock, actor) == held
        me = ME["replica"]
        assert actor.reports[-1][0] == {**ME, "epoch": "epoch-1", "tree_version": 1}
        sink = recorder().sink
        assert isinstance(sink, MemorySink)  # (the fixture's)
        assert sink.get("cortex_ray_replica_tree_lag_versions", api_name="api", replica=me) == 3
        assert sink.get("cortex_ray_replica_tree_lag_seconds", api_name="api", replica=me) == 1.5
        assert sink.get("cortex_ray_cache_bytes", api_name="api", tier="disk", replica=me) == 20
        assert await report_tick(clock, actor) is None  # unchanged: a heartbeat only
        held["in_memory"] = ["a", "b"]
        assert await report_tick(clock, actor) == held  # changed: in full
        sent = clock.monotonic()
        beats = []
        while clock.monotonic() - sent <= RESEND_EVERY:
            beats.append(await report_tick(clock, actor))
        assert beats[:-1] == [None] * (len(beats) - 1) and len(beats) > 10
        assert beats[-1] == held  # unchanged, but due: in full again
        assert await report_tick(clock, actor) is None
        await replica.sub.stop()

    run(main)


def test_a_failed_report_is_followed_by_a_full_one() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.publish(tree("a"))
        held = {"in_memory": ["a"]}
        replica = Replica(serve, clock)
        await replica.started(lambda: dict(held))
        assert await report_tick(clock, actor) == held
        assert await report_tick(clock, actor) is None
        actor.break_calls(RuntimeError("reloader restarting"), "report")
        assert await report_tick(clock, actor) is None  # this one fails
        actor.heal()
        assert await report_tick(clock, actor) == held  # the reloader may have lost it: in full
        assert await report_tick(clock, actor) is None
        assert [s for _, s in actor.reports] == [held, None, held, None]
        assert replica.sub.info()["last_error"] is None  # a failed report is no watch error
        await replica.sub.stop()

    run(main)


# --- status, reports of others, stop ---------------------------------------------------------


def test_reloader_status_is_one_call_for_concurrent_callers_and_cached() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.publish(tree("a"))
        replica = Replica(serve, clock)
        await replica.started()
        actor.status_gate = asyncio.Event()
        callers = [asyncio.ensure_future(replica.sub.reloader_status()) for _ in range(3)]
        await until(lambda: actor.count("status") == 1, "the status call")
        await settle()
        assert actor.count("status") == 1 and not any(c.done() for c in callers)
        actor.status_gate.set()
        answers = await asyncio.gather(*callers)
        assert answers[0]["version"] == 1 and all(a is answers[0] for a in answers)
        await clock.advance(STATUS_TTL - 0.5)
        assert await replica.sub.reloader_status() == answers[0]
        assert actor.count("status") == 1  # cached
        await clock.advance(0.5)
        assert (await replica.sub.reloader_status())["version"] == 1
        assert actor.count("status") == 2  # expired
        actor.publish(tree("a", "b"))
        await until(lambda: len(replica.applied) == 1, "a new tree")
        assert (await replica.sub.reloader_status())["version"] == 2  # never older than our tree
        assert actor.count("status") == 3
        await replica.sub.stop()

    run(main)


def test_reloader_status_reports_an_unreachable_reloader() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.break_calls(ConnectionError("refused"), "status")
        sub = Subscriber("api", lambda t: None, find_actor=serve.find, clock=clock)
        assert await sub.reloader_status() == {"error": "reloader unavailable: ConnectionError: refused"}

    run(main)


def test_replica_reports_are_the_reloaders() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.reports.append(({"replica": "r1", "tree_version": 4}, {"in_memory": ["a"]}))
        sub = Subscriber("api", lambda t: None, find_actor=serve.find, clock=clock)
        assert await sub.replica_reports() == {"r1": {"replica": "r1", "tree_version": 4, "in_memory": ["a"]}}

    run(main)


def test_stop_cancels_both_loops() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.publish(tree("a"))
        replica = Replica(serve, clock)
        await replica.started(lambda: {"in_memory": ["a"]})
        await report_tick(clock, actor)
        await until(lambda: clock.sleepers == 2 and actor.polling(2), "both loops waiting")
        await replica.sub.stop()
        await until(lambda: actor.cancelled_polls == 1, "the long poll cancelled")
        calls = len(actor.calls)
        for _ in range(20):
            await clock.advance(5.0)
        actor.publish(tree("b"))
        await settle()
        assert len(actor.calls) == calls and replica.applied == []
        assert clock.sleepers == 0

    run(main)


def test_connected_from_the_start_and_a_tree_that_fails_to_apply_is_not_a_lost_reloader() -> None:
    async def main() -> None:
        clock = RecordingClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.publish(tree("a"))
        replica = Replica(serve, clock)
        await replica.started()
        assert replica.sub.info()["connected"] is True  # not only once a 30 s long poll returned
        replica.fail_next.append(OSError("disk full"))
        actor.publish(tree("a", "b"))
        await until(lambda: len(replica.applied) == 1, "the failed try")
        assert replica.sub.info()["connected"] is True and actor.count("seed") == 0  # nothing re-seeded
        await clock.advance(0.2)
        await until(lambda: replica.held is not None and len(replica.held.models) == 2, "applied again")
        await replica.sub.stop()

    run(main)


def test_a_status_asked_before_a_new_tree_is_not_cached_after_it() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.publish(tree("a"))
        replica = Replica(serve, clock)
        await replica.started()
        actor.status_gate = asyncio.Event()
        asked = asyncio.ensure_future(replica.sub.reloader_status())
        await until(lambda: actor.count("status") == 1, "the status call")
        actor.publish(tree("a", "b"))
        await until(lambda: len(replica.applied) == 1, "the new tree")
        actor.status_gate.set()
        await asked  # (answered with what it got)
        assert (await replica.sub.reloader_status())["version"] == 2  # asked again, not the stale one
        assert actor.count("status") == 2
        await replica.sub.stop()

    run(main)


def test_stop_returns_once_both_loops_ended() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.publish(tree("a"))
        replica = Replica(serve, clock)
        await replica.started(lambda: {"in_memory": ["a"]})
        await replica.sub.stop()
        assert replica.sub._task is not None and replica.sub._task.done()
        assert replica.sub._report_task is not None and replica.sub._report_task.done()

    run(main)


def test_after_the_first_tree_a_replica_gets_only_what_changed() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.deltas = DeltaLog()
        first = tree("a", "b", "c")
        actor.publish(first)
        replica = Replica(serve, clock)
        await replica.started()
        await until(lambda: actor.polling(2), "the watch's long poll")
        second = ModelTree({**first.models, "d": tree("d").models["d"]})  # a, b, c: the same objects
        actor.publish(second)
        await until(lambda: len(replica.applied) == 1, "the change")
        third = ModelTree({n: m for n, m in second.models.items() if n != "a"})
        actor.publish(third)
        await until(lambda: len(replica.applied) == 2, "the removal")
        assert replica.changed == [["d"], ["a"]]  # the models each delta carried, no more
        assert replica.applied == [second, third] and replica.held == third
        assert replica.held.models["b"] is first.models["b"]  # unchanged models: the objects held
        info = replica.sub.info()
        assert (info["tree_version"], info["updates"], info["deltas"]) == (3, 3, 2)
        await replica.sub.stop()

    run(main)


def test_a_delta_for_another_base_is_refused_and_the_whole_tree_fetched() -> None:
    async def main() -> None:
        clock = RecordingClock()
        serve = FakeServe(clock)
        actor = serve.start_reloader()
        actor.deltas = DeltaLog()
        actor.publish(tree("a"))
        replica = Replica(serve, clock)
        await replica.started()
        await until(lambda: actor.polling(2), "the watch's long poll")
        wrong = {"epoch": "epoch-1", "version": 5, "base": 4, "delta": TreeDelta({"z": None})}
        with pytest.raises(RuntimeError, match="a delta from tree version 4, but this replica holds 1"):
            replica.sub._take(wrong)
        assert replica.applied == [] and replica.sub.version == -1  # nothing applied; asks for all
        actor.publish(tree("a", "b"))  # the poll waiting (from version 1) gets a delta: refused too
        await until(lambda: clock.slept == [0.2], "the backoff after the refusal")
        await clock.advance(0.2)
        await until(lambda: len(replica.applied) == 1, "the next answer")
        assert replica.changed == [None] and sorted(replica.held.models) == ["a", "b"]  # a whole tree
        await replica.sub.stop()

    run(main)


def test_after_a_restart_only_one_replica_sends_its_tree() -> None:
    async def main() -> None:
        clock = ManualClock()
        serve = FakeServe(clock)
        old = serve.start_reloader()
        first = tree("a", "b")
        old.publish(first)
        replicas = [Replica(serve, clock), Replica(serve, clock)]
        for replica in replicas:
            replica.held = await replica.sub.initial_tree()
            replica.sub.start()
        await until(lambda: old.count("snapshot") == 4 and old.waiting == 2, "both long polls")
        new = serve.restart_reloader()
        await until(
            lambda: all(r.sub.info()["last_error"] for r in replicas) and clock.sleepers == 2, "both back off"
        )
        await clock.advance(0.2)
        await until(lambda: new.count("snapshot") == 2 and new.waiting == 2, "both on the new reloader")
        assert new.count("wants_seed") == 2 and new.seeds == [first]  # asked twice, sent once
        for replica in replicas:
            await replica.sub.stop()

    run(main)
