"""Train-time augmentation only: Gaussian noise at a random SNR (waveform) and SpecAugment (spectrogram).

Evaluation never calls these; robustness is measured by adding noise explicitly (``evaluation``).
"""

from __future__ import annotations

import torch


def inject_noise(wave: torch.Tensor, lengths: torch.Tensor, snr_db: tuple[float, float], prob: float) -> torch.Tensor:
    """Add white Gaussian noise to each clip of (B, S) with probability ``prob``, at an SNR drawn
    uniformly from ``snr_db`` and measured over the clip's own valid samples. Uses torch's RNG."""
    b, s = wave.shape
    mask = (torch.arange(s, device=wave.device)[None, :] < lengths[:, None]).to(wave.dtype)
    power = (wave**2 * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    lo, hi = snr_db
    snr = lo + (hi - lo) * torch.rand(b, device=wave.device)
    scale = torch.sqrt(power / (10.0 ** (snr / 10.0)))
    apply = (torch.rand(b, device=wave.device) < prob).to(wave.dtype)
    noise = torch.randn_like(wave) * (scale * apply)[:, None]
    return wave + noise * mask


def spec_augment(x: torch.Tensor, freq_masks: int, freq_width: int, time_masks: int, time_width: int,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """Zero random frequency bands and time spans of (B, F, T) features (SpecAugment without warping).

    Masks are set to zero, the mean of standardised features. Time masks fall inside the valid frames.
    """
    b, f, t = x.shape
    out = x.clone()
    dev = x.device
    fidx = torch.arange(f, device=dev)[None, :]
    tidx = torch.arange(t, device=dev)[None, :]
    limit = (valid if valid is not None else torch.full((b,), t, device=dev)).float()
    for _ in range(freq_masks):
        w = torch.randint(0, freq_width + 1, (b, 1), device=dev)
        f0 = (torch.rand(b, 1, device=dev) * (f - w).clamp(min=1)).long()
        out = out.masked_fill(((fidx >= f0) & (fidx < f0 + w))[:, :, None], 0.0)
    for _ in range(time_masks):
        w = torch.randint(0, time_width + 1, (b, 1), device=dev)
        t0 = (torch.rand(b, 1, device=dev) * (limit[:, None] - w).clamp(min=1)).long()
        out = out.masked_fill(((tidx >= t0) & (tidx < t0 + w))[:, None, :], 0.0)
    return out
