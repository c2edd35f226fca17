"""Train-time augmentation: noise at the asked SNR over valid samples only; SpecAugment zeros whole
bands and spans within limits and leaves everything else as it was."""

from __future__ import annotations

import math

import pytest
import torch

from persemo.augment import inject_noise, spec_augment


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
def test_noise_at_a_fixed_snr(snr):
    torch.manual_seed(0)
    wave, lengths = _batch([160000, 96000, 40000])
    out = inject_noise(wave, lengths, (snr, snr), prob=1.0)
    for i, n in enumerate(lengths.tolist()):
        sig = wave[i, :n].double()
        noise = (out[i, :n] - wave[i, :n]).double()
        measured = 10 * math.log10(float((sig**2).mean() / (noise**2).mean()))
        assert abs(measured - snr) < 0.5, (i, measured)
        # padding stays exactly zero
        assert torch.all(out[i, n:] == 0)


def test_snr_range_is_respected():
    torch.manual_seed(1)
    wave, lengths = _batch([48000] * 16)
    out = inject_noise(wave, lengths, (5.0, 30.0), prob=1.0)
    snrs = []
    for i in range(16):
        noise = out[i] - wave[i]
        snrs.append(10 * math.log10(float((wave[i] ** 2).mean() / (noise**2).mean())))
    assert min(snrs) > 5.0 - 0.5 and max(snrs) < 30.0 + 0.5
    assert max(snrs) - min(snrs) > 5.0  # drawn per clip, not one value for the batch


def test_prob_zero_leaves_input_unchanged():
    torch.manual_seed(0)
    wave, lengths = _batch([32000, 16000])
    before = wave.clone()
    out = inject_noise(wave, lengths, (5.0, 30.0), prob=0.0)
    assert torch.equal(out, before)
    assert torch.equal(wave, before)  # and the input is not modified in place


def test_prob_half_touches_some_clips_only():
    torch.manual_seed(3)
    wave, lengths = _batch([8000] * 200)
    out = inject_noise(wave, lengths, (10.0, 10.0), prob=0.5)
    changed = (out != wave).any(dim=1).float().mean().item()
    assert 0.3 < changed < 0.7


def test_deterministic_under_seed_noise():
    wave, lengths = _batch([16000, 8000])
    torch.manual_seed(7)
    a = inject_noise(wave, lengths, (5.0, 30.0), 0.5)
    torch.manual_seed(7)
    b = inject_noise(wave, lengths, (5.0, 30.0), 0.5)
    assert torch.equal(a, b)


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
