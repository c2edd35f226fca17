"""Several corpora in one run: splits within each corpus, and each corpus scored on its own emotions.

A model trained on corpora with different emotion sets (EmoDB's seven, ASED's five) answers over the union.
For a corpus's clips an emotion that corpus does not have is not a candidate: its report rows
(``<row> [corpus]``) restrict the model's probabilities to that corpus's emotions and renormalise them
(``evaluation.restrict_probs``), and the metrics are over those emotions only. ``persemo evaluate`` on
another corpus does the same with the emotions the model and the corpus share (``shared_labels``).

In training, the vector members' heads (``heads.base.Head.fit`` with each row's corpus) judge every clip among
its own corpus's emotions: the logistic head (the default of the openSMILE and Whisper members) leaves the
emotions a clip's corpus lacks out of that clip's softmax (``heads.logreg.masked_logreg``) and weighs every
(corpus, emotion) cell alike (``heads.base.cell_weights``), so an ASED clip is not a negative for boredom and
the larger corpus does not set the boundaries alone; the inner-CV scores that choose C, the blocks, the
calibration, the vote and the nested selection are restricted the same way. Not masked: the SVM and MLP
heads (their held-out scores are restricted, their fits run on the union: one-vs-one pairs of emotions a
corpus lacks still see its clips) and the torch members (cnn, lstm: one softmax over the union; masking them
needs a per-clip label mask carried in each batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .corpora.base import CorpusError, Utterance
from .corpora.union import by_corpus
from .evaluation import compute_metrics, restrict_probs
from .splits import Split, make_folds, make_split


def _within(groups: dict[str, list[Utterance]], make: Callable[[list[Utterance]], list[Split]]) -> list[Split]:
    """``make(utterances)`` -> splits, for each corpus; the corpora's splits joined part by part."""
    per = {}
    for name, utts in groups.items():
        try:
            per[name] = make(utts)
        except CorpusError as exc:
            raise CorpusError(f"{name}: {exc}") from None
    out = []
    for i, sp in enumerate(next(iter(per.values()))):
        parts = [per[n][i] for n in per]
        meta = {"within_corpus": {n: {part: len(getattr(p, part)) for part in ("train", "val", "test")}
                                  for n, p in zip(per, parts)}}
        if any("dropped" in p.meta for p in parts):  # speaker+text: what each corpus's split left out, in all
            meta.update(dropped=sum(p.meta.get("dropped", 0) for p in parts), text_column=sp.meta.get("text_column"))
        out.append(Split(sp.kind, sp.seed, [x for p in parts for x in p.train], [x for p in parts for x in p.val],
                         [x for p in parts for x in p.test], fold=sp.fold, meta=meta))
    return out


def union_folds(utterances: Sequence[Utterance], k: int = 5, kind: str = "speaker", val_fraction: float = 0.15,
                seed: int = 0, text_column: str = "auto") -> list[Split]:
    """``make_folds`` within each corpus (``Utterance.corpus``); fold f of the union is fold f of each corpus,
    so every corpus holds out the speakers it would hold out alone. One corpus: ``make_folds`` itself."""
    groups = by_corpus(utterances)
    if len(groups) == 1:
        return make_folds(list(utterances), k, kind, val_fraction, seed, text_column)
    return _within(groups, lambda u: make_folds(u, k, kind, val_fraction, seed, text_column))


def union_split(utterances: Sequence[Utterance], kind: str = "speaker", val_fraction: float = 0.15,
                test_fraction: float = 0.15, seed: int = 0, text_column: str = "auto") -> Split:
    """``make_split`` within each corpus, the parts joined. One corpus: ``make_split`` itself."""
    groups = by_corpus(utterances)
    if len(groups) == 1:
        return make_split(list(utterances), kind, val_fraction, test_fraction, seed, text_column)
    return _within(groups, lambda u: [make_split(u, kind, val_fraction, test_fraction, seed, text_column)])[0]


def row_name(row: str, corpus: str) -> str:
    return f"{row} [{corpus}]"


def widen(sub: np.ndarray, keep: list[str], labels: list[str]) -> np.ndarray:
    """(N, len(keep)) over ``keep`` as (N, len(labels)): zeros for the labels not kept."""
    out = np.zeros((len(sub), len(labels)))
    out[:, [labels.index(k) for k in keep]] = sub
    return out


def corpus_rows(rows: dict[str, np.ndarray], y: np.ndarray, corpora: Sequence[str], labels: list[str],
                own: dict[str, list[str]]) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Each row (name -> (N, C) over ``labels``) per corpus of ``own`` (corpus -> its emotions), on that corpus's
    clips (``corpora`` (N,) names each clip's): ``<row> [corpus]`` -> (corpus, y (n,), probs (n, C) restricted
    to the corpus's emotions and renormalised, zeros elsewhere). Empty for fewer than two corpora."""
    if len(own) < 2:
        return {}
    corpora = np.asarray(corpora)
    out = {}
    for c, keep in own.items():
        mask = corpora == c
        if not mask.any():
            continue
        for name, p in rows.items():
            out[row_name(name, c)] = (c, y[mask], widen(restrict_probs(p[mask], labels, keep), keep, labels))
    return out


def only_labels(metrics: dict, keep: list[str]) -> dict:
    """``metrics`` with per-class figures only for the labels in ``keep``."""
    if "per_class" not in metrics:
        return metrics
    return {**metrics, "per_class": {k: v for k, v in metrics["per_class"].items() if k in keep}}


def corpus_metrics(y: np.ndarray, probs: np.ndarray, labels: list[str], keep: list[str]) -> dict:
    """``compute_metrics`` of a corpus's row (``corpus_rows``): UAR and macro-F1 over its emotions present, per-class
    figures for its emotions only."""
    return only_labels(compute_metrics(y, probs, labels), keep)


def shared_labels(model: Sequence[str], corpus: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(the emotions both have, in the model's order; the model's the corpus lacks; the corpus's the model lacks).

    >>> shared_labels(["anger", "boredom", "sadness"], ["anger", "sadness", "surprise"])
    (['anger', 'sadness'], ['boredom'], ['surprise'])
    """
    return ([l for l in model if l in corpus], [l for l in model if l not in corpus],
            [l for l in corpus if l not in model])


def corpora_note(own: dict[str, list[str]], counts: dict[str, int]) -> str:
    """One report line on the corpora of a joint run and how their rows are scored."""
    return ("several corpora, one vocabulary (the union): " + "; ".join(
        f"{c} ({counts.get(c, 0)} utterances: {', '.join(l)})" for c, l in own.items())
        + ". Splits within each corpus (speaker ids prefixed by the corpus). Rows '<row> [corpus]': that corpus's "
        "test clips only, the model's probabilities restricted to the corpus's own emotions and renormalised; "
        "an emotion it does not have is never predicted for them. Training is not masked (persemo.joint)")


__all__ = ["corpora_note", "corpus_metrics", "corpus_rows", "only_labels", "row_name", "shared_labels",
           "union_folds", "union_split", "widen"]
