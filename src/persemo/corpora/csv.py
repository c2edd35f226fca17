"""Any other corpus from a CSV or TSV manifest: columns ``path,emotion[,speaker][,gender]`` and any others,
kept per utterance as metadata (``Utterance.meta``; ``gender`` also fills ``Utterance.gender``).

Emotion names are lower-cased and spellings of one emotion normalised (``ALIASES``: angry -> anger); any
other label stays as written. Paths are relative to the manifest's folder. Without a speaker column every utterance is its own
speaker, and only the random (speaker-dependent) split is meaningful; the reader says so.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .base import CorpusError, Problem, Scan, Utterance

# spellings of one emotion, normalised to the shared vocabulary's word. Never a merge of two emotions (calm is not
# neutral, joy is not happy in every corpus): that is the user's choice (``--labels calm=neutral``; labels.py)
ALIASES = {"angry": "anger", "happy": "happiness", "sad": "sadness", "surprised": "surprise", "fearful": "fear",
           "disgusted": "disgust", "bored": "boredom"}


BUILT_IN = ("path", "emotion", "speaker")  # every other column is kept as the utterance's metadata


def scan(manifest: str | Path, map_labels: bool = True, corpus: str = "csv") -> Scan:
    p = Path(manifest).expanduser()
    if p.is_dir():
        candidates = sorted(list(p.glob("*.csv")) + list(p.glob("*.tsv")))
        if len(candidates) != 1:
            raise CorpusError(f"csv: {p} is a folder; give the manifest file itself (found {len(candidates)} "
                              "csv/tsv files)")
        p = candidates[0]
    if not p.is_file():
        raise CorpusError(f"csv: manifest not found: {p}")
    text = p.read_text(encoding="utf-8-sig")
    delim = "\t" if p.suffix.lower() == ".tsv" or ("\t" in text.splitlines()[0] if text else False) else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delim)
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    for need in ("path", "emotion"):
        if need not in cols:
            raise CorpusError(f"csv: {p}: missing column {need!r} (have: {', '.join(cols) or 'none'})")
    result = Scan(corpus=corpus, root=str(p.parent))
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        rel, emotion = row.get("path", ""), row.get("emotion", "").lower()
        if not rel or not emotion:
            result.problems.append(Problem(f"{p}:{line}", "empty path or emotion"))
            continue
        if map_labels:
            emotion = ALIASES.get(emotion, emotion)
        audio = (p.parent / rel).resolve()
        if not audio.is_file():
            result.problems.append(Problem(str(audio), f"listed at {p.name}:{line} but not found"))
            continue
        speaker = row.get("speaker") or f"utt:{rel}"
        meta = {k: v for k, v in row.items() if k and k not in BUILT_IN}
        result.utterances.append(Utterance(id=Path(rel).stem if "speaker" in row else rel, path=str(audio),
                                           emotion=emotion, speaker=speaker,
                                           gender=(row.get("gender") or None), corpus=corpus, meta=meta))
    return result
