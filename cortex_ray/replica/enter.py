"""A replica or worker entering its project, before the handler is imported (as Cortex did).

- the working directory becomes the project folder (so ``open("values.json")`` works);
- ``python_path`` (default: the project folder), the project folder and the handler's folder
  go first on ``sys.path``;
- Cortex's in-handler modules are registered (:mod:`cortex_ray.compat`) and ``log_level`` is
  set on the handler logger, the root logger and cortex-ray's;
- ``dependencies.sh`` runs with bash, once per process, in the project folder; when it fails,
  the replica fails to start with the script's output.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

from cortex_ray import compat, process_log
from cortex_ray.errors import UserHandlerError
from cortex_ray.project.files import ProjectRef
from cortex_ray.spec import ApiSpec

__all__ = ["SHELL_TIMEOUT_S", "enter_project", "run_dependencies_script"]

SHELL_TIMEOUT_S = float(os.environ.get("CORTEX_RAY_DEPENDENCIES_TIMEOUT_S", "1800"))

log = logging.getLogger("cortex_ray.replica")
_ran: set[str] = set()
_lock = threading.Lock()


def enter_project(api: ApiSpec, ref: ProjectRef | None) -> str:
    """Enter the project (blocking: call it off the event loop); returns the handler file's path
    in this process."""
    h = api.handler
    here = ref.here() if ref is not None else os.path.dirname(h.path)
    localize = ref.localize if ref is not None else (lambda p: p)
    handler_file = localize(h.path)
    os.chdir(here)
    folders = [localize(h.python_path) if h.python_path else here, here, os.path.dirname(handler_file)]
    for folder in reversed(list(dict.fromkeys(folders))):
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)
    level = h.log_level.upper()
    compat.install({"apiName": api.name, "apiKind": api.kind}, level)
    logging.getLogger().setLevel(level)
    process_log.configure(level)
    script = localize(h.dependencies.shell)
    if os.path.isfile(script):
        run_dependencies_script(script, here)
    return handler_file


def run_dependencies_script(script: str, cwd: str) -> None:
    """``bash script`` once per process (a second replica core in it does not run it again)."""
    with _lock:
        if script in _ran:
            return
        log.info("running %s", script)
        try:
            done = subprocess.run(
                ["bash", "-e", script],
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=SHELL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise UserHandlerError(
                f"{os.path.basename(script)} did not finish in {SHELL_TIMEOUT_S:g} s "
                "(CORTEX_RAY_DEPENDENCIES_TIMEOUT_S)"
            ) from exc
        except OSError as exc:
            raise UserHandlerError(f"cannot run {os.path.basename(script)} with bash: {exc}") from exc
        output = done.stdout.decode(errors="replace")
        if output.strip():
            log.info("%s output:\n%s", os.path.basename(script), output[-4000:].rstrip())
        if done.returncode != 0:
            tail = "\n".join(output.rstrip().splitlines()[-20:])
            raise UserHandlerError(
                f"{os.path.basename(script)} exited with status {done.returncode}:\n{tail}"
            )
        _ran.add(script)
