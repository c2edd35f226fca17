"""Recogniser: windows cover long audio with 50% overlap; the answer's distributions are proper; bad
audio is refused by name; Persian label names on request."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from persemo.artifact import save_model
from persemo.audio import SAMPLE_RATE, AudioError
from persemo.config import Config
from persemo.corpora.base import PERSIAN_NAMES
from persemo.inference import Recogniser
from persemo.ensemble import Ensemble

LABELS = ["anger", "neutral", "sadness", "surprise"]


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Recogniser:
    """A saved (untrained) model with the default 126-frame (4-s) window and narrow members."""
    cfg = Config().replace(model={"cnn": {"channels": [8, 16], "hidden": 16}, "lstm": {"hidden": 16, "layers": 1}})
    torch.manual_seed(0)
    model = Ensemble(cfg, LABELS)
    model.set_weights([0.4, 0.6])
    return Recogniser.load(save_model(tmp_path_factory.mktemp("model"), model))


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 150 + 100 * np.sin(2 * np.pi * 0.2 * t)  # changes over time, so windows differ
    y = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / SAMPLE_RATE) + 0.02 * rng.standard_normal(len(t))
    return y.astype(np.float32)


def test_window_is_four_seconds(rec):
    assert rec.window == 64000 and rec.hop == 32000
    assert rec.info()["window_seconds"] == pytest.approx(4.0)
    assert rec.meta["window_seconds"] == pytest.approx(rec.info()["window_seconds"])


@pytest.mark.parametrize("n", [1600, 63999, 64000, 64001, 96000, 100000, 144000, 16000 * 60 + 123])
def test_windows_cover_the_clip_with_half_overlap(rec, n):
    spans = rec.windows(n)
    assert spans[0][0] == 0 and spans[-1][1] == n
    if n <= rec.window:
        assert spans == [(0, n)]
        return
    covered = np.zeros(n, bool)
    for s, e in spans:
        assert e - s == rec.window and 0 <= s < e <= n
        covered[s:e] = True
    assert covered.all()
    starts = [s for s, _ in spans]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    # regular hops of half a window; only the last window may be shifted back to end at the clip's end
    assert all(b - a == rec.hop for a, b in zip(starts[:-2], starts[1:-1]))
    assert 0 < starts[-1] - starts[-2] <= rec.hop
    # no more windows than needed
    assert len(spans) == max(1, int(np.ceil((n - rec.window) / rec.hop))) + 1


def test_predict_long_clip(rec):
    wave = _clip(9.0)
    out = rec.predict_wave(wave)
    assert out["duration"] == pytest.approx(9.0)
    wins = out["windows"]
    assert [(w["start"], w["end"]) for w in wins] == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (5.0, 9.0)]
    for entry in wins + [out]:
        assert set(entry["probabilities"]) == set(LABELS)
        assert sum(entry["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert entry["emotion"] == max(entry["probabilities"], key=entry["probabilities"].get)
        assert entry["confidence"] == pytest.approx(max(entry["probabilities"].values()))
        assert set(entry["members"]) == {"cnn", "lstm"}
        for dist in entry["members"].values():
            assert sum(dist.values()) == pytest.approx(1.0, abs=1e-5)
    # the aggregate is the mean of equally long windows
    for label in LABELS:
        assert out["probabilities"][label] == pytest.approx(np.mean([w["probabilities"][label] for w in wins]),
                                                            abs=1e-5)
    # each window's answer is what the model says about that stretch alone
    alone = rec.predict_wave(wave[2 * SAMPLE_RATE: 6 * SAMPLE_RATE])
    assert "windows" not in alone
    for label in LABELS:
        assert wins[1]["probabilities"][label] == pytest.approx(alone["probabilities"][label], abs=1e-5)


def test_ensemble_is_the_weighted_vote(rec):
    out = rec.predict_wave(_clip(3.0, seed=1))
    m = out["members"]
    for label in LABELS:
        assert out["probabilities"][label] == pytest.approx(0.4 * m["cnn"][label] + 0.6 * m["lstm"][label],
                                                            abs=2e-6)


@pytest.mark.parametrize("bad, reason", [
    (np.zeros(32000, np.float32), "silent"),
    (np.full(32000, 1e-6, np.float32), "silent"),
    (np.where(np.arange(32000) == 500, np.nan, 0.1).astype(np.float32), "NaN"),
    (np.where(np.arange(32000) == 9, np.inf, 0.1).astype(np.float32), "infinite"),
    (np.zeros(0, np.float32), "empty"),
    (np.full(100, 0.1, np.float32), "too short"),
])
def test_unusable_audio_raises(rec, bad, reason):
    with pytest.raises(AudioError, match=reason) as exc:
        rec.predict_wave(bad, source="clip.wav")
    assert exc.value.source == "clip.wav"


def test_persian_labels(rec):
    wave = _clip(5.0, seed=2)
    en, fa = rec.predict_wave(wave), rec.predict_wave(wave, lang="fa")
    assert list(fa["probabilities"]) == [PERSIAN_NAMES[l] for l in LABELS]
    assert fa["emotion"] == PERSIAN_NAMES[en["emotion"]]
    assert list(fa["probabilities"].values()) == list(en["probabilities"].values())
    assert list(fa["windows"][0]["members"]["cnn"]) == [PERSIAN_NAMES[l] for l in LABELS]
    assert rec.info()["labels_fa"] == [PERSIAN_NAMES[l] for l in LABELS]


def test_predict_file_names_the_file(rec, tmp_path):
    import soundfile as sf

    path = tmp_path / "clip.wav"
    wave = _clip(2.5, seed=3)
    sf.write(str(path), wave, SAMPLE_RATE, subtype="FLOAT")
    out = rec.predict_file(path)
    assert out["file"] == str(path)
    assert out["probabilities"] == rec.predict_wave(wave)["probabilities"]
    junk = tmp_path / "notes.wav"
    junk.write_text("not audio at all")
    with pytest.raises(AudioError, match="notes.wav"):
        rec.predict_file(junk)
