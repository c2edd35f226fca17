"""Soft voting is the (weighted) mean; the ensemble returns each member's and the vote's distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from persemo.features import pad_batch
from persemo.models.ensemble import Ensemble, soft_vote

LABELS = ["anger", "neutral", "sadness"]


@pytest.fixture(scope="module")
def small_cfg():
    """The default front end (64 mels, 40 MFCCs, 126 frames) with narrow members."""
    from persemo.config import Config

    return Config().replace(model={"cnn_channels": [8, 16, 32], "cnn_hidden": 16, "lstm_hidden": 16,
                                   "lstm_layers": 2})


def _probs(m: int, b: int = 5, c: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(b, c, generator=g), -1) for _ in range(m)]


@pytest.mark.parametrize("m", [1, 2, 4])
def test_soft_vote_default_is_the_mean(m):
    p = _probs(m)
    torch.testing.assert_close(soft_vote(p), torch.stack(p).mean(0))


def test_soft_vote_weights_are_normalised():
    p = _probs(2)
    expected = 0.25 * p[0] + 0.75 * p[1]
    torch.testing.assert_close(soft_vote(p, [1.0, 3.0]), expected)
    torch.testing.assert_close(soft_vote(p, torch.tensor([10.0, 30.0])), expected)
    torch.testing.assert_close(soft_vote(p, [0.0, 2.0]), p[1])
    torch.testing.assert_close(soft_vote(p, [1.0, 3.0]).sum(-1), torch.ones(5))


@pytest.mark.parametrize("weights", [[1.0], [1.0, 1.0, 1.0], [-0.5, 1.5], [0.0, 0.0]])
def test_soft_vote_bad_weights_raise(weights):
    with pytest.raises(ValueError):
        soft_vote(_probs(2), weights)


@pytest.fixture(scope="module")
def ensemble(small_cfg):
    torch.manual_seed(0)
    model = Ensemble(small_cfg, LABELS).eval()
    model.weights.copy_(torch.tensor([0.3, 0.7]))
    return model


@pytest.fixture(scope="module")
def waves():
    # shorter than, equal to and longer than the 4-s window (64,000 samples), with varied content
    rng = np.random.default_rng(0)
    t = np.arange(90000) / 16000
    out = []
    for n, f in ((6000, 150.0), (31000, 300.0), (64000, 220.0), (90000, 500.0)):
        y = 0.3 * np.sin(2 * np.pi * f * t[:n]) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t[:n]))
        out.append((y + 0.02 * rng.standard_normal(n)).astype(np.float32))
    return out


def test_forward_rows_and_vote(ensemble, waves):
    wave, lengths = pad_batch(waves)
    with torch.no_grad():
        out = ensemble(wave, lengths)
    m = len(ensemble.member_names)
    assert out.shape == (m + 1, len(waves), len(LABELS))
    torch.testing.assert_close(out.sum(-1), torch.ones(m + 1, len(waves)), atol=1e-5, rtol=0)
    assert torch.all(out >= 0)
    torch.testing.assert_close(out[-1], soft_vote(list(out[:-1]), ensemble.weights), atol=1e-6, rtol=0)
    # the weights matter: the vote is not the plain mean here
    assert (out[-1] - out[:-1].mean(0)).abs().max() > 1e-6


def test_batched_equals_one_at_a_time(ensemble, waves):
    wave, lengths = pad_batch(waves)
    with torch.no_grad():
        batched = ensemble(wave, lengths)
        single = torch.cat([ensemble(torch.from_numpy(w)[None], torch.tensor([len(w)])) for w in waves], dim=1)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_one_member_ensemble(small_cfg, waves):
    cfg = small_cfg.replace(model={"members": ["lstm"]})
    model = Ensemble(cfg, LABELS).eval()
    wave, lengths = pad_batch(waves[:2])
    with torch.no_grad():
        out = model(wave, lengths)
    assert out.shape == (2, 2, len(LABELS))
    torch.testing.assert_close(out[0], out[1])
