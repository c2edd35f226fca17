"""Log-mel spectrograms and MFCCs as batched torch modules, with normalisation and fixed length.

Everything is an ``nn.Module`` with the window, the mel filterbank and the DCT as buffers, so it
batches, runs on a GPU and goes into an exported model (raw 16 kHz waveform in). The filterbank is
librosa's (Slaney mel scale and area normalisation), computed here in numpy so that building the
module does not import librosa (and scipy.signal: seconds at every start), and the results match
``librosa.feature``'s ``melspectrogram`` + ``power_to_db`` and ``mfcc`` (tests hold them to it).

Shapes: waveforms (batch, samples); spectra (batch, features, frames); lengths (batch,) in samples
or frames as named.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torch import nn

from .config import FeatureConfig

DELTA_WIDTH = 9  # frames in the delta regression window (librosa's default)
# the front end's speaker statistics: per-band mean and std of a speaker's log-mel and MFCC frames
STAT_KEYS = ("logmel_mean", "logmel_std", "mfcc_mean", "mfcc_std")


def frames_for(samples: torch.Tensor | int, hop: int) -> torch.Tensor | int:
    """Frames a centred STFT gives for ``samples`` samples: 1 + samples // hop."""
    return 1 + samples // hop


def samples_for_frames(frames: int, hop: int) -> int:
    """The waveform length whose centred STFT has exactly ``frames`` frames (126 -> 64000 at hop 512)."""
    return (frames - 1) * hop


def window_samples(cfg) -> int:
    """Samples in one model window: 126 frames of hop 512 -> 64,000 samples (4 s at 16 kHz)."""
    return samples_for_frames(cfg.features.frames, cfg.features.hop_length)


def crop_wave(wave: np.ndarray, n: int, mode: str = "centre") -> np.ndarray:
    """The evaluation window of a clip: the centre (or start) ``n`` samples; shorter clips unchanged."""
    if len(wave) <= n:
        return wave
    start = (len(wave) - n) // 2 if mode == "centre" else 0
    return wave[start: start + n]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    mel = hz / f_sp
    log_part = min_log_hz / f_sp + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    hz = f_sp * mel
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), hz)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32 triangular filters, Slaney scale and area normalisation:
    ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)``."""
    fmax = sr / 2.0 if fmax is None else float(fmax)
    fft_freqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


def _dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II as a (n_mfcc, n_mels) matrix, as scipy.fft.dct(norm='ortho') / librosa."""
    n = np.arange(n_mels)
    k = np.arange(n_mfcc)[:, None]
    basis = np.cos(math.pi / n_mels * (n + 0.5) * k) * math.sqrt(2.0 / n_mels)
    basis[0] /= math.sqrt(2.0)
    return basis.astype(np.float32)


def _delta_kernel(width: int = DELTA_WIDTH) -> np.ndarray:
    """First-derivative least-squares weights over ``width`` frames (a Savitzky-Golay order-1 fit)."""
    half = width // 2
    n = np.arange(-half, half + 1, dtype=np.float64)
    return (n / np.sum(n**2)).astype(np.float32)


class Spectra(nn.Module):
    """Waveform -> (log-mel for the CNN, MFCC for the BiLSTM), un-normalised, full length.

    forward(wave (B, S), lengths (B,) samples or None) -> (logmel (B, n_mels, T), mfcc (B, D, T),
    frame_lengths (B,)). One STFT serves both.
    """

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        n_freq = cfg.n_fft // 2 + 1
        window = torch.hann_window(cfg.n_fft, periodic=True)
        self.register_buffer("window", window, persistent=False)
        mel = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)
        mel_mfcc = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.mfcc_n_mels, cfg.f_min, cfg.f_max)
        self.register_buffer("mel_fb", torch.from_numpy(mel), persistent=False)
        self.register_buffer("mfcc_fb", torch.from_numpy(mel_mfcc), persistent=False)
        self.register_buffer("dct", torch.from_numpy(_dct_matrix(cfg.n_mfcc, cfg.mfcc_n_mels)), persistent=False)
        self.register_buffer("delta_k", torch.from_numpy(_delta_kernel()).view(1, 1, -1), persistent=False)
        # A DFT basis for the convolutional STFT used in ONNX export (torch.stft does not export cleanly).
        t = torch.arange(cfg.n_fft, dtype=torch.float64)
        f = torch.arange(n_freq, dtype=torch.float64)[:, None]
        ang = 2 * math.pi * f * t / cfg.n_fft
        basis = torch.cat([torch.cos(ang), -torch.sin(ang)], 0) * window.double()
        self.register_buffer("dft", basis.float().unsqueeze(1), persistent=False)
        self.conv_stft = False  # set True for export

    def power(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, S) -> power spectrum (B, n_freq, T), centred frames with zero padding."""
        n_fft, hop = self.cfg.n_fft, self.cfg.hop_length
        if self.conv_stft:
            x = nn.functional.pad(wave.unsqueeze(1), (n_fft // 2, n_fft // 2))
            spec = nn.functional.conv1d(x, self.dft, stride=hop)
            n_freq = n_fft // 2 + 1
            return spec[:, :n_freq] ** 2 + spec[:, n_freq:] ** 2
        spec = torch.stft(wave, n_fft, hop_length=hop, window=self.window, center=True, pad_mode="constant",
                          return_complex=True)
        return spec.real**2 + spec.imag**2

    def to_db(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(x, min=self.cfg.amin))

    def deltas(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, T) -> (B, D, T) first differences by regression, edges repeated."""
        b, d, t = x.shape
        half = self.delta_k.shape[-1] // 2
        y = nn.functional.pad(x.reshape(b * d, 1, t), (half, half), mode="replicate")
        return nn.functional.conv1d(y, self.delta_k).reshape(b, d, t)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        p = self.power(wave)
        if lengths is None:
            frame_lengths = torch.full((wave.shape[0],), p.shape[-1], dtype=torch.long, device=wave.device)
        else:
            frame_lengths = torch.clamp(frames_for(lengths.long(), self.cfg.hop_length), max=p.shape[-1])
        logmel = self.to_db(torch.matmul(self.mel_fb, p))
        mel_db = self.to_db(torch.matmul(self.mfcc_fb, p))
        if self.cfg.mfcc_top_db is not None:
            # floor at the utterance's own peak (over its valid frames) minus top_db, as librosa's mfcc
            valid = frame_mask(frame_lengths, mel_db.shape[-1]) > 0
            peak = torch.where(valid, mel_db, torch.full_like(mel_db, -1e4)).amax(dim=(1, 2), keepdim=True)
            mel_db = torch.maximum(mel_db, peak - self.cfg.mfcc_top_db)
        mfcc = torch.matmul(self.dct, mel_db)
        if self.cfg.mfcc_deltas:
            if lengths is not None:  # each item's edge is its own last frame, not the batch's padding
                d1 = self.deltas(hold_last(mfcc, frame_lengths))
                d2 = self.deltas(hold_last(d1, frame_lengths))
            else:
                d1 = self.deltas(mfcc)
                d2 = self.deltas(d1)
            mfcc = torch.cat([mfcc, d1, d2], dim=1)
        return logmel, mfcc, frame_lengths


def frame_mask(frame_lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B,) lengths -> (B, 1, frames) float mask of valid frames."""
    idx = torch.arange(frames, device=frame_lengths.device)
    return (idx[None, :] < frame_lengths[:, None]).unsqueeze(1).float()


def hold_last(x: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """(B, D, T) -> (B, D, T) with every frame after an item's last valid one replaced by that frame,
    so that edge handling (the deltas' replicate padding) is per item, as if it were alone."""
    t = x.shape[-1]
    last = (frame_lengths.long() - 1).clamp(min=0)
    idx = torch.minimum(torch.arange(t, device=x.device)[None, :], last[:, None])
    return torch.gather(x, 2, idx[:, None, :].expand(x.shape))


def masked_stats(x: torch.Tensor, frame_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std over the valid frames: x (B, D, T) -> (B, D, 1) each."""
    m = frame_mask(frame_lengths, x.shape[-1])
    n = m.sum(-1, keepdim=True).clamp(min=1.0)
    mean = (x * m).sum(-1, keepdim=True) / n
    var = (((x - mean) * m) ** 2).sum(-1, keepdim=True) / n
    return mean, torch.sqrt(var + 1e-5)


def fix_length(x: torch.Tensor, frame_lengths: torch.Tensor, frames: int, crop: str = "centre") -> torch.Tensor:
    """(B, D, T) -> (B, D, frames): invalid frames zeroed, long inputs cut (centre or start), short padded.

    Cutting is per item by its own valid length, so a batch of padded clips gives the same result as
    one clip at a time.
    """
    b, d, t = x.shape
    x = x * frame_mask(frame_lengths, t)
    if crop == "centre":
        start = torch.clamp((frame_lengths - frames) // 2, min=0)
    else:
        start = torch.zeros_like(frame_lengths)
    # no padding for t < frames: valid output frames index below t, the rest are clamped and zeroed, and
    # a branch on the input's length would freeze into an exported graph (wrong for other lengths)
    idx = start[:, None] + torch.arange(frames, device=x.device)[None, :]  # (B, frames)
    idx = idx.clamp(max=t - 1)
    out = torch.gather(x, 2, idx[:, None, :].expand(b, d, frames))
    valid = (torch.arange(frames, device=x.device)[None, :] < (frame_lengths - start)[:, None]).unsqueeze(1)
    return out * valid.float()


class Normaliser(nn.Module):
    """Standardise (B, D, T) features: by the utterance's own statistics, by global statistics saved
    with the model, or by given speaker statistics (mean, std) of shape (B, D)."""

    def __init__(self, dim: int, mode: str = "utterance", whole: bool = False, level: bool = False):
        super().__init__()
        self.mode = mode
        self.whole = whole  # utterance mode: one mean and std over all features and frames
        # utterance mode: only feature 0's per-utterance mean removed (the level: MFCC c0), then the saved
        # (training) statistics, which were computed on features with that level removed (remove_level)
        self.level = level
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean.reshape(-1))
        self.std.copy_(std.reshape(-1).clamp(min=1e-3))

    def forward(self, x: torch.Tensor, frame_lengths: torch.Tensor,
                stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if stats is not None:
            mean, std = stats[0].unsqueeze(-1), stats[1].unsqueeze(-1).clamp(min=1e-3)
        elif self.mode == "utterance" and self.level:
            level = masked_stats(x[:, :1], frame_lengths)[0]  # (B, 1, 1)
            x = torch.cat([x[:, :1] - level, x[:, 1:]], dim=1)
            mean, std = self.mean[None, :, None], self.std[None, :, None]
        elif self.mode == "utterance":
            mean, std = masked_stats(x, frame_lengths)
            if self.whole:  # pool the per-feature moments into one mean and std per utterance
                m = mean.mean(1, keepdim=True)
                std = torch.sqrt((std**2 + (mean - m) ** 2).mean(1, keepdim=True))
                mean = m
        else:
            mean, std = self.mean[None, :, None], self.std[None, :, None]
        return (x - mean) / std


class FeaturePipeline(nn.Module):
    """Waveform -> normalised, fixed-length (logmel, mfcc): the front end of every member.

    forward(wave (B, S), lengths (B,) or None, stats dict or None) ->
    (logmel (B, n_mels, frames), mfcc (B, D, frames), valid (B,) frames holding signal).
    """

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        self.spectra = Spectra(cfg)
        mode = "utterance" if cfg.normalisation == "utterance" else "global"
        self.norm_mel = Normaliser(cfg.n_mels, mode, whole=cfg.logmel_utterance_scope == "whole")
        self.norm_mfcc = Normaliser(cfg.mfcc_dim, mode, level=cfg.mfcc_utterance_scope == "level")

    def set_stats(self, stats: dict[str, np.ndarray], mfcc_only: bool = False) -> None:
        """Set the saved (training) statistics from ``STAT_KEYS`` arrays (only the MFCCs' with ``mfcc_only``)."""
        if not mfcc_only:
            self.norm_mel.set_stats(torch.as_tensor(stats["logmel_mean"]), torch.as_tensor(stats["logmel_std"]))
        self.norm_mfcc.set_stats(torch.as_tensor(stats["mfcc_mean"]), torch.as_tensor(stats["mfcc_std"]))

    def global_stats(self) -> dict[str, np.ndarray]:
        """The saved statistics as ``STAT_KEYS`` arrays (a speaker's fallback in speaker mode)."""
        return {"logmel_mean": self.norm_mel.mean.numpy().copy(), "logmel_std": self.norm_mel.std.numpy().copy(),
                "mfcc_mean": self.norm_mfcc.mean.numpy().copy(), "mfcc_std": self.norm_mfcc.std.numpy().copy()}

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None,
                speaker_stats: dict[str, torch.Tensor] | None = None):
        logmel, mfcc, fl = self.spectra(wave, lengths)
        s_mel = s_mfcc = None
        if speaker_stats is not None:
            s_mel = (speaker_stats["logmel_mean"], speaker_stats["logmel_std"])
            s_mfcc = (speaker_stats["mfcc_mean"], speaker_stats["mfcc_std"])
        logmel = self.norm_mel(logmel, fl, s_mel)
        mfcc = self.norm_mfcc(mfcc, fl, s_mfcc)
        f, crop = self.cfg.frames, self.cfg.crop
        valid = torch.clamp(fl, max=f)
        return fix_length(logmel, fl, f, crop), fix_length(mfcc, fl, f, crop), valid


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Intra-op threads for the calling thread (torch/OpenMP keep the setting per thread), restored
    afterwards so that threads created later do not inherit it; None leaves them as they are."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pad_batch(waves: list[np.ndarray] | list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of 1-D waveforms -> (B, S_max) zero-padded tensor and (B,) lengths."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()) if len(waves) else 0)
    for i, w in enumerate(waves):
        out[i, : len(w)] = torch.as_tensor(w, dtype=torch.float32)
    return out, lengths
