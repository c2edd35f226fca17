"""Corpus readers: each returns a ``Scan`` of the same ``Utterance`` records."""

from __future__ import annotations

from pathlib import Path

from .base import (EMOTIONS, EXTRA_EMOTIONS, PERSIAN_NAMES, CorpusError, Problem, Scan, Utterance,
                   load_manifest, save_manifest, with_durations)
from . import csv as csv_reader
from . import ased, emodb, shemo

CORPORA = ("shemo", "emodb", "ased", "csv")


def scan_corpus(corpus: str, data: str | Path, durations: bool = True) -> Scan:
    """Read ``corpus`` (shemo, emodb, ased or csv) at ``data``; optionally read every file's duration."""
    readers = {"shemo": shemo.scan, "emodb": emodb.scan, "ased": ased.scan, "csv": csv_reader.scan}
    if corpus not in readers:
        raise CorpusError(f"unknown corpus {corpus!r}: choose one of {', '.join(CORPORA)}")
    result = readers[corpus](data)
    return with_durations(result) if durations else result


__all__ = ["CORPORA", "EMOTIONS", "EXTRA_EMOTIONS", "PERSIAN_NAMES", "CorpusError", "Problem", "Scan",
           "Utterance", "load_manifest", "save_manifest", "scan_corpus", "with_durations"]
