"""The rows of a results report, in the order a reader needs them.

First the model's answer, one row per protocol (``model [speaker-adapted]``, ``model [single utterance]``):
the vote the saved model gives, i.e. with a nested selection the selected configuration's, for a paired
model the pair's, for one member that member. Below it, each protocol's members and votes (``result_rows``)
for a look inside. A row identical to one shown (the selected configuration *is* the model; a paired
model's vote in [single utterance] is its companion's) is named in ``same_as`` and left out of the Markdown;
the JSON keeps every row. ``Pool`` gathers k folds' test predictions per row for the pooled figures,
overall and per value of a metadata column (``--by``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .corpora.base import value_of
from .crossval import SINGLE_TAG, SPEAKER_TAG
from .ensemble import Ensemble
from .evaluation import by_subset, compute_metrics, duplicate_rows
from .prepare import Item

MODEL_ROW = "model"
SELECTED_ROW = "selected configuration"  # also the benchmarks' name for the selection's answer
TAGS = (SPEAKER_TAG, SINGLE_TAG)  # the protocols, in report order


def result_rows(model: Ensemble, probs: np.ndarray) -> dict[str, np.ndarray]:
    """Name -> (N, C) for each row of ``probs`` (rows + 1, N, C): each member, and the votes."""
    rows = {name: probs[i] for i, name in enumerate(model.member_names)}
    if model.companion is not None:  # each model's own vote, then the pair's
        n_a = len(model.members)
        rows["ensemble (speaker model)"] = model.vote(probs[:n_a])
        rows["ensemble (single-utterance model)"] = model.companion.vote(probs[n_a:-1])
        rows["ensemble (paired)"] = probs[-1]
    elif len(model.members) > 1:
        rows["ensemble (equal)"] = probs[:-1].mean(0)
        rows["ensemble (weighted " + "/".join(f"{x:.1f}" for x in model.weights) + ")"] = probs[-1]
    if model.selected is not None:  # the whole procedure's answer, whichever candidate won this fold
        rows[SELECTED_ROW] = probs[-1]
    return rows


def model_row(tag: str) -> str:
    """The model's answer under protocol ``tag``: ``model [single utterance]``."""
    return f"{MODEL_ROW} [{tag}]"


def protocol_rows(model: Ensemble, probs: dict[str, np.ndarray], speaker_mode: bool) -> dict[str, np.ndarray]:
    """Every row of a report from ``probs`` {protocol: (rows + 1, N, C)}: the model's answer per protocol,
    then each protocol's ``result_rows``, named ``name [protocol]`` when the model reports two protocols."""
    tags = [t for t in TAGS if t in probs]
    rows = {model_row(t): probs[t][-1] for t in tags}
    for t in tags:
        for name, p in result_rows(model, probs[t]).items():
            rows[f"{name} [{t}]" if speaker_mode else name] = p
    return rows


def fold_key(name: str) -> str:
    """A row's name across folds: a weighted vote's weights differ from fold to fold."""
    return re.sub(r"^ensemble \(weighted [^)]*\)", "ensemble (weighted)", name)


def headline(names) -> list[str]:
    """The model's rows among ``names``, in their order."""
    return [n for n in names if n.startswith(MODEL_ROW + " [")]


def same_as(rows: dict[str, np.ndarray]) -> dict[str, str]:
    """{row: the identical row a report shows instead}. Of identical rows the model's is kept, then a
    [single utterance] row (a companion's members belong to that protocol), then the first."""
    head = headline(rows)
    single = [n for n in rows if n not in head and n.endswith(f"[{SINGLE_TAG}]")]
    return duplicate_rows(rows, head + single + [n for n in rows if n not in head and n not in single])


def column_values(test: Sequence[Item], columns: Sequence[str]) -> dict[str, list[str]]:
    """Each test utterance's value of each metadata column (``corpora.base.value_of``)."""
    return {c: [value_of(it.utt, c) for it in test] for c in columns}


def subsets(y: np.ndarray, rows: dict[str, np.ndarray], values: dict[str, list[str]],
            labels: list[str]) -> dict[str, dict]:
    """{column: {row: {"all": metrics, value: metrics, ...}}}: each row's figures per value of each column."""
    return {c: {name: {"all": compute_metrics(y, p, labels), **by_subset(y, p, v, labels)}
                for name, p in rows.items()} for c, v in values.items()}


class Pool:
    """k folds' test predictions per row, for the figures pooled over all out-of-fold predictions."""

    def __init__(self) -> None:
        self._rows: dict[str, list[tuple[np.ndarray, np.ndarray, dict[str, list[str]]]]] = {}

    def add(self, name: str, y: np.ndarray, probs: np.ndarray, values: dict[str, list[str]]) -> None:
        self._rows.setdefault(name, []).append((y, probs, values))

    def _joined(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        parts = self._rows[name]
        return np.concatenate([y for y, _, _ in parts]), np.concatenate([p for _, p, _ in parts])

    def probs(self) -> dict[str, np.ndarray]:
        return {name: self._joined(name)[1] for name in self._rows}

    def metrics(self, labels: list[str]) -> dict[str, dict]:
        return {name: compute_metrics(*self._joined(name), labels) for name in self._rows}

    def subsets(self, columns: Sequence[str], labels: list[str]) -> dict[str, dict]:
        out: dict[str, dict] = {c: {} for c in columns}
        for name, parts in self._rows.items():
            y, p = self._joined(name)
            for c in columns:
                v = [x for _, _, vals in parts for x in vals[c]]
                out[c][name] = {"all": compute_metrics(y, p, labels), **by_subset(y, p, v, labels)}
        return out
