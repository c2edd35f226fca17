"""Classifier heads (``persemo.heads``): one class per kind over a shared ``Head``; states saved as
safetensors + JSON (no pickles) and loaded bit-identically; repeated inner partitions; the old name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from persemo.heads import HEAD_KINDS, Head, LogisticHead, SvmHead, make_head
from persemo.heads.base import KINDS, inner_splits


def rings(n_per: int = 12, speakers: int = 6, seed: int = 0):
    """Three classes on concentric rings in 3 dimensions (+ 3 noise ones), speakers as groups: (X, y, groups)."""
    rng = np.random.default_rng(seed)
    X, y, g = [], [], []
    for s in range(speakers):
        for c in range(3):
            d = rng.normal(size=(n_per, 3))
            r = (1.0 + 1.5 * c + rng.normal(0, 0.1, n_per))[:, None]
            X.append(np.hstack([r * d / np.linalg.norm(d, axis=1, keepdims=True), rng.normal(size=(n_per, 3))]))
            y += [c] * n_per
            g += [f"s{s}"] * n_per
    return np.vstack(X), np.array(y), np.array(g)


def save_load(head: Head, tmp_path) -> Head:
    arrays, meta = head.state()
    save_file(arrays, str(tmp_path / "head.safetensors"))  # arrays only: nothing pickled
    (tmp_path / "head.json").write_text(json.dumps(meta))
    return Head.from_state(load_file(str(tmp_path / "head.safetensors")), json.loads((tmp_path / "head.json").read_text()))


@pytest.mark.parametrize("kind", ["svm", "logreg"])
def test_a_head_saved_and_loaded_answers_bit_identically(kind, tmp_path):
    X, y, g = rings()
    head = make_head(kind).fit(X, y, 4, groups=g)
    back = save_load(head, tmp_path)
    assert type(back) is type(head) and back.kind == kind
    Xt = rings(seed=1)[0]
    np.testing.assert_array_equal(back.predict_proba(Xt), head.predict_proba(Xt))
    assert np.all(back.predict_proba(Xt)[:, 3] == 0)  # a class never seen
    raw = (tmp_path / "head.safetensors").read_bytes()
    assert b"pickle" not in raw and b"__reduce__" not in raw


def test_the_svm_head_state_is_libsvm_arrays_and_it_beats_logreg_on_rings():
    X, y, g = rings()
    svm, lr = SvmHead().fit(X, y, 3, groups=g), LogisticHead().fit(X, y, 3, groups=g)
    arrays, meta = svm.state()
    assert {"support_vectors", "dual_coef", "intercept", "n_support", "cal_w", "cal_b"} <= set(arrays)
    assert set(svm.chosen) == {"C", "gamma"} and meta["svm_scores"] == "ovr"
    assert np.allclose(arrays["cal_w"], arrays["cal_w"][0, 0] * np.eye(3))  # a temperature: decisions kept
    assert svm.meta["inner_cv"]["uar"] > lr.meta["inner_cv"]["uar"] + 0.2
    Xt, yt, _ = rings(seed=2)
    assert np.mean(svm.predict_proba(Xt).argmax(1) == yt) > 0.9


def test_a_large_svm_training_set_searches_the_grid_on_a_subset_and_scores_every_row(monkeypatch):
    import persemo.heads.svm as svm_mod

    X, y, g = rings(n_per=20)  # 360 rows
    monkeypatch.setattr(svm_mod, "SVM_SEARCH_ROWS", 120)
    head = SvmHead().fit(X, y, 3, groups=g)
    assert head.meta["search_rows"] == 120
    assert np.isfinite(head.oof_proba).all()  # every training row held out once, at the chosen point
    assert head.meta["inner_cv"]["uar"] > 0.8
    Xt, yt, _ = rings(seed=2)
    assert np.mean(head.predict_proba(Xt).argmax(1) == yt) > 0.9
    monkeypatch.setattr(svm_mod, "SVM_SEARCH_ROWS", 1000)
    assert "search_rows" not in SvmHead().fit(X, y, 3, groups=g).meta  # small: the whole grid on every row


def test_every_kind_is_one_registered_class_and_the_old_name_builds_them():
    from persemo.smile import MEMBER_KINDS, SmileMember

    assert set(KINDS) == set(HEAD_KINDS) == set(MEMBER_KINDS)
    assert isinstance(SmileMember("svm", "eGeMAPSv02", 5), SvmHead)
    assert SmileMember.from_state is Head.from_state
    with pytest.raises(ValueError, match="kind must be one of"):
        make_head("tree")


def test_repeated_partitions_score_again_without_changing_the_model():
    X, y, g = rings(speakers=8)
    one = LogisticHead().fit(X, y, 3, groups=g)
    three = LogisticHead(repeats=3).fit(X, y, 3, groups=g)
    for k in one.arrays:
        np.testing.assert_array_equal(one.arrays[k], three.arrays[k])
    assert three.oof_repeats.shape == (3, len(y), 3) and three.fold_repeats.shape == (3, len(y))
    np.testing.assert_array_equal(three.oof_repeats[0], one.oof_proba)
    assert not np.array_equal(three.fold_repeats[0], three.fold_repeats[1])  # another speaker partition
    for r in range(3):  # every partition holds each speaker out whole
        for s in np.unique(g):
            assert len(set(three.fold_repeats[r][g == s].tolist())) == 1
    assert np.isfinite(three.oof_repeats).all()


def test_random_partitions_are_grouped_balanced_and_seeded():
    y = np.repeat([0, 1], 40)
    g = np.repeat(np.arange(10), 8)
    a, b = inner_splits(y, g, 0, 1), inner_splits(y, g, 0, 1)
    assert [te.tolist() for _, te in a] == [te.tolist() for _, te in b]
    assert sorted(len(te) for _, te in a) == [16, 16, 24, 24]
    for tr, te in a:
        assert not set(g[tr]) & set(g[te])


def test_the_masked_logistic_regression_is_sklearns_when_every_class_is_allowed():
    from sklearn.linear_model import LogisticRegression

    from persemo.heads.base import cell_weights
    from persemo.heads.logreg import masked_logreg

    X, y, _ = rings()
    W, b, _ = masked_logreg(X, y, np.ones((len(y), 3), bool), cell_weights(y, np.zeros(len(y), int)), 0.1)
    clf = LogisticRegression(C=0.1, class_weight="balanced", max_iter=5000, tol=1e-10).fit(X, y)
    np.testing.assert_allclose(W, clf.coef_, atol=1e-3)
    with pytest.raises(ValueError, match="own class must be allowed"):
        masked_logreg(X, y, np.zeros((len(y), 3), bool), np.ones(len(y)), 1.0)


def two_corpora(seed: int = 0):
    """Corpus 'a' with classes 0, 1, 2 (6 speakers) and a four times larger corpus 'b' with 0, 1 (6 speakers)
    whose class-1 clips sit where corpus a's class 2 does: (X, y, groups, corpus)."""
    rng = np.random.default_rng(seed)
    centres = {("a", 0): [-2, 0], ("a", 1): [2, 0], ("a", 2): [0, 2], ("b", 0): [-2, 0], ("b", 1): [0, 2]}
    X, y, g, c = [], [], [], []
    for (corpus, k), mu in centres.items():
        n = 8 if corpus == "a" else 32
        for s in range(6):
            X.append(rng.normal(mu, 0.7, (n, 2)))
            y += [k] * n
            g += [f"{corpus}{s}"] * n
            c += [corpus] * n
    return np.vstack(X), np.array(y), np.array(g), np.array(c)


def test_several_corpora_judge_each_clip_among_its_own_corpus_emotions():
    X, y, g, c = two_corpora()
    head = LogisticHead().fit(X, y, 3, groups=g, corpus=c)
    b = c == "b"
    assert np.all(head.oof_proba[b, 2] < 1e-3)  # corpus b has no class 2: never its held-out answer
    assert head.meta["corpora"] == {"a": [0, 1, 2], "b": [0, 1]}
    # corpus b's class-1 clips are not negatives for class 2, so corpus a's class 2 keeps its region
    Xa, ya, _, ca = two_corpora(seed=1)
    a2 = (ca == "a") & (ya == 2)
    masked = head.predict_proba(Xa[a2]).argmax(1)
    plain = LogisticHead().fit(X, y, 3, groups=g).predict_proba(Xa[a2]).argmax(1)
    assert np.mean(masked == 2) > 0.8 and np.mean(masked == 2) > np.mean(plain == 2) + 0.3
    # one corpus named: the same model as none
    np.testing.assert_array_equal(LogisticHead().fit(X[~b], y[~b], 3, groups=g[~b], corpus=c[~b]).arrays["coef"],
                                  LogisticHead().fit(X[~b], y[~b], 3, groups=g[~b]).arrays["coef"])
    assert head.allowed is None and head.cells is None  # nothing of the training rows kept
