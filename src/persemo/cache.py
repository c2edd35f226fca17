"""On-disk cache of decoded audio and features, keyed by the audio file's content and the feature config.

Each entry is one safetensors file written to a temporary name and renamed into place, so a run
killed mid-write leaves no entry that could be read back half-written; a corrupt entry (a disk
fault, a foreign file) is treated as a miss and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

CACHE_ENV = "PERSEMO_CACHE"
FORMAT = 1  # bump when the entry layout changes


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "persemo"


def file_digest(path: str | Path) -> str:
    """sha256 of the file's bytes (first 32 hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def config_digest(key: dict) -> str:
    blob = json.dumps({"format": FORMAT, **key}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class FeatureCache:
    """Entries under ``root/<config digest>/<ab>/<file digest>.safetensors``."""

    def __init__(self, root: str | Path | None, key: dict):
        self.enabled = root is not None
        self.root = Path(root) if root is not None else None
        self.key = key
        self.digest = config_digest(key)

    def _path(self, file_hash: str) -> Path:
        assert self.root is not None
        return self.root / self.digest / file_hash[:2] / f"{file_hash}.safetensors"

    def get(self, file_hash: str) -> dict[str, np.ndarray] | None:
        if not self.enabled:
            return None
        p = self._path(file_hash)
        if not p.is_file():
            return None
        from safetensors.numpy import load_file

        try:
            return load_file(str(p))
        except Exception:  # noqa: BLE001 - unreadable entry: a miss, rewritten by put()
            return None

    def put(self, file_hash: str, arrays: dict[str, np.ndarray]) -> None:
        if not self.enabled:
            return
        from safetensors.numpy import save_file

        p = self._path(file_hash)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=p.parent)
        os.close(fd)
        try:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
