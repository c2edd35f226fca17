"""persemo.timeline: voiced segments from a generated signal with silence gaps, each row scored as the clip it
is (batching changes nothing), the summary row a duration-weighted mean, the fall-backs, the PNG, and
``persemo predict --segments --plot``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from persemo.artifact import save_model
from persemo.cli import app
from persemo.config import ConfigError, load_config
from persemo.ensemble import Ensemble
from persemo.export import synthetic_clip
from persemo.inference import Recogniser
from persemo.serve.vad import EnergyVAD
from persemo.timeline import Timeline, TimelineSettings, pieces, plot_result, speech_frames, voiced_spans

SR = 16000
LABELS = ["anger", "neutral", "sadness"]
TINY = {"features": {"n_mels": 32, "frames": 63, "mfcc_n_mels": 40, "n_mfcc": 13},  # a 2-s window
        "model": {"cnn": {"channels": [8, 16], "hidden": 0}, "lstm": {"hidden": 16, "layers": 1}}}


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Recogniser:
    torch.manual_seed(0)
    model = Ensemble(load_config(**TINY), LABELS).eval()
    with torch.no_grad():  # peaked outputs, as a trained model's, so that differences show
        for m in model.members:
            m.net.head[-1].weight.mul_(25.0)
    return Recogniser.load(save_model(tmp_path_factory.mktemp("tl") / "run", model))


def bursts(layout: list[tuple[float, float]], seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Voiced bursts (``synthetic_clip``) at (start, seconds), faint noise (-70 dBFS) elsewhere."""
    total = max(a + d for a, d in layout) + 1.0
    rng = np.random.default_rng(seed)
    wave = (10 ** (-70 / 20) * rng.standard_normal(int(total * SR))).astype(np.float32)
    spans = []
    for i, (a, d) in enumerate(layout):
        s, n = int(a * SR), int(d * SR)
        wave[s: s + n] = synthetic_clip(n, seed=i)
        spans.append((s, s + n))
    return wave, spans


def test_runs_are_joined_dropped_padded_and_cut():
    s = TimelineSettings(min_speech=0.25, merge_gap=0.3, pad=0.1)
    f = np.zeros(100, bool)
    f[5:20] = True  # 15 frames = 0.48 s
    f[24:40] = True  # after a 4-frame (0.128 s) pause: joined to the first
    f[60:65] = True  # 0.16 s alone: dropped
    f[80:99] = True
    n = 100 * 512
    assert voiced_spans(f, n, s) == [(5 * 512 - 1600, 40 * 512 + 1600), (80 * 512 - 1600, n)]
    assert voiced_spans(np.zeros(10, bool), 5120, s) == []
    assert pieces((100, 100 + 9 * 4000), 4000 * 4) == [(100, 12100), (12100, 24100), (24100, 36100)]
    assert speech_frames([0.1, 0.6, 0.4, 0.3, 0.7], 0.5, 0.35).tolist() == [False, True, True, False, True]
    with pytest.raises(ConfigError, match="timeline.vad"):
        TimelineSettings(vad="webrtc")
    with pytest.raises(ConfigError, match="timeline.max_seconds"):
        TimelineSettings(max_seconds=60)


def test_segments_of_a_signal_with_silence_gaps(rec):
    wave, truth = bursts([(0.5, 1.5), (3.0, 3.2), (7.5, 0.8)])
    tl = Timeline(rec, TimelineSettings(pad=0.1), vad=EnergyVAD())
    found = tl.segments(wave)
    assert len(found) == 3
    for (a, b), (s, e) in zip(found, truth):  # each burst, give or take a VAD frame and the padding
        assert abs(a - (s - 1600)) <= 512 and abs(b - (e + 1600)) <= 512


def test_each_row_is_scored_as_the_clip_it_is(rec):
    wave, _ = bursts([(0.5, 1.5), (3.0, 3.2), (7.5, 0.8)], seed=1)
    res = Timeline(rec, TimelineSettings(batch=3), vad=EnergyVAD()).score(wave, source="gen")
    rows = res["segments"]
    # the 3.4-s segment (3.2 s + padding) is cut into two equal rows within the 2-s window
    assert [r["segment"] for r in rows] == [0, 1, 1, 2]
    assert rows[1]["end"] == rows[2]["start"] and max(r["end"] - r["start"] for r in rows) <= rec.window / SR
    for r in rows:  # scored alone, each row gives the same answer as in its batch
        alone = rec.predict_wave(wave[int(round(r["start"] * SR)): int(round(r["end"] * SR))])
        np.testing.assert_allclose(list(r["probabilities"].values()), list(alone["probabilities"].values()),
                                   atol=1e-5)
        for m in rec.members:
            np.testing.assert_allclose(list(r["members"][m].values()), list(alone["members"][m].values()), atol=1e-5)
    secs = np.array([r["end"] - r["start"] for r in rows])
    mean = sum(w * np.array(list(r["probabilities"].values())) for w, r in zip(secs / secs.sum(), rows))
    np.testing.assert_allclose(list(res["probabilities"].values()), mean, atol=1e-5)
    assert res["emotion"] == LABELS[int(np.argmax(mean))] and "duration-weighted mean of 4 rows" in res["combined"]
    assert res["vad"]["name"] == "energy" and res["duration"] == pytest.approx(len(wave) / SR)


def test_short_and_silent_recordings_fall_back(rec):
    tl = Timeline(rec, vad=EnergyVAD())
    short = synthetic_clip(SR)
    res = tl.score(short)
    assert "segments" not in res and res["combined"].startswith("one window")
    assert res["probabilities"] == rec.predict_wave(short)["probabilities"]
    quiet = (1e-4 * np.random.default_rng(0).standard_normal(6 * SR)).astype(np.float32)
    res = tl.score(quiet)
    assert "no voiced segment" in res["combined"] and len(res["windows"]) == len(rec.windows(6 * SR)) == 6


def test_png_is_written_for_segments_and_windows(rec, tmp_path):
    from PIL import Image

    wave, _ = bursts([(0.5, 1.5), (3.0, 3.2)], seed=2)
    seg = {"file": "a/talk.wav", **Timeline(rec, vad=EnergyVAD()).score(wave)}
    win = {"file": "b/talk2.flac", **rec.predict_wave(wave)}
    for res, name in ((seg, "talk.png"), (win, "talk2.png")):
        path = plot_result(res, tmp_path / "plots")
        assert path == tmp_path / "plots" / name
        img = Image.open(path)
        assert img.mode == "P" and img.size[0] > 600 and path.stat().st_size < 60_000


def test_cli_predict_segments_and_plot(rec, tmp_path, monkeypatch):
    import soundfile as sf

    import persemo.serve.vad

    # silero hears no speech in generated harmonics: the CLI's detector is the energy one here
    monkeypatch.setattr(persemo.serve.vad, "load_vad", lambda kind="auto": EnergyVAD())

    wave, _ = bursts([(0.5, 1.5), (3.0, 1.0)], seed=3)
    f = tmp_path / "talk.wav"
    sf.write(f, wave, SR)
    run = tmp_path / "run"
    save_model(run, rec.model)
    res = CliRunner().invoke(app, ["predict", str(f), "--model", str(run), "--segments", "--json",
                                   "--plot", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["segments"]) == 2 and out["file"] == str(f) and "duration-weighted" in out["combined"]
    assert (tmp_path / "plots" / "talk.png").is_file()
    res = CliRunner().invoke(app, ["predict", str(f), "--model", str(run), "--segments"])
    assert res.exit_code == 0 and "segments (summary: duration-weighted" in res.stdout


def test_archive_segments_one_row_per_segment_after_the_summary(rec, tmp_path, monkeypatch):
    """predict --out --segments: a long file's summary row, then one row per voiced segment (start, end,
    probabilities); a short file keeps its one row; a rerun finds every file scored."""
    import csv

    import soundfile as sf

    import persemo.serve.vad

    monkeypatch.setattr(persemo.serve.vad, "load_vad", lambda kind="auto": EnergyVAD())
    wave, _ = bursts([(0.5, 1.5), (3.0, 1.0)], seed=3)
    sf.write(tmp_path / "talk.wav", wave, SR)
    sf.write(tmp_path / "short.wav", wave[: SR], SR)
    run = tmp_path / "run"
    save_model(run, rec.model)
    out = tmp_path / "rows.csv"
    args = ["predict", str(tmp_path / "talk.wav"), str(tmp_path / "short.wav"), "--model", str(run), "--out",
            str(out), "--segments", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    talk = [r for r in rows if r["file"].endswith("talk.wav")]
    assert [r["segment"] for r in talk] == ["all", "0", "1"] and "duration-weighted" in talk[0]["combined"]
    assert float(talk[1]["start"]) < float(talk[1]["end"]) <= float(talk[2]["start"]) < float(talk[2]["end"])
    assert all(abs(sum(float(r[f"p_{l}"]) for l in rec.labels) - 1) < 1e-4 for r in talk)
    assert [r["segment"] for r in rows if r["file"].endswith("short.wav")] == ["all"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "0 scored, 0 errors, 2 already in" in res.stdout
    with out.open(newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)
    res = CliRunner().invoke(app, args[:-2] + ["--plot", str(tmp_path / "p")])
    assert res.exit_code == 2 and "--plot" in res.output


def test_doctests():
    import doctest

    import persemo.timeline

    assert doctest.testmod(persemo.timeline).failed == 0
