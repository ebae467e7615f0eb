"""All-or-nothing file writes, shared by every module that saves results."""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], *, fsync: bool = False) -> Path:
    """Write ``path`` all-or-nothing: ``write(tmp)`` fills a temporary file beside it, then one rename.

    A crash or an error (disk full) leaves the old file or the new one, never a partial one; the temporary
    file (``.<name>.<pid>.<hex>.tmp``, created with the process umask) never survives an error.
    ``fsync=True`` flushes the data to disk before the rename (checkpoints).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
