"""benchmarks.common: pooled rows, saved fold models checked by fold, and which saved members a reuse keeps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.common import Rows, fold_model, reusable, save_fold_model
from persemo.config import Config
from persemo.ensemble import Ensemble
from persemo.evaluation import compute_metrics

LABELS = ["anger", "neutral", "sadness"]


def test_rows_pool_out_of_fold_predictions_beside_the_mean_over_folds():
    rng = np.random.default_rng(0)
    t = Rows(LABELS)
    folds = [(rng.integers(0, 3, n), rng.dirichlet(np.ones(3), n)) for n in (10, 30)]
    for y, p in folds:
        t.add("m", y, p)
    s = t.summary()["m"]
    per = [compute_metrics(y, p, LABELS)["uar"] for y, p in folds]
    assert s["uar"]["mean"] == pytest.approx(np.mean(per))
    pooled = compute_metrics(np.concatenate([f[0] for f in folds]), np.concatenate([f[1] for f in folds]), LABELS)
    assert s["pooled"]["uar"] == pytest.approx(pooled["uar"])
    assert s["pooled"]["macro_f1"] == pytest.approx(pooled["macro_f1"])
    # an averaged row: per fold the mean over groups, pooled each group over folds and then the mean
    g = Rows(LABELS)
    for y, p in folds:
        g.add_mean("trap", {"a": (y[:5], p[:5]), "b": (y[5:], p[5:])})
    want = np.mean([compute_metrics(np.concatenate([f[0][sl] for f in folds]),
                                    np.concatenate([f[1][sl] for f in folds]), LABELS)["uar"]
                    for sl in (slice(0, 5), slice(5, None))])
    assert g.summary()["trap"]["pooled"]["uar"] == pytest.approx(want)


def _cfg(**model) -> Config:
    return Config().replace(features={"frames": 32}, model={"members": ["cnn", "lstm"], "cnn": {"channels": [4]},
                                                            "lstm": {"hidden": 8}, **model})


def test_a_reuse_keeps_the_saved_members_whose_settings_are_unchanged():
    saved = Ensemble(_cfg(), LABELS)
    keep, why = reusable(saved, _cfg())
    assert list(keep) == ["cnn", "lstm"] and keep["cnn"] is saved.members[0] and not why
    keep, why = reusable(saved, _cfg(lstm={"hidden": 16}))
    assert list(keep) == ["cnn"] and why == ["lstm: its settings changed"]
    keep, why = reusable(saved, _cfg().replace(train={"epochs": 3}))
    assert keep == {} and "train.epochs" in why[0]
    assert list(reusable(saved, _cfg().replace(train={"num_threads": 1}))[0]) == ["cnn", "lstm"]


def test_a_saved_fold_model_loads_only_for_its_own_fold(tmp_path):
    model = Ensemble(_cfg(), LABELS)
    split = SimpleNamespace(fold=1, seed=0, test=["u1", "u2"], val=[])
    fold = SimpleNamespace(split=split, model=model, test=[SimpleNamespace(utt=SimpleNamespace(id=i)) for i in split.test],
                           info={"members": {"cnn": {"seconds": 2.0}}, "history": {}})
    save_fold_model(tmp_path, fold, folds=2)
    loaded, info = fold_model(tmp_path, split, LABELS, log=lambda *a: None)
    assert loaded.kinds == ["cnn", "lstm"] and info["members"]["cnn"]["seconds"] == 2.0
    assert info["members"]["lstm"]["loaded"]
    with pytest.raises(SystemExit, match="not trained for this fold"):
        fold_model(tmp_path, SimpleNamespace(fold=1, test=["u1", "u3"], val=[]), LABELS)
    with pytest.raises(SystemExit, match="labels"):
        fold_model(tmp_path, split, ["anger", "neutral", "fear"])


def test_command_line_quotes_what_a_shell_would_lose():
    from benchmarks.common import command_line

    cmd = command_line("python -m benchmarks suite", ["--members", "", "--tag", "a b", "--snrs", "10"])
    assert cmd == "python -m benchmarks suite --members '' --tag 'a b' --snrs 10"


def test_compact_results_leaves_a_smaller_file_alone(tmp_path):
    """A results JSON already written smaller than the indented form (the confound benchmark's one line) is
    not rewritten larger."""
    import json

    from benchmarks.common import compact_results

    data = {"rows": {f"model {i}": {"uar": [0.5 + i / 100] * 5, "per_fold": list(range(30))} for i in range(20)}}
    path = tmp_path / "confound_x.json"
    text = json.dumps(data, separators=(",", ":")) + "\n"
    path.write_text(text)
    assert compact_results(tmp_path, log=lambda *_: None) == []
    assert path.read_text() == text


def test_drop_probs_keeps_the_figures_and_says_why(tmp_path):
    import numpy as np

    from benchmarks.common import drop_probs, read_results, write_results

    data = {"labels": ["a", "b"], "summary": {"x": 1.0},
            "folds": [{"fold": 0, "test_ids": ["u1"], "probs": {"m": np.array([[0.25, 0.75]])}}]}
    json_path, _ = write_results("run", data, "# run", tmp_path)
    assert (tmp_path / "run.probs.npz").is_file()
    assert drop_probs(json_path, "superseded") > 0
    assert not (tmp_path / "run.probs.npz").exists()
    back = read_results(json_path)
    assert back["summary"] == {"x": 1.0} and back["probs_dropped"] == "superseded"
    assert "probs" not in back["folds"][0]
    assert drop_probs(json_path, "again") == 0
