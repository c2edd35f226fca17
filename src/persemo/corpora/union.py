"""Several corpora as one: names, prefixed ids, the union of their emotions, and splits within each corpus.

With more than one corpus, every utterance id and speaker id is prefixed by its corpus's name
(``emodb:03a01Fa``, speaker ``emodb:03``) so that two corpora's speaker ``03`` stay two speakers, and
``Utterance.corpus`` is that name. One corpus is read exactly as before: no prefix.

Splits within each corpus and the per-corpus report rows are ``persemo.joint``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .base import EMOTIONS, EXTRA_EMOTIONS, CorpusError, Scan, Utterance

SEP = ":"  # between a corpus's name and its own ids


@dataclass(frozen=True)
class Source:
    """One corpus to read: its reader (``corpus``), where it is (``data``) and its name in a union."""

    corpus: str
    data: str
    name: str = ""


def parse_spec(spec: str) -> tuple[str, str]:
    """``--corpus`` as ``[NAME=]READER``: (reader, name or "").

    >>> parse_spec("mine=csv"), parse_spec("emodb")
    (('csv', 'mine'), ('emodb', ''))
    """
    name, eq, reader = spec.partition("=")
    return (reader.strip(), name.strip()) if eq else (spec.strip(), "")


def default_name(corpus: str, data: str | Path) -> str:
    """A csv manifest's file stem (its folder's name when given a folder), else the reader's name."""
    if corpus == "csv":
        p = Path(data)
        return p.name if p.is_dir() else p.stem
    return corpus


def sources(corpus, data=None) -> list[Source]:
    """``corpus`` (a reader's name, with ``data``) or a list of sources (``Source``, ``config.CorpusSource``
    or (corpus, data[, name]) tuples) as ``Source``s with their names resolved; names must be unique."""
    if isinstance(corpus, str):
        if data is None:
            raise CorpusError(f"{corpus}: no --data given")
        given = [Source(corpus, str(data))]
    else:
        given = [s if isinstance(s, Source) else Source(*s) if isinstance(s, (tuple, list)) else
                 Source(s.corpus, str(s.data), s.name) for s in corpus]
    if not given:
        raise CorpusError("no corpus given: --corpus and --data (or a corpora: section in --config)")
    out = [replace(s, data=str(s.data), name=s.name or default_name(s.corpus, s.data)) for s in given]
    if len(out) == 1:  # one corpus: read as ever, its name prefixes nothing
        return out
    for s in out:
        if not s.name or not all(c.isalnum() or c in "_.-" for c in s.name):
            raise CorpusError(f"{s.data}: corpus name {s.name!r} must be made of letters, digits, '_', '.' "
                              "and '-'; give one (--corpus NAME=csv, or name: in the config's corpora)")
    names = [s.name for s in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CorpusError(f"two corpora named {twice[0]!r}: give each its own name (--corpus NAME={out[0].corpus}, "
                          "or name: in the config's corpora)")
    return out


def prefixed(u: Utterance, name: str) -> Utterance:
    """``u`` as one corpus of several: id and speaker prefixed by ``name``, ``corpus`` set to it."""
    return replace(u, id=f"{name}{SEP}{u.id}", speaker=f"{name}{SEP}{u.speaker}", corpus=name)


def combine(scans: Sequence[tuple[str, Scan]]) -> Scan:
    """(name, scan) pairs as one scan: with more than one, every utterance ``prefixed`` by its name."""
    if len(scans) == 1:
        return scans[0][1]
    out = Scan(corpus="+".join(n for n, _ in scans), root=";".join(s.root for _, s in scans))
    for name, scan in scans:
        out.utterances += [prefixed(u, name) for u in scan.utterances]
        out.problems += scan.problems
    return out


def ordered_labels(emotions) -> list[str]:
    """The shared vocabulary's order, then alphabetical extras."""
    present = set(emotions)
    order = [e for e in EMOTIONS + EXTRA_EMOTIONS if e in present]
    return order + sorted(present - set(order))


def corpus_labels(utterances: Sequence[Utterance]) -> dict[str, list[str]]:
    """Each corpus (``Utterance.corpus``, in order of appearance) -> the emotions it has."""
    out: dict[str, set[str]] = {}
    for u in utterances:
        out.setdefault(u.corpus, set()).add(u.emotion)
    return {c: ordered_labels(e) for c, e in out.items()}


def by_corpus(utterances: Sequence[Utterance]) -> dict[str, list[Utterance]]:
    out: dict[str, list[Utterance]] = {}
    for u in utterances:
        out.setdefault(u.corpus, []).append(u)
    return out
