"""benchmarks.confound: the k-emotions-per-speaker restriction, the ShEMO-like subsample and a tiny run of
the benchmark's core on generated vectors."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.confound import (evaluate_vectors, keep_emotions, peer_rows, render, shemo_like, smile_direct,
                                 training_rows)

EMOTIONS = ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]


def corpus(n_speakers: int = 8, clips: int = 2):
    spk = np.repeat([f"s{i}" for i in range(n_speakers)], len(EMOTIONS) * clips)
    emo = np.tile(np.repeat(EMOTIONS, clips), n_speakers)
    return spk, emo


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keep_emotions_k_per_speaker_every_emotion_present(k, seed):
    spk, emo = corpus()
    keep = keep_emotions(spk, emo, k, seed)
    for s in np.unique(spk):
        assert len(set(emo[keep & (spk == s)].tolist())) == k
        # a kept emotion keeps all of that speaker's clips of it
        for e in set(emo[keep & (spk == s)].tolist()):
            assert keep[(spk == s) & (emo == e)].all()
    assert set(emo[keep].tolist()) == set(EMOTIONS)
    assert np.array_equal(keep, keep_emotions(spk, emo, k, seed))  # seeded
    assert keep_emotions(spk, emo, None, seed).all()


def test_keep_emotions_differs_by_seed():
    spk, emo = corpus()
    assert len({keep_emotions(spk, emo, 2, s).tobytes() for s in range(5)}) > 1


def test_shemo_like_subsample_follows_the_shares():
    y = np.repeat(np.arange(len(EMOTIONS)), 60)
    rows = shemo_like(y, EMOTIONS, 0)
    counts = np.bincount(y[rows], minlength=len(EMOTIONS))
    share = dict(zip(EMOTIONS, counts / counts.sum()))
    assert counts[EMOTIONS.index("anger")] == counts[EMOTIONS.index("neutral")] == 60
    assert share["fear"] < 0.03 and counts[EMOTIONS.index("fear")] >= 2
    assert len(set(rows.tolist())) == len(rows)


def test_core_runs_on_generated_vectors():
    """Every row (peers and the member) on every k: confounded training parts, all emotions in test."""
    rng = np.random.default_rng(0)
    labels = EMOTIONS[:4]
    n_spk, clips = 6, 4
    spk = np.repeat([f"s{i}" for i in range(n_spk)], len(labels) * clips)
    y = np.tile(np.repeat(np.arange(len(labels)), clips), n_spk)
    centre = rng.normal(0, 2.0, (len(labels), 5))
    X = centre[y] + rng.normal(0, 1.0, (len(y), 5)) + np.repeat(rng.normal(0, 1.0, (n_spk, 5)), len(labels) * clips, 0)
    test_spk = [["s0", "s1"], ["s2", "s3"], ["s4", "s5"]]
    parts = [(np.flatnonzero(~np.isin(spk, t)), np.flatnonzero(np.isin(spk, t))) for t in test_spk]
    n = len(labels)
    rows = {"peer logreg": ("f", peer_rows(n)["logreg"]), "member": ("f", smile_direct(n))}
    res = evaluate_vectors({"f": X}, y, spk, labels, parts, [1, None], rows, log=lambda m: None)
    assert set(res) == {"1", "all"}
    for k, r in res.items():
        summary = r["rows"].summary()
        assert set(summary) == set(rows)
        for s in summary.values():
            assert 0.0 <= s["pooled"]["uar"] <= 1.0 and 0.0 <= s["uar"]["mean"] <= 1.0
    assert res["1"]["n_train"] == [4 * clips] * 3  # 4 training speakers x 1 emotion x clips
    assert res["all"]["n_train"] == [4 * len(labels) * clips] * 3
    emo = np.array([labels[i] for i in y])
    kept = training_rows(parts[0][0], spk, emo, y, labels, 1, 0, 0)
    assert set(emo[kept].tolist()) == set(labels)
    # the Markdown renders from a results dict of the shape run() returns
    out = {f"balanced k={k}": {"variant": "balanced", "k": k, "n_train": r["n_train"],
                               "rows": {n_: {"summary": s} for n_, s in r["rows"].summary().items()}}
           for k, r in res.items()}
    md = render({"n_utterances": len(y), "n_speakers": n_spk, "folds": [{}] * 3, "seed": 0, "results": out},
                "python -m benchmarks confound", 60.0)
    assert "UAR pooled" in md and "balanced k=1" in md


def test_selection_rows_and_targets(tmp_path):
    """The nested-selection rows on generated speakers (the test's own vector kinds of tests/test_selection.py):
    every candidate, the selected configuration, speaker-adapted alone and paired with its companion; the
    targets table reads them."""
    import json

    from test_selection import CANDIDATES
    from test_training import LABELS, synth_items, tiny_config

    from benchmarks.confound import SELECTED, SOFT, regret_table, regrets, selection_fit_predict, targets

    cfg = tmp_path / "sel.json"
    cfg.write_text(json.dumps({"features": {"frames": 32}, "selection": {"candidates": CANDIDATES[:2]}}))
    items = synth_items(tiny_config(), per_class=5, speakers=("s1", "s2", "s3", "s4", "s5"))
    train, test = items[:40], items[40:]
    rows, facts = selection_fit_predict(cfg, LABELS, None, {})(train, test)
    assert set(rows) == {"candidate noise", "candidate pitch", SELECTED, "candidate noise, speaker-adapted",
                         "candidate pitch, speaker-adapted", f"{SELECTED}, speaker-adapted alone",
                         f"{SELECTED}, speaker-adapted + companion (paired)", f"{SELECTED} by rule margin",
                         f"{SELECTED} by rule se", SOFT}
    assert facts["winner"] == "pitch" and set(facts["single utterance"]) == {"noise", "pitch"}
    w = facts["soft_weights"]
    np.testing.assert_allclose(rows[SOFT], w["noise"] * rows["candidate noise"] + w["pitch"] * rows["candidate pitch"])
    np.testing.assert_array_equal(rows[SELECTED], rows["candidate pitch"])
    for p in rows.values():
        assert p.shape == (len(test), len(LABELS)) and np.allclose(p.sum(1), 1, atol=1e-4)

    def summary(uar):
        return {"summary": {"pooled": {"uar": uar}}}

    res = {"results": {"balanced k=1": {"rows": {
        SELECTED: summary(0.40), f"{SELECTED}, speaker-adapted + companion (paired)": summary(0.36),
        "peer: standardise + logreg, eGeMAPSv02": summary(0.38), "peer: standardise + RBF SVM, ComParE_2016":
            summary(0.30), "peer: standardise + logreg, ComParE_2016": summary(0.36),
        "smile eGeMAPSv02": summary(0.35)}}}}
    md = "\n".join(targets(res))
    folds = [{"candidate a": 0.5, "candidate b": 0.7, SELECTED: 0.5, SOFT: 0.65},
             {"candidate a": 0.8, "candidate b": 0.6, SELECTED: 0.6, SOFT: 0.8}]
    reg = regrets(folds, {"candidate a": summary(0.65)["summary"], "candidate b": summary(0.66)["summary"],
                          SELECTED: summary(0.55)["summary"], SOFT: summary(0.7)["summary"]})
    assert reg[SELECTED]["per_fold"] == pytest.approx([0.2, 0.2]) and reg[SELECTED]["pooled"] == pytest.approx(0.11)
    assert reg[SOFT]["median"] == pytest.approx(0.025) and reg[SOFT]["pooled"] == pytest.approx(-0.04)
    table = "\n".join(regret_table({"results": {"balanced k=1": {"regret": reg}}}))
    assert "| 1 | 50.0 | 70.0 | 50.0 / 20.0 | 65.0 / 5.0 |" in table and "| median regret |" in table
    assert "| balanced k=1 | 40.0 | 38.0 | yes | 36.0 | -4.0 | **no** | -3.0 | **no** |" in md


def test_results_keep_no_class_detail():
    from benchmarks.confound import without_class_detail

    res = {"rows": {"m": {"summary": {"pooled": {"uar": 0.5, "per_class": {"a": 1}, "confusion": [[1]]}},
                          "folds": [{"uar": 0.4, "confusion": [[2]]}]}}}
    assert without_class_detail(res) == {"rows": {"m": {"summary": {"pooled": {"uar": 0.5}}, "folds": [{"uar": 0.4}]}}}
