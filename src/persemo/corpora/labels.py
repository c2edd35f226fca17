"""The user's label mapping: merging two emotions is said, never silent.

A corpus's labels stay as its readers write them (the csv reader only normalises spellings of one emotion,
``angry`` -> ``anger``). Merging two emotions, such as ``calm`` into ``neutral``, is the user's choice:
``--labels calm=neutral`` or ``data: {labels: {calm: neutral}}``. ``map_labels`` applies it to a ``Scan``
and records what it changed, so that ``inspect`` and ``train`` can say so.

>>> parse_label_specs(["calm=neutral, bored=boredom"])
{'calm': 'neutral', 'bored': 'boredom'}
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from ..errors import ConfigError
from .base import CorpusError, Scan

def parse_label_specs(specs: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``["calm=neutral", "a=b,c=d"]`` (repeated or comma-separated ``FROM=TO``) -> {from: to}, lower case."""
    mapping: dict[str, str] = {}
    for spec in specs or ():
        for part in str(spec).split(","):
            if not part.strip():
                continue
            src, eq, dst = part.partition("=")
            src, dst = src.strip().lower(), dst.strip().lower()
            if not eq or not src or not dst:
                raise ConfigError(f"--labels: {part.strip()!r} is not FROM=TO (e.g. --labels calm=neutral)")
            if mapping.get(src, dst) != dst:
                raise ConfigError(f"--labels: {src!r} is mapped twice ({mapping[src]} and {dst})")
            mapping[src] = dst
    return check_label_map(mapping, "--labels")


def check_label_map(mapping, where: str = "data.labels") -> dict[str, str]:
    """``mapping`` as a {from: to} dict of lower-case labels, or a one-line ``ConfigError`` naming ``where``."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a mapping FROM: TO of labels (e.g. {{calm: neutral}})")
    out = {}
    for src, dst in mapping.items():
        if not isinstance(src, str) or not isinstance(dst, str) or not src.strip() or not dst.strip():
            raise ConfigError(f"{where}: {src!r}: {dst!r} is not a pair of labels")
        src, dst = src.strip().lower(), dst.strip().lower()
        if src == dst:
            raise ConfigError(f"{where}: {src!r} is mapped to itself")
        out[src] = dst
    chained = sorted(set(out) & set(out.values()))
    if chained:
        raise ConfigError(f"{where}: {', '.join(chained)} is both mapped and a target; map each label to its "
                          "final name")
    return out


def map_labels(scan: Scan, mapping: dict[str, str], strict: bool = True) -> Scan:
    """Relabel ``scan``'s utterances by ``mapping`` {from: to} and record it in ``scan.labels_mapped``
    ({from: {"to": label, "n": clips}}). ``strict``: a label not in the corpus is a one-line error naming the
    labels it has (a typo must not pass as "nothing to map"); otherwise it is left out of the record."""
    mapping = check_label_map(mapping)
    counts = Counter(u.emotion for u in scan.utterances)
    absent = [src for src in mapping if src not in counts]
    if absent and strict:
        raise CorpusError(f"label mapping {', '.join(f'{s}={mapping[s]}' for s in absent)}: no {scan.corpus} "
                          f"utterance is labelled {', '.join(repr(s) for s in absent)} (its labels: "
                          f"{', '.join(scan.labels) or 'none'})")
    scan.utterances = [replace(u, emotion=mapping[u.emotion]) if u.emotion in mapping else u
                       for u in scan.utterances]
    scan.labels_mapped = {**scan.labels_mapped,
                          **{s: {"to": d, "n": counts[s]} for s, d in mapping.items() if counts[s]}}
    return scan


def describe_mapping(applied: dict[str, dict]) -> str | None:
    """``labels mapped: calm -> neutral (96 clips)``, or None when nothing was mapped."""
    if not applied:
        return None
    return "labels mapped: " + ", ".join(f"{s} -> {a['to']} ({a['n']} clips)" for s, a in applied.items())
