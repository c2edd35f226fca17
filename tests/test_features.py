"""Features: torch log-mel and MFCC equal librosa's; batched equals one-at-a-time; fixed length; norms.

Tolerances are absolute, in dB (log-mel) and in MFCC units (dB-scaled DCT coefficients). Measured
differences are about 3e-4 (float32 FFT rounding); the bounds below leave a margin of ~30x.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from persemo.audio import load_audio
from persemo.config import FeatureConfig
from persemo.features import (FeaturePipeline, Normaliser, Spectra, fix_length, frame_mask, frames_for,
                              hold_last, masked_stats, mel_filterbank, pad_batch, samples_for_frames)

LOGMEL_TOL_DB = 0.01
MFCC_TOL = 0.01
DELTA_TOL = 1e-3
EMODB_FILES = ["03a01Fa.wav", "16b10Wb.wav"]  # male happiness with digital silence; female anger

librosa = pytest.importorskip("librosa")


@pytest.fixture(scope="module")
def spectra() -> Spectra:
    return Spectra(FeatureConfig()).eval()


@pytest.fixture(scope="module")
def generated(tmp_path_factory, tone_writer) -> np.ndarray:
    """A generated 2.345 s clip at 44.1 kHz loaded the project's way (length not a multiple of the hop)."""
    path = tone_writer(tmp_path_factory.mktemp("feat") / "g.wav", 2.345, 44100, seed=5)
    return load_audio(path)


@pytest.fixture(params=EMODB_FILES + ["generated"])
def wave(request, generated) -> np.ndarray:
    if request.param == "generated":
        return generated
    emodb_dir = request.getfixturevalue("emodb_dir")
    return load_audio(emodb_dir / request.param)


def _run(spectra: Spectra, y: np.ndarray):
    with torch.inference_mode():
        logmel, mfcc, fl = spectra(torch.from_numpy(y)[None])
    return logmel[0].numpy(), mfcc[0].numpy(), int(fl[0])


def _librosa_logmel(y, n_mels=64):
    s = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=1024, hop_length=512, n_mels=n_mels, fmin=0.0,
                                       fmax=8000.0, pad_mode="constant", power=2.0)
    return librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=None)


def _librosa_mfcc(y):
    return librosa.feature.mfcc(y=y, sr=16000, n_mfcc=40, n_fft=1024, hop_length=512, n_mels=128, fmin=0.0,
                                fmax=8000.0, pad_mode="constant")


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax", [
    (16000, 1024, 64, 0.0, 8000.0), (16000, 1024, 128, 0.0, 8000.0), (16000, 512, 40, 50.0, 7000.0),
    (22050, 2048, 128, 0.0, None), (16000, 1024, 64, 300.0, 3000.0),
])
def test_mel_filterbank_equals_librosas(sr, n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6 * np.abs(ref).max())


def test_building_spectra_does_not_import_librosa(monkeypatch):
    # librosa drags in scipy.signal (seconds at every start); the filterbank is computed here instead
    monkeypatch.setitem(sys.modules, "librosa", None)  # any `import librosa` now fails
    Spectra(FeatureConfig(mfcc_deltas=True))


def test_logmel_and_mfcc_match_librosa(spectra, wave):
    logmel, mfcc, fl = _run(spectra, wave)
    ref_mel, ref_mfcc = _librosa_logmel(wave), _librosa_mfcc(wave)
    assert logmel.shape == ref_mel.shape == (64, 1 + len(wave) // 512)
    assert mfcc.shape == ref_mfcc.shape == (40, 1 + len(wave) // 512)
    assert fl == logmel.shape[1]
    assert np.abs(logmel - ref_mel).max() < LOGMEL_TOL_DB
    assert np.abs(mfcc - ref_mfcc).max() < MFCC_TOL


def test_conv_stft_equals_torch_stft(wave):
    sp = Spectra(FeatureConfig(mfcc_deltas=True)).eval()
    a = _run(sp, wave)
    sp.conv_stft = True
    b = _run(sp, wave)
    assert a[2] == b[2] and a[0].shape == b[0].shape
    assert np.abs(a[0] - b[0]).max() < LOGMEL_TOL_DB
    assert np.abs(a[1] - b[1]).max() < MFCC_TOL


def test_deltas_match_librosa_on_interior_frames(wave):
    """First deltas equal librosa.feature.delta (width 9) away from the edges, where librosa
    interpolates and we repeat the edge; the second block is the delta of the delta."""
    sp = Spectra(FeatureConfig(mfcc_deltas=True)).eval()
    _, feats, _ = _run(sp, wave)
    assert feats.shape[0] == 120
    base, d1, d2 = feats[:40], feats[40:80], feats[80:]
    ref_d1 = librosa.feature.delta(base, width=9, order=1)
    ref_d2 = librosa.feature.delta(ref_d1, width=9, order=1)
    assert np.abs(d1[:, 4:-4] - ref_d1[:, 4:-4]).max() < DELTA_TOL * max(1.0, np.abs(ref_d1).max())
    assert np.abs(d2[:, 8:-8] - ref_d2[:, 8:-8]).max() < DELTA_TOL * max(1.0, np.abs(ref_d2).max())
    assert np.abs(ref_d1[:, 4:-4]).max() > 1.0  # the comparison is not between zeros


def test_other_mel_count_and_no_top_db(generated):
    cfg = FeatureConfig(n_mels=32, mfcc_top_db=None)
    logmel, mfcc, _ = _run(Spectra(cfg).eval(), generated)
    assert np.abs(logmel - _librosa_logmel(generated, n_mels=32)).max() < LOGMEL_TOL_DB
    s = librosa.feature.melspectrogram(y=generated, sr=16000, n_fft=1024, hop_length=512, n_mels=128,
                                       fmax=8000.0, pad_mode="constant")
    ref = librosa.feature.mfcc(S=librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=None), n_mfcc=40)
    assert np.abs(mfcc - ref).max() < MFCC_TOL


@pytest.fixture(scope="module")
def make_waves(tone_maker):
    """Generated 16 kHz clips of the given lengths in samples."""

    def make(lengths, seed=0):
        return [tone_maker(n / 16000, 16000, freq=120.0 + 40 * i, seed=seed + i) for i, n in enumerate(lengths)]

    return make


LENGTHS = [8000, 20777, 64000, 3 * 16000 + 123]


def test_batched_padded_equals_one_at_a_time(spectra, make_waves):
    waves = make_waves(LENGTHS)
    batch, lengths = pad_batch(waves)
    assert batch.shape == (4, max(LENGTHS)) and lengths.tolist() == LENGTHS
    with torch.inference_mode():
        logmel, mfcc, fl = spectra(batch, lengths)
    assert fl.tolist() == [frames_for(n, 512) for n in LENGTHS]
    for i, y in enumerate(waves):
        one_mel, one_mfcc, n = _run(spectra, y)
        assert n == int(fl[i])
        np.testing.assert_allclose(logmel[i, :, :n].numpy(), one_mel, atol=1e-3)
        np.testing.assert_allclose(mfcc[i, :, :n].numpy(), one_mfcc, atol=1e-3)


def test_batched_deltas_equal_one_at_a_time(make_waves):
    """Deltas at the end of a short clip in a padded batch see its own last frame, not padding."""
    sp = Spectra(FeatureConfig(mfcc_deltas=True)).eval()
    waves = make_waves(LENGTHS, seed=20)
    batch, lengths = pad_batch(waves)
    with torch.inference_mode():
        _, mfcc, fl = sp(batch, lengths)
    for i, y in enumerate(waves):
        _, one, n = _run(sp, y)
        np.testing.assert_allclose(mfcc[i, :, :n].numpy(), one, atol=1e-3)


def test_hold_last():
    x = _ramp(5)
    out = hold_last(torch.cat([x, x], 0), torch.tensor([5, 3]))
    assert out[0, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert out[1, 1].tolist() == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_pipeline_batched_equals_one_at_a_time(make_waves):
    pipe = FeaturePipeline(FeatureConfig(mfcc_deltas=True)).eval()
    waves = make_waves(LENGTHS + [6 * 16000], seed=10)
    batch, lengths = pad_batch(waves)
    with torch.inference_mode():
        mel_b, mfcc_b, valid_b = pipe(batch, lengths)
        for i, y in enumerate(waves):
            mel_1, mfcc_1, valid_1 = pipe(torch.from_numpy(y)[None])
            assert int(valid_1[0]) == int(valid_b[i]) == min(126, frames_for(len(y), 512))
            np.testing.assert_allclose(mel_b[i].numpy(), mel_1[0].numpy(), atol=1e-3)
            np.testing.assert_allclose(mfcc_b[i].numpy(), mfcc_1[0].numpy(), atol=1e-3)


def test_pipeline_output_shapes(make_waves):
    waves = make_waves([16000, samples_for_frames(126, 512), 6 * 16000])
    batch, lengths = pad_batch(waves)
    with torch.inference_mode():
        mel, mfcc, valid = FeaturePipeline(FeatureConfig()).eval()(batch, lengths)
        assert valid.tolist() == [32, 126, 126]
        assert mel.shape == (3, 64, 126) and mfcc.shape == (3, 40, 126)
        assert mel.dtype == torch.float32
        # the 1 s clip has 32 frames; the rest is zero padding
        assert torch.all(mel[0, :, 32:] == 0) and torch.all(mfcc[0, :, 32:] == 0)
        assert torch.all(mel[0, :, :32].abs().sum(0) > 0)
        _, mfcc3, _ = FeaturePipeline(FeatureConfig(mfcc_deltas=True)).eval()(batch, lengths)
        assert mfcc3.shape == (3, 120, 126)
        # a single 1-D waveform is a batch of one
        mel1, _, _ = FeaturePipeline(FeatureConfig()).eval()(torch.from_numpy(waves[1]))
        assert mel1.shape == (1, 64, 126)


def test_frames_and_samples():
    assert frames_for(0, 512) == 1 and frames_for(511, 512) == 1 and frames_for(512, 512) == 2
    assert samples_for_frames(126, 512) == 64000
    for f in (1, 2, 126, 300):
        assert frames_for(samples_for_frames(f, 512), 512) == f
    assert frames_for(torch.tensor([512, 1024]), 512).tolist() == [2, 3]


def _ramp(t: int, d: int = 2) -> torch.Tensor:
    return torch.arange(1, t + 1, dtype=torch.float32).repeat(d, 1)[None]  # (1, d, t), values 1..t


def test_fix_length_centre_and_start_crop():
    x = _ramp(10)
    centre = fix_length(x, torch.tensor([10]), 4, "centre")
    assert centre[0, 0].tolist() == [4.0, 5.0, 6.0, 7.0]  # frames 3..6
    start = fix_length(x, torch.tensor([10]), 4, "start")
    assert start[0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
    exact = fix_length(x, torch.tensor([10]), 10)
    assert torch.equal(exact, x)


def test_fix_length_pads_and_zeroes_invalid_frames():
    x = _ramp(3)
    padded = fix_length(x, torch.tensor([3]), 5)
    assert padded.shape == (1, 2, 5) and padded[0, 1].tolist() == [1.0, 2.0, 3.0, 0.0, 0.0]
    # a padded batch: garbage beyond each item's own length never leaks into the output
    batch = torch.cat([_ramp(10), _ramp(10) * 100], 0)
    out = fix_length(batch, torch.tensor([10, 6]), 8, "centre")
    assert out[0, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    assert out[1, 0].tolist() == [100.0 * v for v in range(1, 7)] + [0.0, 0.0]
    # each item is cut by its own valid length: 12 valid frames in a 20-frame batch, centre of 8
    batch = torch.cat([_ramp(20), _ramp(20)], 0)
    out = fix_length(batch, torch.tensor([20, 12]), 8, "centre")
    assert out[1, 0].tolist() == [3.0 + v for v in range(8)]  # start (12 - 8) // 2 = 2
    assert out[0, 0].tolist() == [7.0 + v for v in range(8)]  # start (20 - 8) // 2 = 6


def test_utterance_normalisation_over_valid_frames(spectra, make_waves):
    waves = make_waves([12000, 40000])
    batch, lengths = pad_batch(waves)
    with torch.inference_mode():
        logmel, _, fl = spectra(batch, lengths)
        normed = Normaliser(64, "utterance")(logmel, fl)
    m = frame_mask(fl, logmel.shape[-1])
    for i in range(2):
        n = int(fl[i])
        valid = normed[i, :, :n]
        assert valid.mean(-1).abs().max() < 1e-4
        std = valid.std(-1, unbiased=False)
        varying = logmel[i, :, :n].std(-1) > 0.1  # bands with any variation at all
        assert varying.sum() > 32
        assert torch.all((std[varying] - 1).abs() < 1e-2)
    assert m[0, 0, : int(fl[0])].sum() == fl[0] and m[0, 0, int(fl[0]):].sum() == 0
    mean, std = masked_stats(logmel, fl)
    assert mean.shape == (2, 64, 1) and std.shape == (2, 64, 1)
    np.testing.assert_allclose(mean[0, :, 0].numpy(), logmel[0, :, : int(fl[0])].mean(-1).numpy(), atol=1e-3)


def test_global_and_speaker_normalisation():
    x = torch.randn(2, 3, 5) * 4 + 10
    fl = torch.tensor([5, 5])
    norm = Normaliser(3, "global")
    norm.set_stats(torch.full((3,), 10.0), torch.full((3,), 4.0))
    torch.testing.assert_close(norm(x, fl), (x - 10) / 4)
    stats = (torch.full((2, 3), 10.0), torch.full((2, 3), 2.0))
    torch.testing.assert_close(norm(x, fl, stats), (x - 10) / 2)
    assert "mean" in norm.state_dict() and "std" in norm.state_dict()  # saved with the model


def test_level_normalisation_removes_only_the_utterance_level(make_waves):
    """mfcc_utterance_scope level: c0 loses its own mean, every coefficient then the saved statistics;
    a louder copy of the clip (a constant added to the log-mel, i.e. to c0 alone) gives the same output."""
    from persemo.statistics import remove_level

    cfg = FeatureConfig(mfcc_utterance_scope="level")
    pipe = FeaturePipeline(cfg)
    assert pipe.norm_mfcc.level and not pipe.norm_mel.level
    mean, std = torch.linspace(-1, 1, cfg.mfcc_dim), torch.linspace(1, 3, cfg.mfcc_dim)
    pipe.norm_mfcc.set_stats(mean, std)
    (w,) = make_waves([24000])
    batch, lengths = pad_batch([w, 4 * w])
    with torch.inference_mode():
        _, mfcc, valid = pipe(batch, lengths)
        _, raw, fl = pipe.spectra(batch[:1], lengths[:1])
    n = int(valid[0])
    torch.testing.assert_close(mfcc[0, :, :n], mfcc[1, :, :n], atol=1e-3, rtol=1e-3)
    want = (torch.from_numpy(remove_level(raw[0, :, : int(fl[0])].numpy())) - mean[:, None]) / std[:, None]
    start = (int(fl[0]) - cfg.frames) // 2 if int(fl[0]) > cfg.frames else 0
    torch.testing.assert_close(mfcc[0, :, :n], want[:, start:start + n], atol=1e-4, rtol=1e-4)
    # the feature scope (default) standardises each coefficient by the utterance itself instead
    default = FeaturePipeline(FeatureConfig())
    with torch.inference_mode():
        assert not torch.allclose(default(batch[:1], lengths[:1])[1], mfcc[:1], atol=1e-2)
