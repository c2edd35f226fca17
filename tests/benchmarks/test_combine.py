"""benchmarks.combine: soft votes of members from separate result files, checked fold by fold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.combine import combine, parse_member
from persemo.evaluation import compute_metrics

LABELS = ["anger", "neutral", "sadness"]


def _write(path, rows: dict[str, np.ndarray], ids, y):
    folds = [{"fold": 0, "test_ids": ids, "y": list(map(int, y)), "probs": {k: v.tolist() for k, v in rows.items()}}]
    path.write_text(json.dumps({"labels": LABELS, "folds": folds}))


def test_combine_averages_members_from_two_files(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"u{i}" for i in range(12)]
    y = np.arange(12) % 3
    a, b = rng.dirichlet(np.ones(3), 12), rng.dirichlet(np.ones(3), 12)
    _write(tmp_path / "emodb_x.json", {"cnn": a}, ids, y)
    # the other file lists the same utterances in another order
    order = rng.permutation(12)
    _write(tmp_path / "emodb_y.json", {"lstm": b[order]}, [ids[i] for i in order], y[order])
    labels, summary = combine([("cnn", "emodb_x", "cnn"), ("lstm", "emodb_y", "lstm")], tmp_path)
    assert labels == LABELS and set(summary) == {"cnn", "lstm", "cnn + lstm (equal weights)"}
    want = compute_metrics(y, (a + b) / 2, LABELS)["uar"]
    assert summary["cnn + lstm (equal weights)"]["uar"]["mean"] == pytest.approx(want)


def test_a_name_given_twice_is_one_member_the_mean_of_its_runs(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"u{i}" for i in range(9)]
    y = np.arange(9) % 3
    a, b, c = (rng.dirichlet(np.ones(3), 9) for _ in range(3))
    _write(tmp_path / "emodb_x.json", {"cnn": a, "lstm": c}, ids, y)
    _write(tmp_path / "emodb_y.json", {"cnn": b[::-1]}, ids[::-1], y[::-1])
    labels, summary = combine([("cnn", "emodb_x", "cnn"), ("cnn", "emodb_y", "cnn"), ("lstm", "emodb_x", "lstm")],
                              tmp_path)
    assert set(summary) == {"cnn", "lstm", "cnn + lstm (equal weights)"}
    assert summary["cnn"]["uar"]["mean"] == pytest.approx(compute_metrics(y, (a + b) / 2, LABELS)["uar"])
    want = compute_metrics(y, ((a + b) / 2 + c) / 2, LABELS)["uar"]
    assert summary["cnn + lstm (equal weights)"]["uar"]["mean"] == pytest.approx(want)
    _write(tmp_path / "emodb_z.json", {"cnn": a[:8]}, ids[:8], y[:8])
    with pytest.raises(SystemExit, match="different test utterances"):
        combine([("cnn", "emodb_x", "cnn"), ("cnn", "emodb_z", "cnn")], tmp_path)


def test_combine_refuses_other_folds_and_bad_specs(tmp_path):
    p = np.full((3, 3), 1 / 3)
    _write(tmp_path / "emodb_x.json", {"cnn": p}, ["a", "b", "c"], [0, 1, 2])
    _write(tmp_path / "emodb_y.json", {"lstm": p}, ["a", "b", "d"], [0, 1, 2])
    with pytest.raises(SystemExit, match="test utterances differ"):
        combine([("cnn", "emodb_x", "cnn"), ("lstm", "emodb_y", "lstm")], tmp_path)
    with pytest.raises(SystemExit, match="no row 'smile'"):
        combine([("smile", "emodb_x", "smile")], tmp_path)
    with pytest.raises(SystemExit, match="NAME=FILE:KEY"):
        parse_member("cnn:emodb_x")
    assert parse_member("smile=peers_emodb:standard/ComParE_2016 + SmileMember (logreg)") == (
        "smile", "peers_emodb", "standard/ComParE_2016 + SmileMember (logreg)")


def test_calibrated_votes_take_each_folds_temperatures_from_the_other_folds(tmp_path):
    from persemo.calibration import fit_temperature
    from persemo.ensemble import soften

    rng = np.random.default_rng(1)
    folds, data = [], []
    for k in range(3):
        ids = [f"f{k}u{i}" for i in range(30)]
        y = rng.integers(0, 3, 30)
        a = rng.dirichlet(np.ones(3), 30)
        sharp = soften(0.6 * np.eye(3)[y] + 0.4 * rng.dirichlet(np.ones(3), 30), 0.2)  # overconfident member
        folds.append({"fold": k, "test_ids": ids, "y": list(map(int, y)), "probs": {"cnn": a.tolist(),
                                                                                   "lstm": sharp.tolist()}})
        data.append((y, a, sharp))
    (tmp_path / "emodb_x.json").write_text(json.dumps({"labels": LABELS, "folds": folds}))
    _, summary = combine([("cnn", "emodb_x", "cnn"), ("lstm", "emodb_x", "lstm")], tmp_path, calibrate=True)
    want = []
    for k, (y, a, sharp) in enumerate(data):
        rest = [d for j, d in enumerate(data) if j != k]
        ys = np.concatenate([d[0] for d in rest])
        ta = fit_temperature(np.concatenate([d[1] for d in rest]), ys)
        tb = fit_temperature(np.concatenate([d[2] for d in rest]), ys)
        want.append(compute_metrics(y, (soften(a, ta) + soften(sharp, tb)) / 2, LABELS)["uar"])
    assert summary["cnn + lstm (calibrated)"]["uar"]["folds"] == pytest.approx(want)
    assert len(summary["cnn + lstm (calibrated, weighted)"]["uar"]["folds"]) == 3
    assert "cnn (calibrated)" not in summary  # a lone member's answers do not change
    # beside the mean over folds: the metrics of all folds' out-of-fold predictions pooled
    pooled = compute_metrics(np.concatenate([d[0] for d in data]), np.concatenate([d[1] for d in data]), LABELS)
    assert summary["cnn"]["pooled"]["uar"] == pytest.approx(pooled["uar"])
    assert summary["cnn"]["pooled"]["macro_f1"] == pytest.approx(pooled["macro_f1"])


def test_probabilities_move_to_npz_and_come_back(tmp_path):
    """write_results keeps per-fold probabilities in <name>.probs.npz (no pickles), read_results puts them
    back, combine reads both that and the old inline form, and compact_results converts the old form."""
    from benchmarks.common import compact_results, read_results, write_results

    rng = np.random.default_rng(3)
    ids = [f"u{i}" for i in range(12)]
    y = np.arange(12) % 3
    a = np.round(rng.dirichlet(np.ones(3), 12), 5)
    folds = [{"fold": 0, "test_ids": ids, "y": y.tolist(), "probs": {"cnn": a, "single/cnn": a[::-1]}}]
    peers = {"standard": {"svm": {"labels": LABELS, "folds": [{"fold": 0, "probs": dict(zip(ids, a.tolist()))}]}}}
    write_results("emodb_new", {"labels": LABELS, "folds": folds, "predictions": peers, "machine": {}}, "x",
                  tmp_path)
    raw = json.loads((tmp_path / "emodb_new.json").read_text())
    assert raw["probs_file"] == "emodb_new.probs.npz" and "probs" not in raw["folds"][0]
    np.load(tmp_path / "emodb_new.probs.npz", allow_pickle=False)  # plain arrays
    back = read_results(tmp_path / "emodb_new.json")
    np.testing.assert_allclose(back["folds"][0]["probs"]["single/cnn"], a[::-1], atol=1e-9)
    np.testing.assert_allclose(back["predictions"]["standard"]["svm"]["folds"][0]["probs"]["u3"], a[3], atol=1e-9)
    _write(tmp_path / "emodb_old.json", {"cnn": a}, ids, y)  # the inline form of older files
    _, s_old = combine([("cnn", "emodb_old", "cnn")], tmp_path)
    _, s_new = combine([("cnn", "emodb_new", "cnn")], tmp_path)
    assert s_old["cnn"]["uar"] == s_new["cnn"]["uar"]
    assert compact_results(tmp_path, log=lambda *_: None) and (tmp_path / "emodb_old.probs.npz").is_file()
    _, s_conv = combine([("cnn", "emodb_old", "cnn")], tmp_path)
    assert s_conv["cnn"]["uar"] == s_old["cnn"]["uar"]
