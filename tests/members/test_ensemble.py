"""Soft voting is the (weighted) mean; the ensemble (a list of members over one front end) returns each
member's and the vote's distributions; the single-utterance companion is a voting policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from persemo.features import pad_batch
from persemo.ensemble import Ensemble, at_unit_temperature, soft_vote, soften

LABELS = ["anger", "neutral", "sadness"]


@pytest.fixture(scope="module")
def small_cfg():
    """The default front end (64 mels, 40 MFCCs, 126 frames) with narrow members."""
    from persemo.config import Config

    return Config().replace(model={"cnn": {"channels": [8, 16, 32], "hidden": 16},
                                   "lstm": {"hidden": 16, "layers": 2}})


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
    model.set_weights([0.3, 0.7])
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


def test_members_are_built_from_the_config_sections(ensemble):
    # one member per kind of model.members, in order, each with its own section's settings
    assert ensemble.kinds == ["cnn", "lstm"] and ensemble.member_names == ["cnn", "lstm"]
    cnn = ensemble.members[ensemble.kinds.index("cnn")]
    lstm = ensemble.members[ensemble.kinds.index("lstm")]
    assert cnn.settings.channels == (8, 16, 32) and cnn.settings.hidden == 16
    assert lstm.settings.hidden == 16 and lstm.net.lstm.hidden_size == 16
    assert ensemble.stat_keys() == ("logmel_mean", "logmel_std", "mfcc_mean", "mfcc_std")


def test_member_probs_and_vote(ensemble, waves):
    wave, lengths = pad_batch(waves)
    probs = ensemble.member_probs(wave, lengths)
    assert probs.shape == (2, len(waves), len(LABELS)) and probs.dtype == np.float64
    np.testing.assert_allclose(ensemble.vote(probs), 0.3 * probs[0] + 0.7 * probs[1], atol=1e-12)
    out = ensemble.predict(wave, lengths)
    np.testing.assert_allclose(out[:-1], probs, atol=1e-6)
    np.testing.assert_allclose(out[-1], ensemble.vote(probs), atol=1e-6)


def test_temperatures_soften_each_member_before_the_vote(small_cfg, waves):
    torch.manual_seed(0)
    model = Ensemble(small_cfg, LABELS).eval()
    wave, lengths = pad_batch(waves)
    at_one = model.member_probs(wave, lengths)
    model.set_temperatures([2.0, 0.5])
    hot = model.member_probs(wave, lengths)
    np.testing.assert_allclose(hot[0], soften(at_one[0], 2.0), atol=1e-9)
    np.testing.assert_allclose(hot[1], soften(at_one[1], 0.5), atol=1e-9)
    assert np.abs(hot - at_one).max() > 1e-4
    np.testing.assert_allclose(at_unit_temperature(hot, model.temperatures), at_one, atol=1e-6)
    # the arg-max of each member does not move
    assert np.array_equal(hot.argmax(-1), at_one.argmax(-1))
    with pytest.raises(ValueError):
        model.set_temperatures([1.0])
    with pytest.raises(ValueError):
        model.set_temperatures([1.0, 0.0])


@pytest.mark.parametrize("weights", [[1.0], [-1.0, 2.0], [0.0, 0.0], [float("nan"), 1.0]])
def test_set_weights_refuses_bad_weights(small_cfg, weights):
    model = Ensemble(small_cfg, LABELS)
    with pytest.raises(ValueError):
        model.set_weights(weights)


def test_members_must_match_the_config(small_cfg):
    from persemo.members.cnn import CNNMember

    with pytest.raises(ValueError, match="differ"):
        Ensemble(small_cfg, LABELS, members=[CNNMember(small_cfg, LABELS)])


def test_the_companion_is_a_voting_policy(small_cfg, waves):
    # a speaker-normalised ensemble with a single-utterance companion: with speaker statistics the vote is
    # the mean of both ensembles' votes; without them the companion's vote alone
    from persemo.features import STAT_KEYS

    spk_cfg = small_cfg.replace(features={"normalisation": "speaker"})
    torch.manual_seed(0)
    adapted = Ensemble(spk_cfg, LABELS).eval()
    rng = np.random.default_rng(0)
    stats = {"logmel_mean": rng.normal(size=64), "logmel_std": 1 + rng.random(64),
             "mfcc_mean": rng.normal(size=40), "mfcc_std": 1 + rng.random(40)}
    adapted.front.set_stats(stats)
    torch.manual_seed(1)
    single = Ensemble(small_cfg, LABELS).eval()
    with pytest.raises(ValueError):
        single.set_companion(adapted)  # the other way round
    adapted.set_companion(single)
    assert adapted.member_names == ["cnn", "lstm", "single/cnn", "single/lstm"]
    wave, lengths = pad_batch(waves)
    spk = {k: torch.from_numpy(np.stack([stats[k] * 0.9] * len(waves))).float() for k in STAT_KEYS}
    with_stats = adapted.predict(wave, lengths, spk)
    alone = adapted.predict(wave, lengths)
    comp = single.predict(wave, lengths)
    assert with_stats.shape == (5, len(waves), len(LABELS))
    np.testing.assert_allclose(with_stats[2:4], comp[:-1], atol=1e-6)
    own = adapted.member_probs(wave, lengths, spk)
    np.testing.assert_allclose(with_stats[-1], (adapted.vote(own) + comp[-1]) / 2, atol=1e-6)
    np.testing.assert_allclose(alone[-1], comp[-1], atol=1e-6)
    assert np.abs(with_stats[-1] - alone[-1]).max() > 1e-5
