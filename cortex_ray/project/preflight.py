"""The requirements preflight: will each ``requirements.txt`` install for the replicas' Python?

Ray installs an API's requirements on every node when its replicas start; a pin with no build
for this Python (Cortex's own examples pin ``onnxruntime==1.6.0``, ``scikit-learn==0.21.3``)
then fails there, after a minute of retries, as pip's lines buried in a traceback. The preflight
asks pip's resolver first, on this machine, without installing anything::

    python -m pip install --dry-run --ignore-installed --report <json> \\
        --disable-pip-version-check --no-input --progress-bar off -r <the pip lines>

(and, for a package whose source build failed, once more with ``--only-binary :all:`` and
``<name>===cortex-ray-preflight-probe``, to learn which of its versions have a wheel here) and
turns what pip says into :class:`Issue` s naming the file and line of each bad pin, why
(for this interpreter: "Python 3.11 on linux x86_64") and the nearest versions that do install.
pip stops at its first failure: the line at fault is left out and pip runs again (at most
:data:`MAX_RUNS` runs), so one preflight names every bad pin. The whole :class:`Report` is
cached, by the pip lines, the interpreter, pip's settings and the local files the lines name.

pip runs without ``--quiet``: what tells a conflict apart (the lines under "The conflict is caused
by:") and which line brought a dependency in ("Collecting x (from y->-r file (line N))") are
info-level lines that ``--quiet`` drops.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from cortex_ray.errors import SpecError
from cortex_ray.project.requirements import RequirementLine, requirement_lines

__all__ = [
    "CACHE_ENV",
    "MAX_RUNS",
    "Interpreter",
    "Issue",
    "Report",
    "default_cache_dir",
    "preflight",
]

CACHE_ENV = "CORTEX_RAY_PREFLIGHT_CACHE"
"""A folder for the preflight's cache instead of ``~/.cache/cortex-ray/preflight``."""
MAX_RUNS = 8
"""pip runs per preflight at most (each after the last one's bad line was left out)."""
CACHE_MAX_AGE_S = 7 * 24 * 3600.0
"""A cached report older than this is asked again (the index may have new releases)."""
DEFAULT_TIMEOUT_S = 600.0
_SCHEMA = 1
_PROBE = "===cortex-ray-preflight-probe"  # a version no index has: pip lists those it has


# --- what a preflight finds --------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """One finding: the line of ``file`` (``None``: the file as a whole), the requirement as
    written there, a plain ``reason`` and ``suggestions`` (requirements that would install)."""

    file: str
    line: int | None
    requirement: str
    reason: str
    suggestions: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """The issue without its file (``line 4: onnxruntime==1.6.0: ...; try ...``)."""
        where = f"line {self.line}: " if self.line is not None else ""
        what = f"{self.requirement}: " if self.requirement else ""
        hint = f"; try {' or '.join(self.suggestions)}" if self.suggestions else ""
        return f"{where}{what}{self.reason}{hint}"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        what = f" {self.requirement}:" if self.requirement else ""
        hint = f"; try {' or '.join(self.suggestions)}" if self.suggestions else ""
        return f"{where}:{what} {self.reason}{hint}"

    def to_spec_error(self) -> SpecError:
        return SpecError(self.message, file=self.file)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "requirement": self.requirement,
            "reason": self.reason,
            "suggestions": list(self.suggestions),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Issue:
        line = data["line"]
        fields = (data["file"], data["requirement"], data["reason"])
        if not all(isinstance(x, str) for x in fields) or not (line is None or isinstance(line, int)):
            raise TypeError("not an issue")
        suggestions = data["suggestions"]
        if not isinstance(suggestions, list) or not all(isinstance(s, str) for s in suggestions):
            raise TypeError("not an issue")
        return cls(data["file"], line, data["requirement"], data["reason"], tuple(suggestions))


@dataclass(frozen=True)
class Report:
    """What the preflight found; ``cached``: it comes from the cache (no pip ran); ``runs``: the
    pip runs it took (0 when cached or when there was nothing to check)."""

    errors: tuple[Issue, ...] = ()
    warnings: tuple[Issue, ...] = ()
    cached: bool = False
    runs: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def spec_errors(self) -> list[SpecError]:
        return [issue.to_spec_error() for issue in self.errors]

    def to_dict(self) -> dict[str, Any]:
        return {
            "errors": [i.to_dict() for i in self.errors],
            "warnings": [i.to_dict() for i in self.warnings],
            "runs": self.runs,
        }

    @classmethod
    def from_dict(cls, data: Any, cached: bool = False) -> Report:
        runs = data["runs"]
        if not isinstance(runs, int):
            raise TypeError("not a report")
        errors = tuple(Issue.from_dict(i) for i in data["errors"])
        warnings = tuple(Issue.from_dict(i) for i in data["warnings"])
        return cls(errors, warnings, cached, 0 if cached else runs)


@dataclass(frozen=True)
class Interpreter:
    """The Python the replicas run (and pip resolves for)."""

    python: str
    implementation: str
    version: str
    platform: str
    prefix: str
    pip: str  # pip's version; "" without pip

    @property
    def label(self) -> str:
        """``Python 3.11 on linux x86_64``."""
        name = "Python" if self.implementation == "CPython" else self.implementation
        return f"{name} {'.'.join(self.version.split('.')[:2])} on {self.platform}"

    @classmethod
    def current(cls) -> Interpreter:
        try:
            pip = importlib.metadata.version("pip")
        except importlib.metadata.PackageNotFoundError:
            pip = ""
        return cls(
            sys.executable,
            platform.python_implementation(),
            platform.python_version(),
            f"{sys.platform} {platform.machine()}",
            sys.prefix,
            pip,
        )

    @classmethod
    def of(cls, python: str, timeout: float = 60.0) -> Interpreter:
        """``python`` described (by running it, unless it is this one)."""
        if os.path.abspath(python) == os.path.abspath(sys.executable):
            return cls.current()
        out = subprocess.run(
            [python, "-c", _DESCRIBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=True,
        ).stdout
        data = json.loads(out.strip().splitlines()[-1])
        return cls(
            python, *(str(data[k]) for k in ("implementation", "version", "platform", "prefix", "pip"))
        )


_DESCRIBE = """
import json, platform, sys
try:
    import importlib.metadata as m
    pip = m.version("pip")
except Exception:
    pip = ""
print(json.dumps({"implementation": platform.python_implementation(),
    "version": platform.python_version(), "platform": sys.platform + " " + platform.machine(),
    "prefix": sys.prefix, "pip": pip}))
"""


# --- the preflight -------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$CORTEX_RAY_PREFLIGHT_CACHE``, else ``~/.cache/cortex-ray/preflight``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path("~/.cache/cortex-ray/preflight").expanduser()


def preflight(
    file: Path | None,
    root: Path,
    python: str = sys.executable,
    cache_dir: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Report:
    """Check ``file`` (a ``requirements.txt``; ``root``: the project folder) against ``python``
    with pip's resolver, installing nothing. No file, or no requirements in it: an empty report,
    pip not run. ``timeout``: seconds for all of pip's runs together. Raises :class:`SpecError`
    when the file (or a nested ``-r`` file or a local path it names) cannot be read."""
    if file is None or not Path(file).is_file():
        return Report()
    lines = requirement_lines(Path(file), Path(root))
    if not any(not entry.is_option for entry in lines):
        return Report()
    try:
        interpreter = Interpreter.of(python)
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError) as exc:
        return Report(warnings=(_whole(file, f"preflight skipped: cannot run {python}: {exc}"),))
    if not interpreter.pip:
        return Report(warnings=(_whole(file, f"preflight skipped: {python} has no pip"),))
    if _older(interpreter.pip, "22.2"):
        return Report(
            warnings=(
                _whole(file, f"preflight skipped: pip {interpreter.pip} has no --dry-run --report (22.2+)"),
            )
        )
    folder = cache_dir if cache_dir is not None else default_cache_dir()
    key = _cache_key(lines, interpreter)
    cached = _cache_read(folder, key)
    if cached is not None:
        return cached
    report, cacheable = _Preflight(lines, interpreter, timeout).run()
    if cacheable:
        _cache_write(folder, key, report)
    return report


def _no_index(lines: Sequence[RequirementLine]) -> bool:
    """Whether pip asks no index (``--no-index``): local folders only."""
    if os.environ.get("PIP_NO_INDEX", "").lower() in ("1", "true", "yes", "on"):
        return True
    return any(entry.text.split(None, 1)[0] == "--no-index" for entry in lines if entry.is_option)


def _whole(file: Path | str, reason: str) -> Issue:
    return Issue(str(file), None, "", reason)


def _older(version: str, than: str) -> bool:
    try:
        return Version(version) < Version(than)
    except InvalidVersion:
        return False


@dataclass
class _Run:
    """One pip run: its exit status, its output (stdout and stderr), its ``--report``."""

    returncode: int
    output: str
    report: dict[str, Any] | None
    timed_out: bool = False


@dataclass
class _Outcome:
    """What one failed run says: errors, the index (in the run's lines) to leave out before the
    next run (``None``: stop), whether the finding may be cached."""

    errors: list[Issue] = field(default_factory=list)
    drop: int | None = None
    cacheable: bool = True


class _Preflight:
    def __init__(self, lines: list[RequirementLine], interpreter: Interpreter, timeout: float) -> None:
        self.lines = lines
        self.interpreter = interpreter
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.runs = 0
        self.workdir = Path()
        self.wheel_versions: dict[str, list[str]] = {}  # package -> its versions with a wheel here

    def run(self) -> tuple[Report, bool]:
        errors: list[Issue] = []
        warnings: list[Issue] = []
        cacheable = True
        active = list(self.lines)
        with tempfile.TemporaryDirectory(prefix="cortex-ray-preflight-") as tmp:
            self.workdir = Path(tmp)
            while True:
                if self.runs >= MAX_RUNS:
                    warnings.append(
                        _whole(
                            self.lines[0].file,
                            f"preflight stopped after {MAX_RUNS} pip runs: the requirements after "
                            "the ones named were not all checked",
                        )
                    )
                    cacheable = False
                    break
                run = self._pip(active)
                if run.returncode == 0 and run.report is not None:
                    warnings += self._source_builds(run, active)
                    break
                outcome = self._diagnose(run, active)
                errors += outcome.errors
                cacheable = cacheable and outcome.cacheable
                if outcome.drop is None:
                    break
                del active[outcome.drop]
                if all(entry.is_option for entry in active):
                    break
        return Report(tuple(errors), tuple(warnings), False, self.runs), cacheable

    # --- running pip ---

    def _pip(self, lines: Sequence[RequirementLine], extra: Sequence[str] = ()) -> _Run:
        self.runs += 1
        requirements = self.workdir / "requirements.txt"
        requirements.write_text("".join(entry.pip + "\n" for entry in lines))
        report = self.workdir / "report.json"
        with contextlib.suppress(FileNotFoundError):
            report.unlink()
        command = [
            self.interpreter.python,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--report",
            str(report),
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            *extra,
            "-r",
            str(requirements),
        ]
        env = dict(os.environ, PIP_NO_INPUT="1", PIP_NO_COLOR="1", PYTHONIOENCODING="utf-8")
        left = self.deadline - time.monotonic()
        if left <= 0:
            return _Run(-1, "", None, timed_out=True)
        try:
            process = self._start(command, env, lines)
        except OSError as exc:
            return _Run(-1, f"ERROR: cannot run {self.interpreter.python}: {exc}", None)
        try:
            output, _ = process.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            return _Run(-1, output, None, timed_out=True)
        data: dict[str, Any] | None = None
        try:
            loaded = json.loads(report.read_text())
            data = loaded if isinstance(loaded, dict) else None
        except (OSError, ValueError):
            data = None
        return _Run(process.returncode, output, data)

    def _start(
        self, command: list[str], env: dict[str, str], lines: Sequence[RequirementLine]
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
            cwd=str(lines[0].file.parent) if lines else None,
            start_new_session=True,  # pip's build subprocesses go with it on a timeout
        )

    # --- reading a failure ---

    def _diagnose(self, run: _Run, lines: list[RequirementLine]) -> _Outcome:
        output = _clean(run.output).replace(str(self.workdir / "requirements.txt"), "requirements")
        origins = _origins(output, lines)
        network = _network_trouble(output)
        if run.timed_out:
            return _Outcome([_whole(lines[0].file, f"pip did not finish in {self.timeout:g} s")], None, False)
        if _BUILD_FAILED.search(output):
            return self._build_failure(output, lines, origins, network)
        found = _UNRESOLVABLE.search(output)
        if found:
            return self._unresolvable(found, output, lines, origins, network)
        if "ResolutionImpossible" in output or _CONFLICT.search(output):
            return _Outcome([self._conflict(output, lines)], None, not network)
        return _Outcome([self._other(output, lines)], None, False)

    def _unresolvable(
        self,
        found: re.Match[str],
        output: str,
        lines: list[RequirementLine],
        origins: dict[str, int],
        network: str | None,
    ) -> _Outcome:
        wanted = found["req"].strip()
        parent = found["parent"]
        requirement = _requirement(wanted)
        name = requirement.name if requirement else wanted.split()[0]
        index = _line_of(wanted, parent, lines, origins)
        versions = [v.strip() for v in found["versions"].split(",") if v.strip() and v.strip() != "none"]
        here = self.interpreter.label
        if not versions:
            why = (
                f"no distribution of {name} at all for {here}: pip finds no release of it that installs here"
            )
        elif requirement is not None and requirement.specifier:
            pinned = _pinned(requirement)
            what = f"{name} {pinned}" if pinned and _exact(requirement) else f"{name}{requirement.specifier}"
            why = f"no distribution of {what} for {here}"
        else:
            why = f"no distribution of {name} for {here}"
        if parent and index is not None and not _is(lines[index], wanted):
            why = f"{parent} needs {wanted}, and there is {why}"
        ignored = _IGNORED_PYTHON.search(output)
        if ignored:
            why += f" (pip ignored versions that need another Python: {_short(ignored['which'], 200)})"
        if network:
            why += f"; pip could not reach the package index ({network}): it may be a network problem"
        suggestions = tuple(_nearest(name, requirement, versions))
        issue = self._issue(index, lines, wanted, why, suggestions)
        if network:  # every run would wait for the index again: stop here, cache nothing
            return _Outcome([issue], None, False)
        # "none" from an index: a misspelt name, or the index out of reach and pip did not retry
        # (it says nothing then): asked again next time
        return _Outcome([issue], index, cacheable=bool(versions) or _no_index(lines))

    def _build_failure(
        self, output: str, lines: list[RequirementLine], origins: dict[str, int], network: str | None
    ) -> _Outcome:
        step = _STEP.search(output)
        what = step["step"].strip() if step else "building it"
        failed = _FAILED_TO_BUILD.search(output)
        name = (failed["quoted"] or failed["bare"]) if failed else None
        index = None
        if name and ("/" in name or name.startswith("file:")):  # a local folder or archive
            url = name if "://" in name else Path(name).as_uri()
            index = next((i for i, e in enumerate(lines) if _url_of(e.pip) == url), None)
            name = _name_of(url[len("file://") :] if url.startswith("file://") else url)
        if name is None and step and step["for"]:
            name = step["for"]
        if name is None:
            failure = _BUILD_FAILED.search(output)
            name = _last_collected(output[: failure.start()] if failure else output)
        if index is None and name:
            index = origins.get(canonicalize_name(name))
        if index is None and name:
            index = _by_name(name, lines)
        detail = _build_error_line(output)
        here = self.interpreter.label
        label = name or "a package"
        why = f"it has no wheel for {here} and building it from source failed ({_step(what)})"
        direct = index is not None and name is not None and _names(lines[index]) == canonicalize_name(name)
        if index is not None and _local_folder(lines[index].pip):
            why = f"building it failed ({_step(what)})"  # the project's own package
        elif not direct:
            via = _names(lines[index]) if index is not None else None
            why = (
                f"{via or 'it'} needs {label}, which has no wheel for {here}, and building it from "
                f"source failed ({_step(what)})"
            )
        if detail:
            why += f": {detail}"
        if network:
            why += f"; pip could not reach the package index ({network})"
        suggestions: tuple[str, ...] = ()
        if name and not network and not (index is not None and _local_folder(lines[index].pip)):
            suggestions = self._wheel_versions(name, lines, index)
        requirement = lines[index].text if index is not None else label
        issue = self._issue(index, lines, requirement, why, suggestions)
        if network:
            return _Outcome([issue], None, False)
        return _Outcome([issue], index)

    def _wheel_versions(self, name: str, lines: list[RequirementLine], index: int | None) -> tuple[str, ...]:
        """The nearest versions of ``name`` that have a wheel for this interpreter (one more pip
        run, ``--only-binary :all:``, asking for a version no index has)."""
        key = canonicalize_name(name)
        if key not in self.wheel_versions:
            if self.runs >= MAX_RUNS - 1:
                return ()
            options = [e for e in lines if e.is_option and not e.text.startswith(("-c", "--constraint"))]
            probe = RequirementLine(lines[0].file, 0, name + _PROBE, name + _PROBE)
            run = self._pip([*options, probe], ["--only-binary", ":all:"])
            found = _UNRESOLVABLE.search(_clean(run.output))
            listed = found["versions"].split(",") if found else []
            self.wheel_versions[key] = [v.strip() for v in listed if v.strip() and v.strip() != "none"]
        versions = self.wheel_versions[key]
        requirement = None
        if index is not None and _names(lines[index]) == canonicalize_name(name):
            requirement = _requirement(lines[index].text)
        return tuple(_nearest(name, requirement, versions, " with a wheel"))

    def _conflict(self, output: str, lines: list[RequirementLine]) -> Issue:
        """pip's ``Cannot install A and B ...`` (each named with its file and line) and the lines
        under ``The conflict is caused by:``."""
        rows = output.splitlines()
        named: list[str] = []
        causes: list[str] = []
        involved: list[int] = []
        for number, row in enumerate(rows):
            found = _CONFLICT.search(row)
            if found:
                for part in re.split(r", | and ", found["what"]):
                    ref = _FROM_LINE.search(part)
                    index = int(ref["line"]) - 1 if ref else None
                    if index is None:
                        index = next(
                            (i for i, e in enumerate(lines) if not e.is_option and _is(e, part.strip())), None
                        )
                    if index is not None and 0 <= index < len(lines):
                        involved.append(index)
                        named.append(_describe(lines, index))
                    else:
                        named.append(part.strip())
            if row.strip() == "The conflict is caused by:":
                for cause in rows[number + 1 :]:
                    if not cause.strip():
                        break
                    causes.append(cause.strip())
        involved = list(dict.fromkeys(involved))
        index = involved[0] if involved else None
        together = " and ".join(named) if named else "these requirements"
        why = f"pip cannot install {together} together: their dependencies conflict"
        if causes:
            why += ": " + "; ".join(causes)
        elif not named:
            why += ": " + "; ".join(_last_lines(output))
        return self._issue(index, lines, "", why, ())

    def _other(self, output: str, lines: list[RequirementLine]) -> Issue:
        last = _last_lines(output)
        index = None
        for row in last:
            invalid = _INVALID.search(row)
            if invalid:
                index = next((i for i, e in enumerate(lines) if e.pip == invalid["text"].strip()), None)
            numbered = _OF_LINE.search(row) or _FROM_LINE.search(row)
            if numbered:
                index = int(numbered["line"]) - 1
        if index is None:  # a line pip quotes as it is (``Invalid requirement: --bogus``)
            quoted = [(len(e.pip), i) for i, e in enumerate(lines) if any(e.pip in row for row in last)]
            index = max(quoted)[1] if quoted else None
        if index is not None and not 0 <= index < len(lines):
            index = None
        last = [_FROM_LINE.sub(lambda m: _describe(lines, int(m["line"]) - 1), row) for row in last]
        text = "; ".join(last) if last else "pip failed and said nothing"
        requirement = lines[index].text if index is not None else ""
        return self._issue(index, lines, requirement, f"pip failed: {text}", ())

    def _issue(
        self,
        index: int | None,
        lines: list[RequirementLine],
        requirement: str,
        reason: str,
        suggestions: tuple[str, ...],
    ) -> Issue:
        if index is None or not 0 <= index < len(lines):
            return Issue(str(lines[0].file if lines else ""), None, requirement, reason, suggestions)
        entry = lines[index]
        return Issue(str(entry.file), entry.line, entry.text, reason, suggestions)

    # --- a run that resolves ---

    def _source_builds(self, run: _Run, lines: list[RequirementLine]) -> list[Issue]:
        """A warning for each package that resolves only to a source distribution."""
        assert run.report is not None
        origins = _origins(_clean(run.output), lines)
        out: list[Issue] = []
        installs = run.report.get("install")
        for item in installs if isinstance(installs, list) else []:
            if not isinstance(item, dict):
                continue
            info = item.get("download_info") or {}
            url = str(info.get("url", ""))
            if not url or url.split("#", 1)[0].split("?", 1)[0].endswith(".whl") or "dir_info" in info:
                continue
            meta = item.get("metadata") or {}
            name, version = str(meta.get("name", "")), str(meta.get("version", ""))
            index = origins.get(canonicalize_name(name)) if name else None
            if index is None and name:
                index = _by_name(name, lines)
            if index is None:
                index = next((i for i, e in enumerate(lines) if _url_of(e.pip) == url), None)
            source = url.rsplit("/", 1)[-1] or url
            what = f"{name} {version} has no wheel for {self.interpreter.label}"
            via = _names(lines[index]) if index is not None else None
            if via is not None and via != canonicalize_name(name):
                what = f"{via} needs {name} {version}, which has no wheel for {self.interpreter.label}"
            why = (
                f"{what}: it resolves to its source ({source}), which pip will build on every node "
                "that runs the API (slow, and it needs a compiler and headers there)"
            )
            out.append(self._issue(index, lines, name, why, ()))
        return out


# --- reading pip's output -------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_UNRESOLVABLE = re.compile(
    r"^ERROR: Could not find a version that satisfies the requirement (?P<req>.+?)"
    r"(?: \(from (?P<parent>[^()]*(?:\([^()]*\))?[^()]*)\))? \(from versions: (?P<versions>[^)]*)\)\s*$",
    re.MULTILINE,
)
_BUILD_FAILED = re.compile(
    r"subprocess-exited-with-error|did not run successfully|metadata-generation-failed|"
    r"^ERROR: Failed to build|^ERROR: Failed building wheel|^ERROR: Could not build wheels",
    re.MULTILINE,
)
_STEP = re.compile(r"\u00d7\s*(?P<step>.+?(?: for (?P<for>[A-Za-z0-9][\w.\-]*))?) did not run successfully")
_FAILED_TO_BUILD = re.compile(
    r"^ERROR: (?:Failed to build|Failed building wheel for|Could not build wheels for) "
    r"(?:'(?P<quoted>[^']+)'|(?P<bare>[A-Za-z0-9][\w.\-]*))",
    re.MULTILINE,
)
_CONFLICT = re.compile(
    r"Cannot install (?P<what>.+?) because these package versions have conflicting dependencies"
)
_FROM_LINE = re.compile(r"-r \S+ \(line (?P<line>\d+)\)")
_OF_LINE = re.compile(r"line (?P<line>\d+) of requirements\b")
_INVALID = re.compile(r"Invalid requirement: '(?P<text>.+?)'")
_IGNORED_PYTHON = re.compile(
    r"Ignored the following versions that require a different python version: (?P<which>.+)$", re.MULTILINE
)
_ORIGIN = re.compile(
    r"^(?:Collecting|Processing|Obtaining|Requirement already satisfied:|Looking up)\s+(?P<what>\S.*?)"
    r"\s+\(from (?P<chain>.*)\)\s*$",
    re.MULTILINE,
)
_COLLECTED = re.compile(r"^(?:Collecting|Processing|Obtaining)\s+(?P<what>\S+)", re.MULTILINE)
_NETWORK = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Could not fetch URL|ConnectTimeoutError|"
    r"ReadTimeoutError|Max retries exceeded|SSLError|ProxyError|Name or service not known|"
    r"Temporary failure in name resolution|Network is unreachable|connection broken by"
)
_BOX = re.compile(r"^[\s│╰─>\u00d7║╚═]*")  # pip's boxes: │ ╰─> and the cross
_NOISE = re.compile(
    r"^(?:Collecting|Processing|Obtaining|Looking in|Downloading|Using cached|Requirement already|"
    r"Would install|Preparing metadata|Getting requirements|Installing build|Building wheel|"
    r"Created wheel|Stored in|Successfully|Usage:|note:|hint:|\[end of output\]|"
    r"exit code:|See above for output|This error originates|To fix this|Additionally)",
)


def _clean(output: str) -> str:
    return _ANSI.sub("", output).replace("\r\n", "\n")


def _network_trouble(output: str) -> str | None:
    found = _NETWORK.search(output)
    return found.group(0) if found else None


def _requirement(text: str) -> Requirement | None:
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None


def _name_of(text: str) -> str | None:
    """The canonical name of a pip line or of what pip collects (a requirement, an archive)."""
    text = text.strip()
    if text.startswith(("-e ", "--editable ", "--editable=")):
        text = text.split(None, 1)[-1] if " " in text else text.split("=", 1)[1]
    egg = re.search(r"#egg=([A-Za-z0-9][\w.\-]*)", text)
    if egg:
        return canonicalize_name(egg.group(1))
    requirement = _requirement(text)
    if requirement is not None:
        return canonicalize_name(requirement.name)
    if _local_folder(text):  # a package folder: its name, most often
        return canonicalize_name(Path(text).name)
    base = text.split("#", 1)[0].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    try:
        return canonicalize_name(parse_wheel_filename(base)[0])
    except (InvalidWheelFilename, InvalidVersion):
        pass
    try:
        return canonicalize_name(parse_sdist_filename(base)[0])
    except (InvalidSdistFilename, InvalidVersion):
        return None


def _local_folder(text: str) -> bool:
    """Whether a pip line is a local folder (``-e ./pkg``, ``./pkg``), made absolute."""
    for prefix in ("-e ", "--editable ", "--editable="):
        if text.startswith(prefix):
            text = text[len(prefix) :].strip()
    text = text[len("file://") :] if text.startswith("file://") else text
    return os.path.isabs(text) and os.path.isdir(text)


def _names(entry: RequirementLine) -> str | None:
    return None if entry.is_option else _name_of(entry.pip)


def _by_name(name: str, lines: list[RequirementLine]) -> int | None:
    wanted = canonicalize_name(name)
    return next((i for i, e in enumerate(lines) if _names(e) == wanted), None)


def _is(entry: RequirementLine, wanted: str) -> bool:
    """Whether pip's ``wanted`` (``pfpkg==1.5``) is this line's requirement."""
    mine, theirs = _requirement(entry.pip), _requirement(wanted)
    if mine is None or theirs is None:
        return False
    return canonicalize_name(mine.name) == canonicalize_name(theirs.name) and str(mine.specifier) == str(
        theirs.specifier
    )


def _origins(output: str, lines: list[RequirementLine]) -> dict[str, int]:
    """Package name -> the index of the line that brought it in: the line itself, or what pip's
    ``Collecting x (from y->-r requirements (line N))`` says."""
    out: dict[str, int] = {}
    for index, entry in enumerate(lines):
        name = _names(entry)
        if name and name not in out:
            out[name] = index
    for match in _ORIGIN.finditer(output):
        numbers = _FROM_LINE.findall(match["chain"])
        name = _name_of(match["what"])
        if name and numbers and name not in out:
            out[name] = int(numbers[-1]) - 1
    return {k: v for k, v in out.items() if 0 <= v < len(lines)}


def _line_of(
    wanted: str, parent: str | None, lines: list[RequirementLine], origins: dict[str, int]
) -> int | None:
    exact = next((i for i, e in enumerate(lines) if not e.is_option and _is(e, wanted)), None)
    if exact is not None and not parent:
        return exact
    if parent:
        numbers = _FROM_LINE.findall(parent)
        if numbers:
            return int(numbers[-1]) - 1
        name = _name_of(parent.split("->", 1)[0])
        if name and name in origins:
            return origins[name]
    name = _name_of(wanted)
    if name and name in origins:
        return origins[name]
    return exact


def _last_collected(output: str) -> str | None:
    found = _COLLECTED.findall(output)
    return _name_of(found[-1]) if found else None


def _describe(lines: list[RequirementLine], index: int) -> str:
    if not 0 <= index < len(lines):
        return "a requirement"
    entry = lines[index]
    return f"{entry.text} ({entry.file.name}:{entry.line})"


def _step(step: str) -> str:
    """pip's step (``Getting requirements to build wheel``, ``installing build dependencies for x``)
    in lower case, without the package."""
    step = re.sub(r" for [A-Za-z0-9][\w.\-]*$", "", step.strip())
    return step[:1].lower() + step[1:]


def _build_error_line(output: str) -> str | None:
    """The first meaningful error line of a failed build's output (the boxed block), pip's
    prefixes (``│``, ``╰─>``) off."""
    rows = output.splitlines()
    start = next(
        (i for i, r in enumerate(rows) if "lines of output]" in r or "did not run successfully" in r), None
    )
    if start is None:
        return None
    block: list[str] = []
    for row in rows[start + 1 :]:
        text = _BOX.sub("", row).strip()
        if text == "[end of output]":
            break
        if text and not text.startswith(("exit code:", "[")):
            block.append(text)
    for text in block:
        if re.match(r"(?i)error:", text) and "subprocess-exited-with-error" not in text:
            return _short(text, 300)
    for text in block:
        if text.startswith("ERROR:"):
            return _short(text.removeprefix("ERROR: "), 300)
    exceptions = [t for t in block if re.match(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit)\b:?", t)]
    if exceptions:
        return _short(exceptions[-1], 300)
    with_error = [t for t in block if "Error" in t and not t.startswith(("File ", "Traceback"))]
    if with_error:
        return _short(with_error[0], 300)
    plain = [t for t in block if not t.startswith(("File ", "Traceback", "^"))]
    return _short(plain[-1], 300) if plain else None


def _last_lines(output: str, count: int = 3) -> list[str]:
    """pip's last meaningful lines: no traceback, no progress, errors first."""
    kept: list[str] = []
    in_traceback = False
    for row in output.splitlines():
        text = _BOX.sub("", row).strip()
        if row.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if in_traceback:
            if row.startswith((" ", "\t")) or not text:
                continue
            in_traceback = False
        if not text or _NOISE.match(text) or text.startswith(("File ", "^")):
            continue
        kept.append(text)
    errors = [t for t in kept if t.startswith(("ERROR:", "error:")) or "error" in t.lower()]
    picked = (errors or kept)[-count:]
    return [_short(t.removeprefix("ERROR: "), 300) for t in dict.fromkeys(picked)]


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _exact(requirement: Requirement) -> bool:
    return any(s.operator in ("==", "===") and not s.version.endswith(".*") for s in requirement.specifier)


def _pinned(requirement: Requirement) -> str | None:
    """The version a requirement is about: its ``==`` pin, else a bound of its range."""
    order = ("==", "===", "~=", ">=", ">", "<=", "<", "!=")
    for operator in order:
        for spec in requirement.specifier:
            if spec.operator == operator:
                return spec.version.removesuffix(".*")
    return None


def _nearest(
    name: str, requirement: Requirement | None, versions: Iterable[str], note: str = ""
) -> list[str]:
    """From pip's ``from versions`` list: the closest below and above the pin, and the newest."""
    parsed: list[tuple[Version, str]] = []
    for text in versions:
        try:
            parsed.append((Version(text), text))
        except InvalidVersion:
            continue
    if not parsed:
        return []
    pin_text = _pinned(requirement) if requirement is not None else None
    pin: Version | None = None
    if pin_text:
        with contextlib.suppress(InvalidVersion):
            pin = Version(pin_text)
    finals = [p for p in parsed if not p[0].is_prerelease]
    if finals and not (pin is not None and pin.is_prerelease):
        parsed = finals
    parsed.sort()
    labels: dict[str, list[str]] = {}
    if pin is not None:
        below = [p for p in parsed if p[0] < pin]
        above = [p for p in parsed if p[0] > pin]
        if below:
            labels.setdefault(below[-1][1], []).append("nearest below")
        if above:
            labels.setdefault(above[0][1], []).append("nearest above")
    labels.setdefault(parsed[-1][1], []).append("newest")
    order = {text: version for version, text in parsed}
    return [
        f"{name}=={text} ({', '.join(why)}{note})"
        for text, why in sorted(labels.items(), key=lambda kv: order[kv[0]])
    ]


def _url_of(pip_line: str) -> str:
    path = pip_line.split(None, 1)[-1] if pip_line.startswith("-") else pip_line
    if path.startswith("file://"):
        return path
    return Path(path).as_uri() if os.path.isabs(path) else path


# --- the cache -------------------------------------------------------------------


def _cache_key(lines: list[RequirementLine], interpreter: Interpreter) -> str:
    """The pip lines (with where they are written), the interpreter, pip's settings (``PIP_*``
    variables, its configuration files) and the mtimes of the local files the lines name."""
    data = {
        "schema": _SCHEMA,
        "lines": [[str(e.file), e.line, e.text, e.pip] for e in lines],
        "interpreter": [
            interpreter.python,
            interpreter.implementation,
            interpreter.version,
            interpreter.platform,
            interpreter.pip,
        ],
        "env": sorted((k, v) for k, v in os.environ.items() if k.startswith("PIP_")),
        "config": _config_files(interpreter),
        "local": _local_mtimes(lines),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _config_files(interpreter: Interpreter) -> list[tuple[str, str]]:
    """The contents (hashed) of the configuration files pip reads."""
    home = Path.home()
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep)
    xdg_home = os.environ.get("XDG_CONFIG_HOME", str(home / ".config"))
    candidates = [
        *(os.path.join(d, "pip", "pip.conf") for d in xdg_dirs if d),
        "/etc/pip.conf",
        os.path.join(interpreter.prefix, "pip.conf"),
        str(home / ".pip" / "pip.conf"),
        os.path.join(xdg_home, "pip", "pip.conf"),
        str(home / "Library" / "Application Support" / "pip" / "pip.conf"),
        os.environ.get("PIP_CONFIG_FILE", ""),
    ]
    out = []
    for path in dict.fromkeys(c for c in candidates if c):
        try:
            out.append((path, hashlib.sha256(Path(path).read_bytes()).hexdigest()))
        except OSError:
            continue
    return out


def _local_mtimes(lines: list[RequirementLine]) -> list[tuple[str, int]]:
    """The local files and folders the lines (and ``PIP_FIND_LINKS``) name, and what is in them."""
    out: list[tuple[str, int]] = []
    texts = [entry.pip for entry in lines] + [os.environ.get("PIP_FIND_LINKS", "")]
    for text in texts:
        for token in re.split(r"[\s=]+", text):
            path = token[len("file://") :] if token.startswith("file://") else token
            if os.path.isabs(path):
                out += _mtimes(Path(path))
    return sorted(set(out))


def _mtimes(path: Path) -> list[tuple[str, int]]:
    try:
        out = [(str(path), path.stat().st_mtime_ns)]
    except OSError:
        return []
    if path.is_dir():  # a --find-links folder, a package folder: what is in it
        try:
            children = sorted(path.iterdir())[:2000]
        except OSError:
            return out
        for child in children:
            with contextlib.suppress(OSError):
                out.append((str(child), child.stat().st_mtime_ns))
    return out


def _cache_read(folder: Path, key: str) -> Report | None:
    path = folder / f"{key}.json"
    try:
        data = json.loads(path.read_text())
        if data["schema"] != _SCHEMA or data["key"] != key:
            return None
        if time.time() - float(data["created"]) > CACHE_MAX_AGE_S:
            return None
        return Report.from_dict(data["report"], cached=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # none yet, or unreadable: asked again


def _cache_write(folder: Path, key: str, report: Report) -> None:
    """Write the entry whole or not at all (a read-only home: no cache)."""
    data = {"schema": _SCHEMA, "key": key, "created": time.time(), "report": report.to_dict()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(temporary, folder / f"{key}.json")
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
