"""Speaker statistics: no labels, shrinkage, the trap guard, files tied to their feature config, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from persemo.adaptation import (StatsError, compute_speaker_stats, effective_emotions, global_stats, guarded_stats,
                                load_stats, save_stats, shrink)
from persemo.artifact import save_model
from persemo.cli import app
from persemo.config import load_config
from persemo.inference import Recogniser
from persemo.ensemble import Ensemble

LABELS = ["anger", "neutral", "sadness"]


def _voice(seconds: float, f0: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    return (0.2 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def speaker_model(tmp_path_factory):
    """An untrained speaker-normalised model with non-trivial global statistics."""
    import torch

    cfg = load_config(features={"normalisation": "speaker"})
    m = Ensemble(cfg, LABELS)
    torch.manual_seed(0)
    m.front.norm_mel.set_stats(torch.randn(64) - 40, torch.rand(64) * 10 + 5)
    m.front.norm_mfcc.set_stats(torch.randn(40), torch.rand(40) * 20 + 1)
    d = tmp_path_factory.mktemp("spkmodel")
    save_model(d, m)
    return d


def test_shrink_interpolates_between_stats_and_prior():
    a = {k: np.full(3, 2.0, np.float32) for k in ("logmel_mean", "logmel_std", "mfcc_mean", "mfcc_std")}
    b = {k: np.full(3, 8.0, np.float32) for k in a}
    assert all(np.allclose(shrink(a, b, 5, 0)[k], a[k]) for k in a)
    half = shrink(a, b, 10, 10)
    assert np.allclose(half["logmel_mean"], 5.0)
    assert np.allclose(half["logmel_std"], 4.0)  # geometric mean of 2 and 8
    assert np.allclose(shrink(a, b, 1e9, 10)["mfcc_mean"], 2.0, atol=1e-6)


def test_effective_emotions_and_guard():
    one = np.tile([[0.9, 0.05, 0.05]], (8, 1))
    spread = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    assert effective_emotions(one) < 1.5
    assert effective_emotions(spread) == pytest.approx(3.0)
    st = {k: np.zeros(2, np.float32) for k in ("logmel_mean", "logmel_std", "mfcc_mean", "mfcc_std")}
    prior = {k: np.ones(2, np.float32) for k in st}
    used, why = guarded_stats(st, prior, one, 8)
    assert not why["adapted"] and np.allclose(used["mfcc_mean"], 1.0)
    used, why = guarded_stats(st, prior, spread, 6)
    assert why["adapted"] and np.allclose(used["mfcc_mean"], 0.0)


def test_stats_depend_on_audio_only(speaker_model):
    rec = Recogniser.load(speaker_model)
    waves = [_voice(1.5, 120 + 10 * i, i) for i in range(4)]
    a = compute_speaker_stats(rec.model, waves)
    b = compute_speaker_stats(rec.model, list(reversed(waves)))  # order (and any label) is irrelevant
    for k in a:
        assert np.allclose(a[k], b[k], atol=1e-4)
    c = compute_speaker_stats(rec.model, [_voice(1.5, 250, 9)])
    assert not np.allclose(a["logmel_mean"], c["logmel_mean"])
    shrunk = compute_speaker_stats(rec.model, waves, shrink_k=1e6)
    g = global_stats(rec.model)
    assert np.allclose(shrunk["logmel_mean"], g["logmel_mean"], atol=1e-3)


def test_stats_file_round_trip_and_mismatch(tmp_path, speaker_model):
    rec = Recogniser.load(speaker_model)
    st = rec.speaker_stats([_voice(1.0, 150, 1), _voice(1.2, 160, 2)])
    fc = rec.meta["config"]["features"]
    p = save_stats(tmp_path / "spk", st, fc, 2, 2.2)
    back = load_stats(p, fc)
    assert all(np.array_equal(back[k], st[k]) for k in st)
    other = dict(fc, n_mels=80)
    with pytest.raises(StatsError, match="n_mels"):
        load_stats(p, other)
    p.with_suffix(".json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(StatsError, match="not a persemo"):
        load_stats(p, fc)
    with pytest.raises(StatsError, match="not found"):
        load_stats(tmp_path / "missing.safetensors", fc)


def test_utterance_model_refuses_speaker_stats(tmp_path):
    d = tmp_path / "m"
    save_model(d, Ensemble(load_config(), LABELS))
    rec = Recogniser.load(d)
    assert not rec.adaptable
    with pytest.raises(StatsError, match="speaker"):
        rec.predict_wave(_voice(1.0, 150, 0), speaker_stats={})


def test_adaptation_changes_predictions(speaker_model):
    rec = Recogniser.load(speaker_model)
    waves = [_voice(2.0, 110 + 15 * i, i) for i in range(3)]
    st = rec.speaker_stats(waves)
    plain = rec.predict_wave(waves[0])
    adapted = rec.predict_wave(waves[0], speaker_stats=st)
    assert adapted["adapted"] and not plain["adapted"]
    assert plain["probabilities"] != adapted["probabilities"]


def test_cli_adapt_and_predict(tmp_path, speaker_model):
    files = []
    for i in range(3):
        f = tmp_path / f"s{i}.wav"
        sf.write(f, _voice(1.5, 130 + 20 * i, i), 16000)
        files.append(str(f))
    r = CliRunner().invoke(app, ["adapt", "--model", str(speaker_model), *files, "--out", str(tmp_path / "spk")])
    assert r.exit_code == 0, r.output
    stats = tmp_path / "spk.safetensors"
    assert stats.is_file() and (tmp_path / "spk.json").is_file()
    r1 = CliRunner().invoke(app, ["predict", "--model", str(speaker_model), files[0], "--json",
                                  "--speaker-stats", str(stats)])
    r2 = CliRunner().invoke(app, ["predict", "--model", str(speaker_model), *files, "--json", "--same-speaker"])
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    one = json.loads(r1.stdout)
    many = json.loads(r2.stdout)
    assert one["adapted"] and all(m["adapted"] for m in many)
    # the same three files give the same statistics, so the first file's answer is the same both ways
    assert one["probabilities"] == pytest.approx(many[0]["probabilities"], abs=1e-5)
    r3 = CliRunner().invoke(app, ["predict", "--model", str(speaker_model), files[0], "--speaker-stats",
                                  str(tmp_path / "nope.safetensors")])
    assert r3.exit_code == 2 and "not found" in r3.output


def test_speaker_model_shrinks_new_speakers_by_its_configured_k(speaker_model):
    rec = Recogniser.load(speaker_model)
    assert rec.meta["adaptation"] == {"shrink_k": 10.0, "enrolment": None}  # adaptation.shrink, the default
    waves = [_voice(1.5, 130 + 20 * i, i) for i in range(3)]
    raw = compute_speaker_stats(rec.model, waves)
    used = rec.speaker_stats(waves)
    expected = shrink(raw, global_stats(rec.model), 3, 10.0)
    assert all(np.allclose(used[k], expected[k], atol=1e-5) for k in raw)
    assert not np.allclose(used["logmel_mean"], raw["logmel_mean"])
    assert all(np.array_equal(rec.speaker_stats(waves, shrink_k=0)[k], raw[k]) for k in raw)


def test_no_shrink_when_configured_off(tmp_path):
    cfg = load_config(features={"normalisation": "speaker"}, adaptation={"shrink": 0})
    save_model(tmp_path / "m", Ensemble(cfg, LABELS))
    assert Recogniser.load(tmp_path / "m").meta["adaptation"] == {"shrink_k": 0.0, "enrolment": None}


def test_an_enrolment_model_says_so_in_its_artifact_and_in_adapt(tmp_path):
    cfg = load_config(features={"normalisation": "speaker", "enrolment": "neutral"})
    save_model(tmp_path / "m", Ensemble(cfg, LABELS))
    assert Recogniser.load(tmp_path / "m").meta["adaptation"] == {"shrink_k": 10.0, "enrolment": "neutral"}
    wav = tmp_path / "calm.wav"
    sf.write(wav, _voice(1.5, 140, 0), 16000)
    r = CliRunner().invoke(app, ["adapt", "--model", str(tmp_path / "m"), str(wav), "--out", str(tmp_path / "st")])
    assert r.exit_code == 0, r.output
    assert "trained for enrolment from neutral speech" in r.output
