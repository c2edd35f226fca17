"""The rows of a report: the model's answer per protocol first, copies named once, folds pooled per subset."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from persemo.rows import Pool, fold_key, headline, protocol_rows, same_as

LABELS = ["anger", "sadness"]


def _probs(rng, rows: int, n: int = 6) -> np.ndarray:
    p = rng.random((rows, n, 2))
    return p / p.sum(-1, keepdims=True)


def _paired_model():
    """A speaker model (cnn, lstm) with its single-utterance companion: the vote averages both models'."""
    companion = SimpleNamespace(vote=lambda p: p.mean(0))
    return SimpleNamespace(member_names=["cnn", "lstm", "single/cnn", "single/lstm"], members=[0, 0],
                           companion=companion, selected=None, vote=lambda p: p.mean(0), weights=[0.5, 0.5])


def test_a_paired_model_reports_its_answer_first_and_each_copy_once():
    rng = np.random.default_rng(0)
    single, adapted = _probs(rng, 5), _probs(rng, 5)
    adapted[2:4] = single[2:4]  # the companion ignores speaker statistics
    single[4] = single[2:4].mean(0)  # without statistics the pair answers with the companion's vote
    adapted[4] = (adapted[:2].mean(0) + adapted[2:4].mean(0)) / 2
    rows = protocol_rows(_paired_model(), {"single utterance": single, "speaker-adapted": adapted}, True)
    assert list(rows)[:2] == headline(rows) == ["model [speaker-adapted]", "model [single utterance]"]
    assert len(rows) == 2 + 2 * 7
    assert same_as(rows) == {
        "ensemble (single-utterance model) [single utterance]": "model [single utterance]",
        "ensemble (paired) [single utterance]": "model [single utterance]",
        # the companion's members belong to the single-utterance protocol: that copy is the one kept
        "single/cnn [speaker-adapted]": "single/cnn [single utterance]",
        "single/lstm [speaker-adapted]": "single/lstm [single utterance]",
        "ensemble (single-utterance model) [speaker-adapted]": "model [single utterance]",
        "ensemble (paired) [speaker-adapted]": "model [speaker-adapted]"}


def test_one_protocol_rows_are_not_tagged_and_a_lone_member_is_the_model():
    rng = np.random.default_rng(1)
    probs = _probs(rng, 1)
    lone = SimpleNamespace(member_names=["smile"], members=[0], companion=None, selected="smile",
                           weights=[1.0])
    rows = protocol_rows(lone, {"single utterance": np.concatenate([probs, probs])}, False)
    assert list(rows) == ["model [single utterance]", "smile", "selected configuration"]
    assert same_as(rows) == {"smile": "model [single utterance]", "selected configuration": "model [single utterance]"}
    assert fold_key("ensemble (weighted 0.3/0.7) [single utterance]") == "ensemble (weighted) [single utterance]"


def test_pool_joins_folds_overall_and_per_value():
    y1, y2 = np.array([0, 1, 0]), np.array([1, 1, 0])
    right = lambda y: np.eye(2)[y] * 0.8 + 0.1  # noqa: E731 - every prediction right
    wrong = lambda y: np.eye(2)[1 - y] * 0.8 + 0.1  # noqa: E731
    pool = Pool()
    pool.add("model", y1, right(y1), {"shared_text": ["yes", "no", "no"]})
    pool.add("model", y2, np.concatenate([right(y2[:2]), wrong(y2[2:])]), {"shared_text": ["yes", "yes", "no"]})
    m = pool.metrics(LABELS)["model"]
    assert m["n"] == 6 and m["accuracy"] == pytest.approx(5 / 6)
    sub = pool.subsets(["shared_text"], LABELS)["shared_text"]["model"]
    assert sub["all"]["n"] == 6 and sub["yes"]["n"] == 3 and sub["no"]["n"] == 3
    assert sub["yes"]["accuracy"] == 1.0 and sub["no"]["accuracy"] == pytest.approx(2 / 3)
    assert pool.probs()["model"].shape == (6, 2)
