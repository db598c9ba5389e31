"""The publishing rules of the reloader: settling, never worse, removal (pure, no Ray)."""

from __future__ import annotations

from cortex_ray.models import ModelTree, build_model
from cortex_ray.reload.publisher import Publisher
from cortex_ray.storage import ObjectInfo


def obj(key: str, etag: str = "e", size: int = 1) -> ObjectInfo:
    return ObjectInfo(key, size, etag, 1.0)


def tree(layout: str = "python", **models: list[ObjectInfo]) -> ModelTree:
    return ModelTree({n: build_model(n, f"mem://b/{n}/", objs, layout) for n, objs in models.items()})  # type: ignore[arg-type]


def versions(t: ModelTree, name: str) -> dict[int, str]:
    return {v: i.fingerprint for v, i in t.models[name].versions.items()}


def test_first_listing_is_published_as_is() -> None:
    p = Publisher(settle_time=5)
    first = tree(a=[obj("1/f")])
    assert p.observe(first, now=0) is first


def test_a_new_version_waits_until_its_listing_settles() -> None:
    p = Publisher(settle_time=5)
    p.observe(tree(a=[obj("1/f")]), now=0)
    uploading = tree(a=[obj("1/f"), obj("2/f")])
    assert list(p.observe(uploading, now=1).models["a"].versions) == [1]
    assert any(pr.version == 2 and "settle" in pr.reason for pr in p.problems)
    grown = tree(a=[obj("1/f"), obj("2/f"), obj("2/g")])  # still uploading: the clock restarts
    assert list(p.observe(grown, now=4).models["a"].versions) == [1]
    assert list(p.observe(grown, now=8).models["a"].versions) == [1]
    assert list(p.observe(grown, now=9).models["a"].versions) == [1, 2]
    assert p.problems == []


def test_a_changed_version_keeps_its_old_files_until_the_new_ones_settle() -> None:
    p = Publisher(settle_time=2)
    old = tree(a=[obj("1/f", etag="old")])
    p.observe(old, now=0)
    new = tree(a=[obj("1/f", etag="new")])
    assert versions(p.observe(new, now=1), "a") == versions(old, "a")
    assert versions(p.observe(new, now=3), "a") == versions(new, "a")


def test_invalid_new_files_never_replace_a_valid_version() -> None:
    p = Publisher(settle_time=0)
    good = tree(
        "tensorflow",
        m=[
            obj("1/saved_model.pb"),
            obj("1/variables/variables.index"),
            obj("1/variables/variables.data-00000-of-00001"),
        ],
    )
    p.observe(good, now=0)
    broken = tree("tensorflow", m=[obj("1/saved_model.pb", etag="x")])
    published = p.observe(broken, now=1)
    assert versions(published, "m") == versions(good, "m")
    assert published.models["m"].versions[1].valid
    assert any("still serving the previous files" in pr.reason for pr in p.problems)


def test_a_model_turning_mixed_keeps_its_published_versions() -> None:
    p = Publisher(settle_time=0)
    before = tree(b=[obj("model.bin")])
    p.observe(before, now=0)
    mixed = tree(b=[obj("model.bin"), obj("1/model.bin")])  # mid-restructuring
    published = p.observe(mixed, now=1)
    assert versions(published, "b") == versions(before, "b")
    assert p.problems and "mixes integer version folders" in p.problems[0].reason
    done = tree(b=[obj("1/model.bin"), obj("2/model.bin")])
    assert sorted(p.observe(done, now=2).models["b"].versions) == [1, 2]


def test_removal_settles_like_any_other_change() -> None:
    p = Publisher(settle_time=5)
    p.observe(tree(a=[obj("1/f"), obj("2/f")], b=[obj("f")]), now=0)
    gone = tree(a=[obj("1/f")])
    published = p.observe(gone, now=1)  # seen missing once: still published
    assert sorted(published.models) == ["a", "b"] and sorted(published.models["a"].versions) == [1, 2]
    assert {pr.model for pr in p.problems if "removal not published yet" in pr.reason} == {"a", "b"}
    published = p.observe(gone, now=6)  # missing for the settle time: removed
    assert list(published.models) == ["a"]
    assert list(published.models["a"].versions) == [1]
    assert p.problems == []


def test_a_dir_emptied_then_refilled_removes_nothing() -> None:
    """`mv models models.old; mv new models`, seen between the two moves."""
    p = Publisher(settle_time=5)
    full = tree(a=[obj("1/f")], b=[obj("1/f")])
    p.observe(full, now=0)
    assert sorted(p.observe(ModelTree({}), now=5).models) == ["a", "b"]
    assert sorted(p.observe(full, now=10).models) == ["a", "b"]
    assert sorted(p.observe(ModelTree({}), now=11).models) == ["a", "b"]  # the clock restarted


def test_removal_with_no_settle_time_is_immediate() -> None:
    p = Publisher(settle_time=0)
    p.observe(tree(a=[obj("1/f")], b=[obj("f")]), now=0)
    assert list(p.observe(tree(a=[obj("1/f")]), now=1).models) == ["a"]


def test_an_empty_listing_removes_every_model_only_after_a_minute() -> None:
    """An unmounted volume leaves an empty mount point, which exists: it lists as empty."""
    p = Publisher(settle_time=5)
    p.observe(tree(a=[obj("1/f")], b=[obj("1/f")]), now=0)
    for t in (5, 10, 30, 64):  # first seen empty at 5 s
        assert sorted(p.observe(ModelTree({}), now=t).models) == ["a", "b"]
    assert any("no models at all" in pr.reason for pr in p.problems)
    assert p.observe(ModelTree({}), now=65).models == {}


def test_a_listing_of_some_models_decides_only_those() -> None:
    p = Publisher(settle_time=5)
    p.observe(tree(a=[obj("1/f")], b=[obj("1/f")]), now=0)
    # the full listing at 1 sees a's version 2 half-uploaded
    p.observe(tree(a=[obj("1/f"), obj("2/f")], b=[obj("1/f")]), now=1)
    assert any(pr.model == "a" and pr.version == 2 for pr in p.problems)
    # an event lists b alone at 7: a's listing from 1 is no proof that its upload settled
    merged = tree(a=[obj("1/f"), obj("2/f")], b=[obj("1/f"), obj("2/f")])
    published = p.observe(merged, now=7, only={"b"})
    assert list(published.models["a"].versions) == [1]
    assert any(pr.model == "a" and pr.version == 2 for pr in p.problems), "a's problem is kept"
    assert list(published.models["b"].versions) == [1]  # b's 2 was first seen now
    # a listing of a itself, still unchanged since 1, publishes it
    assert list(p.observe(merged, now=8, only={"a"}).models["a"].versions) == [1, 2]
    assert not any(pr.model == "a" for pr in p.problems)
    assert any(pr.model == "b" for pr in p.problems), "b's problem is kept"


def test_a_listing_of_some_models_removes_only_those_gone_long_enough() -> None:
    p = Publisher(settle_time=2)
    p.observe(tree(a=[obj("1/f")], b=[obj("1/f")]), now=0)
    assert set(p.observe(tree(b=[obj("1/f")]), now=1, only={"a"}).models) == {"a", "b"}
    assert set(p.observe(tree(b=[obj("1/f")]), now=3.5, only={"a"}).models) == {"b"}
    # a model the listing did not name stays, even if missing from the (merged) listing
    assert set(p.observe(tree(), now=10, only={"c"}).models) == {"b"}
