"""An API's last healthy replica stays routed while it stops, until its replacement has passed a
health check (not merely registered), with a real HAProxy (no Ray)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from cortex_ray.ingress.registry import Registry
from cortex_ray.replica.loop import CoreLoop
from tests.support.s3_server import free_port
from tests.unit.ingress.test_balancer import Replica
from tests.unit.ingress.test_kept import DictStore


@pytest.fixture
def loop() -> Iterator[CoreLoop]:
    core = CoreLoop("test-hand-over")
    yield core
    core.stop()


def test_the_last_replica_leaves_once_its_replacement_passed_a_health_check(loop: CoreLoop) -> None:
    old = Replica(loop, "old", "/api")
    port, new_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/api"

    async def until(condition: object, seconds: float = 10.0) -> None:
        for _ in range(int(seconds / 0.02)):
            if condition():  # type: ignore[operator]
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the condition never held")

    async def main() -> None:
        registry = Registry("127.0.0.1", port, store=DictStore(), restarted=False)
        try:
            await registry.register("api", "/api", None, "old", "127.0.0.1", old.server.port)
            await until(lambda: registry.balancer.server_states().get("api_api", {}).get("r_old") == "UP")
            # the replacement registers while it cannot answer yet (nothing on its port yet)
            await registry.register("api", "/api", None, "new", "127.0.0.1", new_port)
            leaving = asyncio.create_task(registry.deregister("api", "old", hand_over=20.0))
            await until(lambda: registry.balancer.server_states()["api_api"].get("r_new") == "DOWN")
            assert not leaving.done()  # a registered replacement that fails its check is no replacement
            answer = await asyncio.to_thread(httpx.post, url)
            assert answer.status_code == 200 and answer.json()["replica"] == "old"
            # the replacement comes up: its next health check passes
            new = await asyncio.to_thread(Replica, loop, "new", "/api", new_port)
            await asyncio.wait_for(leaving, 10)
            assert new.server.port == new_port
            assert set(registry.apis["api"].servers) == {"new"}
            answer = await asyncio.to_thread(httpx.post, url)
            assert answer.status_code == 200 and answer.json()["replica"] == "new"
        finally:
            await registry.stop()

    asyncio.run(main())
