"""ShEMO (Sharif Emotional Speech Database): 3,000 Persian utterances, 87 speakers, six emotions.

File names such as ``F03S02.wav``: gender F/M, speaker 03, emotion letter, index 02. The authors'
``female/`` and ``male/`` folders, the Kaggle download and a flat folder all work: .wav files are
found recursively. Published make-up (used by ``persemo download`` to verify a copy):
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import Problem, Scan, Utterance, find_wavs, require_dir

LETTERS = {"A": "anger", "F": "fear", "H": "happiness", "N": "neutral", "S": "sadness", "W": "surprise"}
NAME_RE = re.compile(r"^([FM])(\d{2})([AFHNSW])(\d{2})$")

# The corpus's published make-up (Mohamad Nezami et al., 2019), as counts only.
EXPECTED_UTTERANCES = 3000
EXPECTED_SPEAKERS = 87
EXPECTED_SPEAKERS_BY_GENDER = {"female": 31, "male": 56}
EXPECTED_BY_EMOTION = {"anger": 1042, "fear": 32, "happiness": 203, "neutral": 1160, "sadness": 362,
                       "surprise": 201}


def parse_name(stem: str) -> tuple[str, str, str] | None:
    """``F03S02`` -> (speaker 'F03', gender 'female', emotion 'sadness'); None when it does not parse."""
    m = NAME_RE.match(stem.upper())
    if not m:
        return None
    g, num, letter, _ = m.groups()
    return f"{g}{num}", ("female" if g == "F" else "male"), LETTERS[letter]


def scan(root: str | Path) -> Scan:
    root = require_dir(root, "shemo")
    result = Scan(corpus="shemo", root=str(root))
    seen: dict[str, str] = {}
    for path in find_wavs(root):
        parsed = parse_name(path.stem)
        if parsed is None:
            result.problems.append(Problem(str(path), "file name does not follow ShEMO's GSSEII pattern"))
            continue
        uid = path.stem.upper()
        if uid in seen:
            result.problems.append(Problem(str(path), f"duplicate of {seen[uid]}"))
            continue
        seen[uid] = str(path)
        speaker, gender, emotion = parsed
        result.utterances.append(Utterance(id=uid, path=str(path), emotion=emotion, speaker=speaker,
                                           gender=gender, corpus="shemo"))
    return result
