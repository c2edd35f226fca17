"""Audio loading: any rate, bit depth and channel count -> mono float32 at 16 kHz.

Decoding is soundfile (libsndfile: WAV, FLAC, OGG, MP3 where libsndfile has it); resampling is soxr
(high quality). torchaudio is not used: no build of it loads beside the pinned CPU torch.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000  # Hz: every model works at this rate
MIN_DURATION = 0.1  # s: shorter clips hold no usable emotion
SILENCE_PEAK = 1e-4  # absolute peak below which a clip counts as silent (about -80 dBFS)


class AudioError(ValueError):
    """A file cannot be used as speech: unreadable, empty, silent or too short. Names the source."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(samples,) or (samples, channels) -> (samples,) float32, by averaging the channels."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    elif audio.ndim != 1:
        raise ValueError(f"audio must be 1-D or (samples, channels), got shape {audio.shape}")
    return audio


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling of a mono float signal with soxr's high-quality filter."""
    if orig_sr <= 0:
        raise ValueError(f"sample rate must be positive, got {orig_sr}")
    audio = np.asarray(audio, dtype=np.float32)
    if orig_sr == target_sr or audio.size == 0:
        return audio
    return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def speed_perturb(audio: np.ndarray, factor: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The signal played ``factor`` times faster (Kaldi-style speed perturbation): duration / factor, and
    pitch and formants x factor, as if another, higher- or lower-voiced speaker said it. Resampled by soxr
    from ``sr`` to ``sr / factor`` and read back at ``sr``."""
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"speed factor must be in [0.5, 2], got {factor}")
    audio = np.asarray(audio, dtype=np.float32)
    if factor == 1.0 or audio.size == 0:
        return audio
    return soxr.resample(audio, sr, sr / factor, quality="HQ").astype(np.float32, copy=False)


def check_signal(audio: np.ndarray, source: str, sr: int = SAMPLE_RATE,
                 min_duration: float = MIN_DURATION) -> np.ndarray:
    """Raise AudioError for an empty, non-finite, too short or all-silent signal; return it otherwise."""
    if audio.size == 0:
        raise AudioError(source, "empty audio (no samples)")
    if not np.all(np.isfinite(audio)):
        raise AudioError(source, "audio contains NaN or infinite samples")
    if audio.size < min_duration * sr:
        raise AudioError(source, f"too short ({audio.size / sr:.3f} s < {min_duration} s)")
    if float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise AudioError(source, "all silent (peak below -80 dBFS)")
    return audio


def load_audio(source: str | Path | bytes | io.IOBase, sr: int = SAMPLE_RATE, *,
               name: str | None = None, min_duration: float = MIN_DURATION) -> np.ndarray:
    """Decode a path, raw bytes or a file object into mono float32 at ``sr``.

    Returns shape (samples,). Raises AudioError naming the source for anything unusable.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "<audio>")
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise AudioError(label, "empty file (0 bytes)")
        source = io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            raise AudioError(label, "a folder, not an audio file")
        if not p.is_file():
            raise AudioError(label, "no such file")
        if p.stat().st_size == 0:
            raise AudioError(label, "empty file (0 bytes)")
    reason = _truncation(source)
    if reason is not None:
        raise AudioError(label, reason)
    try:
        audio, orig_sr = sf.read(source, dtype="float32", always_2d=False)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(label, f"not readable as audio ({reason})") from None
    audio = to_mono(audio)
    audio = check_signal(audio, label, orig_sr, min_duration)
    return check_signal(resample(audio, orig_sr, sr), label, sr, min_duration)


def wav_truncation(data: bytes, total: int | None = None) -> str | None:
    """A reason if ``data`` (the start of a file of ``total`` bytes; all of it by default) is a WAV whose
    data chunk is shorter than its header says, else None.

    libsndfile quietly reads what is there; a cut-off file should be refused, not half-analysed. Sizes
    of 0 and near 4 GiB are what streaming writers put when they do not know the length."""
    total = len(data) if total is None else total
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        return None
    order = "little" if data[:4] == b"RIFF" else "big"
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos: pos + 4], int.from_bytes(data[pos + 4: pos + 8], order)
        if cid == b"data":
            avail = total - pos - 8
            if 0 < size < 0x7FFF0000 and avail < size:
                return f"truncated WAV: the header declares {size} bytes of audio, only {avail} are present"
            return None
        pos += 8 + size + (size & 1)
    return None


HEADER_BYTES = 1 << 16  # enough for a WAV's chunks before its data


def _truncation(source) -> str | None:
    """``wav_truncation`` of a path or a file object (read from its start, position restored)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as fh:
            return wav_truncation(fh.read(HEADER_BYTES), os.fstat(fh.fileno()).st_size)
    if isinstance(source, io.BytesIO):
        return wav_truncation(source.getbuffer()[:HEADER_BYTES].tobytes(), source.getbuffer().nbytes)
    return None


def audio_info(path: str | Path) -> tuple[int, int, float]:
    """(sample rate, channels, duration in s) from the header, without decoding."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # noqa: BLE001
        raise AudioError(str(path), f"not readable as audio ({str(exc).splitlines()[0]})") from None
    return info.samplerate, info.channels, info.frames / float(info.samplerate or 1)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator,
              noise: np.ndarray | None = None) -> np.ndarray:
    """Add white Gaussian noise (or the given noise, tiled) at ``snr_db`` relative to the signal power."""
    audio = np.asarray(audio, dtype=np.float32)
    if noise is None:
        noise = rng.standard_normal(audio.shape).astype(np.float32)
    else:
        reps = int(np.ceil(audio.size / max(1, noise.size)))
        noise = np.tile(np.asarray(noise, np.float32), reps)[: audio.size]
    p_sig = float(np.mean(audio**2)) + 1e-12
    p_noise = float(np.mean(noise**2)) + 1e-12
    scale = np.sqrt(p_sig / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (audio + scale * noise).astype(np.float32)


def noisy_versions(waves: list[np.ndarray], snr_db: float, kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Each wave with noise at ``snr_db``: "white" Gaussian, or "babble", the sum of up to four other
    waves of the list (each scaled to unit power), as a stand-in for background speech."""
    if kind not in ("white", "babble"):
        raise ValueError(f"noise kind must be white or babble, not {kind!r}")
    out = []
    for i, w in enumerate(waves):
        if kind == "white":
            out.append(add_noise(w, snr_db, rng))
            continue
        others = [j for j in rng.choice(len(waves), size=min(5, len(waves)), replace=False) if j != i][:4]
        out.append(add_noise(w, snr_db, rng, mix_voices([waves[j] for j in others], len(w)) if others else None))
    return out


def mix_voices(waves: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Babble of ``n`` samples: the sum of ``waves``, each cut or repeated to ``n`` and scaled to unit power."""
    out = np.zeros(n, np.float32)
    for w in waves:
        seg = np.resize(np.asarray(w, np.float32), n)
        out += seg / (np.sqrt(np.mean(seg**2)) + 1e-8)
    return out
