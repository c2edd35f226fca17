"""benchmarks.cross_corpus: the peers' answers restricted to a corpus's emotions, the --quick subset, and the
--quick run end to end on tiny subsets of the real EmoDB and ASED (skipped when ../shared is absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("opensmile")

from benchmarks.cross_corpus import LOGREG, MODEL_ROW, main, peer_logreg, peer_probs, subset  # noqa: E402
from benchmarks.peers import peer_svm  # noqa: E402
from persemo.cache import CACHE_ENV  # noqa: E402
from persemo.corpora.base import Utterance  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")
LABELS = ["anger", "neutral", "sadness", "boredom"]


def blobs(seed: int = 0):
    """Four well-separated classes, eight groups (speakers)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 16)
    X = rng.normal(size=(64, 5)) + 4.0 * np.eye(4, 5)[y]
    return X, y, np.tile(np.arange(8), 8)


@pytest.mark.parametrize("kind", ["svm", "logreg"])
def test_peer_answers_only_among_the_kept_emotions(kind):
    X, y, g = blobs()
    clf = peer_svm(X, y, g)[0] if kind == "svm" else peer_logreg(X, y, g)
    full = peer_probs(clf, X, LABELS, LABELS)
    assert (full.argmax(1) == y).mean() > 0.9
    keep = ["anger", "sadness"]
    sub = peer_probs(clf, X, LABELS, keep)
    assert sub.shape == (64, 2) and np.allclose(sub.sum(1), 1)
    # clips of the kept emotions keep their answer; the others' go to one of the kept two
    on = np.isin(y, [0, 2])
    assert (np.array(keep)[sub[on].argmax(1)] == np.array(LABELS)[y[on]]).mean() > 0.9


def test_quick_subset_keeps_a_few_speakers_and_clips_per_corpus():
    utts = [Utterance(f"{c}:{s}{e}{j}", "/x", e, f"{c}:{s}", corpus=c)
            for c in ("emodb", "ased") for s in "abcdefgh" for e in ("anger", "fear") for j in range(5)]
    got = subset(utts, 6, 3)
    assert len(got) == 2 * 6 * 2 * 3
    assert {u.speaker for u in got if u.corpus == "ased"} == {f"ased:{s}" for s in "abcdef"}


@pytest.mark.slow
def test_quick_run_on_tiny_real_subsets(emodb_dir, shared_dir, tmp_path, monkeypatch):
    ased = shared_dir / "data" / "ased"
    if not (ased / "manifest.csv").is_file():
        pytest.skip(f"ASED not found at {ased}")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    main(["--quick", "--emodb", str(emodb_dir), "--ased", str(ased), "--results", str(tmp_path)])
    res = json.loads((tmp_path / "cross_corpus_quick.json").read_text(encoding="utf-8"))
    assert set(res["cross"]) == {"emodb -> ased", "ased -> emodb"}
    for r in res["cross"].values():
        assert r["labels"] == ["anger", "fear", "happiness", "neutral", "sadness"]
        assert set(r["results"]) == {MODEL_ROW, "eGeMAPSv02 + SVM", LOGREG}
        assert 0 <= r["results"][MODEL_ROW]["uar"] <= 1
    assert "shared_text" in res["cross"]["emodb -> ased"]["by"] and not res["cross"]["ased -> emodb"]["by"]
    j = res["joint"]["corpora"]
    assert j["emodb"]["labels"] == ["anger", "fear", "happiness", "neutral", "sadness", "boredom", "disgust"]
    for c, n in (("emodb", 7), ("ased", 5)):
        s = j[c]["summary"]
        assert {f"joint: {MODEL_ROW}", f"alone: {MODEL_ROW}", "joint: eGeMAPSv02 + SVM"} <= set(s)
        assert len(s[f"joint: {MODEL_ROW}"]["uar"]["folds"]) == 2
        assert len(s[f"joint: {MODEL_ROW}"]["pooled"]["per_class"]) == n  # scored on its own emotions
    # each corpus's held-out speakers are its own: no speaker prefixed by the other corpus
    assert all(any(x.startswith("emodb:") for x in t) and any(x.startswith("ased:") for x in t)
               for t in res["joint"]["test_speakers"])
    assert len(res["targets"]) == 4 and res["command"].startswith("python -m benchmarks cross-corpus --quick")
    md = (tmp_path / "cross_corpus_quick.md").read_text(encoding="utf-8")
    assert "Targets:" in md and "By `shared_text`" in md
