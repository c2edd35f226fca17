"""The one k-fold loop (persemo.crossval): speaker-independent folds, each fold's test predictions in each
protocol the model supports, and the summary with pooled metrics beside the mean over folds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_training import LABELS, synth_items, tiny_config

from persemo.crossval import SINGLE_TAG, SPEAKER_TAG, Fold, cross_validate, fold_items, pool, summarise
from persemo.ensemble import Ensemble
from persemo.evaluation import compute_metrics
from persemo.splits import Split, make_folds
from persemo.statistics import feature_statistics, shrink, speaker_statistics
from persemo.training import predict_items

SPEAKERS = ("s1", "s2", "s3", "s4", "s5", "s6")

# Lightning 2.6 on torch 2.13 warns about a torch.utils._pytree rename; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")


@pytest.fixture(scope="module")
def items():
    return synth_items(tiny_config(), per_class=2, speakers=SPEAKERS, seconds=0.8)


def _untrained(calls: list):
    """A ``fit`` that records what it was given and returns an untrained ensemble (its front end's statistics
    from the training items): fast, and enough to test the loop."""

    def fit(cfg, labels, train, val, split):
        calls.append((split, list(train), list(val)))
        torch.manual_seed(len(calls))
        model = Ensemble(cfg, labels)
        model.front.set_stats(feature_statistics(train))
        return model.eval(), {"fold": split.fold}

    return fit


def _speakers(items_):
    return {it.utt.speaker for it in items_}


def test_folds_are_speaker_independent_and_test_every_utterance_once(items):
    cfg = tiny_config().replace(features={"normalisation": "global"}, split={"val_fraction": 0.2})
    splits = make_folds([it.utt for it in items], 3, "speaker", 0.2, seed=0)
    calls: list = []
    folds = list(cross_validate(cfg, items, splits, LABELS, fit=_untrained(calls), log=lambda m: None))
    assert len(folds) == len(calls) == 3 and all(isinstance(f, Fold) for f in folds)
    tested = []
    for f, (split, train, val) in zip(folds, calls):
        assert f.split is split and f.train == train and f.val == val and f.info == {"fold": split.fold}
        assert (f.train, f.val, f.test) == fold_items(items, split)
        assert f.train and f.val and f.test
        # no speaker in two parts of a fold
        assert not (_speakers(f.train) & _speakers(f.test)) and not (_speakers(f.val) & _speakers(f.test))
        assert not (_speakers(f.train) & _speakers(f.val))
        index = {l: i for i, l in enumerate(LABELS)}
        np.testing.assert_array_equal(f.y, [index[it.utt.emotion] for it in f.test])
        tested += [it.utt.id for it in f.test]
    assert sorted(tested) == sorted(it.utt.id for it in items)  # every utterance tested exactly once


def test_a_leaking_split_is_refused(items):
    cfg = tiny_config()
    ids = [it.utt.id for it in items]
    s1 = [i for i in ids if i.startswith("s1_")]
    leak = Split("speaker", 0, train=[i for i in ids if i.startswith(("s2_", "s3_"))] + s1[:1], val=[],
                 test=s1[1:], fold=0)
    calls: list = []
    with pytest.raises(Exception, match="s1"):
        list(cross_validate(cfg, items, [leak], LABELS, fit=_untrained(calls), log=lambda m: None))
    assert calls == []  # refused before anything is trained


def test_a_single_utterance_model_has_one_protocol(items):
    cfg = tiny_config().replace(features={"normalisation": "utterance"})
    splits = make_folds([it.utt for it in items], 2, "speaker", 0.0, seed=0)
    for f in cross_validate(cfg, items, splits, LABELS, fit=_untrained([]), log=lambda m: None):
        assert set(f.probs) == {SINGLE_TAG} and f.stats is None
        p = f.probs[SINGLE_TAG]
        assert p.shape == (len(f.model.member_names) + 1, len(f.test), len(LABELS))
        np.testing.assert_allclose(p, predict_items(f.model, f.test, cfg), atol=1e-6)


def test_a_speaker_model_is_tested_in_both_protocols(items):
    cfg = tiny_config().replace(features={"normalisation": "speaker"})
    splits = make_folds([it.utt for it in items], 2, "speaker", 0.0, seed=0)
    k = 4.0
    for f in cross_validate(cfg, items, splits, LABELS, fit=_untrained([]), shrink_k=k, log=lambda m: None):
        assert set(f.probs) == {SPEAKER_TAG, SINGLE_TAG}
        # the test speakers' own statistics, shrunk toward the training statistics; never the training speakers'
        assert set(f.stats) == _speakers(f.test)
        own = speaker_statistics(f.test)
        prior = f.model.global_stats()
        for s, st in f.stats.items():
            n = sum(it.utt.speaker == s for it in f.test)
            want = shrink(own[s], prior, n, k)
            assert all(np.allclose(st[key], want[key]) for key in want)
        np.testing.assert_allclose(f.probs[SPEAKER_TAG], predict_items(f.model, f.test, cfg, f.stats), atol=1e-6)
        np.testing.assert_allclose(f.probs[SINGLE_TAG], predict_items(f.model, f.test, cfg), atol=1e-6)
        assert np.abs(f.probs[SPEAKER_TAG] - f.probs[SINGLE_TAG]).max() > 1e-4  # the statistics matter
    only = next(cross_validate(cfg, items, splits[:1], LABELS, fit=_untrained([]), both_protocols=False,
                               log=lambda m: None))
    assert set(only.probs) == {SPEAKER_TAG}


def test_cross_validate_trains_with_train_ensemble_by_default(items):
    cfg = tiny_config(epochs=1).replace(model={"members": ["cnn"]}, split={"val_fraction": 0})
    splits = make_folds([it.utt for it in items], 2, "speaker", 0.0, seed=0)
    logs: list[str] = []
    folds = list(cross_validate(cfg, items, splits, LABELS, log=logs.append))
    assert len(folds) == 2
    for f in folds:
        assert f.model.kinds == ["cnn"] and f.info["validation"] is False
        assert [r["epoch"] for r in f.info["history"]["cnn"]] == [1]
        assert f.probs[SINGLE_TAG].shape == (2, len(f.test), len(LABELS))
    assert any(line.startswith("fold 1/2") for line in logs) and any(line.startswith("fold 2/2") for line in logs)
    # two folds, two models
    assert not np.array_equal(folds[0].model.members[0].net.head[-1].weight.detach().numpy(),
                              folds[1].model.members[0].net.head[-1].weight.detach().numpy())


def test_pooled_and_mean_over_folds_differ_where_folds_are_unbalanced():
    labels = ["a", "b"]
    eye = np.eye(2)
    # fold 1: one clip of each class, both right (UAR 1); fold 2: eight of a (four right), two of b (both right)
    y1, p1 = np.array([0, 1]), eye[[0, 1]]
    y2 = np.array([0] * 8 + [1] * 2)
    p2 = eye[[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]]
    per_fold = {"m": [compute_metrics(y1, p1, labels), compute_metrics(y2, p2, labels)]}
    assert [r["uar"] for r in per_fold["m"]] == pytest.approx([1.0, 0.75])
    pooled = pool([y1, y2], [p1, p2], labels)
    assert pooled["uar"] == pytest.approx((5 / 9 + 1.0) / 2)  # a: 5 of 9, b: 3 of 3
    summary = summarise(per_fold, {"m": pooled})
    assert summary["m"]["uar"]["mean"] == pytest.approx(0.875) and summary["m"]["uar"]["folds"] == [1.0, 0.75]
    assert summary["m"]["pooled"]["uar"] == pytest.approx(pooled["uar"])
    assert abs(summary["m"]["uar"]["mean"] - summary["m"]["pooled"]["uar"]) > 0.09
    assert summarise(per_fold, {})["m"]["pooled"] is None
