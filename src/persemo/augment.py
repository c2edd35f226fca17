"""Train-time augmentation of spectrograms: SpecAugment. (Waveform perturbations, speed and noise, are
``statistics.Perturbation``.) Evaluation never calls these; robustness is measured by adding noise
explicitly (``predict_items(noise_snr=...)``).
"""

from __future__ import annotations

import torch


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
