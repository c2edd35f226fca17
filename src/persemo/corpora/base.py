"""The manifest: one record per utterance, the same for every corpus.

Readers (shemo, emodb, ased, csv) scan a folder or table and return a ``Scan``: the records that parsed and
every problem found (names that do not parse, missing files), so that nothing is dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..atomic import atomic_write_bytes, atomic_write_text  # noqa: F401 - re-exported
from ..audio import AudioError, audio_info

# The shared vocabulary. The first six are ShEMO's; the rest are corpus-specific extras.
EMOTIONS = ("anger", "fear", "happiness", "neutral", "sadness", "surprise")
EXTRA_EMOTIONS = ("boredom", "disgust")
PERSIAN_NAMES = {
    "anger": "خشم",
    "fear": "ترس",
    "happiness": "شادی",
    "neutral": "خنثی",
    "sadness": "غم",
    "surprise": "تعجب",
    "boredom": "ملال",
    "disgust": "انزجار",
}


class CorpusError(ValueError):
    """The corpus path or manifest cannot be used; the message names the path or field."""


@dataclass(frozen=True)
class Utterance:
    id: str
    path: str
    emotion: str
    speaker: str
    gender: str | None = None
    corpus: str = ""
    duration: float | None = None
    # the corpus's other columns for this utterance (ASED: gender, sentence, shared_text; EmoDB: text), as
    # written: what reports break their figures down by (``--by COLUMN``) and what a text-aware split reads
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Problem:
    path: str
    reason: str


@dataclass
class Scan:
    """What a reader found: usable utterances, and problems with the path of each."""

    corpus: str
    root: str
    utterances: list[Utterance] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # the user's label mapping as applied (``labels.map_labels``): {from: {"to": label, "n": clips}}
    labels_mapped: dict[str, dict] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """The emotions present, in the shared vocabulary's order then alphabetical extras."""
        present = {u.emotion for u in self.utterances}
        order = [e for e in EMOTIONS + EXTRA_EMOTIONS if e in present]
        return order + sorted(present - set(order))

    def summary(self, by=()) -> dict:
        """Counts by emotion, gender and speaker, the labels mapped, the problems; and per value of each
        column of ``by`` (a metadata column, speaker or gender; ``counts_by``)."""
        utts = self.utterances
        by = check_columns(utts, by, self.corpus)
        durations = [u.duration for u in utts if u.duration is not None]
        speakers = Counter(u.speaker for u in utts)
        genders = Counter(u.gender or "unknown" for u in utts)
        speaker_gender = {}
        for u in utts:
            speaker_gender.setdefault(u.speaker, u.gender or "unknown")
        return {
            "corpus": self.corpus,
            "root": self.root,
            "utterances": len(utts),
            "speakers": len(speakers),
            "speakers_by_gender": dict(sorted(Counter(speaker_gender.values()).items())),
            "by_emotion": {e: sum(1 for u in utts if u.emotion == e) for e in self.labels},
            "by_gender": dict(sorted(genders.items())),
            "by_speaker": dict(sorted(speakers.items())),
            "total_duration_s": round(sum(durations), 3) if durations else None,
            "labels_mapped": self.labels_mapped,
            **({"by_column": {c: counts_by(utts, c, self.labels) for c in by}} if by else {}),
            "problems": [asdict(p) for p in self.problems],
        }


MANIFEST_FIELDS = ("id", "path", "emotion", "speaker", "gender", "corpus", "duration", "meta")


def save_manifest(utterances: list[Utterance], path: str | Path) -> None:
    """Write a manifest as CSV (absolute paths), atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS)
    w.writeheader()
    for u in utterances:
        row = {k: ("" if v is None else v) for k, v in asdict(u).items()}
        row["meta"] = json.dumps(u.meta, ensure_ascii=False, sort_keys=True) if u.meta else ""
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())


def load_manifest(path: str | Path) -> list[Utterance]:
    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"manifest not found: {p}")
    with p.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for i, r in enumerate(rows, start=2):
        missing = [k for k in ("id", "path", "emotion", "speaker") if not r.get(k)]
        if missing:
            raise CorpusError(f"{p}: line {i}: missing {', '.join(missing)}")
        out.append(Utterance(id=r["id"], path=r["path"], emotion=r["emotion"], speaker=r["speaker"],
                             gender=r.get("gender") or None, corpus=r.get("corpus", ""),
                             duration=float(r["duration"]) if r.get("duration") else None,
                             meta=_meta(r.get("meta"), p, i)))
    return out


def _meta(text: str | None, path: Path, line: int) -> dict[str, str]:
    if not text:
        return {}
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise CorpusError(f"{path}: line {line}: meta is not a JSON object")
    return {str(k): str(v) for k, v in meta.items()}


def summary_json(scan: Scan, by=()) -> str:
    return json.dumps(scan.summary(by), ensure_ascii=False, indent=2)


NONE = "(none)"  # the value of an utterance that has no value in a column
BUILT_IN_COLUMNS = ("speaker", "gender")  # columns every utterance has besides its metadata


def columns_of(utterances: list[Utterance]) -> list[str]:
    """The columns an utterance can be grouped by: every metadata column present, then speaker and gender."""
    meta = sorted({k for u in utterances for k in u.meta})
    return meta + [c for c in BUILT_IN_COLUMNS if c not in meta]


def value_of(u: Utterance, column: str) -> str:
    """``u``'s value in ``column`` (its metadata first, then speaker or gender); ``NONE`` when it has none."""
    v = u.meta.get(column)
    if v is None and column in BUILT_IN_COLUMNS:
        v = getattr(u, column)
    return NONE if v in (None, "") else str(v)


def check_columns(utterances: list[Utterance], columns, corpus: str = "") -> list[str]:
    """``columns`` if every one of them exists in ``utterances``; else a one-line error listing those that do."""
    columns = list(columns or ())
    have = columns_of(utterances)
    unknown = [c for c in columns if c not in have]
    if unknown:
        raise CorpusError(f"--by {unknown[0]}: no such column in {corpus or 'the corpus'} (columns: "
                          f"{', '.join(have)})")
    return columns


def counts_by(utterances: list[Utterance], column: str, labels: list[str]) -> dict[str, dict]:
    """Per value of ``column`` (sorted): {"utterances": n, "speakers": n, "by_emotion": {label: n}}."""
    out: dict[str, dict] = {}
    for v in sorted({value_of(u, column) for u in utterances}):
        group = [u for u in utterances if value_of(u, column) == v]
        emo = Counter(u.emotion for u in group)
        out[v] = {"utterances": len(group), "speakers": len({u.speaker for u in group}),
                  "by_emotion": {e: emo.get(e, 0) for e in labels}}
    return out


def find_wavs(root: Path) -> list[Path]:
    """Every .wav below ``root`` (case-insensitive), sorted, skipping hidden folders such as __MACOSX."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__MACOSX")))
        for name in sorted(filenames):
            if name.lower().endswith(".wav") and not name.startswith("._"):
                out.append(Path(dirpath) / name)
    return out


def require_dir(path: str | Path, corpus: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise CorpusError(f"{corpus}: data path does not exist: {p}")
    if not p.is_dir():
        raise CorpusError(f"{corpus}: data path is not a folder: {p}")
    return p


def with_durations(scan: Scan) -> Scan:
    """Fill in durations from the file headers; unreadable files move to problems."""
    kept = []
    for u in scan.utterances:
        try:
            _, _, dur = audio_info(u.path)
        except AudioError as exc:
            scan.problems.append(Problem(u.path, exc.reason))
            continue
        if dur <= 0:
            scan.problems.append(Problem(u.path, "empty audio (no samples)"))
            continue
        kept.append(replace(u, duration=round(dur, 4)))
    scan.utterances = kept
    return scan
