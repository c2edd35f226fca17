"""EmoDB (Berlin Database of Emotional Speech): 535 German utterances, 10 speakers, seven emotions.

``03a01Fa.wav``: speaker 03, text a01, emotion letter (German initial), version letter.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import Problem, Scan, Utterance, find_wavs, require_dir

LETTERS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness",
           "N": "neutral"}
FEMALE = {"08", "09", "13", "14", "16"}
MALE = {"03", "10", "11", "12", "15"}
NAME_RE = re.compile(r"^(\d{2})([ab]\d{2})([WLEAFTN])([a-z])$")


def parse_name(stem: str) -> tuple[str, str | None, str] | None:
    """``03a01Fa`` -> (speaker '03', gender 'male', emotion 'happiness'); None when it does not parse."""
    m = NAME_RE.match(stem)
    if not m:
        return None
    spk, _, letter, _ = m.groups()
    gender = "female" if spk in FEMALE else "male" if spk in MALE else None
    return spk, gender, LETTERS[letter]


def scan(root: str | Path) -> Scan:
    root = require_dir(root, "emodb")
    result = Scan(corpus="emodb", root=str(root))
    for path in find_wavs(root):
        parsed = parse_name(path.stem)
        if parsed is None:
            result.problems.append(Problem(str(path), "file name does not follow EmoDB's pattern (03a01Fa)"))
            continue
        speaker, gender, emotion = parsed
        result.utterances.append(Utterance(id=path.stem, path=str(path), emotion=emotion, speaker=speaker,
                                           gender=gender, corpus="emodb", meta={"text": path.stem[2:5]}))
    return result
