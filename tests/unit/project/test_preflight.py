"""The requirements preflight (:mod:`cortex_ray.project.preflight`) against a local wheel folder.

Everything is offline: the requirements files say ``--no-index --find-links <folder>`` and pip's
own configuration files are left out (``PIP_CONFIG_FILE=/dev/null``). In the folder:

- ``pfpkg`` 1.0 and 2.0, pure-Python wheels;
- ``pfbad`` 0.21.3, an sdist whose ``setup.py`` raises (and a 0.20 wheel);
- ``pfgood`` 1.0, an sdist that builds;
- ``pflegacy`` 1.0, an sdist with only a ``setup.py``: pip needs setuptools to build it and,
  offline, finds none;
- ``pfold`` (needs ``pfdep<2``), ``pfnew`` (needs ``pfdep>=2``), ``pfhasmissing`` (needs a
  package nobody has).

pip builds an sdist in an isolated environment that it fills from the index: offline there is no
setuptools to fill it with, so ``pfbad`` and ``pfgood`` carry their own build backend (PEP 517
``backend-path``), which runs their ``setup.py``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.project.preflight import Report, preflight
from cortex_ray.project.requirements import pip_packages, requirement_lines
from tests.support.cortex_project import wheel

HERE = f"Python {sys.version_info.major}.{sys.version_info.minor}"
BAD_BUILD = "pfbad cannot be built here: numpy.distutils is gone"

BACKEND = '''
"""A build backend that runs setup.py (NAME and VERSION, or an error)."""
import os
import runpy


def get_requires_for_build_wheel(config_settings=None):
    runpy.run_path("setup.py")
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    ns = runpy.run_path("setup.py")
    dist = f"{ns['NAME']}-{ns['VERSION']}.dist-info"
    os.makedirs(os.path.join(metadata_directory, dist))
    with open(os.path.join(metadata_directory, dist, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\\nName: {ns['NAME']}\\nVersion: {ns['VERSION']}\\n")
    return dist


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("a dry run builds no wheel")
'''


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...]) -> None:
    """A pure-Python wheel with dependencies (``Requires-Dist``)."""
    dist = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{name}/__init__.py": "",
        f"{dist}/METADATA": meta,
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for rel, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as zf:
        for rel, text in files.items():
            zf.writestr(rel, text)


def _sdist(folder: Path, name: str, version: str, files: dict[str, str]) -> None:
    files = {"PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", **files}
    with tarfile.open(folder / f"{name}-{version}.tar.gz", "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _own_backend(setup: str) -> dict[str, str]:
    return {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
        "backend.py": BACKEND,
        "setup.py": setup,
    }


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    wheel(folder, "pfpkg", "1.0")
    wheel(folder, "pfpkg", "2.0")
    wheel(folder, "pfbad", "0.20")
    _wheel(folder, "pfdep", "1.0", ())
    _wheel(folder, "pfdep", "2.0", ())
    _wheel(folder, "pfold", "1.0", ("pfdep<2",))
    _wheel(folder, "pfnew", "1.0", ("pfdep>=2",))
    _wheel(folder, "pfhasmissing", "1.0", ("pfghost>=1",))
    _sdist(folder, "pfbad", "0.21.3", _own_backend(f"raise RuntimeError({BAD_BUILD!r})\n"))
    _sdist(folder, "pfgood", "1.0", _own_backend('NAME = "pfgood"\nVERSION = "1.0"\n'))
    _sdist(folder, "pflegacy", "1.0", {"setup.py": "from setuptools import setup\nsetup()\n"})
    return folder


@pytest.fixture(autouse=True)
def offline_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """pip sees the test's folder only: no configuration files, no index settings."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CORTEX_RAY_PREFLIGHT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def pip_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """The pip commands the preflight starts (they still run)."""
    calls: list[list[str]] = []
    real = subprocess.Popen

    def counting(args: Any, *rest: Any, **kwargs: Any) -> Any:
        calls.append(list(args))
        return real(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", counting)
    yield calls


def _requirements(root: Path, wheels: Path, *lines: str, name: str = "requirements.txt") -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in ("--no-index", f"--find-links {wheels}", *lines)))
    return path


def _check(path: Path, root: Path) -> Report:
    return preflight(path, root, cache_dir=root / "cache")


# --- what pip says, as the preflight tells it ---------------------------------------------------


def test_a_file_that_installs_has_no_errors(tmp_path: Path, wheels: Path) -> None:
    req = _requirements(tmp_path, wheels, "pfpkg==2.0", "pfold  # pfdep 1.0 with it")
    report = _check(req, tmp_path)
    assert report.errors == ()
    assert report.warnings == ()
    assert report.runs == 1 and not report.cached


def test_a_pin_with_no_distribution_names_its_line_and_the_nearest_versions(
    tmp_path: Path, wheels: Path
) -> None:
    req = _requirements(tmp_path, wheels, "# the model's runtime", "pfpkg==1.5")
    report = _check(req, tmp_path)
    assert len(report.errors) == 1
    error = report.errors[0]
    assert (error.file, error.line, error.requirement) == (str(req), 4, "pfpkg==1.5")
    assert error.reason.startswith(f"no distribution of pfpkg 1.5 for {HERE} on {sys.platform}")
    assert error.suggestions == ("pfpkg==1.0 (nearest below)", "pfpkg==2.0 (nearest above, newest)")
    assert str(error).startswith(f"{req}:4: pfpkg==1.5: no distribution")
    assert error.to_spec_error().file == str(req)
    assert error.to_spec_error().reason.startswith("line 4: pfpkg==1.5: ")


def test_a_package_nobody_has_has_no_distribution_at_all(tmp_path: Path, wheels: Path) -> None:
    req = _requirements(tmp_path, wheels, "pfghost==1.0")
    (error,) = _check(req, tmp_path).errors
    assert error.line == 3
    assert f"no distribution of pfghost at all for {HERE}" in error.reason
    assert error.suggestions == ()
    assert _check(req, tmp_path).cached  # --no-index: no index that could have been away
    on_an_index = tmp_path / "on-an-index.txt"
    on_an_index.write_text(f"--index-url {(tmp_path / 'no-index-here').as_uri()}\npfghost==1.0\n")
    assert "no distribution of pfghost at all" in _check(on_an_index, tmp_path).errors[0].reason
    assert not _check(on_an_index, tmp_path).cached  # a misspelt name, or an index that was away


def test_a_missing_dependency_is_told_on_the_line_that_needs_it(tmp_path: Path, wheels: Path) -> None:
    req = _requirements(tmp_path, wheels, "pfpkg", "pfhasmissing")
    (error,) = _check(req, tmp_path).errors
    assert (error.line, error.requirement) == (4, "pfhasmissing")
    assert error.reason.startswith("pfhasmissing needs pfghost>=1, and there is no distribution of pfghost")


def test_a_source_build_that_fails_quotes_the_build_s_error(tmp_path: Path, wheels: Path) -> None:
    req = _requirements(tmp_path, wheels, "pfbad==0.21.3")
    (error,) = _check(req, tmp_path).errors
    assert (error.line, error.requirement) == (3, "pfbad==0.21.3")
    assert f"it has no wheel for {HERE}" in error.reason
    assert "building it from source failed" in error.reason
    assert error.reason.endswith(f"RuntimeError: {BAD_BUILD}")
    assert "Traceback" not in error.reason and "│" not in error.reason
    assert error.suggestions == ("pfbad==0.20 (nearest below, newest with a wheel)",)


def test_a_failing_build_s_own_missing_dependency_is_not_taken_for_the_pin(
    tmp_path: Path, wheels: Path
) -> None:
    """pip's "Could not find a version ... setuptools" inside the build's box is the build's."""
    req = _requirements(tmp_path, wheels, "pflegacy==1.0")
    (error,) = _check(req, tmp_path).errors
    assert (error.line, error.requirement) == (3, "pflegacy==1.0")
    assert "building it from source failed (installing build dependencies)" in error.reason
    assert "setuptools" in error.reason


def test_a_pin_that_installs_only_by_building_is_a_warning(tmp_path: Path, wheels: Path) -> None:
    req = _requirements(tmp_path, wheels, "pfpkg", "pfgood==1.0")
    report = _check(req, tmp_path)
    assert report.errors == ()
    (warning,) = report.warnings
    assert (warning.line, warning.requirement) == (4, "pfgood==1.0")
    assert f"pfgood 1.0 has no wheel for {HERE}" in warning.reason
    assert "pfgood-1.0.tar.gz" in warning.reason and "every node" in warning.reason


def test_conflicting_pins_quote_pip_s_conflict(tmp_path: Path, wheels: Path) -> None:
    req = _requirements(tmp_path, wheels, "pfold", "pfnew")
    (error,) = _check(req, tmp_path).errors
    assert (error.line, error.requirement) == (3, "pfold")
    assert "pfold (requirements.txt:3) and pfnew (requirements.txt:4)" in error.reason
    assert "pfold 1.0 depends on pfdep<2; pfnew 1.0 depends on pfdep>=2" in error.reason


def test_anything_else_pip_says_is_told_without_a_traceback(tmp_path: Path, wheels: Path) -> None:
    req = _requirements(tmp_path, wheels, "pfpkg", "pfpkg=>1 x")
    (error,) = _check(req, tmp_path).errors
    assert (error.line, error.requirement) == (4, "pfpkg=>1 x")
    assert error.reason.startswith("pip failed: Invalid requirement: 'pfpkg=>1 x'")
    assert "Traceback" not in error.reason


def test_an_interpreter_that_does_not_run_skips_the_preflight(tmp_path: Path, wheels: Path) -> None:
    req = _requirements(tmp_path, wheels, "pfpkg==1.5")
    report = preflight(req, tmp_path, python=str(tmp_path / "no-python"), cache_dir=tmp_path / "cache")
    assert report.errors == ()
    assert report.warnings[0].reason.startswith(f"preflight skipped: cannot run {tmp_path / 'no-python'}")


def test_one_preflight_names_every_bad_pin(tmp_path: Path, wheels: Path, pip_calls: list[list[str]]) -> None:
    req = _requirements(tmp_path, wheels, "pfpkg==1.5", "pfgood", "pfghost>=3", "pfpkg==2.0")
    report = _check(req, tmp_path)
    assert [(e.line, e.requirement) for e in report.errors] == [(3, "pfpkg==1.5"), (5, "pfghost>=3")]
    assert [w.line for w in report.warnings] == [4]  # what is left still resolves: pfgood builds
    assert report.runs == len(pip_calls) == 3
    assert all(
        call[1:7] == ["-m", "pip", "install", "--dry-run", "--ignore-installed", "--report"]
        for call in pip_calls
    )


def test_a_nested_file_s_bad_pin_names_the_nested_file(tmp_path: Path, wheels: Path) -> None:
    nested = tmp_path / "more" / "serving.txt"
    nested.parent.mkdir()
    nested.write_text("pfold\n\npfpkg==1.5\n")
    req = _requirements(tmp_path, wheels, "pfdep", "-r more/serving.txt")
    (error,) = _check(req, tmp_path).errors
    assert (error.file, error.line, error.requirement) == (str(nested), 3, "pfpkg==1.5")


# --- pip runs only when it must --------------------------------------------------------------


def test_the_second_preflight_of_the_same_file_comes_from_the_cache(
    tmp_path: Path, wheels: Path, pip_calls: list[list[str]]
) -> None:
    req = _requirements(tmp_path, wheels, "pfpkg==1.5")
    first = _check(req, tmp_path)
    assert not first.cached and len(pip_calls) == 1
    second = _check(req, tmp_path)
    assert second.cached and len(pip_calls) == 1 and second.runs == 0
    assert second.errors == first.errors


def test_the_cache_folder_comes_from_the_environment(tmp_path: Path, wheels: Path) -> None:
    req = _requirements(tmp_path, wheels, "pfpkg==2.0")
    assert not preflight(req, tmp_path).cached
    assert list((tmp_path / "cache").glob("*.json"))  # CORTEX_RAY_PREFLIGHT_CACHE (offline_pip)
    assert preflight(req, tmp_path).cached


def test_a_changed_file_or_a_changed_wheel_folder_asks_pip_again(tmp_path: Path, wheels: Path) -> None:
    folder = shutil.copytree(wheels, tmp_path / "wheels")
    req = _requirements(tmp_path, folder, "pfpkg==1.5")
    assert len(_check(req, tmp_path).errors) == 1
    _requirements(tmp_path, folder, "pfpkg==2.0")
    changed = _check(req, tmp_path)
    assert not changed.cached and changed.errors == ()
    _requirements(tmp_path, folder, "pfpkg==1.5")
    assert _check(req, tmp_path).cached
    wheel(folder, "pfpkg", "1.5")  # a new release in the --find-links folder
    added = _check(req, tmp_path)
    assert not added.cached and added.errors == ()


def test_the_same_line_moved_is_asked_again(tmp_path: Path, wheels: Path) -> None:
    req = _requirements(tmp_path, wheels, "pfpkg==1.5")
    assert _check(req, tmp_path).errors[0].line == 3
    _requirements(tmp_path, wheels, "# moved down", "pfpkg==1.5")
    moved = _check(req, tmp_path)
    assert not moved.cached and moved.errors[0].line == 4


def test_a_corrupt_cache_file_is_ignored(tmp_path: Path, wheels: Path) -> None:
    req = _requirements(tmp_path, wheels, "pfpkg==1.5")
    first = _check(req, tmp_path)
    (entry,) = (tmp_path / "cache").glob("*.json")
    for garbage in ("{not json", '{"schema": 1, "key": 3}', "[]"):
        entry.write_text(garbage)
        again = _check(req, tmp_path)
        assert not again.cached and again.errors == first.errors


def test_an_index_out_of_reach_is_said_and_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pip_calls: list[list[str]]
) -> None:
    monkeypatch.setenv("PIP_RETRIES", "1")  # pip says nothing of the network when it does not retry
    req = tmp_path / "requirements.txt"
    req.write_text("--index-url http://127.0.0.1:9/simple\npfpkg==1.0\npfghost\n")  # nothing listens
    report = _check(req, tmp_path)
    (error,) = report.errors  # one: pip is not asked again, line after line, while the index is away
    assert error.line == 2 and "could not reach the package index" in error.reason
    assert len(pip_calls) == 1
    assert not _check(req, tmp_path).cached


def test_no_file_or_no_requirements_runs_no_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pip(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"pip ran: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_pip)
    assert preflight(None, tmp_path) == Report()
    assert preflight(tmp_path / "requirements.txt", tmp_path) == Report()
    only_options = tmp_path / "options.txt"
    only_options.write_text("# nothing yet\n--no-index\n\n")
    assert preflight(only_options, tmp_path) == Report()


# --- the lines and where they come from ------------------------------------------------------


def test_requirement_lines_keep_each_line_s_file_number_and_text(tmp_path: Path) -> None:
    wheel(tmp_path / "wheels", "tinypkg", "0.1")
    (tmp_path / "more").mkdir()
    nested = tmp_path / "more" / "extra.txt"
    nested.write_text("# extra\nnumpy==1.19.1 \\\n    --hash=sha256:abc\n")
    req = tmp_path / "requirements.txt"
    req.write_text(
        "--no-index\n-f ./wheels\n-r more/extra.txt\n./wheels/tinypkg-0.1-py3-none-any.whl  # ours\n"
        "-e ./wheels\nboto3>=1\n"
    )
    lines = requirement_lines(req, tmp_path)
    assert [(e.file, e.line, e.text, e.is_option) for e in lines] == [
        (req, 1, "--no-index", True),
        (req, 2, "-f ./wheels", True),
        (nested, 2, "numpy==1.19.1 --hash=sha256:abc", False),
        (req, 4, "./wheels/tinypkg-0.1-py3-none-any.whl", False),
        (req, 5, "-e ./wheels", False),
        (req, 6, "boto3>=1", False),
    ]
    assert lines[1].pip == f"-f {tmp_path / 'wheels'}"
    assert lines[3].pip == str(tmp_path / "wheels" / "tinypkg-0.1-py3-none-any.whl")
    assert [e.pip for e in lines] == pip_packages(req, tmp_path, shipped=False)
