"""Corpus readers: each returns a ``Scan`` of the same ``Utterance`` records."""

from __future__ import annotations

from pathlib import Path

from .base import (EMOTIONS, EXTRA_EMOTIONS, PERSIAN_NAMES, CorpusError, Problem, Scan, Utterance,
                   load_manifest, save_manifest, with_durations)
from . import csv as csv_reader
from . import ased, emodb, shemo
from .labels import describe_mapping, map_labels, parse_label_specs

CORPORA = ("shemo", "emodb", "ased", "csv")


def scan_corpus(corpus: str, data: str | Path, durations: bool = True, labels: dict[str, str] | None = None,
                strict_labels: bool = True) -> Scan:
    """Read ``corpus`` (shemo, emodb, ased or csv) at ``data``; relabel by the user's mapping ``labels``
    {from: to} (``labels.map_labels``; recorded in ``Scan.labels_mapped``); optionally read every file's
    duration."""
    readers = {"shemo": shemo.scan, "emodb": emodb.scan, "ased": ased.scan, "csv": csv_reader.scan}
    if corpus not in readers:
        raise CorpusError(f"unknown corpus {corpus!r}: choose one of {', '.join(CORPORA)}")
    result = readers[corpus](data)
    if labels:
        result = map_labels(result, labels, strict=strict_labels)
    return with_durations(result) if durations else result


__all__ = ["CORPORA", "EMOTIONS", "EXTRA_EMOTIONS", "PERSIAN_NAMES", "CorpusError", "Problem", "Scan",
           "Utterance", "describe_mapping", "load_manifest", "map_labels", "parse_label_specs", "save_manifest",
           "scan_corpus", "with_durations"]
