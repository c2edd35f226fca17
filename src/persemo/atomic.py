"""Atomic writes: readers see the old file or the whole new one, never a part.

Every artifact, cache entry, report and result goes through ``atomic_write`` (a temporary file in the
same folder, flushed, then renamed over the target). A temporary file left by a killed process is
removed by the next write of the same target once it is older than ``STALE_SECONDS``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

STALE_SECONDS = 3600.0  # a temporary file this old belongs to no live writer


def _clean_stale(path: Path) -> None:
    now = time.time()
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_SECONDS:
                tmp.unlink()
        except OSError:
            pass


def atomic_write(path: str | Path, write: Callable[[str], None], mode: int = 0o644, durable: bool = True) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file beside ``path``, then rename it into place.

    ``durable`` (artifacts, reports): flush to disk before the rename, and remove stale temporary files of
    the same target. A cache entry, rebuilt when lost, passes False: no fsync, no folder scan per write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if durable:
        _clean_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; an artifact is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
