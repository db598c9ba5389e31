"""Deltas of model trees: built by identity, applied without a walk of the tree, idempotent."""

from __future__ import annotations

from cortex_ray.models.delta import TreeDelta, apply_delta, delta_between, merge_deltas
from cortex_ray.models.tree import ModelInfo, ModelTree, VersionInfo


def model(name: str, *versions: int, fp: str = "f") -> ModelInfo:
    infos = {v: VersionInfo(v, f"mem://m/{name}/{v}/", (), f"{fp}{v}") for v in versions}
    return ModelInfo(name, f"mem://m/{name}/", True, infos)


def test_a_delta_carries_only_the_models_whose_object_changed() -> None:
    a, b, c = model("a", 1), model("b", 1), model("c", 1)
    old = ModelTree({"a": a, "b": b, "c": c})
    new = ModelTree({"a": a, "b": model("b", 1, 2), "d": model("d", 1)}, warnings=("loose file x",))
    delta = delta_between(old, new)
    assert sorted(delta.models) == ["b", "c", "d"] and delta.models["c"] is None
    assert delta.warnings == ("loose file x",)
    assert [str(c) for c in delta.changes(old)] == [
        "version added: b v2",
        "model removed: c",
        "version removed: c v1",
        "model added: d",
        "version added: d v1",
    ]
    applied = apply_delta(old, delta)
    assert applied == new and applied.models["a"] is a  # what did not change: the same object
    assert apply_delta(applied, delta) == new  # applied twice: the same tree
    assert old.models["c"] is c  # the tree applied to is not changed


def test_merged_deltas_do_what_they_did_in_order_removal_then_re_add_included() -> None:
    v1, v1_again = model("a", 1), model("a", 1, fp="g")
    t0 = ModelTree({"a": v1})
    t1 = ModelTree({})
    t2 = ModelTree({"a": v1_again})
    merged = merge_deltas([delta_between(t0, t1), delta_between(t1, t2)])
    assert merged.models == {"a": v1_again}  # removed, then back with new files: the new files
    assert apply_delta(t0, merged) == t2
    gone = merge_deltas([delta_between(t1, t2), delta_between(t2, t1)])
    assert apply_delta(t0, gone) == t1 and len(gone) == 1


def test_an_empty_delta_changes_nothing() -> None:
    tree = ModelTree({"a": model("a", 1)})
    assert len(delta_between(tree, tree)) == 0
    assert apply_delta(tree, TreeDelta()) == tree
