"""Train-time augmentation: noise at the asked SNR on each clip's own level; SpecAugment zeros whole
bands and spans within limits and leaves everything else as it was."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from persemo.augment import spec_augment
from persemo.statistics import Perturbation


def _batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = max(lengths)
    t = torch.arange(s) / 16000
    wave = torch.zeros(len(lengths), s)
    for i, n in enumerate(lengths):
        amp = 0.05 * (i + 1)  # different levels: the SNR is per clip, not per batch
        wave[i, :n] = amp * torch.sin(2 * math.pi * (150 + 50 * i) * t[:n]) + 0.01 * amp * torch.randn(n, generator=g)
    return wave, torch.tensor(lengths)


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_training_noise_at_a_fixed_snr(snr):
    """The one place training adds noise (``Perturbation.apply``, used by WaveSet, the heard statistics and
    the vector members' noisy copies) hits the asked SNR on each clip's own level."""
    wave, lengths = _batch([160000, 96000, 40000])
    for i, n in enumerate(lengths.tolist()):
        clip = wave[i, :n].numpy()
        out = Perturbation(snr_db=snr).apply(clip, np.random.default_rng(i))
        noise = out.astype(np.float64) - clip
        measured = 10 * math.log10(float(np.mean(clip.astype(np.float64) ** 2) / np.mean(noise**2)))
        assert abs(measured - snr) < 0.5, (i, measured)
        assert out.shape == clip.shape and not np.shares_memory(out, clip)


def test_training_noise_is_seeded_and_given_noise_is_used():
    clip = _batch([16000])[0][0].numpy()
    a = Perturbation(snr_db=10.0).apply(clip, np.random.default_rng(7))
    b = Perturbation(snr_db=10.0).apply(clip, np.random.default_rng(7))
    assert np.array_equal(a, b)
    unit = np.random.default_rng(1).standard_normal(len(clip)).astype(np.float32)
    c = Perturbation(snr_db=10.0).apply(clip, noise=unit)
    d = Perturbation(snr_db=10.0).apply(clip, noise=unit)
    assert np.array_equal(c, d) and not np.array_equal(a, c)
    assert np.array_equal(Perturbation().apply(clip), clip)  # clean: untouched


# -- SpecAugment -----------------------------------------------------------------------------------

FM, FW, TM, TW = 2, 8, 2, 16


def _features(b: int = 6, f: int = 64, t: int = 126, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, f, t, generator=g) + 0.5  # never zero, so every zero is a mask


def test_spec_augment_masks_whole_bands_and_spans_within_limits():
    torch.manual_seed(0)
    x = _features()
    before = x.clone()
    valid = torch.tensor([126, 100, 60, 40, 126, 20])
    masked_any = False
    for _ in range(20):
        out = spec_augment(x, FM, FW, TM, TW, valid)
        assert out.shape == x.shape
        assert torch.equal(x, before)  # input untouched
        zero = out == 0
        # outside the masks nothing changes
        assert torch.equal(out[~zero], x[~zero])
        for i in range(x.shape[0]):
            rows = zero[i].all(dim=1)  # frequency bands zeroed over all frames
            cols = zero[i].all(dim=0)  # time spans zeroed over all bands
            # every zero lies in a zeroed band or a zeroed span
            assert torch.equal(zero[i], rows[:, None] | cols[None, :])
            assert int(rows.sum()) <= FM * FW
            assert int(cols.sum()) <= TM * TW
            # time masks stay inside the valid frames
            v = int(valid[i])
            if v > TW:
                assert not cols[v:].any()
            masked_any |= bool(rows.any() or cols.any())
    assert masked_any


def test_spec_augment_deterministic_under_seed():
    x = _features()
    torch.manual_seed(11)
    a = spec_augment(x, FM, FW, TM, TW)
    torch.manual_seed(11)
    b = spec_augment(x, FM, FW, TM, TW)
    assert torch.equal(a, b)
    torch.manual_seed(12)
    c = spec_augment(x, FM, FW, TM, TW)
    assert not torch.equal(a, c)


def test_spec_augment_without_masks_is_identity():
    x = _features()
    assert torch.equal(spec_augment(x, 0, FW, 0, TW), x)
    assert torch.equal(spec_augment(x, 3, 0, 3, 0), x)  # zero-width masks
