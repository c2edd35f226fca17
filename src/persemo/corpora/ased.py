"""ASED (Amharic Speech Emotion Dataset v1): 2,474 clips, 65 speakers, five emotions, read from the
``manifest.csv`` in its folder (``path,emotion,speaker,gender,sentence,repetition,shared_text``).

In 1,850 clips the sentence gives the emotion away (each emotion-specific sentence was always spoken in the
same emotion); only the ``shared_text = yes`` clips (sentences 01 and 02, spoken in all five emotions) measure
emotion from the voice alone: break figures down with ``--by shared_text``.
"""

from __future__ import annotations

from pathlib import Path

from . import csv as csv_reader
from .base import CorpusError, Scan, require_dir

MANIFEST = "manifest.csv"


def scan(root: str | Path) -> Scan:
    root = require_dir(root, "ased")
    if not (root / MANIFEST).is_file():
        raise CorpusError(f"ased: no {MANIFEST} in {root} (the corpus folder holds manifest.csv and audio/)")
    return csv_reader.scan(root / MANIFEST, corpus="ased")
