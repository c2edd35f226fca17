"""Several corpora in one run (``persemo.joint``, ``persemo train`` with repeated ``--corpus/--data``) and
cross-corpus evaluation: two generated corpora with different emotion sets, a smile member on eGeMAPS
functionals (fast). Each corpus's report rows are on its own emotions only; ``evaluate`` on another corpus
scores the shared emotions and names the ones it left out on each side."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from test_training import VOICE, voice
from typer.testing import CliRunner

from persemo.cli import _train_sources, app
from persemo.config import Config
from persemo.corpora.union import Source
from persemo.evaluation import restrict_probs
from persemo.joint import corpus_metrics, corpus_rows, shared_labels
from persemo.pipeline import run_evaluate, run_train
from persemo.splits import load_splits

SR = 16000
VOICES = {**VOICE, "happiness": (240.0, 4.0, 0.12), "neutral": (160.0, 0.5, 0.03)}
A_EMOTIONS = ("anger", "happiness", "sadness")
B_EMOTIONS = ("anger", "neutral", "sadness")
UNION = ["anger", "happiness", "neutral", "sadness"]  # the shared vocabulary's order
SPEAKERS, PER = 4, 4


def write_corpus(root: Path, name: str, emotions, speakers: int = SPEAKERS, per: int = PER, seed: int = 0) -> Path:
    """``root/<name>.csv`` (path, emotion, speaker) over generated WAVs; speaker ids s0, s1, ... in every corpus."""
    import soundfile as sf

    (root / "wav").mkdir(parents=True, exist_ok=True)
    rows, k = [], seed
    for si in range(speakers):
        for emo in emotions:
            f0, am, noise = VOICES[emo]
            for j in range(per):
                k += 1
                rel = f"wav/{name}_s{si}_{emo}_{j}.wav"
                sf.write(str(root / rel), voice(1.0 + 0.05 * j, f0 * (0.9 + 0.05 * si), am, noise, k), SR,
                         subtype="PCM_16")
                rows.append({"path": rel, "emotion": emo, "speaker": f"s{si}"})
    manifest = root / f"{name}.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "emotion", "speaker"])
        w.writeheader()
        w.writerows(rows)
    return manifest


def smile_config() -> Config:
    return Config().replace(model={"members": ["smile"], "smile": {"feature_set": "eGeMAPSv02", "noise_copies": 0}},
                            split={"val_fraction": 0, "test_fraction": 0.25}, train={"seed": 0})


# -- pure functions --------------------------------------------------------------------------------------

def test_restrict_probs_renormalises_over_the_kept_labels():
    p = np.array([[0.1, 0.6, 0.3], [0.0, 1.0, 0.0]])
    r = restrict_probs(p, ["a", "b", "c"], ["a", "c"])
    assert r.shape == (2, 2) and np.allclose(r.sum(1), 1)
    assert np.allclose(r[0], [0.25, 0.75]) and np.allclose(r[1], [0.5, 0.5])  # no mass left: uniform
    with pytest.raises(ValueError):
        restrict_probs(p, ["a", "b", "c"], ["z"])


def test_corpus_rows_score_each_corpus_on_its_own_emotions():
    labels = ["anger", "boredom", "sadness"]
    own = {"emodb": ["anger", "boredom", "sadness"], "ased": ["anger", "sadness"]}
    # the ASED clip's top emotion is boredom, which ASED does not have: restricted, it is sadness
    probs = np.array([[0.2, 0.5, 0.3], [0.1, 0.6, 0.3], [0.7, 0.2, 0.1]])
    y = np.array([1, 2, 0])
    parts = corpus_rows({"m": probs}, y, ["emodb", "ased", "ased"], labels, own)
    assert list(parts) == ["m [emodb]", "m [ased]"]
    c, y_a, p_a = parts["m [ased]"]
    assert c == "ased" and y_a.tolist() == [2, 0] and p_a[:, 1].tolist() == [0.0, 0.0]
    assert np.allclose(p_a[0], [0.25, 0.0, 0.75])
    m = corpus_metrics(y_a, p_a, labels, own["ased"])
    assert m["uar"] == 1.0 and set(m["per_class"]) == {"anger", "sadness"}
    assert corpus_rows({"m": probs}, y, ["x"] * 3, labels, {"x": labels}) == {}  # one corpus: no extra rows


def test_shared_labels_both_sides():
    assert shared_labels(UNION, B_EMOTIONS) == (["anger", "neutral", "sadness"], ["happiness"], [])
    assert shared_labels(list(A_EMOTIONS), ["fear", "anger"]) == (["anger"], ["happiness", "sadness"], ["fear"])


def test_train_sources_pairs_and_config():
    cfg = Config.from_dict({"corpora": [{"corpus": "ased", "data": "/a"}]})
    assert _train_sources(["mine=csv", "emodb"], [Path("/m.csv"), Path("/e")], cfg) == [
        Source("csv", "/m.csv", "mine"), Source("emodb", "/e", "")]
    assert [s.corpus for s in _train_sources([], [], cfg)] == ["ased"]


def test_train_mismatched_pairs_is_one_line(tmp_path):
    res = CliRunner().invoke(app, ["train", "--corpus", "emodb", "--corpus", "ased", "--data", str(tmp_path),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert [ln for ln in res.stderr.splitlines() if ln.strip()] == [
        "persemo: error: --corpus and --data come in pairs: got 2 --corpus and 1 --data"]


# -- end to end ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("opensmile")
    root = tmp_path_factory.mktemp("corpora")
    return write_corpus(root / "a", "a", A_EMOTIONS), write_corpus(root / "b", "b", B_EMOTIONS, seed=1000)


@pytest.fixture(scope="module")
def joint(corpora, tmp_path_factory):
    """``persemo train`` on both corpora, 2 folds within each."""
    from threadpoolctl import threadpool_limits

    a, b = corpora
    tmp = tmp_path_factory.mktemp("joint")
    cfg = tmp / "smile.json"
    cfg.write_text(json.dumps(smile_config().to_dict()), encoding="utf-8")
    with threadpool_limits(limits=1):
        res = CliRunner().invoke(app, ["train", "--corpus", "csv", "--data", str(a), "--corpus", "csv", "--data", str(b),
                                       "--folds", "2", "--config", str(cfg), "--out", str(tmp / "run"), "--cache",
                                       str(tmp / "cache"), "--no-progress"])
    assert res.exit_code == 0, res.output
    return tmp / "run", res


@pytest.mark.slow
def test_joint_run_reports_each_corpus_on_its_own_emotions(joint, corpora):
    out, res = joint
    rep = json.loads((out / "report" / "report.json").read_text(encoding="utf-8"))
    assert rep["labels"] == UNION
    M = "model [single utterance]"  # the model's answer: the rows reported per corpus
    assert {"smile", f"{M} [a]", f"{M} [b]"} <= set(rep["results"])
    n = len(A_EMOTIONS) * SPEAKERS * PER
    assert rep["results"]["smile"]["pooled"]["n"] == 2 * n
    assert rep["results"][f"{M} [a]"]["pooled"]["n"] == n == rep["results"][f"{M} [b]"]["pooled"]["n"]
    assert set(rep["results"][f"{M} [a]"]["pooled"]["per_class"]) == set(A_EMOTIONS)
    assert set(rep["results"][f"{M} [b]"]["pooled"]["per_class"]) == set(B_EMOTIONS)
    # corpus b's clips are never called happiness (a's), nor a's neutral (b's)
    cm_b = np.array(rep["results"][f"{M} [b]"]["pooled"]["confusion"])
    cm_a = np.array(rep["results"][f"{M} [a]"]["pooled"]["confusion"])
    assert cm_b[:, UNION.index("happiness")].sum() == 0 and cm_a[:, UNION.index("neutral")].sum() == 0
    assert cm_b.sum() == n and 0 <= rep["results"][f"{M} [b]"]["pooled"]["uar"] <= 1
    assert any("several corpora" in note for note in rep["notes"])
    assert "model [single utterance] [b]" in res.output and "corpora: a 48 utterances" in res.stderr


@pytest.mark.slow
def test_joint_folds_are_within_each_corpus_and_recorded(joint, corpora):
    out, _ = joint
    folds = load_splits(out / "splits_all.json")
    for f in folds:
        for part in ("train", "test"):
            assert {i.split(":")[0] for i in getattr(f, part)} == {"a", "b"}
        spk = lambda ids: {i.rsplit("_", 2)[0] for i in ids}  # "a:a_s0" from "a:a_s0_anger_1"
        assert not spk(f.train) & spk(f.test)
    meta = json.loads((out / "fold0" / "model.json").read_text(encoding="utf-8"))
    t = meta["trained_on"]
    assert t["corpus"] == "a+b" and [c["name"] for c in t["corpora"]] == ["a", "b"]
    assert t["corpora"][1]["labels"] == list(B_EMOTIONS) and t["corpora"][0]["data"] == str(corpora[0].resolve())
    assert meta["labels"] == UNION
    # the head judged each training clip among its own corpus's emotions (masked softmax)
    head = meta["member_state"]["smile"]["state"]
    assert {k: [UNION[i] for i in v] for k, v in head["corpora"].items()} == {
        "a": sorted(A_EMOTIONS, key=UNION.index), "b": sorted(B_EMOTIONS, key=UNION.index)}


@pytest.mark.slow
def test_joint_model_on_one_of_its_corpora_uses_its_held_out_part(joint, corpora):
    out, _ = joint
    logs: list[str] = []
    ev = run_evaluate(out / "fold0", "csv", corpora[1], cache_dir=None, log=logs.append)
    split = load_splits(out / "fold0" / "splits.json")[0]
    assert ev["results"]["smile"]["n"] == sum(i.startswith("b:") for i in split.test)
    assert ev["labels"] == list(B_EMOTIONS) and ev["left_out"]["model_labels"] == ["happiness"]
    assert ev["title"] == "csv (test part, clean; the 3 shared emotions)"


@pytest.mark.slow
def test_cross_corpus_evaluate_names_what_it_left_out(corpora, tmp_path):
    a, b = corpora
    run_train("csv", a, tmp_path / "a_only", smile_config(), cache_dir=tmp_path / "cache", progress=False,
              log=lambda m: None)
    logs: list[str] = []
    ev = run_evaluate(tmp_path / "a_only", "csv", b, out=tmp_path / "rep", cache_dir=tmp_path / "cache",
                      log=logs.append)
    assert ev["labels"] == ["anger", "sadness"]
    assert ev["left_out"] == {"model_labels": ["happiness"], "corpus_labels": ["neutral"],
                              "skipped_utterances": SPEAKERS * PER}
    assert ev["results"]["smile"]["n"] == 2 * SPEAKERS * PER
    assert any(line.startswith(f"skipping {SPEAKERS * PER} utterances") and "neutral" in line for line in logs)
    assert any("leaving out the model's emotions csv does not have: happiness" in line for line in logs)
    rep = json.loads((tmp_path / "rep" / "report.json").read_text(encoding="utf-8"))
    assert rep["labels"] == ["anger", "sadness"] and rep["left_out"]["corpus_labels"] == ["neutral"]
    assert len(rep["results"]["smile"]["confusion"]) == 2
    assert any("happiness" in n for n in rep["notes"]) and any("neutral" in n for n in rep["notes"])
