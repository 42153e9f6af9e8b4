"""Files of the registry (outputs, work folder, push hashes) are written atomically."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomically", "write_stream_if_changed"]


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` to ``path`` through a temporary file beside it and ``os.replace``: a kill at
    any moment leaves the old file or the new one, never a truncated one."""
    _replace(path, lambda target: target.write(data))


def _replace(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """``path`` replaced by what ``fill`` writes to a temporary file beside it (flushed and
    synced first); the temporary file is removed if anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as target:
            fill(target)
            target.flush()
            os.fsync(target.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _digest(stream: BinaryIO) -> str:
    found = hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        found.update(chunk)
    return found.hexdigest()


def write_stream_if_changed(path: Path, stream: BinaryIO) -> None:
    """What ``stream`` holds from its position to its end, to ``path`` unless the file holds
    those bytes already; atomically, as :func:`write_atomically`, and never all in memory."""
    start = stream.tell()
    if path.exists():
        with path.open("rb") as current:
            same = _digest(current) == _digest(stream)
        if same:
            return
        stream.seek(start)
    _replace(path, lambda target: shutil.copyfileobj(stream, target, 1 << 20))
