"""Model discovery and tree diffs on real local folders (and the in-memory fake)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.models import Change, ModelTree, build_model, check_layout, diff_trees, discover_models
from cortex_ray.spec import MultiModelsSpec
from cortex_ray.storage import ObjectInfo


def write(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def spec(**fields: object) -> MultiModelsSpec:
    return MultiModelsSpec.model_validate(fields)


def tf_version(prefix: str) -> dict[str, str]:
    return {
        f"{prefix}saved_model.pb": "pb",
        f"{prefix}variables/variables.index": "idx",
        f"{prefix}variables/variables.data-00000-of-00001": "data",
    }


def test_single_path_unversioned_is_version_1(tmp_path: Path) -> None:
    write(tmp_path, {"iris/model.pkl": "m", "iris/labels.txt": "l"})
    tree = discover_models(spec(path=str(tmp_path / "iris")), "python")
    assert list(tree.names) == ["_cortex_default"]
    model = tree.models["_cortex_default"]
    assert not model.versioned
    assert list(model.versions) == [1] and model.latest == 1
    assert sorted(f.key for f in model.versions[1].files) == ["labels.txt", "model.pkl"]
    assert model.versions[1].uri == f"file://{tmp_path}/iris/"
    assert tree.valid


def test_versions_compare_as_integers(tmp_path: Path) -> None:
    write(tmp_path, {"m/9/a": "x", "m/10/a": "y", "m/2/a": "z"})
    model = discover_models(spec(path=str(tmp_path / "m")), "python").models["_cortex_default"]
    assert model.versioned
    assert sorted(model.versions) == [2, 9, 10]
    assert model.latest == 10
    assert model.versions[10].uri.endswith("/m/10/")


def test_paths_give_named_models(tmp_path: Path) -> None:
    write(tmp_path, {"a/1/f": "1", "b/f": "2"})
    tree = discover_models(
        spec(
            paths=[
                {"name": "alpha", "path": str(tmp_path / "a")},
                {"name": "beta", "path": str(tmp_path / "b")},
            ]
        ),
        "python",
    )
    assert list(tree.names) == ["alpha", "beta"]
    assert tree.models["alpha"].latest == 1 and tree.models["alpha"].versioned
    assert tree.models["beta"].latest == 1 and not tree.models["beta"].versioned


def test_dir_gives_one_model_per_folder(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "models/text-generator/model.bin": "t",
            "models/sentiment-analyzer/24753823/model.bin": "s1",
            "models/sentiment-analyzer/26234288/model.bin": "s2",
            "models/README.md": "loose file",
        },
    )
    tree = discover_models(spec(dir=str(tmp_path / "models")), "python")
    assert list(tree.names) == ["sentiment-analyzer", "text-generator"]
    assert tree.models["sentiment-analyzer"].latest == 26234288
    assert tree.models["text-generator"].latest == 1
    assert tree.warnings and "README.md" in tree.warnings[0]
    assert tree.valid  # loose files warn, they do not invalidate the served models


def test_mixed_layout_names_the_wrong_entries(tmp_path: Path) -> None:
    write(tmp_path, {"m/1/a": "x", "m/2/a": "y", "m/extra.txt": "z", "m/latest/a": "w"})
    model = discover_models(spec(path=str(tmp_path / "m")), "python").models["_cortex_default"]
    assert model.versions == {}
    assert model.latest is None
    assert model.error is not None
    assert "1/, 2/" in model.error and "extra.txt" in model.error and "latest/" in model.error
    assert "empty" not in model.error


def test_empty_or_missing_model_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    tree = discover_models(
        spec(
            paths=[
                {"name": "e", "path": str(tmp_path / "empty")},
                {"name": "m", "path": str(tmp_path / "nope")},
            ]
        ),
        "python",
    )
    assert "no files found" in (tree.models["e"].error or "")
    assert "no files found" in (tree.models["m"].error or "")
    assert not tree.valid


def test_tensorflow_layout_per_version(tmp_path: Path) -> None:
    files = {**tf_version("tf/1/"), **tf_version("tf/2/")}
    del files["tf/2/variables/variables.index"]
    write(tmp_path, files)
    model = discover_models(spec(path=str(tmp_path / "tf")), "tensorflow").models["_cortex_default"]
    assert model.versions[1].valid
    assert not model.versions[2].valid
    assert "missing variables/variables.index" in (model.versions[2].error or "")
    assert model.latest == 1  # an invalid version is reported, never served
    assert model.problems == [f"version 2: {model.versions[2].error}"]


def test_neuron_layout_needs_only_saved_model(tmp_path: Path) -> None:
    write(tmp_path, {"n/saved_model.pb": "pb"})
    assert discover_models(spec(path=str(tmp_path / "n")), "neuron").valid
    assert not discover_models(spec(path=str(tmp_path / "n")), "tensorflow").valid


def test_check_layout_messages() -> None:
    assert check_layout("python", ["anything"]) is None
    assert check_layout("python", []) == "the folder holds no files"
    msg = check_layout("tensorflow", ["saved_model.pb"])
    assert msg is not None and "variables/variables.index" in msg and "found: saved_model.pb" in msg
    assert check_layout("neuron", ["model.bin"]) is not None


def test_reserved_and_invalid_names_in_dir(tmp_path: Path) -> None:
    write(tmp_path, {"d/_cortex_default/f": "x", "d/ok/f": "y"})
    tree = discover_models(spec(dir=str(tmp_path / "d")), "python")
    assert "reserved name" in (tree.models["_cortex_default"].error or "")
    assert tree.models["ok"].latest == 1


def obj(key: str, etag: str = "e", size: int = 1, mtime: float = 1.0) -> ObjectInfo:
    return ObjectInfo(key, size, etag, mtime)


def tree_of(**models: list[ObjectInfo]) -> ModelTree:
    return ModelTree({n: build_model(n, f"mem://b/{n}/", objs, "python") for n, objs in models.items()})


def test_diff_every_kind_of_change() -> None:
    old = tree_of(a=[obj("1/f"), obj("2/f")], b=[obj("f")], gone=[obj("f")])
    new = tree_of(
        a=[obj("2/f", etag="changed"), obj("3/f")],
        b=[obj("f"), obj("extra")],
        fresh=[obj("1/f")],
    )
    assert diff_trees(old, new) == [
        Change("a", 1, "version_removed"),
        Change("a", 2, "version_changed"),
        Change("a", 3, "version_added"),
        Change("b", 1, "version_changed"),
        Change("fresh", None, "model_added"),
        Change("fresh", 1, "version_added"),
        Change("gone", None, "model_removed"),
        Change("gone", 1, "version_removed"),
    ]
    assert diff_trees(new, new) == []


def test_structure_change_unversioned_to_versioned_is_seen() -> None:
    old = tree_of(m=[obj("model.bin")])
    new = tree_of(m=[obj("1/model.bin"), obj("2/model.bin")])
    assert diff_trees(old, new) == [Change("m", 1, "version_changed"), Change("m", 2, "version_added")]


def test_in_place_update_on_local_folder_is_a_change(tmp_path: Path) -> None:
    write(tmp_path, {"d/m/1/model.bin": "one", "d/m/1/config.json": "{}"})
    s = spec(dir=str(tmp_path / "d"))
    before = discover_models(s, "python")
    path = tmp_path / "d/m/1/model.bin"
    stat = path.stat()
    path.write_text("two")  # same size, rewritten in place
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    after = discover_models(s, "python")
    assert diff_trees(before, after) == [Change("m", 1, "version_changed")]
    (tmp_path / "d/m/1/new.txt").write_text("x")
    assert diff_trees(after, discover_models(s, "python")) == [Change("m", 1, "version_changed")]


def test_fingerprint_is_stable_and_order_independent() -> None:
    a = build_model("m", "mem://b/m/", [obj("x"), obj("y")], "python")
    b = build_model("m", "mem://b/m/", [obj("y"), obj("x")], "python")
    assert a.versions[1].fingerprint == b.versions[1].fingerprint
    c = build_model("m", "mem://b/m/", [obj("y"), obj("x", size=2)], "python")
    assert a.versions[1].fingerprint != c.versions[1].fingerprint


def test_discovery_through_memory_storage() -> None:
    from cortex_ray.storage import open_storage

    store = open_storage("mem://unit-disc/models/")
    store.upload("m/1/model.bin", b"abc")
    store.upload("m/2/model.bin", b"abcd")
    tree = discover_models(spec(dir="mem://unit-disc/models/"), "python")
    assert tree.models["m"].latest == 2
    assert tree.models["m"].versions[2].size == 4


def test_dir_with_many_models(tmp_path: Path) -> None:
    for i in range(200):
        write(tmp_path, {f"d/m{i}/1/a": "x", f"d/m{i}/2/a": "y"})
    tree = discover_models(spec(dir=str(tmp_path / "d")), "python")
    assert len(tree.models) == 200
    assert {m.latest for m in tree.models.values()} == {2}


def test_dot_model_names_are_refused() -> None:
    from cortex_ray.storage.memory import MemoryStorage

    bucket = MemoryStorage.bucket("dots")
    bucket.clear()
    store = open_storage_for_test("mem://dots/models/")
    store.upload("../1/model.bin", b"x")
    store.upload(".hidden/1/model.bin", b"x")
    store.upload("ok/1/model.bin", b"x")
    tree = discover_models(spec(dir="mem://dots/models/"), "python")
    assert tree.models["ok"].latest == 1
    assert "not a valid model name" in (tree.models[".."].error or "")
    assert "not a valid model name" in (tree.models[".hidden"].error or "")


def open_storage_for_test(uri: str):  # type: ignore[no-untyped-def]
    from cortex_ray.storage import open_storage

    return open_storage(uri)


def test_a_missing_local_dir_is_an_error_not_an_empty_tree(tmp_path: Path) -> None:
    from cortex_ray.errors import StorageNotFoundError

    with pytest.raises(StorageNotFoundError, match="does not exist"):
        discover_models(spec(dir=str(tmp_path / "unmounted")), "python")
    (tmp_path / "unmounted").mkdir()
    assert discover_models(spec(dir=str(tmp_path / "unmounted")), "python").models == {}


def test_a_remembering_builder_gives_back_an_unchanged_model_and_rebuilds_a_changed_one(
    tmp_path: Path,
) -> None:
    from cortex_ray.models import layout_for
    from cortex_ray.models.discovery import RememberingBuilder

    write(tmp_path, {"a/1/m.bin": "a1", "b/1/m.bin": "b1"})
    models, layout, build = spec(dir=str(tmp_path)), layout_for("python", False), RememberingBuilder()
    first = discover_models(models, layout, build=build)
    again = discover_models(models, layout, build=build)
    assert again.models["a"] is first.models["a"] and again.models["b"] is first.models["b"]
    assert build.reused == 2
    write(tmp_path, {"b/2/m.bin": "b2"})
    os.utime(tmp_path / "a" / "1" / "m.bin", (1, 1))  # same name and size, another time
    changed = discover_models(models, layout, build=build)
    assert changed.models["a"] is not first.models["a"] and changed.models["b"] is not first.models["b"]
    assert sorted(changed.models["b"].versions) == [1, 2]
    assert changed.models["a"].versions[1].fingerprint != first.models["a"].versions[1].fingerprint
    assert changed == discover_models(models, layout)  # the same tree as a builder without memory
    build.keep_only(["b"])  # a gone from a full listing: forgotten
    assert discover_models(models, layout, build=build).models["a"] is not changed.models["a"]


def test_the_collector_is_held_off_while_a_dir_is_built_and_on_again_after() -> None:
    import gc

    from cortex_ray.models.discovery import _CollectionPause

    pause = _CollectionPause()
    assert gc.isenabled()
    with pause():
        assert not gc.isenabled()
        with pause():  # (two listings at once, in two threads)
            assert not gc.isenabled()
        assert not gc.isenabled()  # (the other one still lists)
    assert gc.isenabled()
    gc.disable()  # turned off by someone else: left off
    try:
        with pause():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), pause():
        raise RuntimeError("a listing failed")
    assert gc.isenabled()


def test_a_dir_is_discovered_with_the_collector_held_off(tmp_path: Path) -> None:
    import gc

    from cortex_ray.models import discovery

    seen: list[bool] = []

    def build(*args: Any) -> Any:
        seen.append(gc.isenabled())
        return discovery.build_model(*args)

    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.bin").write_bytes(b"x")
    tree = discovery.discover_models(MultiModelsSpec(dir=f"{tmp_path}/"), "python", build=build)
    assert list(tree.models) == ["m"] and seen == [False] and gc.isenabled()


def test_a_published_tree_carries_no_file_lists_but_the_same_fingerprints_and_totals(tmp_path: Path) -> None:
    import pickle

    from cortex_ray.models.discovery import RememberingBuilder

    files = {"a/1/model.pkl": "x" * 10, "a/1/labels.txt": "abc", "a/2/model.pkl": "y", "b/model.pkl": "z"}
    write(tmp_path, files)
    full = discover_models(spec(dir=str(tmp_path)), "python")
    published = discover_models(spec(dir=str(tmp_path)), "python", build=RememberingBuilder(keep_files=False))
    for name, model in full.models.items():
        for v, info in model.versions.items():
            slim = published.models[name].versions[v]
            assert info.files is not None and slim.files is None
            assert (slim.fingerprint, slim.size, slim.timestamp, slim.file_count, slim.uri) == (
                info.fingerprint,
                info.size,
                info.timestamp,
                info.file_count,
                info.uri,
            )
    assert full.models["a"].versions[1].size == 13 and full.models["a"].versions[1].file_count == 2
    assert b"labels.txt" in pickle.dumps(full) and b"labels.txt" not in pickle.dumps(published)
    assert published.models["a"].latest == 2


def test_a_published_version_is_downloaded_from_a_listing_only_while_it_is_the_one_published() -> None:
    from cortex_ray.errors import StorageChangedError
    from cortex_ray.models.tree import listed_files
    from cortex_ray.storage import open_storage

    store = open_storage("mem://unit-slim/models/")
    store.upload("m/1/model.bin", b"abc")
    store.upload("m/1/labels.txt", b"l")
    model = build_model("m", "mem://unit-slim/models/m/", store.list("m/"), "python", keep_files=False)
    info = model.versions[1]
    version_folder = open_storage(info.uri)
    assert [f.key for f in listed_files(info, version_folder.list(""))] == ["labels.txt", "model.bin"]
    store.upload("m/1/extra.txt", b"e")  # a file added after the listing was published
    with pytest.raises(StorageChangedError, match=r"changed since it was listed .*\(2 files then, 3 now\)"):
        listed_files(info, version_folder.list(""))
    store.delete("m/1/extra.txt")
    store.upload("m/1/model.bin", b"abd")  # rewritten in place: same key and size, other bytes
    with pytest.raises(StorageChangedError):
        listed_files(info, version_folder.list(""))
    with_files = build_model("m", "mem://unit-slim/models/m/", store.list("m/"), "python").versions[1]
    assert listed_files(with_files, []) is with_files.files  # its own list: nothing listed


def test_a_model_folder_being_restructured_into_versions_still_downloads_as_published() -> None:
    """Version folders added to an unversioned model: the model is invalid (mixed) and kept as
    published, and its version 1 (the model folder) is still its own files."""
    from cortex_ray.errors import StorageChangedError
    from cortex_ray.models.tree import listed_files
    from cortex_ray.storage import open_storage

    store = open_storage("mem://unit-restructure/models/")
    store.upload("m/model.bin", b"v1")
    store.upload("m/variables/data", b"d")
    published = build_model("m", store.uri + "m/", store.list("m/"), "python", keep_files=False)
    store.upload("m/2/model.bin", b"v2")  # the restructure under way
    assert build_model("m", store.uri + "m/", store.list("m/"), "python").error  # mixed layout
    info = published.versions[1]
    keys = [f.key for f in listed_files(info, open_storage(info.uri).list(""))]
    assert keys == ["model.bin", "variables/data"]
    store.upload("m/model.bin", b"v1, rewritten")  # its own files changed too: refused
    with pytest.raises(StorageChangedError):
        listed_files(info, open_storage(info.uri).list(""))


def test_a_version_older_than_1970_is_published_without_its_files() -> None:
    from cortex_ray.models.tree import VersionInfo

    old = VersionInfo(1, "mem://b/m/", (ObjectInfo("model.bin", 3, "e", -86400.0),), "f" * 32)
    assert old.timestamp == -86400.0 and old.without_files().timestamp == -86400.0


def test_a_version_without_its_files_must_carry_its_totals() -> None:
    from cortex_ray.models.tree import VersionInfo

    with pytest.raises(ValueError, match="needs its size, timestamp and file count"):
        VersionInfo(1, "mem://b/m/1/", None, "f" * 32)
    assert VersionInfo(1, "mem://b/m/1/", None, "f" * 32, None, 5, 2.0, 1).size == 5
