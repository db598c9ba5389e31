"""Where a replica keeps its disk tier: a private folder nobody else can write to.

Model files are loaded (often unpickled) from here, so another user of a shared host
must not be able to create or swap them. The base folder is
``$TMPDIR/cortex-ray-<uid>/`` (override: ``CORTEX_RAY_CACHE_DIR``), created with mode
0700 and checked on every start: it must be a real folder (not a link), owned by this
user, with no access for group or others. If it is not, a fresh private folder is made
instead (and a warning says why). Below it, each replica process has
``<api>/pid-<pid>/``; folders of processes that no longer exist are removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

__all__ = ["private_cache_root"]

log = logging.getLogger("cortex_ray.cache")


def private_cache_root(api_name: str) -> str:
    """This replica's own disk cache folder, private to the user running it."""
    configured = os.environ.get("CORTEX_RAY_CACHE_DIR")
    base = Path(configured) if configured else Path(tempfile.gettempdir()) / f"cortex-ray-{os.getuid()}"
    try:
        _private_dir(base)
        api_dir = base / api_name
        _private_dir(api_dir)
    except PermissionError as exc:
        base = Path(tempfile.mkdtemp(prefix="cortex-ray-"))  # mkdtemp: 0700, ours, unpredictable
        log.warning("disk cache: %s; using %s instead", exc, base)
        api_dir = base / api_name
        api_dir.mkdir(mode=0o700)
    for folder in api_dir.glob("pid-*"):
        pid = folder.name.removeprefix("pid-")
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)
    mine = api_dir / f"pid-{os.getpid()}"
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir(mode=0o700)
    return str(mine)


def _private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700, or check that the existing one is private and ours."""
    try:
        path.mkdir(mode=0o700, parents=True)
        return
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise PermissionError(f"{path} is not a plain folder (a link, or a file)")
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)  # ours: make it private before anything is written in it
