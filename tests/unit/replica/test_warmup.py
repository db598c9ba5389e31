"""Warm-up requests (``warmup.json`` in a version's folder) run through the handler, against the
new object, before the version serves; a failing one fails the load and the old version serves.
In-process: a real ApiCore, a real cache on the in-memory storage fake, no Ray."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.cache import ModelCache
from cortex_ray.endpoint import Incoming
from cortex_ray.models import discover_models
from cortex_ray.replica.core import ApiCore
from cortex_ray.replica.model_client import ModelClient
from cortex_ray.replica.warmup import WarmUp, read_warmup
from cortex_ray.spec import MultiModelsSpec, parse_spec
from cortex_ray.storage import open_storage, reset_memory_storage

URI = "mem://warmup/models/"


@pytest.fixture(autouse=True)
def _storage() -> Iterator[None]:
    reset_memory_storage()
    yield
    reset_memory_storage()


def upload(files: dict[str, Any]) -> None:
    storage = open_storage(URI)
    for key, data in files.items():
        storage.upload(key, data if isinstance(data, bytes) else json.dumps(data).encode())


def tree() -> Any:
    return discover_models(MultiModelsSpec(dir=URI), "python")


class Handler:
    def __init__(self, model_client: ModelClient) -> None:
        self.models = model_client
        self.seen: list[tuple[str, str, str]] = []
        """(kind of request, what it asked, the model object it got)"""

    def handle_post(self, payload: Any, query_params: dict[str, str]) -> Any:
        model = self.models.get_model(payload["model"], payload.get("version", "latest"))
        self.seen.append(("warm" if payload.get("warm") else "user", query_params.get("q", ""), model))
        if payload.get("explode"):
            raise ValueError("this input breaks the new model")
        return {"model": model}


def make_core(tmp_path: Path) -> tuple[ApiCore, Handler, ModelCache]:
    (tmp_path / "handler.py").write_text("class Handler:\n    pass\n")
    api = {"name": "w", "kind": "RealtimeAPI", "handler": {"type": "python", "path": "handler.py"}}
    core = ApiCore(parse_spec([api], base_dir=tmp_path).apis[0])
    cache = core.cache = ModelCache(
        lambda path, name, version: (Path(path) / "m").read_text(), tmp_path / "d", tree=tree()
    )
    cache.tiers.warm_up = WarmUp(core.endpoint)
    handler = Handler(ModelClient(cache, asyncio.get_running_loop(), core.invoker.slots))
    core.use_handler(handler)
    return core, handler, cache


async def post(core: ApiCore, payload: dict[str, Any]) -> tuple[int, Any]:
    out = await core.endpoint(
        Incoming("POST", "", b"", [(b"content-type", b"application/json")], json.dumps(payload).encode())
    )
    return out.status, json.loads(out.body)


def test_warm_up_runs_before_the_first_answer_and_against_the_new_object_on_a_live_reload(
    tmp_path: Path,
) -> None:
    upload(
        {
            "a/1/m": b"a1",
            "a/1/warmup.json": [{"payload": {"model": "a", "warm": True}, "query_params": {"q": "1"}}],
        }
    )

    async def main() -> None:
        core, handler, cache = make_core(tmp_path)
        assert await post(core, {"model": "a"}) == (200, {"model": "a1"})
        assert handler.seen == [("warm", "1", "a1"), ("user", "", "a1")]
        upload(
            {
                "a/2/m": b"a2",
                "a/2/warmup.json": [
                    {"payload": {"model": "a", "warm": True}},
                    {"payload": {"model": "a", "version": "2", "warm": True}},
                ],
            }
        )
        cache.set_tree(tree())
        handler.seen.clear()
        while cache.latest_pointer("a") != 2:
            assert await post(core, {"model": "a"}) in ((200, {"model": "a1"}), (200, {"model": "a2"}))
            await asyncio.sleep(0.005)
        warm = [s for s in handler.seen if s[0] == "warm"]
        assert warm == [("warm", "", "a2"), ("warm", "", "a2")]  # "latest" meant the version warming
        last_warm = max(i for i, s in enumerate(handler.seen) if s[0] == "warm")
        served_new = [i for i, s in enumerate(handler.seen) if s == ("user", "", "a2")]
        assert all(i > last_warm for i in served_new)  # a2 answered users only once warmed up
        assert all(s[2] == "a1" for s in handler.seen[: handler.seen.index(warm[0])] if s[0] == "user")
        assert await post(core, {"model": "a"}) == (200, {"model": "a2"})
        await cache.close()

    asyncio.run(main())


def test_a_failing_warm_up_fails_the_new_version_and_the_old_one_keeps_serving(tmp_path: Path) -> None:
    upload({"a/1/m": b"a1"})

    async def main() -> None:
        core, _, cache = make_core(tmp_path)
        assert await post(core, {"model": "a"}) == (200, {"model": "a1"})
        upload(
            {"a/2/m": b"a2", "a/2/warmup.json": [{"payload": {"model": "a", "warm": True, "explode": True}}]}
        )
        cache.set_tree(tree())
        for _ in range(2000):
            if cache.state("a", 2)["state"] == "failed":
                break
            await asyncio.sleep(0.005)
        state = cache.state("a", 2)
        assert state["state"] == "failed" and "warm-up request 0 of warmup.json failed" in state["reason"]
        assert "this input breaks the new model" in state["reason"]
        assert await post(core, {"model": "a"}) == (200, {"model": "a1"})  # v1 serves on
        status, body = await post(core, {"model": "a", "version": "2"})
        assert status == 503 and "warm-up request 0" in body["message"]
        await cache.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"payload": 1}', "must be a JSON list of requests, not dict"),
        (b'[{"body": 1}]', "warmup.json[0] must be an object with payload"),
        (b'[{"payload": 1, "method": "po st"}]', "warmup.json[0].method must be a word"),
        (b'[{"payload": 1, "headers": {"x": 1}}]', "warmup.json[0].headers must be an object of strings"),
    ],
)
def test_a_malformed_warmup_file_says_what_is_wrong(tmp_path: Path, content: bytes, says: str) -> None:
    (tmp_path / "warmup.json").write_bytes(content)
    with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("]", r"\]")):
        read_warmup(tmp_path)


def test_no_warmup_file_is_no_warm_up_and_methods_are_lower_case(tmp_path: Path) -> None:
    assert read_warmup(tmp_path) is None
    (tmp_path / "warmup.json").write_text('[{"payload": null, "method": "GET"}]')
    (request,) = read_warmup(tmp_path) or []
    assert (request.method, request.payload, request.headers) == ("get", None, {})
