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
