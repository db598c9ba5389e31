"""``deployments/Dockerfile`` (the image of rayservice.yaml) and ``.dockerignore``, read as text:
Docker is not here and CI does not build the image."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.strip().split(None, 1) for line in joined.splitlines() if line.strip())
    ]


@pytest.fixture(scope="module")
def dockerfile(repo: Path) -> list[tuple[str, str]]:
    return instructions((repo / "deployments" / "Dockerfile").read_text())


def copies(dockerfile: list[tuple[str, str]]) -> list[tuple[list[str], str, dict[str, str]]]:
    """(sources, destination, --flags) of each COPY."""
    out = []
    for op, args in dockerfile:
        if op == "COPY":
            words = shlex.split(args)
            flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
            paths = [w for w in words if not w.startswith("--")]
            out.append((paths[:-1], paths[-1], flags))
    return out


def test_every_stage_starts_from_the_pinned_ray_image(
    dockerfile: list[tuple[str, str]], ray_pin: str, python_tags: set[str]
) -> None:
    stages: list[str] = []
    bases = []
    for op, args in dockerfile:
        if op == "FROM":
            words = args.split()
            if words[0] not in stages:
                bases.append(words[0])
            if len(words) == 3 and words[1].upper() == "AS":
                stages.append(words[2])
    assert bases, "no FROM"
    for base in bases:
        match = re.fullmatch(r"rayproject/ray:(?P<version>[^-]+)-(?P<python>py3\d+)", base)
        assert match, f"FROM {base}: build from the official rayproject/ray:<version>-py3XX image"
        assert match["version"] == ray_pin, f"FROM {base} is not the pinned Ray {ray_pin} (pyproject.toml)"
        assert match["python"] in python_tags, f"FROM {base}: Python not allowed by requires-python"


def test_it_installs_cortex_ray_from_the_repo_source(
    dockerfile: list[tuple[str, str]], pyproject: dict[str, Any]
) -> None:
    copied = {
        src.rstrip("/") for sources, _, flags in copies(dockerfile) if "from" not in flags for src in sources
    }
    needed = {"pyproject.toml", pyproject["project"]["readme"], "cortex_ray"}
    assert needed <= copied, f"the build of cortex-ray needs {needed - copied} copied in"
    installs = [
        args
        for op, args in dockerfile
        if op == "RUN" and re.search(r"pip install\b[^&]*\s[\"']?\.(\[|[\"'\s]|$)", args)
    ]
    assert installs, "no RUN pip install . (cortex-ray from the copied source)"
    for extras in re.findall(r"\.\[([^\]]+)\]", " ".join(installs)):
        unknown = set(extras.split(",")) - set(pyproject["project"]["optional-dependencies"])
        assert not unknown, f"pip install .[{extras}]: pyproject.toml has no extra {unknown}"
    assert not any("-e" in shlex.split(args) for args in installs), "an image installs, not edits"


def test_it_ships_the_examples_with_their_models(dockerfile: list[tuple[str, str]], repo: Path) -> None:
    workdirs = [args for op, args in dockerfile if op == "WORKDIR"]
    assert workdirs and workdirs[-1].startswith("/"), "the examples go into an absolute WORKDIR"
    assert any(
        sources == ["deployments/"] and dest == "deployments/" for sources, dest, _ in copies(dockerfile)
    )
    built = re.search(
        r"deployments/build_models\.py --out (\S+)", " ".join(a for op, a in dockerfile if op == "RUN")
    )
    assert built, "the example models are not built (deployments/build_models.py)"
    store = [
        dest for sources, dest, flags in copies(dockerfile) if "from" in flags and built[1] in sources[0]
    ]
    assert store == ["deployments/model-store/"], "the built models must land where cortex.yaml reads them"
    spec = yaml.safe_load((repo / "deployments" / "cortex.yaml").read_text())
    for api in spec:
        models = api["handler"].get("multi_model_reloading") or api["handler"].get("models")
        path = models.get("path") or models.get("dir")
        assert path.startswith("model-store/"), f"{api['name']}: {path} is not in the image's model store"


def dockerignored(patterns: list[str], path: str) -> bool:
    """Whether ``.dockerignore`` leaves ``path`` (or a folder above it) out: the last match wins."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatchcase(c, pattern) or fnmatch.fnmatchcase(c, pattern.replace("**/", ""))
            for c in candidates
        ):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_what_the_build_copies_and_leaves_out_the_rest(
    dockerfile: list[tuple[str, str]], repo: Path
) -> None:
    lines = (repo / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for sources, _, flags in copies(dockerfile):
        if "from" not in flags:
            for source in sources:
                assert not dockerignored(patterns, source.rstrip("/")), f".dockerignore leaves out {source}"
    for heavy in (".venv", ".git", "deployments/model-store", "cortex_ray/__pycache__/x.pyc"):
        assert dockerignored(patterns, heavy), f".dockerignore sends {heavy} to the build"
