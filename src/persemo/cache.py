"""On-disk cache of decoded audio and features, keyed by the audio file's content and the feature config.

Each entry is one safetensors file written to a temporary name and renamed into place, so a run
killed mid-write leaves no entry that could be read back half-written; a corrupt entry (a disk
fault, a foreign file) is treated as a miss and rewritten. Entries are written here (the format is
an 8-byte header length, a JSON header and the raw little-endian arrays) straight from the arrays'
memory into the already open temporary file, without the copy of every array and the second open
that ``safetensors.numpy.save_file`` makes; ``safetensors`` reads them back.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from .atomic import atomic_write

CACHE_ENV = "PERSEMO_CACHE"
FORMAT = 2  # bump when the entry layout or the stored values change (2: per-item delta edges)


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
    """Entries under ``root/<config digest>/<file digest>.safetensors``.

    One flat folder per feature config: ext4, APFS and NTFS index large folders, and spreading
    entries over 256 sub-folders made a cold run's writes twice as slow (measured on ext4).
    """

    def __init__(self, root: str | Path | None, key: dict):
        self.enabled = root is not None
        self.root = Path(root) if root is not None else None
        self.key = key
        self.digest = config_digest(key)
        self._made: set[Path] = set()  # entry folders known to exist

    def _path(self, file_hash: str) -> Path:
        assert self.root is not None
        return self.root / self.digest / f"{file_hash}.safetensors"

    def get(self, file_hash: str) -> dict[str, np.ndarray] | None:
        if not self.enabled:
            return None
        p = self._path(file_hash)
        if not p.is_file():
            return None
        try:
            return load_file(str(p))
        except Exception:  # noqa: BLE001 - unreadable entry: a miss, rewritten by put()
            return None

    def put(self, file_hash: str, arrays: dict[str, np.ndarray]) -> None:
        if not self.enabled:
            return
        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                write_entry(fh, arrays)

        atomic_write(self._path(file_hash), write, durable=False)


_DTYPES = {"float32": "F32", "float64": "F64", "float16": "F16", "int64": "I64", "int32": "I32",
           "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def write_entry(fh, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to the binary file ``fh`` in the safetensors format."""
    header: dict = {}
    blobs = []
    offset = 0
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        if a.dtype.name not in _DTYPES:
            raise TypeError(f"cache: cannot store dtype {a.dtype} ({name})")
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        header[name] = {"dtype": _DTYPES[a.dtype.name], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        blobs.append(a)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the arrays start 8-byte aligned, as safetensors writes them
    fh.write(struct.pack("<Q", len(text)))
    fh.write(text)
    for a in blobs:
        if a.nbytes:
            fh.write(memoryview(a.reshape(-1)).cast("B"))
