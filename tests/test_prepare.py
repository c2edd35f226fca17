"""prepare(): bad files reported and skipped, the rest prepared in input order, equal to one-at-a-time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from persemo.audio import load_audio
from persemo.config import FeatureConfig
from persemo.corpora.base import Utterance
from persemo.features import Spectra, frames_for
from persemo.prepare import prepare

CFG = FeatureConfig()


def _utt(path: Path, i: int) -> Utterance:
    return Utterance(path.stem, str(path), "anger" if i % 2 else "sadness", f"s{i % 3}")


@pytest.fixture
def mixed(tmp_path, tone_writer) -> tuple[list[Utterance], set[str]]:
    """Good clips of several lengths and rates, interleaved with each kind of bad file."""
    d = tmp_path / "audio"
    d.mkdir()
    write_tone = tone_writer
    paths = [write_tone(d / "g0.wav", 1.3, 22050, seed=0)]
    (d / "b_empty.wav").write_bytes(b"")
    paths.append(d / "b_empty.wav")
    paths.append(write_tone(d / "g1.wav", 0.4, 16000, seed=1))
    (d / "b_text.wav").write_text("not audio")
    paths.append(d / "b_text.wav")
    paths.append(write_tone(d / "g2.wav", 2.2, 44100, channels=2, seed=2))
    sf.write(str(d / "b_silent.wav"), np.zeros(8000, np.float32), 16000)
    paths.append(d / "b_silent.wav")
    paths.append(d / "b_missing.wav")  # listed, never written
    paths.append(write_tone(d / "g3.wav", 0.8, 8000, seed=3, subtype="PCM_24"))
    paths.append(write_tone(d / "g4.wav", 5.1, 48000, seed=4, subtype="FLOAT"))
    bad = {str(p) for p in paths if p.stem.startswith("b_")}
    return [_utt(p, i) for i, p in enumerate(paths)], bad


def test_bad_files_reported_rest_prepared_in_order(mixed):
    utts, bad = mixed
    out = prepare(utts, CFG, cache_dir=None)
    assert [it.utt.id for it in out.items] == ["g0", "g1", "g2", "g3", "g4"]
    assert {p.path for p in out.problems} == bad
    reasons = {Path(p.path).stem: p.reason for p in out.problems}
    assert "empty" in reasons["b_empty"] and "not readable" in reasons["b_text"]
    assert "silent" in reasons["b_silent"]
    assert "no such file" in reasons["b_missing"] or "cannot read" in reasons["b_missing"]
    assert set(out.by_id()) == {"g0", "g1", "g2", "g3", "g4"}


def test_items_hold_16k_waves_and_full_length_features(mixed):
    utts, _ = mixed
    out = prepare(utts, CFG, cache_dir=None)
    seconds = {"g0": 1.3, "g1": 0.4, "g2": 2.2, "g3": 0.8, "g4": 5.1}
    for it in out.items:
        assert it.wave.dtype == np.float32 and it.wave.ndim == 1
        assert abs(len(it.wave) - seconds[it.utt.id] * 16000) <= 1
        t = frames_for(len(it.wave), CFG.hop_length)
        assert it.logmel.shape == (64, t) and it.mfcc.shape == (40, t)
        assert it.logmel.dtype == np.float32 and it.mfcc.dtype == np.float32


def test_prepare_equals_one_at_a_time(mixed):
    utts, _ = mixed
    out = prepare(utts, CFG, cache_dir=None)
    sp = Spectra(CFG).eval()
    for it in out.items:
        y = load_audio(it.utt.path)
        np.testing.assert_array_equal(it.wave, y)
        with torch.inference_mode():
            logmel, mfcc, _ = sp(torch.from_numpy(y)[None])
        np.testing.assert_allclose(it.logmel, logmel[0].numpy(), atol=1e-3)
        np.testing.assert_allclose(it.mfcc, mfcc[0].numpy(), atol=1e-3)


def test_batch_size_and_threads_do_not_change_results(mixed):
    utts, _ = mixed
    cfg = FeatureConfig(mfcc_deltas=True)
    big = prepare(utts, cfg, cache_dir=None)
    small = prepare(utts, cfg, cache_dir=None, threads=1, batch_samples=16000)  # one clip per batch
    assert [it.utt.id for it in big.items] == [it.utt.id for it in small.items]
    for a, b in zip(big.items, small.items):
        np.testing.assert_array_equal(a.wave, b.wave)
        np.testing.assert_allclose(a.logmel, b.logmel, atol=1e-3)
        np.testing.assert_allclose(a.mfcc, b.mfcc, atol=1e-3)
    assert big.items[0].mfcc.shape[0] == 120


def test_empty_input_and_wrong_rate():
    out = prepare([], CFG, cache_dir=None)
    assert out.items == [] and out.problems == [] and out.cache_hits == 0
    with pytest.raises(ValueError, match="sample_rate"):
        prepare([], FeatureConfig(sample_rate=22050), cache_dir=None)


def test_prepare_on_real_emodb_sample(emodb_scan, tmp_path):
    utts = emodb_scan.utterances[::53]  # ten files across speakers
    out = prepare(utts, CFG, cache_dir=tmp_path / "cache")
    assert out.problems == [] and [it.utt.id for it in out.items] == [u.id for u in utts]
    for it in out.items:
        info = sf.info(it.utt.path)
        assert abs(len(it.wave) - info.frames * 16000 / info.samplerate) <= 1


def test_torch_thread_setting_is_left_as_found(mixed):
    """prepare() runs its batches with one torch thread each, and restores the setting after."""
    from concurrent.futures import ThreadPoolExecutor

    utts, _ = mixed
    before = torch.get_num_threads()
    prepare(utts, CFG, cache_dir=None)
    assert torch.get_num_threads() == before
    with ThreadPoolExecutor(1) as pool:  # a thread created afterwards does not inherit 1
        assert pool.submit(torch.get_num_threads).result() == before
