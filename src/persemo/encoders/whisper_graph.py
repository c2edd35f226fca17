"""The Whisper encoder as one traceable torch module, waveform in, pooled states out (ONNX export).

    module = PooledStates(enc, blocks=(2, 3, 4), stats=False)
    vectors = module(wave, lengths)       # (B, S) float32 16 kHz zero-padded, (B,) int64 -> (B, 3 D)

It computes what ``encoders.whisper.embed`` followed by ``pool_rows`` computes for clips of at most 30 s,
in operations that the TorchScript ONNX exporter maps with dynamic batch and length:

- log-mel: the same centred STFT as ``log_mel`` (n_fft 400, hop 160, periodic Hann, reflection at the
  start, zeros after the clip), as a convolution with a windowed DFT basis (``torch.stft`` does not
  export cleanly), then the Slaney filter bank, log10 clamped at 1e-10, the floor at each clip's own
  max - 8 and (x + 4) / 4; frames past a clip's end are zeroed;
- the encoder (``_Net``, the same parameters) run only up to the last block the member reads, masked per
  clip (conv padding and attention keys) so a clip's result does not depend on its batch-mates;
- pooling over each clip's own encoder frames: per chosen block the mean (and, with ``stats``, the std),
  concatenated block by block as ``pool_rows`` lays them out.

Differences from ``embed``: float32 sums instead of float64, and the convolutional DFT instead of an FFT
(tested equal within float rounding). A clip longer than 30 s cannot go through (Whisper's positions end
there); the ``Recogniser`` hands a model at most one window (4 s).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .whisper import HOP, N_FFT, WhisperEncoder, mel_filters


class ConvLogMel(nn.Module):
    """forward(wave (B, S), lengths (B,)) -> (log-mel (B, n_mels, T), frames (B,)): Whisper's log-mel of
    each clip's own ``ceil(length / 160)`` frames, zero past them; T >= the longest clip's frames."""

    def __init__(self, n_mels: int = 80):
        super().__init__()
        n_freq = N_FFT // 2 + 1
        t = torch.arange(N_FFT, dtype=torch.float64)
        f = torch.arange(n_freq, dtype=torch.float64)[:, None]
        ang = 2 * math.pi * f * t / N_FFT
        window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64)
        basis = torch.cat([torch.cos(ang), -torch.sin(ang)], 0) * window
        self.register_buffer("dft", basis.float().unsqueeze(1), persistent=False)  # (2 F, 1, n_fft)
        self.register_buffer("mel", mel_filters(n_mels).clone(), persistent=False)  # (n_mels, F)
        # the centred STFT's start: samples n_fft/2 .. 1 mirrored (torch's "reflect" padding)
        self.register_buffer("mirror", torch.arange(N_FFT // 2, 0, -1), persistent=False)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = N_FFT // 2
        frames = torch.clamp((lengths.long() + HOP - 1) // HOP, min=1)
        x = nn.functional.pad(wave, (0, half + 1))  # the clip followed by zeros, as inside Whisper's padding
        x = torch.cat([x.index_select(1, self.mirror), x], dim=1)
        spec = nn.functional.conv1d(x.unsqueeze(1), self.dft, stride=HOP)  # (B, 2 F, T)
        n_freq = half + 1
        power = spec[:, :n_freq] ** 2 + spec[:, n_freq:] ** 2
        mel = torch.log10(torch.clamp(torch.matmul(self.mel, power), min=1e-10))
        valid = (torch.arange(mel.shape[-1])[None, :] < frames[:, None])[:, None, :]  # (B, 1, T)
        top = mel.masked_fill(~valid, -torch.inf).amax(dim=(1, 2), keepdim=True)
        mel = (torch.maximum(mel, top - 8.0) + 4.0) / 4.0
        return mel.masked_fill(~valid, 0.0), frames


class PooledStates(nn.Module):
    """forward(wave (B, S), lengths (B,)) -> (B, len(blocks) * D), or * 2 D with ``stats``: the chosen
    blocks' mean (then std) over each clip's own encoder frames, as ``pool_rows(embed(...))``."""

    def __init__(self, enc: WhisperEncoder, blocks: Sequence[int], stats: bool = False):
        super().__init__()
        self.blocks = [int(b) for b in blocks]
        if not self.blocks or min(self.blocks) < 0 or max(self.blocks) > enc.n_layers:
            raise ValueError(f"blocks must be in 0..{enc.n_layers}, not {list(blocks)}")
        self.stats = bool(stats)
        self.logmel = ConvLogMel(int(enc.config["num_mel_bins"]))
        self.net = enc.net

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mel, frames = self.logmel(wave, lengths)
        states, out = self.net(mel, frames, max(self.blocks))
        valid = (torch.arange(states[0].shape[1])[None, :] < out[:, None]).to(mel.dtype)[:, :, None]  # (B, T', 1)
        count = out.to(mel.dtype)[:, None]
        parts = []
        for b in self.blocks:
            h = states[b]
            mean = (h * valid).sum(1) / count
            parts.append(mean)
            if self.stats:  # centred first: float32 E[x^2] - mean^2 would cancel on Whisper's large values
                var = (((h - mean[:, None, :]) * valid) ** 2).sum(1) / count
                parts.append(torch.sqrt(torch.clamp(var, min=0.0)))
        return torch.cat(parts, dim=-1)


__all__ = ["ConvLogMel", "PooledStates"]
