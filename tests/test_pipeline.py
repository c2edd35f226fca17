"""The train and evaluate jobs end to end on a generated corpus (a CSV manifest of synthetic clips):
the run directory holds everything, the split is speaker-independent, and evaluating the saved model on
its held-out part reproduces the training report exactly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import LABELS, VOICE, tiny_config, voice

from persemo.artifact import ArtifactError, load_model
from persemo.corpora.base import CorpusError
from persemo.crossval import fold_items
from persemo.pipeline import load_items, result_rows, run_evaluate, run_train
from persemo.splits import load_splits
from persemo.statistics import speaker_statistics
from persemo.training import predict_items

SR = 16000
RUN_FILES = ("model.json", "model.safetensors", "splits.json", "history.csv", "curves.png", "config.json",
             "report/report.json", "report/report.md")


def write_synthetic_corpus(root: Path, speakers: int = 6, per_class: int = 6, seconds: float = 1.2) -> Path:
    """WAV files of the two synthetic "emotions" and ``manifest.csv`` (path, emotion, speaker, sentence: one of
    three, kept as metadata) beside them."""
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    k = 0
    for si in range(speakers):
        spk = f"spk{si:02d}"
        for emo in LABELS:
            f0, am, noise = VOICE[emo]
            for j in range(per_class):
                k += 1
                rel = f"wav/{spk}_{emo}_{j}.wav"
                (root / "wav").mkdir(exist_ok=True)
                w = voice(seconds * (0.85 + 0.05 * j), f0 * (0.9 + 0.04 * si) * (1 + 0.02 * j), am, noise, k)
                sf.write(str(root / rel), w, SR, subtype="PCM_16")
                rows.append({"path": rel, "emotion": emo, "speaker": spk, "sentence": f"s{j % 3}"})
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "emotion", "speaker", "sentence"])
        w.writeheader()
        w.writerows(rows)
    return manifest


# Lightning 2.6 on torch 2.13 warns about a torch.utils._pytree rename; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_synthetic_corpus(tmp_path_factory.mktemp("synth"))


def pipeline_config(**train):
    # 6 speakers: 3 parts for test (2 speakers), validation 1 speaker of the remaining 4
    return tiny_config(epochs=3, **train).replace(split={"test_fraction": 0.34, "val_fraction": 0.17})


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    logs: list[str] = []
    res = run_train("csv", corpus, out, pipeline_config(), cache_dir=tmp_path_factory.mktemp("cache"),
                    progress=False, log=logs.append)
    return out, res, logs


@pytest.mark.slow
def test_train_writes_the_run(run, corpus):
    out, res, logs = run
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    rep = json.loads((out / "report" / "report.json").read_text(encoding="utf-8"))
    names = list(rep["results"])
    # the model's answer first, then its members and votes
    assert names[:4] == ["model [single utterance]", "cnn", "lstm", "ensemble (equal)"]
    assert names[4].startswith("ensemble (weighted ") and len(names) == 5
    assert rep["headline"] == ["model [single utterance]"] and rep["same_as"][names[4]] == names[0]
    assert set(rep["same_as"]) <= {names[3], names[4]}  # the equal vote too, when the weights came out equal
    assert rep["protocol"] == "single utterance" and rep["split"] == "speaker"
    assert list(res["results"]) == names
    for name in names:  # a confusion matrix per row shown; the weighted vote is the model's answer
        png = out / "report" / f"confusion_{name.replace(' ', '_').replace('/', '_')}.png"
        assert png.is_file() == (name not in rep["same_as"])
    md = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert md.index("| model [single utterance] |") < md.index("#### members and votes") < md.index("| cnn |")
    assert f"| {names[4]} |" not in md and f"{names[4]} = model [single utterance]" in md
    # history: one row per member per epoch
    with (out / "history.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["member"], int(r["epoch"])) for r in rows] == [(m, e) for m in ("cnn", "lstm") for e in (1, 2, 3)]
    assert any(line.startswith("model: ") for line in logs)


@pytest.mark.slow
def test_split_is_speaker_independent_and_recorded(run, corpus):
    out, res, _ = run
    split = load_splits(out / "splits.json")[0]
    speaker = {r["path"].split("/")[1].rsplit(".", 1)[0]: r["speaker"]
               for r in csv.DictReader(corpus.open(encoding="utf-8"))}
    parts = {p: {speaker[i] for i in getattr(split, p)} for p in ("train", "val", "test")}
    assert parts["train"] and parts["val"] and parts["test"]
    assert not (parts["train"] & parts["test"]) and not (parts["train"] & parts["val"]) \
        and not (parts["val"] & parts["test"])
    assert len(split.train) + len(split.val) + len(split.test) == len(speaker)
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    t = meta["trained_on"]
    assert t["corpus"] == "csv" and t["data"] == str(corpus.resolve()) and t["split"] == "speaker"
    assert (t["n_train"], t["n_val"], t["n_test"]) == (len(split.train), len(split.val), len(split.test))
    assert res["results"]["cnn"]["n"] == len(split.test)


@pytest.mark.slow
def test_learns_the_synthetic_emotions(run):
    # two well-separated classes, held-out speakers: far above chance (0.5)
    res = run[1]["results"]
    ens = res["model [single utterance]"]
    assert ens["uar"] >= 0.8 and ens["macro_f1"] >= 0.8


@pytest.mark.slow
def test_evaluate_reproduces_the_held_out_report(run, corpus):
    out, res, _ = run
    ev = run_evaluate(out, "csv", corpus, cache_dir=None, log=lambda m: None)
    assert ev["title"] == "csv (test part, clean)"
    assert ev["labels"] == LABELS
    assert ev["results"] == res["results"]  # same model, same utterances, same numbers


@pytest.mark.slow
def test_evaluate_all_warns_and_other_data_means_all(run, corpus, tmp_path):
    out, res, _ = run
    logs: list[str] = []
    ev = run_evaluate(out, "csv", corpus, part="all", cache_dir=None, log=logs.append)
    n_all = len(list(csv.DictReader(corpus.open(encoding="utf-8"))))
    assert ev["results"]["cnn"]["n"] == n_all
    assert any("NOT held-out" in line for line in logs)
    # the same audio under another manifest path is a different corpus: all of it, no warning
    other = tmp_path / "other.csv"
    other.write_text(corpus.read_text(encoding="utf-8").replace("wav/", str(corpus.parent / "wav") + "/"),
                     encoding="utf-8")
    logs.clear()
    ev2 = run_evaluate(out, "csv", other, cache_dir=None, log=logs.append, out=tmp_path / "rep")
    assert ev2["title"].startswith("csv (all part") and ev2["results"]["cnn"]["n"] == n_all
    assert not any("NOT held-out" in line for line in logs)
    assert (tmp_path / "rep" / "report.json").is_file()


@pytest.mark.slow
def test_evaluate_under_noise_changes_the_input(run, corpus):
    out, res, _ = run
    ev = run_evaluate(out, "csv", corpus, noise_snr=0.0, cache_dir=None, log=lambda m: None)
    assert ev["title"] == "csv (test part, white noise at 0 dB SNR)"
    assert ev["results"]["cnn"]["n"] == res["results"]["cnn"]["n"]
    assert ev["results"] != res["results"]


@pytest.mark.slow
def test_two_folds(corpus, tmp_path):
    cfg = tiny_config(epochs=1).replace(split={"val_fraction": 0.2})
    res = run_train("csv", corpus, tmp_path / "cv", cfg, folds=2, cache_dir=None, progress=False, log=lambda m: None)
    for fold in ("fold0", "fold1"):
        assert (tmp_path / "cv" / fold / "model.safetensors").is_file()
        assert (tmp_path / "cv" / fold / "report" / "report.json").is_file()
    assert (tmp_path / "cv" / "splits_all.json").is_file()
    folds = load_splits(tmp_path / "cv" / "splits_all.json")
    assert len(folds) == 2
    tests = [set(f.test) for f in folds]
    assert not (tests[0] & tests[1]) and len(tests[0] | tests[1]) == 6 * 2 * 6  # every utterance tested once
    summary = json.loads((tmp_path / "cv" / "report" / "report.json").read_text(encoding="utf-8"))
    assert summary["folds"] == 2
    assert list(res["results"]) == ["model [single utterance]", "cnn", "lstm", "ensemble (equal)",
                                    "ensemble (weighted)", "ensemble (equal, calibrated)",
                                    "ensemble (weighted, calibrated)"]
    assert res["same_as"]["ensemble (weighted)"] == "model [single utterance]"  # the model's own vote
    for copy, kept in res["same_as"].items():  # (with equal weights the equal votes are copies too)
        assert res["results"][copy]["pooled"] == res["results"][kept]["pooled"] and kept not in res["same_as"]
    cal = json.loads((tmp_path / "cv" / "calibration.json").read_text(encoding="utf-8"))
    assert cal["members"] == ["cnn", "lstm"] and len(cal["temperatures"]) == 2
    assert all(0.05 <= t <= 20 for t in cal["temperatures"]) and cal["fitted_on"] == "single utterance"
    assert len(cal["weights"]) == 2 and sum(cal["weights"]) == pytest.approx(1.0)
    # the calibration.json values are valid config values for the final model
    cfg.replace(model={"temperatures": cal["temperatures"], "weights": cal["weights"]})
    for r in res["results"].values():
        assert len(r["uar"]["folds"]) == 2
        assert r["uar"]["mean"] == pytest.approx(np.mean(r["uar"]["folds"]))
        # pooled over all out-of-fold predictions, beside the mean over folds: every utterance once
        assert r["pooled"]["n"] == 6 * 2 * 6 and 0 <= r["pooled"]["uar"] <= 1


@pytest.mark.slow
def test_speaker_mode_folds_report_both_protocols_without_validation(corpus, tmp_path):
    cfg = tiny_config(epochs=1).replace(split={"val_fraction": 0}, features={"normalisation": "speaker"},
                                        adaptation={"single_companion": False})
    res = run_train("csv", corpus, tmp_path / "cv", cfg, folds=2, cache_dir=None, progress=False, log=lambda m: None)
    folds = load_splits(tmp_path / "cv" / "splits_all.json")
    assert all(f.val == [] for f in folds)
    names = {f"{m} [{p}]" for m in ("model", "cnn", "lstm", "ensemble (equal)", "ensemble (weighted)",
                                     "ensemble (equal, calibrated)", "ensemble (weighted, calibrated)")
             for p in ("speaker-adapted", "single utterance")}
    assert set(res["results"]) == names
    assert res["headline"] == ["model [speaker-adapted]", "model [single utterance]"]
    assert list(res["results"])[:2] == res["headline"]
    rep = json.loads((tmp_path / "cv" / "fold0" / "report" / "report.json").read_text(encoding="utf-8"))
    assert rep["protocol"].startswith("both")
    r = rep["results"]
    # the same test utterances under both protocols, and the speaker statistics change the answers
    assert sum(r["cnn [speaker-adapted]"]["confusion"][0]) + sum(r["cnn [speaker-adapted]"]["confusion"][1]) == \
        sum(r["cnn [single utterance]"]["confusion"][0]) + sum(r["cnn [single utterance]"]["confusion"][1])
    meta = json.loads((tmp_path / "cv" / "fold0" / "model.json").read_text(encoding="utf-8"))
    assert meta["training"]["validation"] is False and meta["adaptation"] == {"shrink_k": 10.0, "enrolment": None}
    cal = json.loads((tmp_path / "cv" / "calibration.json").read_text(encoding="utf-8"))
    assert cal["fitted_on"] == "speaker-adapted" and set(cal["per_protocol"]) == {"speaker-adapted", "single utterance"}


@pytest.mark.slow
def test_paired_folds_report_without_calibration(corpus, tmp_path):
    cfg = tiny_config(epochs=1).replace(split={"val_fraction": 0}, features={"normalisation": "speaker"})
    res = run_train("csv", corpus, tmp_path / "cv", cfg, folds=2, cache_dir=None, progress=False, log=lambda m: None,
                    by=["sentence"])
    assert "ensemble (paired) [speaker-adapted]" in res["results"]
    assert len(res["results"]["ensemble (paired) [speaker-adapted]"]["uar"]["folds"]) == 2
    assert not (tmp_path / "cv" / "calibration.json").exists()
    assert (tmp_path / "cv" / "fold1" / "single" / "model.json").is_file()
    # the report leads with the model's answer per protocol; the 6 rows that copy another are named, not shown
    assert list(res["results"])[:2] == res["headline"] == ["model [speaker-adapted]", "model [single utterance]"]
    assert len(res["results"]) == 16 and res["same_as"] == {
        "ensemble (single-utterance model) [single utterance]": "model [single utterance]",
        "ensemble (paired) [single utterance]": "model [single utterance]",
        "single/cnn [speaker-adapted]": "single/cnn [single utterance]",
        "single/lstm [speaker-adapted]": "single/lstm [single utterance]",
        "ensemble (single-utterance model) [speaker-adapted]": "model [single utterance]",
        "ensemble (paired) [speaker-adapted]": "model [speaker-adapted]"}
    md = (tmp_path / "cv" / "report" / "report.md").read_text(encoding="utf-8")
    shown = [line.split(" | ")[0][2:] for line in md.splitlines() if line.startswith("| ") and "±" in line]
    assert shown[:2] == res["headline"] and not set(shown) & set(res["same_as"])
    assert set(shown) | set(res["same_as"]) == set(res["results"])
    # pooled UAR and macro-F1 per sentence, for every row, in the JSON and under the tables
    by = res["by"]["sentence"]
    assert set(by) == set(res["results"])
    row = by["model [speaker-adapted]"]
    assert set(row) == {"all", "s0", "s1", "s2"} and row["all"]["n"] == 72 == sum(row[v]["n"] for v in ("s0", "s1", "s2"))
    assert row["all"]["uar"] == pytest.approx(res["results"]["model [speaker-adapted]"]["pooled"]["uar"])
    subset_md = md.split("#### by sentence")[1].split("####")[0]  # the model's rows, then the members' heading
    assert "| model [speaker-adapted] | " in subset_md and "| model [single utterance] | " in subset_md
    assert "| cnn [speaker-adapted] |" not in subset_md and "#### members and votes" in md.split("#### by sentence")[1]


@pytest.fixture(scope="module")
def paired_run(corpus, tmp_path_factory):
    """A speaker-normalised model trained with its single-utterance companion (the default)."""
    out = tmp_path_factory.mktemp("paired") / "run"
    cfg = pipeline_config().replace(features={"normalisation": "speaker"}, train={"epochs": 2})
    res = run_train("csv", corpus, out, cfg, cache_dir=None, progress=False, log=lambda m: None)
    return out, res, cfg


@pytest.mark.slow
def test_speaker_mode_trains_and_saves_a_single_utterance_companion(paired_run, corpus):
    out, res, cfg = paired_run
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    single_meta = json.loads((out / "single" / "model.json").read_text(encoding="utf-8"))
    assert meta["companion"]["weights_sha256"] == single_meta["weights_sha256"]
    assert meta["normalisation"] == "speaker" and single_meta["normalisation"] == "utterance"
    r = res["results"]
    assert {"single/cnn [single utterance]", "ensemble (paired) [speaker-adapted]",
            "ensemble (speaker model) [speaker-adapted]"} <= set(r)
    # without speaker statistics the pair answers with the companion's vote alone
    assert r["ensemble (paired) [single utterance]"] == r["ensemble (single-utterance model) [single utterance]"]
    model, _, _ = load_model(out)
    assert model.companion is not None and not model.companion.adaptable
    assert model.member_names == ["cnn", "lstm", "single/cnn", "single/lstm"]
    items, _ = load_items("csv", corpus, cfg, None, log=lambda m: None)
    _, _, test = fold_items(items, load_splits(out / "splits.json")[0])
    stats = speaker_statistics(test, model)
    with_stats, alone = predict_items(model, test, cfg, stats), predict_items(model, test, cfg)
    single_votes = predict_items(model.companion, test, cfg)[-1]
    adapted_votes = model.vote(with_stats[:2])  # the speaker model's own vote
    np.testing.assert_allclose(alone[-1], single_votes, atol=1e-6)
    np.testing.assert_allclose(with_stats[-1], (adapted_votes + single_votes) / 2, atol=1e-6)
    np.testing.assert_allclose(with_stats[2:4], alone[2:4], atol=1e-6)  # the companion ignores statistics
    rows = result_rows(model, with_stats)
    np.testing.assert_allclose(rows["ensemble (speaker model)"], adapted_votes, atol=1e-6)
    np.testing.assert_allclose(rows["ensemble (single-utterance model)"], single_votes, atol=1e-6)
    np.testing.assert_allclose(rows["ensemble (paired)"], with_stats[-1])


@pytest.mark.slow
def test_a_missing_or_foreign_companion_is_refused(paired_run, tmp_path):
    import shutil

    from persemo.inference import Recogniser

    out = paired_run[0]
    rec = Recogniser.load(out)
    assert rec.members[-1] == "single/lstm" and rec.info()["single_companion"] is True
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    got = rec.predict_wave(wave)
    assert set(got["members"]) == {"cnn", "lstm", "single/cnn", "single/lstm"} and got["adapted"] is False
    st = rec.speaker_stats([wave, 0.5 * wave[::-1].copy()])  # the adapted model's statistics (persemo adapt)
    adapted = rec.predict_wave(wave, speaker_stats=st)
    assert adapted["adapted"] is True and adapted["members"]["single/cnn"] == got["members"]["single/cnn"]
    assert adapted["probabilities"] != got["probabilities"]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    # another save of the companion (same tensors, other JSON digest) is not this model's companion
    meta = json.loads((copy / "model.json").read_text(encoding="utf-8"))
    meta["companion"]["weights_sha256"] = "0" * 64
    (copy / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ArtifactError, match="not this model's single-utterance companion"):
        load_model(copy)
    shutil.rmtree(copy / "single")
    with pytest.raises(ArtifactError, match="companion .* is missing"):
        load_model(copy)


@pytest.mark.parametrize("folds", [1, -2])
def test_folds_must_be_zero_or_at_least_two(corpus, tmp_path, folds):
    with pytest.raises(CorpusError, match="--folds must be 0"):
        run_train("csv", corpus, tmp_path / "cv", tiny_config(), folds=folds, progress=False, log=lambda m: None)
    assert not (tmp_path / "cv").exists()


def test_a_failed_run_leaves_the_earlier_run_directory_as_it_was(corpus, tmp_path, monkeypatch):
    import persemo.pipeline as pipeline

    out = tmp_path / "run"
    out.mkdir()
    (out / "model.json").write_text("{}", encoding="utf-8")  # an earlier run's file

    def boom(*a, **k):
        raise RuntimeError("training failed")

    monkeypatch.setattr(pipeline, "fit_model", boom)
    with pytest.raises(RuntimeError, match="training failed"):
        run_train("csv", corpus, out, pipeline_config(), progress=False, log=lambda m: None)
    assert [p.name for p in out.iterdir()] == ["model.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no partial folder left beside it
    # a folder that is not a run directory is refused before anything is written
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(CorpusError, match="not a persemo run directory"):
        run_train("csv", corpus, other, pipeline_config(), progress=False, log=lambda m: None)


def test_empty_or_missing_corpus_is_one_clear_error(tmp_path):
    cfg = tiny_config()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no usable utterances"):
        load_items("emodb", tmp_path / "empty", cfg, log=lambda m: None)
    with pytest.raises(CorpusError, match="does not exist"):
        load_items("emodb", tmp_path / "missing", cfg, log=lambda m: None)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,emotion,speaker\nnot_there.wav,anger,a\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="not_there.wav"):
        load_items("csv", manifest, cfg, log=lambda m: None)
    (tmp_path / "junk.wav").write_text("junk")
    manifest.write_text("path,emotion,speaker\njunk.wav,anger,a\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="could be read"):
        load_items("csv", manifest, cfg, log=lambda m: None)


@pytest.mark.slow
def test_export_of_a_paired_model_names_its_companion(paired_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from persemo.export import export_onnx

    out = paired_run[0]
    rep = export_onnx(out, tmp_path / "m.onnx")
    assert rep.members == ["cnn", "lstm"]
    assert any("single-utterance companion" in n and str(out / "single") in n for n in rep.notes)


@pytest.mark.slow
def test_speaker_text_folds_with_mapped_labels(corpus, tmp_path):
    cfg = tiny_config(epochs=1).replace(split={"val_fraction": 0, "kind": "speaker+text"},
                                        data={"labels": {"sadness": "low"}})
    logs: list[str] = []
    res = run_train("csv", corpus, tmp_path / "cv", cfg, folds=2, cache_dir=None, progress=False, log=logs.append)
    assert "labels mapped: sadness -> low (36 clips)" in logs
    assert any(line.startswith("speaker- and text-independent split by sentence: utterances left out") for line in logs)
    rep = json.loads((tmp_path / "cv" / "report" / "report.json").read_text(encoding="utf-8"))
    assert rep["labels"] == ["anger", "low"] and "labels mapped (data.labels): sadness -> low" in rep["notes"]
    meta = json.loads((tmp_path / "cv" / "fold0" / "model.json").read_text(encoding="utf-8"))
    assert meta["config"]["data"] == {"labels": {"sadness": "low"}} and meta["labels"] == ["anger", "low"]
    assert meta["trained_on"]["split"] == "speaker+text"
    rows = list(csv.DictReader(corpus.open(encoding="utf-8")))
    who = {r["path"].split("/")[1].rsplit(".", 1)[0]: (r["speaker"], r["sentence"]) for r in rows}
    for f in load_splits(tmp_path / "cv" / "splits_all.json"):
        train, test = [{who[i][k] for i in f.train} for k in (0, 1)], [{who[i][k] for i in f.test} for k in (0, 1)]
        assert f.test and not (train[0] & test[0]) and not (train[1] & test[1])  # no speaker, no sentence on both
        assert f.meta["dropped"] == len(rows) - len(f.train) - len(f.test) > 0
    assert res["results"]["model [single utterance]"]["pooled"]["n"] == sum(
        len(f.test) for f in load_splits(tmp_path / "cv" / "splits_all.json"))


def test_an_unknown_column_or_label_is_refused_before_training(corpus, tmp_path, monkeypatch):
    import persemo.pipeline as pipeline

    def never(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(pipeline, "fit_model", never)
    with pytest.raises(CorpusError, match=r"--by shared_text: no such column in csv \(columns: sentence, speaker, "
                                          r"gender\)"):
        run_train("csv", corpus, tmp_path / "run", tiny_config(), progress=False, log=lambda m: None,
                  by=["shared_text"])
    with pytest.raises(CorpusError, match="no csv utterance is labelled 'calm'"):
        run_train("csv", corpus, tmp_path / "run", tiny_config().replace(data={"labels": {"calm": "neutral"}}),
                  progress=False, log=lambda m: None)
    assert not (tmp_path / "run").exists()
