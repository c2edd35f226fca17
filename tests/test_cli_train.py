"""``persemo train / predict / evaluate`` end to end through the CLI.

Real speech when ``../shared`` is present: a CSV manifest over a speaker-balanced subset of EmoDB
(anger, neutral, sadness; 8 speakers, at most 7 clips per speaker and emotion: 154 files, read in
place), trained briefly with a speaker-independent split and judged on its held-out speakers. Without
``../shared`` the same run uses the generated two-"emotion" corpus of ``test_pipeline``.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import EMODB_DIR
from test_pipeline import write_synthetic_corpus
from typer.testing import CliRunner

from persemo.cli import app

EMODB_PICK = {"W": "anger", "N": "neutral", "T": "sadness"}  # the most separable three
EMODB_SPEAKERS = ("03", "08", "10", "11", "13", "14", "15", "16")
PER_CELL = 7
EPOCHS = 15


# Lightning 2.6 on torch 2.13 warns about a torch.utils._pytree rename; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def _err_lines(res) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.strip()]


def emodb_subset_manifest(out: Path) -> Path:
    """``out/emodb_subset.csv``: absolute paths into ../shared (never copied), emotion, speaker."""
    rows, per_cell = [], Counter()
    for p in sorted(EMODB_DIR.glob("*.wav")):
        spk, letter = p.stem[:2], p.stem[5]
        if spk in EMODB_SPEAKERS and letter in EMODB_PICK and per_cell[spk, letter] < PER_CELL:
            per_cell[spk, letter] += 1
            rows.append({"path": str(p.resolve()), "emotion": EMODB_PICK[letter], "speaker": spk})
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "emodb_subset.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "emotion", "speaker"])
        w.writeheader()
        w.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, str]:
    """(manifest, source): the EmoDB subset, or generated audio when ../shared is absent."""
    root = tmp_path_factory.mktemp("corpus")
    if EMODB_DIR.is_dir() and any(EMODB_DIR.glob("*.wav")):
        return emodb_subset_manifest(root), "emodb"
    return write_synthetic_corpus(root, speakers=8), "synthetic"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    """A small model on 2-s windows (EmoDB's clips are 2.0 s); epochs come from ``--epochs``."""
    cfg = {"features": {"frames": 64},
           "model": {"cnn": {"channels": [16, 32, 64], "hidden": 32}, "lstm": {"hidden": 32, "layers": 1}},
           "train": {"epochs": 60, "batch_size": 16, "lr": 0.002, "patience": 100, "specaug_time_width": 8},
           # 8 speakers: 2 held out for test, 1 for validation, 5 for training
           "split": {"test_fraction": 0.25, "val_fraction": 0.125}}
    path = tmp_path_factory.mktemp("cfg") / "small.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(runner, corpus, config_file, tmp_path_factory):
    manifest, _ = corpus
    out = tmp_path_factory.mktemp("runs") / "small"
    res = runner.invoke(app, ["train", "--corpus", "csv", "--data", str(manifest), "--out", str(out),
                              "--epochs", str(EPOCHS), "--config", str(config_file), "--seed", "0",
                              "--cache", str(tmp_path_factory.mktemp("cache")), "--no-progress"])
    assert res.exit_code == 0, res.output
    return out, res


def _manifest_rows(manifest: Path) -> dict[str, dict]:
    with manifest.open(newline="", encoding="utf-8") as fh:
        return {Path(r["path"]).stem: r for r in csv.DictReader(fh)}


@pytest.mark.slow
def test_train_writes_a_speaker_independent_run(run, corpus):
    out, res = run
    manifest, source = corpus
    for name in ("model.json", "model.safetensors", "splits.json", "history.csv", "curves.png",
                 "report/report.json", "report/report.md"):
        assert (out / name).is_file(), name
    rows = _manifest_rows(manifest)
    split = json.loads((out / "splits.json").read_text(encoding="utf-8"))["splits"][0]
    spk = {part: {rows[i]["speaker"] for i in split[part]} for part in ("train", "val", "test")}
    assert len(spk["test"]) == 2 and len(spk["val"]) >= 1
    assert not (spk["train"] & spk["test"]) and not (spk["val"] & spk["test"]) and not (spk["train"] & spk["val"])
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert meta["training"]["members"]["cnn"]["epochs_run"] == EPOCHS  # --epochs beats the config file
    assert meta["config"]["features"]["frames"] == 64  # and the config file beats the defaults
    assert meta["config"]["model"]["cnn"]["channels"] == [16, 32, 64]  # member sections reach the model
    report = json.loads((out / "report" / "report.json").read_text(encoding="utf-8"))
    results = report["results"]
    assert "cnn" in results and "lstm" in results and "ensemble (equal)" in results
    weighted = [k for k in results if k.startswith("ensemble (weighted ")]
    assert len(weighted) == 1
    labels = report["labels"]
    assert labels == (["anger", "neutral", "sadness"] if source == "emodb" else ["anger", "sadness"])
    for r in results.values():
        assert r["n"] == len(split["test"])
    # held-out speakers, well above chance
    chance = 1 / len(labels)
    assert results[weighted[0]]["macro_f1"] > chance + 0.1, results[weighted[0]]
    assert max(r["macro_f1"] for r in results.values()) > chance + 0.15
    # stdout is the results table
    assert "| model | accuracy | macro-F1 | weighted-F1 | UAR |" in res.stdout


def _test_files(out: Path, manifest: Path, k: int = 2) -> list[str]:
    rows = _manifest_rows(manifest)
    split = json.loads((out / "splits.json").read_text(encoding="utf-8"))["splits"][0]
    return [str((manifest.parent / rows[i]["path"]).resolve()) for i in split["test"][:k]]


@pytest.mark.slow
def test_predict_is_repeatable_and_matches_the_library(run, runner, corpus):
    from persemo.inference import Recogniser

    out, _ = run
    f = _test_files(out, corpus[0], 1)[0]
    a = runner.invoke(app, ["predict", "--model", str(out), f, "--json"])
    b = runner.invoke(app, ["predict", "--model", str(out), f, "--json"])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert ja == jb
    assert ja == Recogniser.load(out).predict_file(f)
    assert ja["file"] == f and sum(ja["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_predict_several_files_and_persian(run, runner, corpus):
    out, _ = run
    files = _test_files(out, corpus[0], 2)
    res = runner.invoke(app, ["predict", "--model", str(out), *files, "--json", "--lang", "fa"])
    assert res.exit_code == 0, res.output
    items = json.loads(res.stdout)
    assert [it["file"] for it in items] == files
    assert all("خشم" in it["probabilities"] for it in items)  # anger
    table = runner.invoke(app, ["predict", "--model", str(out), files[0]], env={"COLUMNS": "120"})
    assert table.exit_code == 0 and Path(files[0]).name in table.stdout


@pytest.mark.slow
def test_evaluate_uses_the_held_out_part_by_default(run, runner, corpus, tmp_path):
    out, _ = run
    manifest = corpus[0]
    res = runner.invoke(app, ["evaluate", "--model", str(out), "--corpus", "csv", "--data", str(manifest),
                              "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "csv (test part, clean)" in res.stdout
    # the same figures as the training report: same model, same held-out utterances
    train_md = (out / "report" / "report.md").read_text(encoding="utf-8")
    rows = [line for line in res.stdout.splitlines() if line.startswith("| ") and "model |" not in line]
    assert rows and all(line in train_md for line in rows)
    ev = json.loads((tmp_path / "ev" / "report.json").read_text(encoding="utf-8"))
    assert ev["part"] == "test"
    every = runner.invoke(app, ["evaluate", "--model", str(out), "--corpus", "csv", "--data", str(manifest),
                                "--part", "all"])
    assert every.exit_code == 0 and "NOT held-out" in every.stderr


@pytest.mark.slow
def test_evaluate_by_a_column_and_with_a_label_mapping(run, runner, corpus, tmp_path):
    out, _ = run
    manifest = corpus[0]
    res = runner.invoke(app, ["evaluate", "--model", str(out), "--corpus", "csv", "--data", str(manifest),
                              "--by", "speaker", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "ev" / "report.json").read_text(encoding="utf-8"))
    split = json.loads((out / "splits.json").read_text(encoding="utf-8"))["splits"][0]
    by = ev["by"]["speaker"]["model [single utterance]"]
    assert by["all"]["n"] == len(split["test"]) == sum(m["n"] for v, m in by.items() if v != "all")
    assert len(by) == 1 + 2  # the two held-out speakers
    assert "#### by speaker" in res.stdout and ev["headline"] == ["model [single utterance]"]
    # the user's mapping: one emotion renamed, so the model does not know it and skips it
    res = runner.invoke(app, ["evaluate", "--model", str(out), "--corpus", "csv", "--data", str(manifest),
                              "--labels", "anger=rage"])
    assert res.exit_code == 0, res.output
    assert "labels mapped: anger -> rage" in res.stderr and "emotions the model does not know: rage" in res.stderr
    res = runner.invoke(app, ["evaluate", "--model", str(out), "--corpus", "csv", "--data", str(manifest),
                              "--by", "text"])
    # the manifest's columns are named (a synthetic corpus has a sentence column when ShEMO's transcripts are at hand)
    line = _one_error_line(res, "--by text: no such column in csv (columns: ")
    assert "speaker" in line and "gender" in line


# -- errors: one line, exit 2 (no training needed) ------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from persemo.artifact import save_model
    from persemo.config import Config
    from persemo.ensemble import Ensemble

    cfg = Config().replace(features={"frames": 32},
                           model={"cnn": {"channels": [8], "hidden": 8}, "lstm": {"hidden": 8, "layers": 1}})
    return save_model(tmp_path_factory.mktemp("tiny") / "model", Ensemble(cfg, ["anger", "sadness"]))


def _one_error_line(res, *words: str) -> str:
    assert res.exit_code == 2, res.output
    lines = _err_lines(res)
    assert len(lines) == 1, lines
    assert lines[0].startswith("persemo: error: "), lines
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize("corpus_name, missing", [("emodb", "no_such_folder"), ("csv", "no_such.csv")])
def test_train_missing_data(runner, tmp_path, corpus_name, missing):
    res = runner.invoke(app, ["train", "--corpus", corpus_name, "--data", str(tmp_path / missing),
                              "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    _one_error_line(res, missing)
    assert not (tmp_path / "out").exists()


def test_train_empty_corpus_folder(runner, tmp_path):
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["train", "--corpus", "emodb", "--data", str(tmp_path / "empty"),
                              "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    _one_error_line(res, "no usable utterances")


def test_train_bad_config(runner, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train:\n  epohcs: 3\n", encoding="utf-8")
    res = runner.invoke(app, ["train", "--corpus", "emodb", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                              "--config", str(cfg)])
    _one_error_line(res, "epohcs")


@pytest.mark.parametrize("args, words", [
    (["--labels", "calm"], ["--labels: 'calm' is not FROM=TO"]),
    (["--labels", "calm=neutral"], ["no csv utterance is labelled 'calm'", "its labels: anger, sadness"]),
    (["--by", "shared_text"], ["--by shared_text: no such column in csv (columns: sentence, speaker, gender)"]),
])
def test_train_bad_labels_or_column_before_reading_audio(runner, tmp_path, args, words):
    manifest = write_synthetic_corpus(tmp_path / "c", speakers=6, per_class=1)
    res = runner.invoke(app, ["train", "--corpus", "csv", "--data", str(manifest), "--out", str(tmp_path / "out"),
                              "--cache", str(tmp_path / "cache"), *args])
    _one_error_line(res, *words)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_train_speaker_text_split_needs_enough_texts(runner, tmp_path):
    manifest = write_synthetic_corpus(tmp_path / "c", speakers=6, per_class=1)
    res = runner.invoke(app, ["train", "--corpus", "csv", "--data", str(manifest), "--out", str(tmp_path / "out"),
                              "--cache", str(tmp_path / "cache"), "--split", "speaker+text", "--folds", "5"])
    assert res.exit_code == 2 and _err_lines(res)[-1] == ("persemo: error: a speaker+text split into 5 parts needs "
                                                          "at least 5 texts; the corpus has 1")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("folds", ["1", "-1"])
def test_train_folds_must_be_zero_or_at_least_two(runner, tmp_path, folds):
    manifest = write_synthetic_corpus(tmp_path / "c", speakers=2, per_class=1)
    res = runner.invoke(app, ["train", "--corpus", "csv", "--data", str(manifest), "--out", str(tmp_path / "out"),
                              "--folds", folds, "--cache", str(tmp_path / "cache")])
    assert res.exit_code == 2, res.output
    lines = _err_lines(res)
    assert lines and lines[-1].startswith("persemo: error: ") and "folds" in lines[-1], lines
    assert not (tmp_path / "out").exists()


def test_train_config_extends_a_base_file(runner, tmp_path):
    # the overlay's error is found through the file it extends: the whole chain is read
    (tmp_path / "base.yaml").write_text("model:\n  cnn: {pooling: time}\n", encoding="utf-8")
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("extends: base.yaml\nmodel:\n  cnn: {hidden: -1}\n", encoding="utf-8")
    res = runner.invoke(app, ["train", "--corpus", "emodb", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                              "--config", str(overlay)])
    _one_error_line(res, "model.cnn.hidden")
    (tmp_path / "base.yaml").write_text("extends: overlay.yaml\n", encoding="utf-8")
    res = runner.invoke(app, ["train", "--corpus", "emodb", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                              "--config", str(overlay)])
    _one_error_line(res, "extends itself")


def test_predict_non_audio_file(runner, tiny_model, tmp_path):
    junk = tmp_path / "notes.wav"
    junk.write_text("these are not samples")
    res = runner.invoke(app, ["predict", "--model", str(tiny_model), str(junk), "--json"])
    _one_error_line(res, str(junk))


def test_predict_mixed_files_reports_the_bad_one(runner, tiny_model, tmp_path):
    from conftest import write_tone

    good = write_tone(tmp_path / "good.wav", 1.5, 16000)
    missing = tmp_path / "missing.wav"
    res = runner.invoke(app, ["predict", "--model", str(tiny_model), str(good), str(missing), "--json"])
    _one_error_line(res, str(missing))
    items = json.loads(res.stdout)
    assert [it["file"] for it in items] == [str(good)]  # the good file is still answered


def test_model_from_another_format_version(runner, tiny_model, tmp_path):
    old = tmp_path / "old_model"
    old.mkdir()
    meta = json.loads((tiny_model / "model.json").read_text(encoding="utf-8"))
    meta["format_version"] = 0
    (old / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    (old / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"")
    res = runner.invoke(app, ["predict", "--model", str(old), str(wav)])
    _one_error_line(res, "format version 0", "model.json")
    res = runner.invoke(app, ["evaluate", "--model", str(old), "--corpus", "emodb", "--data", str(tmp_path)])
    _one_error_line(res, "format version 0")


def test_predict_missing_model(runner, tmp_path):
    res = runner.invoke(app, ["predict", "--model", str(tmp_path / "nope"), str(tmp_path / "x.wav")])
    _one_error_line(res, "model not found")


@pytest.mark.slow
def test_train_without_config_runs_the_recommended_selection(runner, tmp_path, monkeypatch):
    """No --config: the nested selection of configs/recommended.yaml. Here the Whisper checkpoint cannot be
    fetched (no network), so its candidates are skipped with a line and the functional candidates compete."""
    pytest.importorskip("opensmile")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manifest = write_synthetic_corpus(tmp_path / "c", speakers=6, per_class=4)
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--corpus", "csv", "--data", str(manifest), "--out", str(out),
                              "--cache", str(tmp_path / "cache"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "selection: 10 candidates" in res.output and "selection: skipping candidate whisper:" in res.output
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    sel = meta["training"]["selection"]
    assert sel["winner"] in ("egemaps", "egemaps-quantiles", "egemaps-svm", "compare", "compare-quantiles",
                             "compare-svm")
    assert {c["name"] for c in sel["candidates"] if c.get("skipped")} == {"whisper", "whisper-svm", "whisper+egemaps",
                                                                          "whisper+compare"}
    assert "selection: skipping candidate whisper+egemaps:" in res.output
    assert meta["config"]["model"]["members"] == ["smile"]
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert f"selected among the candidates on the training speakers' inner CV: {sel['winner']}" in report
    # the model's answer leads; the selected configuration's row (and a lone member's) is that same answer,
    # named once below the table
    rows = [line.split(" | ")[0][2:] for line in report.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1] == "model [single utterance]" and "selected configuration" not in rows
    assert "selected configuration = model [single utterance]" in report
