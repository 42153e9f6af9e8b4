"""Folders and files only their owner can read: the cache, uploads and job folders hold
patient data (0700 folders, 0600 files, whatever the process's umask).

Only what fhir_cart creates is given these modes; a folder that already exists (``/tmp``,
a home directory) is left as it is, except the service's own ``data_dir``, which
:func:`tighten` makes 0700 at start-up.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = ["private_dir", "tighten", "touch_private", "write_private"]

log = logging.getLogger(__name__)


def private_dir(path: Path) -> Path:
    """``path`` and any missing parents created 0700 (those that exist are left alone)."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask, never widened
    return path


def write_private(path: Path, data: bytes) -> Path:
    """``data`` written to ``path`` (0600, replaced if it exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)
    return path


def touch_private(path: Path) -> Path:
    """An empty file created 0600 if ``path`` does not exist (a SQLite database, before
    SQLite creates it with the umask's mode; its -wal and -shm files take its mode)."""
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    return path


def tighten(folder: Path) -> None:
    """The service's data folder: created 0700, or made 0700 if it is wider (logged)."""
    private_dir(folder)
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        try:
            os.chmod(folder, 0o700)
            log.warning("data folder was readable by others (%o); now 0700", mode)
        except PermissionError:
            log.warning("data folder is readable by others (%o) and not ours to change", mode)
