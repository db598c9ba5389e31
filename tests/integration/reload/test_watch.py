"""``events: watch`` on a real local folder (real file events through ``watchfiles``, the
project's own reloader; no Ray): a new version is published soon after its last file, with no
full listing, and a version uploaded file by file is never published half-written."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.models.tree import listed_files
from cortex_ray.reload.events import LocalWatch
from cortex_ray.reload.reloader import ModelReloader
from cortex_ray.spec import parse_spec
from cortex_ray.storage import open_storage


@pytest.fixture(autouse=True)
def _no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ModelReloader, "seed_grace", 0.0)
    monkeypatch.setattr(ModelReloader, "events_retry", 0.2)


def api(tmp_path: Path, settle_time: float) -> Any:
    (tmp_path / "handler.py").write_text("class Handler:\n    pass\n")
    spec = {
        "name": "watched",
        "kind": "RealtimeAPI",
        "handler": {
            "type": "python",
            "path": "handler.py",
            "multi_model_reloading": {
                "dir": str(tmp_path / "models"),
                "events": "watch",
                "poll_interval": 3600,  # no full listing after the first: events alone
                "settle_time": settle_time,
            },
        },
    }
    return parse_spec([spec], base_dir=tmp_path).apis[0]


def write(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)


async def watching(r: ModelReloader, models: Path) -> dict[str, Any]:
    """Once the watcher sees events (a loose probe file, written until one is seen, then listed
    and confirmed): the tree published then."""
    for attempt in range(100):
        (models / "probe.txt").write_text(str(attempt))
        for _ in range(100):
            if r.event_batches:
                break
            await asyncio.sleep(0.01)
        if r.event_batches:
            break
    else:
        raise AssertionError("the watcher never saw an event")
    # each probe event: a full listing, and one more after settle_time; done once all is quiet
    # for half a second
    quiet_since, polls = None, -1
    for _ in range(3000):
        quiet = not r.confirming and not r.listing
        if quiet and r.poll_count == polls and quiet_since is not None:
            if time.monotonic() - quiet_since >= 0.5:
                answer = await r.snapshot(None, -1, timeout=5)
                assert answer is not None
                return answer
        else:
            quiet_since, polls = (time.monotonic(), r.poll_count) if quiet else (None, -1)
        await asyncio.sleep(0.01)
    raise AssertionError("the probe's listings never ended")


async def published(r: ModelReloader, known: dict[str, Any], seconds: float = 20.0) -> dict[str, Any]:
    answer = await r.snapshot(known["epoch"], known["version"], timeout=seconds)
    assert answer is not None, "nothing published"
    return answer


def test_a_new_version_is_published_on_its_file_events_without_a_full_listing(tmp_path: Path) -> None:
    write(tmp_path / "models" / "a" / "1" / "m.bin", "a1")
    write(tmp_path / "models" / "b" / "1" / "m.bin", "b1")

    async def main() -> None:
        r = ModelReloader(api(tmp_path, settle_time=0.3))
        assert await r.snapshot(None, -1, timeout=10) is not None
        first = await watching(r, tmp_path / "models")
        polls = r.poll_count
        started = time.monotonic()
        write(tmp_path / "models" / "b" / "2" / "m.bin", "b2")
        change = await published(r, first)
        took = time.monotonic() - started
        assert list(change["delta"].models) == ["b"] and sorted(change["delta"].models["b"].versions) == [
            1,
            2,
        ]
        assert r.poll_count == polls  # no full listing since the probe's: the event's model only
        assert 0.3 <= took < 5.0, took  # settled (unchanged 0.3 s), then published at once
        r.events.close()  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_version_uploaded_file_by_file_is_never_published_half_written(tmp_path: Path) -> None:
    write(tmp_path / "models" / "a" / "1" / "m.bin", "a1")

    async def main() -> None:
        r = ModelReloader(api(tmp_path, settle_time=1.5))
        assert await r.snapshot(None, -1, timeout=10) is not None
        first = await watching(r, tmp_path / "models")
        polls = r.poll_count
        for i in range(4):  # one file every 0.2 s: never unchanged for 1.5 s until the end
            write(tmp_path / "models" / "a" / "2" / f"part{i}.bin", f"part {i}")
            await asyncio.sleep(0.2)
        change = await published(r, first)
        published_version = change["delta"].models["a"].versions[2]
        assert published_version.files is None  # (replicas list it when they download it)
        listed = listed_files(published_version, open_storage(published_version.uri).list(""))
        assert [f.key for f in listed] == ["part0.bin", "part1.bin", "part2.bin", "part3.bin"]
        assert r.poll_count == polls
        r.events.close()  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_replaced_model_folder_is_watched_again(tmp_path: Path) -> None:
    write(tmp_path / "models" / "a" / "1" / "m.bin", "a1")

    async def main() -> None:
        r = ModelReloader(api(tmp_path, settle_time=0.3))
        assert isinstance(r.events, LocalWatch)
        r.events.check_every = 0.1
        assert await r.snapshot(None, -1, timeout=10) is not None
        first = await watching(r, tmp_path / "models")
        # the whole folder swapped for a new one (as `mv new models` after `mv models old`)
        write(tmp_path / "new" / "a" / "1" / "m.bin", "a1")
        write(tmp_path / "new" / "a" / "2" / "m.bin", "a2")
        (tmp_path / "models").rename(tmp_path / "old")
        (tmp_path / "new").rename(tmp_path / "models")
        for _ in range(1000):
            if r.events_error:
                break
            await asyncio.sleep(0.01)
        assert r.events_error is not None and "replaced or removed" in r.events_error
        # the last batch before the error lists everything (the probe file's warning may go first)
        change = await published(r, first)
        if "a" not in change["delta"].models:
            change = await published(r, change)
        assert sorted(change["delta"].models["a"].versions) == [1, 2]
        # watched again: a new model in the new folder is published on its events
        batches = r.event_batches
        for _ in range(1000):
            write(tmp_path / "models" / "b" / "1" / "m.bin", "b1")
            if r.event_batches > batches:
                break
            await asyncio.sleep(0.05)
        change = await published(r, change)
        assert list(change["delta"].models) == ["b"]
        r.events.close()

    asyncio.run(main())
