"""An archive's inputs and its results file: what to score, what was scored, and how rows reach disk.

Inputs (``collect_inputs``) are audio files, folders (searched recursively for ``AUDIO_EXTENSIONS``) and
manifests (``.csv`` / ``.tsv`` with a ``path`` column; relative paths are relative to the manifest). Each
becomes its absolute path, in the order given, without repeats.

Results (``ResultStore``) go to ``--out`` as CSV, JSON lines or Parquet (pyarrow), one row per file:
``file, size, mtime_ns, duration, emotion, confidence, p_<label>..., model, status``. While a batch runs,
rows are written in chunks, each its own part file ``<out>.parts/NNNNNN.jsonl`` written atomically (a
temporary file renamed into place): a process killed at any moment leaves whole part files only, and
loses at most the chunk it was holding. At the end the earlier rows and the parts are joined atomically
into ``<out>`` and the parts removed. A rerun reads ``<out>`` and any parts, and skips every file whose
path, size and modification time match a row already there: each file is scored once.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from .atomic import atomic_write, atomic_write_text

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64")
MANIFEST_EXTENSIONS = (".csv", ".tsv")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
BASE_COLUMNS = ("file", "size", "mtime_ns", "duration", "emotion", "confidence")
TAIL_COLUMNS = ("model", "status")


class BatchError(ValueError):
    """An input or output a user named cannot be used; one line naming it."""


# ------------------------------------------------------------------------------------------ inputs

def collect_inputs(paths: Iterable[str | Path]) -> list[str]:
    """Files, folders and manifests -> absolute file paths, in order, each once.

    A path that does not exist is kept (it becomes an error row); a folder without audio files and a
    manifest without a ``path`` column are errors."""
    out: dict[str, None] = {}
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file())
            if not found:
                raise BatchError(f"{p}: a folder, not an audio file, and it holds no audio files "
                                 f"({', '.join(AUDIO_EXTENSIONS)})")
            out.update((os.path.abspath(f), None) for f in found)
        elif p.suffix.lower() in MANIFEST_EXTENSIONS and p.is_file():
            out.update((f, None) for f in read_manifest(p))
        else:
            out[os.path.abspath(p)] = None
    return list(out)


def read_manifest(path: Path) -> list[str]:
    """The ``path`` column of a CSV/TSV manifest, as absolute paths (relative ones from its folder)."""
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter=delim)
        if "path" not in (reader.fieldnames or []):
            raise BatchError(f"{path}: a manifest needs a 'path' column "
                             f"(columns: {', '.join(reader.fieldnames or [])})")
        rows = [r["path"].strip() for r in reader if (r.get("path") or "").strip()]
    return [os.path.abspath(path.parent / r) for r in rows]


def file_key(path: str) -> tuple[str, int, int] | None:
    """(path, size, mtime_ns), or None when the file cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path, st.st_size, st.st_mtime_ns


# ------------------------------------------------------------------------------------------ results

SEGMENT_COLUMNS = ("segment", "start", "end")  # --segments: which piece of the file a row is ("all": the file)


def columns(labels: Sequence[str], segments: bool = False) -> list[str]:
    return [*BASE_COLUMNS, *(SEGMENT_COLUMNS if segments else ()), *(f"p_{l}" for l in labels),
            *(("combined",) if segments else ()), *TAIL_COLUMNS]


def _row_key(row: dict) -> tuple[str, int, int] | None:
    try:
        return str(row["file"]), int(row["size"]), int(row["mtime_ns"])
    except (KeyError, TypeError, ValueError):
        return None


class ResultStore:
    """The rows of ``out``: those of earlier runs, and new ones added in atomic chunks (see the module)."""

    def __init__(self, out: str | Path, labels: Sequence[str], model_id: str, segments: bool = False):
        self.out = Path(out)
        self.format = FORMATS.get(self.out.suffix.lower())
        if self.format is None:
            raise BatchError(f"{self.out}: --out must end in {', '.join(FORMATS)}")
        if self.format == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise BatchError(f"{self.out}: Parquet output needs pyarrow: pip install pyarrow") from None
        if self.out.is_dir():
            raise BatchError(f"{self.out}: a folder; --out names a results file")
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.columns = columns(labels, segments)
        self.model_id = model_id
        # by file, its rows (one, or with --segments its summary and one per segment): earlier rows, then the
        # parts in order (a later chunk's rows for a file replace the earlier ones); a file's rows share a chunk
        self.rows: dict[str, list[dict]] = {}
        self._next = 0
        self._load()

    def _load(self) -> None:
        chunks = [read_rows(self.out, self.format)] if self.out.is_file() else []
        parts = sorted(self.parts.glob("*.jsonl")) if self.parts.is_dir() else []
        chunks += [read_rows(p, "jsonl") for p in parts]
        if parts:
            self._next = max(int(p.stem) for p in parts if p.stem.isdigit()) + 1
        for rows in chunks:
            for row in rows:
                if str(row.get("model")) != self.model_id:
                    raise BatchError(f"{self.out}: holds rows of another model ({row.get('model')}, this one is "
                                     f"{self.model_id}); give another --out")
            self._keep(rows)

    def _keep(self, rows: list[dict]) -> None:
        by_file: dict[str, list[dict]] = {}
        for r in rows:
            by_file.setdefault(str(r["file"]), []).append(r)
        self.rows.update(by_file)

    def done(self, key: tuple[str, int, int] | None) -> bool:
        """Whether a row for this exact file (path, size, mtime) is there already."""
        if key is None:
            return False
        rows = self.rows.get(key[0])
        return bool(rows) and _row_key(rows[0]) == key

    def add_chunk(self, rows: list[dict]) -> None:
        """Write ``rows`` as the next part file (atomically, flushed to disk), then keep them."""
        if not rows:
            return
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        atomic_write_text(self.parts / f"{self._next:06d}.jsonl", text)
        self._next += 1
        self._keep(rows)

    def finish(self, order: Sequence[str]) -> Path:
        """Join every row into ``out`` atomically (``order``'s files first, in that order), remove the parts."""
        first = [r for f in order if f in self.rows for r in self.rows[f]]
        seen = set(order)
        rows = first + [r for f, rs in self.rows.items() if f not in seen for r in rs]
        write_rows(self.out, self.format, rows, self.columns)
        if self.parts.is_dir():
            shutil.rmtree(self.parts, ignore_errors=True)
        return self.out


def read_rows(path: Path, fmt: str) -> list[dict]:
    """Rows of a results file (CSV values are strings; an empty CSV cell is None)."""
    try:
        if fmt == "jsonl":
            with path.open(encoding="utf-8") as fh:
                return [json.loads(line) for line in fh if line.strip()]
        if fmt == "csv":
            with path.open(newline="", encoding="utf-8") as fh:
                return [{k: (v if v != "" else None) for k, v in r.items()} for r in csv.DictReader(fh)]
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    except (OSError, ValueError, KeyError) as exc:
        raise BatchError(f"{path}: cannot read it as {fmt} results ({str(exc).splitlines()[0][:200]})") from None


def write_rows(path: Path, fmt: str, rows: list[dict], cols: Sequence[str]) -> Path:
    """All ``rows`` to ``path`` in ``fmt``, atomically (missing values empty / null)."""
    if fmt == "jsonl":
        return atomic_write_text(path, "".join(json.dumps({c: r.get(c) for c in cols}, ensure_ascii=False) + "\n"
                                               for r in rows))
    if fmt == "csv":
        def write(tmp: str) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=list(cols), extrasaction="ignore")
                w.writeheader()
                w.writerows({c: ("" if r.get(c) is None else r.get(c)) for c in cols} for r in rows)

        return atomic_write(path, write)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows]) if rows else \
        pa.table({c: pa.array([], pa.string()) for c in cols})
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))
