"""The deployer's side of a Cortex project: .env, requirements, what is sent, runtime_envs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cortex_ray.errors import SpecError, SpecErrors
from cortex_ray.project import Project, ProjectRef
from cortex_ray.project.check import check_project
from cortex_ray.project.dotenv import read_dotenv
from cortex_ray.project.requirements import WORKING_DIR_VAR, pip_packages
from cortex_ray.project.runtime_env import runtime_envs
from cortex_ray.project.shipping import check_size, matcher, shipped_files
from cortex_ray.spec import load_spec


def spec_in(root: Path, **handler: object) -> Path:
    (root / "handler.py").write_text("class Handler:\n    def handle_post(self): ...\n")
    api = {"name": "a", "kind": "RealtimeAPI", "handler": {"type": "python", "path": "handler.py", **handler}}
    path = root / "cortex.yaml"
    path.write_text(yaml.safe_dump([api]))
    return path


def test_dotenv_takes_cortex_s_lines_and_quotes(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# comment\nA=1\nexport B = two words # note\nC='x # kept'\nD=\"line\\nnext\"\n\nE=\n")
    assert read_dotenv(env) == {"A": "1", "B": "two words", "C": "x # kept", "D": "line\nnext", "E": ""}
    assert read_dotenv(tmp_path / "absent") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\nnot a line\n", "line 2: expected VARIABLE=value"),
        ("CORTEX_X=1\n", "starting with CORTEX_ are reserved"),
        ("A='open\n", "closing ' is missing"),
    ],
)
def test_a_bad_dotenv_names_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / ".env").write_text(text)
    with pytest.raises(SpecError) as info:
        read_dotenv(tmp_path / ".env")
    assert message in str(info.value) and str(tmp_path / ".env") in str(info.value)


def test_requirements_keep_names_and_make_local_paths_absolute_or_shipped(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "p-1-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "more.txt").write_text("requests==2.0  # pinned\n")
    req = tmp_path / "requirements.txt"
    req.write_text("numpy>=1\n-r more.txt\n./wheels/p-1-py3-none-any.whl\n-e ./pkg\n--no-index\n")
    assert pip_packages(req, tmp_path, shipped=False) == [
        "numpy>=1",
        "requests==2.0",
        str(tmp_path / "wheels" / "p-1-py3-none-any.whl"),
        f"-e {tmp_path / 'pkg'}",
        "--no-index",
    ]
    shipped = pip_packages(req, tmp_path, shipped=True)
    assert shipped[2] == f"{WORKING_DIR_VAR}/wheels/p-1-py3-none-any.whl"
    assert shipped[3] == f"-e {WORKING_DIR_VAR}/pkg"


def test_requirements_that_cannot_work_are_errors(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("./missing.whl\n")
    with pytest.raises(SpecError, match=r"line 1: './missing\.whl' does not exist"):
        pip_packages(req, tmp_path, shipped=False)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.whl"
    outside.write_bytes(b"")
    req.write_text(f"{outside}\n")
    with pytest.raises(SpecError, match="outside the project folder"):
        pip_packages(req, tmp_path, shipped=True)
    (tmp_path / "skip.whl").write_bytes(b"")
    req.write_text("./skip.whl\n")
    with pytest.raises(SpecError, match="excluded from what is sent"):
        pip_packages(req, tmp_path, shipped=True, shipped_file=lambda rel: rel != "skip.whl")


def test_what_is_sent_follows_cortex_and_cortexignore_and_leaves_local_models(tmp_path: Path) -> None:
    spec_path = spec_in(tmp_path, multi_model_reloading={"dir": "models"})
    for rel in [
        "a.py",
        "b.pyc",
        ".secret",
        ".git/config",
        "data/x.csv",
        "ignored/y",
        "models/m/1/w",
        "sub/.hidden",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / ".cortexignore").write_text("# comment\nignored/\n")
    spec = load_spec(spec_path)
    excludes = Project.of(spec).excludes(spec)
    assert "/models/" in excludes and "ignored/" in excludes
    sent = sorted(rel for rel, _ in shipped_files(tmp_path, excludes))
    assert sent == ["a.py", "cortex.yaml", "data/x.csv", "handler.py"]
    assert not matcher(excludes)(".")  # Ray matches the project folder itself against these


def test_a_project_over_the_limit_names_its_biggest_files(tmp_path: Path) -> None:
    spec_path = spec_in(tmp_path)
    (tmp_path / "big.bin").write_bytes(b"0" * 3000)
    (tmp_path / "mid.bin").write_bytes(b"0" * 2000)
    spec = load_spec(spec_path)
    with pytest.raises(SpecError) as info:
        check_size(tmp_path, Project.of(spec).excludes(spec), limit=4000)
    message = str(info.value)
    assert "over the limit" in message and message.index("big.bin") < message.index("mid.bin")
    assert check_size(tmp_path, Project.of(spec).excludes(spec), limit=10_000) > 5000


def test_runtime_envs_carry_dotenv_under_handler_env_and_requirements_for_user_code(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("A=from-dotenv\nB=b\n")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    spec = load_spec(spec_in(tmp_path, env={"A": "from-spec"}))
    envs = runtime_envs(spec.apis[0], Project.of(spec))
    assert envs.every == {"env_vars": {"A": "from-spec", "B": "b"}}
    assert envs.user_code == {"pip": {"packages": ["numpy"], "pip_check": False}}
    (tmp_path / "conda-packages.txt").write_text("conda-forge::rdkit\n")
    envs = runtime_envs(spec.apis[0], Project.of(spec))
    assert envs.user_code == {"conda": {"dependencies": ["conda-forge::rdkit", "pip", {"pip": ["numpy"]}]}}


def test_dependency_files_named_in_the_spec_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SpecErrors) as info:
        load_spec(spec_in(tmp_path, dependencies={"pip": "deps/reqs.txt"}))
    assert "handler.dependencies.pip" in str(info.value) and "does not exist" in str(info.value)
    (tmp_path / "deps").mkdir()
    (tmp_path / "deps" / "reqs.txt").write_text("numpy\n")
    spec = load_spec(spec_in(tmp_path, dependencies={"pip": "deps/reqs.txt"}))
    assert runtime_envs(spec.apis[0], Project.of(spec)).user_code["pip"]["packages"] == ["numpy"]


def test_check_project_reports_every_bad_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("oops\n")
    with pytest.raises(SpecErrors) as info:
        check_project(load_spec(spec_in(tmp_path)))
    assert "expected VARIABLE=value" in str(info.value)


def test_a_project_ref_finds_shipped_files_below_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "unpacked"
    here.mkdir()
    monkeypatch.chdir(here)
    ref = ProjectRef("/deployer/project", shipped=True)
    assert ref.here() == str(here)
    assert ref.localize("/deployer/project/src/handler.py") == str(here / "src" / "handler.py")
    assert ref.localize("/elsewhere/x") == "/elsewhere/x"
    assert ProjectRef("/p").localize("/p/h.py") == "/p/h.py"
