"""benchmarks.selection_cost: the selection and its fixed winner, timed side by side on a generated corpus."""

from __future__ import annotations

import pytest

from benchmarks.selection_cost import render, run
from persemo.config import load_config

pytest.importorskip("opensmile", reason="the candidates are openSMILE functional members (the opensmile extra)")

CONFIG = """
split: {val_fraction: 0}
train: {num_threads: 1}
model:
  members: [smile]
  calibration: inner
  smile: {noise_copies: 1}
selection:
  candidates:
    - {name: plain, model: {members: [smile], smile: {feature_set: eGeMAPSv02}}}
    - {name: quantiles, model: {members: [smile], smile: {feature_set: eGeMAPSv02, quantiles: 5}}}
"""


def test_each_fold_times_the_selection_and_its_winner(tmp_path, tone_writer):
    data = tmp_path / "wav"
    data.mkdir()
    for s, spk in enumerate(["03", "08", "09", "10"]):  # EmoDB's names: speaker, text, emotion, version
        for e, (letter, freq) in enumerate([("W", 240.0), ("T", 120.0), ("N", 170.0)]):
            for t, text in enumerate(["a01", "a02", "a04"]):
                tone_writer(data / f"{spk}{text}{letter}a.wav", 0.6, 16000, freq=freq + 7 * s + 3 * t, seed=s + t)
    (tmp_path / "c.yaml").write_text(CONFIG)
    cfg = load_config(tmp_path / "c.yaml")
    res = run(cfg, 2, data, log=lambda m: None, cache_dir=tmp_path / "cache")
    assert [r["fold"] for r in res["folds"]] == [0, 1]
    for r in res["folds"]:
        assert r["winners"][0] in ("plain", "quantiles")
        assert r["selection_s"] > 0 and r["fixed_s"] > 0
        assert r["ratio"] == pytest.approx(r["selection_s"] / r["fixed_s"])
    assert res["folds"][1]["order"].startswith(("fixed first", "selection first (the guess"))
    md = render(res, "python -m benchmarks selection-cost", 1.0)
    assert "Median of the per-fold ratios" in md and "| 1 |" in md
