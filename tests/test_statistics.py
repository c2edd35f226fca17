"""Speaker statistics (persemo.statistics): Perturbation and Voice, the training voices' statistics for speed
and heard noise, shrinkage toward the training statistics, and per-clip vector statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from persemo.config import Config
from persemo.corpora.base import Utterance
from persemo.features import STAT_KEYS, Spectra
from persemo.prepare import Item
from persemo.statistics import CLEAN, Perturbation, Voice, enrolment_rows, feature_statistics, heard_items, \
    noise_levels, played_at, shrink, speaker_statistics, training_statistics, vector_stats, voice_statistics

SR = 16000


def _wave(seconds: float, f0: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 5)) + 0.01 * rng.standard_normal(len(t))
    return (0.4 * y / np.max(np.abs(y))).astype(np.float32)


def _items(cfg: Config, speakers=("s1", "s2"), per_speaker: int = 3, seed: int = 0) -> list[Item]:
    spectra = Spectra(cfg.features)
    out = []
    for si, spk in enumerate(speakers):
        for j in range(per_speaker):
            emo = ("anger", "neutral", "sadness")[j % 3]
            w = _wave(0.4 + 0.05 * j, 120.0 + 60 * si + 15 * j, seed * 100 + si * 10 + j)
            with torch.inference_mode():
                lm, mf, _ = spectra(torch.from_numpy(w)[None])
            utt = Utterance(f"{spk}_{j}", f"/synthetic/{spk}_{j}.wav", emo, spk, corpus="synthetic")
            out.append(Item(utt, w, lm[0].numpy(), mf[0].numpy()))
    return out


@pytest.fixture(scope="module")
def cfg() -> Config:
    return Config().replace(features={"normalisation": "speaker"},
                            train={"speeds": [0.9, 1.1], "noise_snr_db": [5.0, 10.0], "noise_prob": 0.5,
                                   "noise_stats": "heard", "seed": 3})


@pytest.fixture(scope="module")
def train(cfg) -> list[Item]:
    return _items(cfg)


@pytest.fixture(scope="module")
def val(cfg) -> list[Item]:
    return _items(cfg, speakers=("v1",), per_speaker=2, seed=1)


# --- Perturbation and Voice


def test_perturbation_defaults_names_and_keys():
    assert Perturbation() == CLEAN and CLEAN.speed == 1.0 and CLEAN.snr_db is None
    assert str(CLEAN) == "clean"
    assert str(Perturbation(0.9)) == "speed 0.9" and str(Perturbation(1.0, 7.5)) == "7.5 dB"
    assert str(Perturbation(1.1, 5.0)) == "speed 1.1, 5 dB"
    # frozen and hashable: the keys of a statistics book
    with pytest.raises(AttributeError):
        CLEAN.speed = 2.0  # type: ignore[misc]
    assert len({Perturbation(1.1, 5.0), Perturbation(1.1, 5.0), Perturbation(1.1), CLEAN}) == 3
    assert Voice("a") == Voice("a", CLEAN) == Voice("a", Perturbation(1.0, None))
    assert Voice("a") != Voice("a", Perturbation(1.1)) != Voice("a", Perturbation(1.1, 5.0))
    assert Voice("a") != Voice("b")
    book = {Voice("a", Perturbation(0.9, 5.0)): 1}
    assert book[Voice("a", Perturbation(0.9, 5.0))] == 1


def test_perturbation_apply_speed_then_noise():
    w = _wave(0.5, 150.0, 0)
    assert CLEAN.apply(w) is w
    fast = Perturbation(1.25).apply(w)
    assert len(fast) == round(len(w) / 1.25)
    # noise at the asked SNR, after the speed change (the noise has the perturbed clip's length)
    noisy = Perturbation(1.25, 10.0).apply(w, np.random.default_rng(0))
    assert len(noisy) == len(fast)
    err = noisy - fast
    snr = 10 * np.log10(np.mean(fast.astype(np.float64) ** 2) / np.mean(err.astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.2)
    # given noise: deterministic
    unit = np.random.default_rng(1).standard_normal(len(w)).astype(np.float32)
    a = Perturbation(1.0, 0.0).apply(w, noise=unit)
    b = Perturbation(1.0, 0.0).apply(w, noise=unit)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, w)


# --- training statistics: speeds and heard noise


def test_training_statistics_keys_for_speeds_and_heard_noise(cfg, train, val):
    book = training_statistics(cfg, train, val)
    levels = noise_levels(cfg.train.noise_snr_db)
    assert levels == [5.0, 7.5, 10.0]
    want = {Voice(s) for s in ("s1", "s2", "v1")}
    # the perturbed voices are the training speakers' only: validation clips are never perturbed
    want |= {Voice(s, Perturbation(f)) for s in ("s1", "s2") for f in (0.9, 1.1)}
    want |= {Voice(s, Perturbation(f, snr)) for s in ("s1", "s2") for f in (1.0, 0.9, 1.1) for snr in levels}
    assert set(book) == want
    for st in book.values():
        assert set(st) == set(STAT_KEYS)


def test_training_statistics_clean_and_speed_voices_are_their_audios(cfg, train, val):
    book = training_statistics(cfg, train, val)
    clean = speaker_statistics(train) | speaker_statistics(val)
    for s, st in clean.items():
        assert all(np.array_equal(book[Voice(s)][k], st[k]) for k in STAT_KEYS)
    faster = speaker_statistics(played_at(train, 1.1, cfg.features))
    for s in ("s1", "s2"):
        assert all(np.allclose(book[Voice(s, Perturbation(1.1))][k], faster[s][k]) for k in STAT_KEYS)
        assert not np.allclose(book[Voice(s, Perturbation(1.1))]["logmel_mean"], clean[s]["logmel_mean"])
    # white noise fills the quiet bands: the more noise, the higher the mean log-mel
    rise = [float((book[Voice("s1", Perturbation(1.0, snr))]["logmel_mean"] - clean["s1"]["logmel_mean"]).mean())
            for snr in (5.0, 10.0)]
    assert rise[0] > rise[1] > 0


def test_training_statistics_are_seeded(cfg, train, val):
    a = training_statistics(cfg, train, val)
    b = training_statistics(cfg, train, val)
    c = training_statistics(cfg.replace(train={"seed": 4}), train, val)
    noisy = Voice("s1", Perturbation(0.9, 7.5))
    assert all(np.array_equal(a[v][k], b[v][k]) for v in a for k in STAT_KEYS)
    assert not np.array_equal(a[noisy]["logmel_mean"], c[noisy]["logmel_mean"])  # the noise is drawn anew
    assert np.array_equal(a[Voice("s1")]["logmel_mean"], c[Voice("s1")]["logmel_mean"])  # clean: no noise


@pytest.mark.parametrize("train_cfg, noisy", [({"noise_stats": "clean"}, False), ({"noise_prob": 0.0}, False),
                                               ({}, True)])
def test_heard_noise_voices_only_when_heard(cfg, train, val, train_cfg, noisy):
    c = cfg.replace(train={"speeds": [], **train_cfg})
    book = training_statistics(c, train, val)
    speeds = {v.perturbation.speed for v in book}
    assert speeds == {1.0}
    assert any(v.perturbation.snr_db is not None for v in book) is noisy
    assert {v for v in book if v.perturbation == CLEAN} == {Voice(s) for s in ("s1", "s2", "v1")}


def test_voice_statistics_follow_enrolment(cfg, train):
    book = voice_statistics(train, [Perturbation(1.1)], cfg.features, enrolment="neutral")
    calm = [it for it in played_at(train, 1.1, cfg.features) if it.utt.emotion == "neutral"]
    want = speaker_statistics(calm)
    for s in ("s1", "s2"):
        assert all(np.allclose(book[Voice(s, Perturbation(1.1))][k], want[s][k]) for k in STAT_KEYS)


def test_heard_items_and_played_at(cfg, train):
    assert played_at(train, 1.0, cfg.features) == list(train)
    faster = played_at(train[:2], 1.1, cfg.features)
    assert [it.utt for it in faster] == [it.utt for it in train[:2]]
    assert len(faster[0].wave) == round(len(train[0].wave) / 1.1)
    assert faster[0].logmel.shape[1] < train[0].logmel.shape[1]
    # heard_items recompute the features from the waves given: the originals' waves give the originals' features
    same = heard_items(train[:2], [it.wave for it in train[:2]], cfg.features)
    np.testing.assert_allclose(same[0].logmel, train[0].logmel, atol=1e-4)
    with pytest.raises(ValueError):
        heard_items(train[:2], [train[0].wave], cfg.features)


# --- shrinkage


def test_shrink_moves_toward_the_prior_by_n_over_n_plus_k():
    stats = {"logmel_mean": np.array([2.0, 4.0]), "logmel_std": np.array([4.0, 1.0]),
             "own_key": np.array([7.0])}
    prior = {"logmel_mean": np.array([0.0, 0.0]), "logmel_std": np.array([1.0, 1.0])}
    same = shrink(stats, prior, n=3, k=0)
    assert same is not stats and all(np.array_equal(same[k], stats[k]) for k in stats)
    out = shrink(stats, prior, n=3, k=1)  # weight 3 / 4 on the speaker
    np.testing.assert_allclose(out["logmel_mean"], [1.5, 3.0], rtol=1e-6)
    # stds are combined in the log domain: 4 ** 0.75 * 1 ** 0.25
    np.testing.assert_allclose(out["logmel_std"], [4.0 ** 0.75, 1.0], rtol=1e-6)
    assert out["logmel_mean"].dtype == np.float32
    np.testing.assert_array_equal(out["own_key"], stats["own_key"])  # a key the prior lacks is kept
    # little audio -> mostly the prior; much audio -> mostly the speaker's own
    little, much = shrink(stats, prior, n=1, k=1000), shrink(stats, prior, n=1e6, k=1)
    assert np.abs(little["logmel_mean"]).max() < 0.01
    np.testing.assert_allclose(much["logmel_mean"], stats["logmel_mean"], rtol=1e-4)
    assert stats["logmel_mean"][0] == 2.0  # the input is not changed


class _VectorMember:
    """A stand-in member with per-clip vectors of its own (the protocol's statistics side)."""

    kind = "vec"
    stat_keys = ("vec_mean", "vec_std")

    def __init__(self, items):
        self.rows = {it.utt.id: np.array([i, 2.0 * i * i, 5.0]) for i, it in enumerate(items)}

    def item_vectors(self, items, cache_dir=None):
        return np.stack([self.rows[it.utt.id] for it in items])


class _Model:
    def __init__(self, items, prior):
        self.member, self.prior = _VectorMember(items), prior

    def all_members(self):
        return [self.member]

    def global_stats(self):
        return self.prior


def test_speaker_statistics_with_a_models_vector_members_and_shrinkage(train):
    prior = {**{k: np.zeros_like(v) if k.endswith("_mean") else np.ones_like(v)
                for k, v in feature_statistics(train).items()},
             "vec_mean": np.zeros(3), "vec_std": np.ones(3)}
    model = _Model(train, prior)
    st = speaker_statistics(train, model)
    rows = enrolment_rows(train)
    for s, idx in rows.items():
        mean, std = vector_stats(np.stack([model.member.rows[train[i].utt.id] for i in idx]))
        np.testing.assert_allclose(st[s]["vec_mean"], mean, rtol=1e-6)
        np.testing.assert_allclose(st[s]["vec_std"], std, rtol=1e-6)
        assert st[s]["vec_std"][2] == 1.0  # a constant column
        own = feature_statistics([train[i] for i in idx])
        assert all(np.array_equal(st[s][k], own[k]) for k in STAT_KEYS)
    k = 2.0
    shrunk = speaker_statistics(train, model, shrink_k=k)
    for s, idx in rows.items():
        want = shrink(st[s], prior, len(idx), k)
        assert set(shrunk[s]) == set(STAT_KEYS) | {"vec_mean", "vec_std"}
        assert all(np.allclose(shrunk[s][key], want[key]) for key in want)
        assert not np.allclose(shrunk[s]["vec_mean"], st[s]["vec_mean"])


# --- per-clip vectors


def test_vector_stats():
    X = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 2.0], [5.0, 5.0, 4.0]], np.float32)
    mean, std = vector_stats(X)
    assert mean.dtype == np.float64 and std.dtype == np.float64
    np.testing.assert_allclose(mean, [3.0, 5.0, 2.0])
    np.testing.assert_allclose(std, [np.sqrt(8 / 3), 1.0, np.sqrt(8 / 3)])  # the constant column: std 1
    # standardising by them: zero mean, unit std where the column varies
    Z = (X - mean) / std
    np.testing.assert_allclose(Z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z[:, [0, 2]].std(0), 1.0)


def test_vector_stats_is_smiles_functional_stats():
    from persemo.smile import functional_stats

    X = np.random.default_rng(0).normal(size=(7, 5))
    X[:, 3] = 2.0
    for a, b in zip(vector_stats(X), functional_stats(X)):
        np.testing.assert_array_equal(a, b)


def test_enrolment_rows():
    utts = [("a", "anger"), ("a", "neutral"), ("b", "fear"), ("a", "neutral"), ("b", "anger")]
    items = [Item(Utterance(f"u{i}", f"/x/u{i}.wav", e, s), np.zeros(4, np.float32), np.zeros((2, 1)),
                  np.zeros((2, 1))) for i, (s, e) in enumerate(utts)]
    assert enrolment_rows(items) == {"a": [0, 1, 3], "b": [2, 4]}
    assert enrolment_rows(items, "neutral") == {"a": [1, 3], "b": [2, 4]}  # b has none: all of theirs
