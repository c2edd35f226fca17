"""Audio loading: any rate, depth and channel count -> mono float32 at 16 kHz; unusable files named."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from persemo.audio import SAMPLE_RATE, AudioError, add_noise, load_audio, resample, to_mono


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_any_format_to_mono_16k(tmp_path, tone_writer, sr, subtype, channels):
    seconds = 0.73
    path = tone_writer(tmp_path / f"x_{sr}_{subtype}_{channels}.wav", seconds, sr, channels, subtype)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    n_in = int(round(seconds * sr))
    assert abs(len(y) - n_in * SAMPLE_RATE / sr) <= 1
    assert 0.2 < float(np.max(np.abs(y))) < 1.0  # the level survives decoding and resampling
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("sr, freq", [(8000, 440.0), (8000, 3000.0), (22050, 1000.0), (44100, 2500.0),
                                      (48000, 7000.0)])
def test_resampler_preserves_a_sines_frequency(tmp_path, sr, freq):
    t = np.arange(int(sr * 1.0)) / sr
    path = tmp_path / "sine.wav"
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="FLOAT")
    y = load_audio(path)
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    bins = np.fft.rfftfreq(len(y), 1 / SAMPLE_RATE)
    assert abs(bins[np.argmax(spec)] - freq) <= 2.0  # 1 Hz bins
    # amplitude is kept (soxr passes the band flat) and nothing else of note appears
    assert abs(np.max(np.abs(y[2000:-2000])) - 0.5) < 0.01
    far = np.abs(bins - freq) > 50
    assert spec[far].max() < 1e-3 * spec.max()


def test_resampler_removes_what_16k_cannot_hold():
    # 10 kHz is above the 8 kHz Nyquist of the output: it must be filtered out, not folded to 6 kHz
    sr = 48000
    t = np.arange(sr) / sr
    y = resample((0.5 * np.sin(2 * np.pi * 10000 * t)).astype(np.float32), sr, SAMPLE_RATE)
    assert y.dtype == np.float32 and len(y) == SAMPLE_RATE
    assert np.max(np.abs(y[1000:-1000])) < 1e-3


def test_stereo_is_the_mean_of_its_channels(tmp_path, tone_maker):
    left, right = tone_maker(0.5, SAMPLE_RATE, seed=1), tone_maker(0.5, SAMPLE_RATE, freq=300.0, seed=2)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-6)
    np.testing.assert_allclose(to_mono(np.stack([left, right], axis=1)), (left + right) / 2, atol=1e-7)
    with pytest.raises(ValueError):
        to_mono(np.zeros((2, 2, 2)))


def test_path_bytes_and_file_object_agree(tmp_path, tone_writer):
    path = tone_writer(tmp_path / "a.wav", 0.5, 22050)
    by_path = load_audio(path)
    data = path.read_bytes()
    np.testing.assert_array_equal(load_audio(data), by_path)
    np.testing.assert_array_equal(load_audio(io.BytesIO(data)), by_path)
    np.testing.assert_array_equal(load_audio(str(path)), by_path)


def test_other_target_rate(tmp_path, tone_writer):
    path = tone_writer(tmp_path / "a.wav", 0.5, 16000)
    assert len(load_audio(path, sr=8000)) == 4000


def _empty_wav(p, tone):
    sf.write(str(p), np.zeros(0, np.float32), 16000)


def _zero_bytes(p, tone):
    p.write_bytes(b"")


def _text(p, tone):
    p.write_text("this is not audio\n" * 20)


def _nan(p, tone):
    y = tone(0.5, 16000)
    y[100:200] = np.nan
    sf.write(str(p), y, 16000, subtype="FLOAT")


def _silent(p, tone):
    sf.write(str(p), np.zeros(16000, np.float32), 16000)


def _too_short(p, tone):
    sf.write(str(p), tone(0.05, 16000), 16000)


def _truncated_header(p, tone):
    buf = io.BytesIO()
    sf.write(buf, tone(0.5, 16000), 16000, format="WAV")
    p.write_bytes(buf.getvalue()[:20])


@pytest.mark.parametrize("make, reason", [
    (_empty_wav, "empty"), (_zero_bytes, "empty"), (_text, "not readable"), (_nan, "NaN"),
    (_silent, "silent"), (_too_short, "too short"), (_truncated_header, "not readable"),
])
def test_unusable_files_raise_audio_error_naming_the_file(tmp_path, tone_maker, make, reason):
    path = tmp_path / f"bad_{make.__name__.strip('_')}.wav"
    make(path, tone_maker)
    with pytest.raises(AudioError) as exc:
        load_audio(path)
    assert str(path) in str(exc.value)
    assert exc.value.source == str(path)
    assert reason in exc.value.reason
    assert isinstance(exc.value, ValueError)  # callers may catch ValueError


def test_missing_file_and_empty_bytes_are_named(tmp_path):
    with pytest.raises(AudioError, match="no such file") as exc:
        load_audio(tmp_path / "nope.wav")
    assert "nope.wav" in str(exc.value)
    with pytest.raises(AudioError, match="upload.wav: empty"):
        load_audio(b"", name="upload.wav")
    with pytest.raises(AudioError, match="upload.wav: not readable"):
        load_audio(b"RIFF....garbage", name="upload.wav")


def test_too_short_is_judged_in_seconds_not_samples(tmp_path, tone_maker):
    # 4,320 samples at 48 kHz is more than 0.1 s worth at 16 kHz, but only 0.09 s
    path = tmp_path / "short48k.wav"
    sf.write(str(path), tone_maker(0.09, 48000), 48000)
    with pytest.raises(AudioError, match="too short"):
        load_audio(path)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 30.0])
def test_add_noise_hits_the_requested_snr(tone_maker, snr_db):
    y = tone_maker(2.0, SAMPLE_RATE, seed=3)
    noisy = add_noise(y, snr_db, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.shape == y.shape
    noise = noisy - y
    measured = 10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert abs(measured - snr_db) < 0.2
    # same generator seed -> same noise; given noise is tiled to the length
    np.testing.assert_array_equal(noisy, add_noise(y, snr_db, np.random.default_rng(0)))
    tiled = add_noise(y, snr_db, np.random.default_rng(0), noise=np.array([1.0, -1.0], np.float32))
    assert tiled.shape == y.shape and np.allclose(np.abs(tiled - y), np.abs(tiled - y)[0], atol=1e-6)


@pytest.mark.parametrize("kind", ["white", "babble"])
def test_noisy_versions_reach_the_requested_snr(kind):
    from persemo.audio import noisy_versions

    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    waves = [(0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (150, 220, 330, 410, 520)]
    out = noisy_versions(waves, 10.0, kind, rng)
    for w, n in zip(waves, out):
        snr = 10 * np.log10(np.mean(w**2) / np.mean((n - w) ** 2))
        assert abs(snr - 10.0) < 0.5
    with pytest.raises(ValueError, match="white or babble"):
        noisy_versions(waves, 10.0, "pink", rng)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_scales_duration_and_pitch(factor):
    from persemo.audio import speed_perturb

    wave = np.sin(2 * np.pi * 440.0 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    out = speed_perturb(wave, factor)
    assert abs(len(out) - len(wave) / factor) <= 2
    spectrum = np.abs(np.fft.rfft(out))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(out)
    assert abs(peak_hz - 440.0 * factor) < 3.0
    assert np.array_equal(speed_perturb(wave, 1.0), wave)
    with pytest.raises(ValueError, match="speed factor"):
        speed_perturb(wave, 3.0)
