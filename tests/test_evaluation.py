"""Metrics against hand-computed values, fold summaries, and the written report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from persemo.evaluation import (by_subset, compute_metrics, duplicate_rows, markdown_table, report_markdown,
                                summarise_folds, write_report)

LABELS = ["anger", "neutral", "sadness"]


def _onehot(pred: list[int], c: int) -> np.ndarray:
    return np.eye(c)[pred] * 0.7 + 0.1  # argmax is ``pred``; not one-hot, like real probabilities


def test_metrics_hand_computed():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = [0, 1, 1, 1, 2, 0]
    m = compute_metrics(y, _onehot(pred, 3), LABELS)
    # recalls 1/2, 2/2, 1/2; precisions 1/2, 2/3, 1/1; F1 1/2, 4/5, 2/3
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["uar"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # equal supports
    pc = m["per_class"]
    assert pc["neutral"]["precision"] == pytest.approx(2 / 3) and pc["neutral"]["recall"] == 1.0
    assert pc["sadness"]["precision"] == 1.0 and pc["sadness"]["f1"] == pytest.approx(2 / 3)
    assert [pc[l]["support"] for l in LABELS] == [2, 2, 2]
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_weighted_f1_follows_supports():
    y = np.array([0, 0, 0, 1])
    m = compute_metrics(y, _onehot([0, 0, 1, 1], 2), ["a", "b"])
    f_a, f_b = 2 * 1 * (2 / 3) / (1 + 2 / 3), 2 * 0.5 * 1 / 1.5
    assert m["macro_f1"] == pytest.approx((f_a + f_b) / 2)
    assert m["weighted_f1"] == pytest.approx((3 * f_a + f_b) / 4)
    assert m["uar"] == pytest.approx((2 / 3 + 1) / 2)


def test_classes_absent_from_truth_are_left_out_of_uar_and_macro_f1():
    labels = LABELS + ["fear"]
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = [0, 1, 1, 1, 2, 0]
    with_absent = compute_metrics(y, _onehot(pred, 4), labels)
    without = compute_metrics(y, _onehot(pred, 3), LABELS)
    for k in ("uar", "macro_f1", "accuracy"):
        assert with_absent[k] == pytest.approx(without[k])
    assert with_absent["uar"] == pytest.approx(2 / 3)  # not (1/2 + 1 + 1/2 + 0) / 4
    assert with_absent["per_class"]["fear"]["support"] == 0
    assert len(with_absent["confusion"]) == 4
    # predicting the absent class is still a miss for the true class; "fear" itself is not averaged in
    worse = compute_metrics(y, _onehot([3, 3, 1, 1, 2, 2], 4), labels)
    assert worse["uar"] == pytest.approx((0 + 1 + 1) / 3)
    assert worse["macro_f1"] == pytest.approx((0 + 1 + 1) / 3)
    assert worse["confusion"][0] == [0, 0, 0, 2]


def test_perfect():
    y = np.array([2, 0, 1])
    m = compute_metrics(y, _onehot([2, 0, 1], 3), LABELS)
    assert m["accuracy"] == m["uar"] == m["macro_f1"] == m["weighted_f1"] == 1.0


def test_summarise_folds():
    folds = [{"accuracy": 0.5, "macro_f1": 0.4, "weighted_f1": 0.45, "uar": 0.6},
             {"accuracy": 0.7, "macro_f1": 0.6, "weighted_f1": 0.65, "uar": 0.8},
             {"accuracy": 0.9, "macro_f1": 0.5, "weighted_f1": 0.55, "uar": 0.7}]
    s = summarise_folds(folds)
    assert set(s) == {"accuracy", "macro_f1", "weighted_f1", "uar"}
    assert s["accuracy"]["mean"] == pytest.approx(0.7)
    assert s["accuracy"]["std"] == pytest.approx(np.sqrt(((0.2**2) * 2) / 3))  # population std
    assert s["uar"]["mean"] == pytest.approx(0.7) and s["macro_f1"]["mean"] == pytest.approx(0.5)
    assert s["uar"]["folds"] == [0.6, 0.8, 0.7]
    table = markdown_table({"cnn": s})
    assert "70.0 ± 16.3" in table


def test_write_report(tmp_path):
    y = np.array([0, 0, 1, 1, 2, 2])
    results = {"cnn": compute_metrics(y, _onehot([0, 1, 1, 1, 2, 0], 3), LABELS),
               "ensemble (weighted 0.4/0.6)": compute_metrics(y, _onehot([0, 0, 1, 1, 2, 0], 3), LABELS)}
    out = tmp_path / "report"
    data = write_report(out, results, LABELS, "test set", extra={"split": "speaker"}, notes=["a note"])
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert rep == json.loads(json.dumps(data))
    assert rep["labels"] == LABELS and rep["split"] == "speaker" and rep["notes"] == ["a note"]
    assert rep["results"]["cnn"]["uar"] == pytest.approx(2 / 3)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# test set") and "- a note" in md
    assert "| cnn | 66.7 | 65.6 | 65.6 | 66.7 |" in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["confusion_cnn.png", "confusion_ensemble_(weighted_0.4_0.6).png"]
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in md
    assert not list(out.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_write_report_for_folds_has_no_pngs(tmp_path):
    s = summarise_folds([{"accuracy": 0.5, "macro_f1": 0.4, "weighted_f1": 0.45, "uar": 0.6}] * 2)
    write_report(tmp_path, {"cnn": s}, LABELS, "2-fold")
    assert (tmp_path / "report.json").is_file() and (tmp_path / "report.md").is_file()
    assert not list(tmp_path.glob("*.png"))
    assert "50.0 ± 0.0" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_duplicate_rows_keep_the_first_in_the_given_order():
    a, b = _onehot([0, 1, 2], 3), _onehot([0, 0, 2], 3)
    rows = {"member": a, "vote": a + 1e-9, "other": b, "short": a[:2]}
    assert duplicate_rows(rows) == {"vote": "member"}
    assert duplicate_rows(rows, ["vote", "member", "other", "short"]) == {"member": "vote"}
    assert duplicate_rows({"x": a, "y": a + 1e-3}) == {}  # different probabilities, even with the same argmax


def test_report_leads_with_the_headline_and_names_the_copies(tmp_path):
    y = np.array([0, 0, 1, 1, 2, 2])
    p_model, p_cnn = _onehot([0, 0, 1, 1, 2, 0], 3), _onehot([0, 1, 1, 1, 2, 0], 3)
    results = {"cnn": compute_metrics(y, p_cnn, LABELS), "model [single utterance]": compute_metrics(y, p_model, LABELS),
               "ensemble (weighted 0.4/0.6)": compute_metrics(y, p_model, LABELS)}
    shared = ["yes", "no", "yes", "no", "yes", "no"]
    by = {"shared_text": {n: {"all": compute_metrics(y, p, LABELS), **by_subset(y, p, shared, LABELS)}
                          for n, p in (("cnn", p_cnn), ("model [single utterance]", p_model))}}
    same = {"ensemble (weighted 0.4/0.6)": "model [single utterance]"}
    md = report_markdown(results, ["model [single utterance]"], same, by)
    lines = md.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| model [single utterance] |"))
    assert first < md.index("#### by shared_text") and lines[first - 2].startswith("| model | accuracy")
    subset = md.split("#### by shared_text")[1].split("####")[0]
    assert "| model [single utterance] | 83.3 (n 6)" in subset and "| cnn |" not in subset  # members: JSON only
    assert "gap (shared_text=no - yes)" in subset
    assert md.index("#### members and votes") < md.index("| cnn | 66.7")
    assert "| ensemble (weighted 0.4/0.6) |" not in md
    assert "ensemble (weighted 0.4/0.6) = model [single utterance]" in md
    data = write_report(tmp_path, results, LABELS, "t", headline=["model [single utterance]"], same_as=same, by=by)
    assert list(data["results"]) == list(results) and data["same_as"] == same and data["by"] == by
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["confusion_cnn.png",
                                                             "confusion_model_[single_utterance].png"]
    # without a headline every row shown leads, as before
    assert "members and votes" not in report_markdown(results)
