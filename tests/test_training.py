"""Training: class weights, statistics, the ensemble-weight search, and a tiny seeded two-epoch run of
the whole loop on two well-separated synthetic "emotions" (low vs high pitch, four speakers)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from persemo.config import Config
from persemo.corpora.base import Utterance
from persemo.prepare import Item
from persemo.artifact import model_arrays
from persemo.calibration import choose_weights, fit_temperature
from persemo import crossval
from persemo.ensemble import soften
from persemo.features import crop_wave
from persemo.statistics import Perturbation, Voice, feature_statistics, heard_noise, noise_levels, \
    speaker_statistics, training_statistics, voice_statistics
from persemo.torch_training import WaveSet, class_weights
from persemo.training import predict_items, train_ensemble

SR = 16000
LABELS = ["anger", "sadness"]
# The two synthetic "emotions": high, fast-fluttering, breathy voice vs low, slow, clean voice. They differ
# in pitch (for the BiLSTM's MFCCs) and in local spectro-temporal texture (for the CNN, whose global
# average pooling makes it nearly blind to a pitch shift alone).
VOICE = {"anger": (360.0, 7.0, 0.25), "sadness": (110.0, 1.0, 0.01)}  # f0 (Hz), AM rate (Hz), noise level


def voice(seconds: float, f0: float, am_rate: float, noise: float, seed: int) -> np.ndarray:
    """(samples,) float32 at 16 kHz: five harmonics with vibrato, amplitude modulation, white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 4 * t))) / SR
    y = sum(np.sin(h * phase) / h for h in range(1, 6))
    y = y * (0.55 + 0.45 * np.sin(2 * np.pi * am_rate * t + rng.uniform(0, 2 * np.pi)))
    y = y + noise * 3 * rng.standard_normal(len(t))
    return (0.4 * y / np.max(np.abs(y))).astype(np.float32)


def synth_items(cfg: Config, per_class: int = 6, speakers=("s1", "s2", "s3", "s4"), seconds: float = 1.2,
                seed: int = 0) -> list[Item]:
    """Generated clips with their (un-normalised, full-length) features; each speaker shifts the pitch."""
    from persemo.features import Spectra

    spectra = Spectra(cfg.features)
    items = []
    k = seed * 1000
    for si, spk in enumerate(speakers):
        for emo in LABELS:
            f0, am, noise = VOICE[emo]
            for j in range(per_class):
                k += 1
                w = voice(seconds * (0.8 + 0.05 * j), f0 * (0.92 + 0.05 * si) * (1 + 0.02 * j), am, noise, k)
                with torch.inference_mode():
                    lm, mf, _ = spectra(torch.from_numpy(w)[None])
                utt = Utterance(id=f"{spk}_{emo}_{j}", path=f"/synthetic/{spk}_{emo}_{j}.wav", emotion=emo,
                                speaker=spk, corpus="synthetic")
                items.append(Item(utt, w, lm[0].numpy(), mf[0].numpy()))
    return items


def tiny_config(**train) -> Config:
    """Narrow members on 1-s windows; global normalisation (training-split statistics in the model)."""
    return Config().replace(
        features={"frames": 32, "normalisation": "global"},  # 31 x 512 samples, about 1 s
        model={"cnn": {"channels": [8, 16], "hidden": 16}, "lstm": {"hidden": 16, "layers": 1}},
        train={"epochs": 2, "batch_size": 6, "lr": 3e-3, "specaug_time_width": 4, "seed": 0, **train})


# Lightning 2.6 on torch 2.13 warns about a torch.utils._pytree rename; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")


# -- small pure functions ----------------------------------------------------------------------------

def test_class_weights_inverse_frequency():
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 3])
    w = class_weights(y, 4)
    assert w.shape == (4,) and w.dtype == torch.float32
    assert float(w[2]) == 0.0  # absent
    assert float(w[3]) > float(w[1]) > float(w[0]) > 0  # rarer -> larger
    assert float(w[1]) / float(w[0]) == pytest.approx(6 / 3)
    assert float(w[3]) / float(w[0]) == pytest.approx(6 / 1)
    assert float(w[[0, 1, 3]].mean()) == pytest.approx(1.0)
    # with those weights every present class carries the same total weight in the loss
    totals = [float(w[c]) * int((y == c).sum()) for c in (0, 1, 3)]
    assert totals == pytest.approx([totals[0]] * 3)


def test_class_weights_balanced_are_one():
    assert torch.allclose(class_weights(np.array([0, 1, 2, 0, 1, 2]), 3), torch.ones(3))


def _item(spk: str, emo: str, logmel: np.ndarray, mfcc: np.ndarray, i: int = 0) -> Item:
    return Item(Utterance(f"{spk}_{i}", f"/x/{spk}_{i}.wav", emo, spk), np.zeros(10, np.float32), logmel, mfcc)


def test_feature_statistics_over_all_frames():
    # 10 frames of 0 and 30 frames of 1: the frame-weighted mean is 0.75, not the per-utterance 0.5
    a = _item("a", "anger", np.zeros((64, 10)), np.zeros((40, 10)))
    b = _item("a", "anger", np.ones((64, 30)), np.full((40, 30), 2.0), 1)
    st = feature_statistics([a, b])
    assert st["logmel_mean"].shape == (64,) and st["logmel_std"].shape == (64,)
    assert st["mfcc_mean"].shape == (40,) and st["mfcc_std"].shape == (40,)
    np.testing.assert_allclose(st["logmel_mean"], 0.75)
    np.testing.assert_allclose(st["mfcc_mean"], 1.5)
    np.testing.assert_allclose(st["logmel_std"], np.sqrt(0.75 * 0.25) + 1e-5)
    assert np.all(st["mfcc_std"] > 0)


def test_speaker_statistics_ignore_labels():
    rng = np.random.default_rng(0)
    items = [_item(spk, emo, rng.normal(k, 1, (64, 20 + k)), rng.normal(-k, 2, (40, 20 + k)), k)
             for k, (spk, emo) in enumerate([("s1", "anger"), ("s1", "sadness"), ("s2", "anger"),
                                             ("s2", "neutral"), ("s3", "fear"), ("s1", "neutral")])]
    st = speaker_statistics(items)
    assert set(st) == {"s1", "s2", "s3"}
    for spk, s in st.items():
        own = feature_statistics([it for it in items if it.utt.speaker == spk])
        for key in own:
            np.testing.assert_array_equal(s[key], own[key])
            assert s[key].shape == ((64,) if key.startswith("logmel") else (40,))
    emotions = [it.utt.emotion for it in items]
    shuffled = [dataclasses.replace(it, utt=dataclasses.replace(it.utt, emotion=e))
                for it, e in zip(items, emotions[3:] + emotions[:3])]
    assert [it.utt.emotion for it in shuffled] != emotions
    st2 = speaker_statistics(shuffled)
    for spk in st:
        for key in st[spk]:
            np.testing.assert_array_equal(st[spk][key], st2[spk][key])


def test_enrolment_statistics_come_from_the_enrolment_utterances_only():
    rng = np.random.default_rng(1)
    pairs = [("s1", "anger"), ("s1", "neutral"), ("s1", "neutral"), ("s1", "sadness"), ("s2", "fear"),
             ("s2", "anger")]
    items = [_item(spk, emo, rng.normal(k, 1, (64, 20 + k)), rng.normal(-k, 2, (40, 20 + k)), k)
             for k, (spk, emo) in enumerate(pairs)]
    st = speaker_statistics(items, enrolment="neutral")
    calm = feature_statistics(items[1:3])  # s1's neutral utterances
    every = feature_statistics(items[4:])  # s2 has none: all of theirs
    for key in calm:
        np.testing.assert_array_equal(st["s1"][key], calm[key])
        np.testing.assert_array_equal(st["s2"][key], every[key])
    assert not np.allclose(st["s1"]["logmel_mean"], speaker_statistics(items)["s1"]["logmel_mean"])
    # the labels only pick the enrolment utterances: relabelling the others changes nothing
    swapped = [dataclasses.replace(it, utt=dataclasses.replace(it.utt, emotion="fear"))
               if it.utt.emotion != "neutral" else it for it in items]
    st2 = speaker_statistics(swapped, enrolment="neutral")
    assert all(np.array_equal(st[s][k], st2[s][k]) for s in st for k in st[s])


def test_fold_statistics_follow_the_enrolment_setting():
    # the training voices' statistics (training_statistics) and the test speakers' (crossval.held_out_statistics)
    # both come from each speaker's features.enrolment utterances
    rng = np.random.default_rng(2)
    items = [_item(spk, emo, rng.normal(k, 1, (64, 20)), rng.normal(-k, 2, (40, 20)), k)
             for k, (spk, emo) in enumerate([("a", "anger"), ("a", "neutral"), ("b", "neutral"), ("b", "fear"),
                                             ("c", "sadness"), ("c", "neutral")])]
    cfg = Config().replace(features={"normalisation": "speaker", "enrolment": "neutral"},
                           train={"noise_prob": 0.0})
    want = speaker_statistics(items, enrolment="neutral")
    book = training_statistics(cfg, items[:2], items[2:4])
    assert set(book) == {Voice("a"), Voice("b")}
    test = crossval.held_out_statistics(cfg, None, items[4:])
    assert set(test) == {"c"}
    got = {v.speaker: st for v, st in book.items()} | test
    assert got.keys() == want.keys() and all(np.array_equal(got[s][k], want[s][k]) for s in got for k in got[s])
    assert not np.allclose(got["a"]["logmel_mean"], speaker_statistics(items)["a"]["logmel_mean"])


def test_enrolment_label_must_be_an_emotion_of_the_corpus(data):
    from persemo.config import ConfigError

    cfg, train, _ = data
    cfg = cfg.replace(features={"normalisation": "speaker", "enrolment": "neutral"}, split={"val_fraction": 0})
    with pytest.raises(ConfigError, match="'neutral' is not an emotion of this corpus"):
        train_ensemble(cfg, LABELS, train, [], out=None, progress=False, log=lambda m: None)


def test_choose_weights_prefers_the_perfect_member():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    eye = np.eye(3)
    perfect = eye[y]
    wrong = eye[(y + 1) % 3]
    for order in ((perfect, wrong), (wrong, perfect)):
        w = choose_weights(np.stack(order), y, ["a", "b", "c"])
        assert sum(w) == pytest.approx(1.0) and all(x >= 0 for x in w)
        good = 0 if order[0] is perfect else 1
        assert w[good] > w[1 - good]
        # among the weightings that reach UAR 1 the most even one wins: 0.6 / 0.4 on a 0.1 grid
        assert w[good] == pytest.approx(0.6)
    assert choose_weights(np.stack([perfect]), y, ["a", "b", "c"]) == [1.0]


def test_choose_weights_equal_members_keep_equal_weights():
    y = np.array([0, 1, 0, 1])
    p = np.eye(2)[y]
    assert choose_weights(np.stack([p, p]), y, ["a", "b"]) == pytest.approx([0.5, 0.5])


@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_fit_temperature_recovers_the_overconfidence(true_t):
    # labels drawn from softmax(z); the member reports softmax(z * true_t), i.e. it is true_t times too sharp
    rng = np.random.default_rng(0)
    z = 1.5 * rng.standard_normal((6000, 4))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    reported = np.exp(z * true_t) / np.exp(z * true_t).sum(1, keepdims=True)
    assert fit_temperature(reported, y) == pytest.approx(true_t, rel=0.1)


def test_fit_temperature_stays_in_its_bounds_and_needs_data():
    y = np.array([0, 1, 0, 1])
    perfect = np.eye(2)[y] * 0.98 + 0.01
    assert 0.05 <= fit_temperature(perfect, y) < 0.2  # always right: sharpened toward the lower bound
    with pytest.raises(ValueError, match="no held-out"):
        fit_temperature(np.zeros((0, 2)), np.zeros(0, int))


def test_crop_wave():
    w = np.arange(10)
    np.testing.assert_array_equal(crop_wave(w, 4, "centre"), [3, 4, 5, 6])
    np.testing.assert_array_equal(crop_wave(w, 4, "start"), [0, 1, 2, 3])
    np.testing.assert_array_equal(crop_wave(np.arange(11), 5, "centre"), [3, 4, 5, 6, 7])
    assert crop_wave(w, 10) is w and crop_wave(w, 12, "start") is w


# -- a tiny real run ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data():
    cfg = tiny_config()
    train = synth_items(cfg, per_class=8, speakers=("s1", "s2", "s3"))
    val = synth_items(cfg, per_class=4, speakers=("s4",), seed=1)
    return cfg, train, val


@pytest.fixture(scope="module")
def two_runs(data):
    """The same config and seed trained twice (2 epochs each), with each run's validation output."""
    cfg, train, val = data
    runs = []
    for _ in range(2):
        model, info = train_ensemble(cfg, LABELS, train, val, out=None, progress=False, log=lambda m: None)
        runs.append((model, info, predict_items(model, val, cfg)))
    return runs


def test_two_epochs_lower_the_training_loss(two_runs, data):
    cfg = data[0]
    model, info, probs = two_runs[0]
    assert set(info["history"]) == {"cnn", "lstm"}
    for name, rows in info["history"].items():
        assert [r["epoch"] for r in rows] == [1, 2], name
        assert rows[1]["train_loss"] < rows[0]["train_loss"], (name, rows)
        assert info["members"][name]["epochs_run"] == 2
    w = info["ensemble_weights"]
    assert len(w) == 2 and sum(w) == pytest.approx(1.0) and min(w) >= 0
    np.testing.assert_allclose(model.weights, w)
    assert model.kinds == ["cnn", "lstm"]
    assert probs.shape == (3, 8, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert not model.front.training and not any(m.net.training for m in model.members)
    # global normalisation: the training split's statistics went into the model
    st = feature_statistics(data[1])
    np.testing.assert_allclose(model.front.norm_mel.mean.numpy(), st["logmel_mean"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(model.front.norm_mfcc.std.numpy(), np.maximum(st["mfcc_std"], 1e-3), rtol=1e-5)


def test_same_seed_same_model(two_runs):
    (m1, i1, p1), (m2, i2, p2) = two_runs
    np.testing.assert_array_equal(p1, p2)
    assert i1["ensemble_weights"] == i2["ensemble_weights"]
    s1, s2 = model_arrays(m1), model_arrays(m2)
    assert s1.keys() == s2.keys() and any(k.startswith("members.cnn.") for k in s1)
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)
    for name in i1["history"]:
        assert [r["train_loss"] for r in i1["history"][name]] == [r["train_loss"] for r in i2["history"][name]]


def test_no_validation_runs_every_epoch_and_votes_equally(data):
    cfg, train, _ = data
    cfg = cfg.replace(train={"epochs": 3, "patience": 1}, split={"val_fraction": 0})
    model, info = train_ensemble(cfg, LABELS, train, [], out=None, progress=False, log=lambda m: None)
    assert info["validation"] is False and info["ensemble_weights"] == [0.5, 0.5]
    for name, m in info["members"].items():
        assert m["epochs_run"] == 3 and m["best_epoch"] == 3 and m["best_val_score"] is None, name
        rows = info["history"][name]
        assert [r["epoch"] for r in rows] == [1, 2, 3] and all(r["train_loss"] > 0 for r in rows)
        assert "val_uar" not in rows[0]
    probs = predict_items(model, train[:4], cfg)
    assert probs.shape == (3, 4, 2)


def test_fixed_weights_from_the_config_are_the_vote(data):
    cfg, train, val = data
    cfg = cfg.replace(train={"epochs": 1}, model={"weights": [1, 3]})
    for v in ([], val):  # with or without a validation split: the config's weights, normalised
        model, info = train_ensemble(cfg.replace(split={"val_fraction": 0.15 if v else 0}), LABELS, train, v,
                                     out=None, progress=False, log=lambda m: None)
        assert info["ensemble_weights"] == pytest.approx([0.25, 0.75])
        probs = predict_items(model, val, cfg)
        np.testing.assert_allclose(probs[2], 0.25 * probs[0] + 0.75 * probs[1], atol=1e-6)


def test_mfcc_level_scope_keeps_training_statistics_and_ignores_gain(data):
    cfg, train, _ = data
    cfg = cfg.replace(features={"normalisation": "utterance", "mfcc_utterance_scope": "level"},
                      model={"members": ["lstm"]}, split={"val_fraction": 0})
    model, _ = train_ensemble(cfg, LABELS, train, [], out=None, progress=False, log=lambda m: None)
    norm = model.front.norm_mfcc
    want = feature_statistics(train, mfcc_level=True)
    np.testing.assert_allclose(norm.mean.numpy(), want["mfcc_mean"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.std.numpy(), np.maximum(want["mfcc_std"], 1e-3), rtol=1e-5)
    louder = [dataclasses.replace(it, wave=(it.wave * 3).astype(np.float32)) for it in train[:6]]
    np.testing.assert_allclose(predict_items(model, louder, cfg), predict_items(model, train[:6], cfg), atol=1e-4)


def test_label_smoothing_reaches_the_loss(data):
    cfg, train, _ = data
    cfg = cfg.replace(model={"members": ["cnn"]}, split={"val_fraction": 0}, train={"epochs": 1})
    losses = []
    for ls in (0.0, 0.3):
        _, info = train_ensemble(cfg.replace(train={"label_smoothing": ls}), LABELS, train, [], out=None,
                                 progress=False, log=lambda m: None)
        losses.append(info["history"]["cnn"][0]["train_loss"])
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)


def test_validation_calibration_fits_each_members_temperature(data):
    cfg, train, val = data
    index = {l: i for i, l in enumerate(LABELS)}
    y = np.array([index[it.utt.emotion] for it in val])
    plain, _ = train_ensemble(cfg, LABELS, train, val, out=None, progress=False, log=lambda m: None)
    cal_cfg = cfg.replace(model={"calibration": "validation"})
    model, info = train_ensemble(cal_cfg, LABELS, train, val, out=None, progress=False, log=lambda m: None)
    raw = predict_items(plain, val, cfg)[:-1]  # the same seeded members, uncalibrated
    want = [fit_temperature(p, y) for p in raw]
    assert info["member_temperatures"] == pytest.approx(want) and model.temperatures == pytest.approx(want)
    assert any(abs(t - 1) > 0.05 for t in want)
    got = predict_items(model, val, cal_cfg)
    for i, t in enumerate(want):
        np.testing.assert_allclose(got[i], soften(raw[i], t), atol=1e-5)
        np.testing.assert_array_equal(got[i].argmax(1), raw[i].argmax(1))  # a member's answers stay its own


def test_config_temperatures_reach_the_members(data):
    cfg, train, val = data
    cfg = cfg.replace(split={"val_fraction": 0}, train={"epochs": 1})
    model, _ = train_ensemble(cfg, LABELS, train, [], out=None, progress=False, log=lambda m: None)
    base = predict_items(model, val, cfg)
    model.set_temperatures([2.0, 0.5])
    got = predict_items(model, val, cfg)
    np.testing.assert_allclose(got[0], soften(base[0], 2.0), atol=1e-5)
    np.testing.assert_allclose(got[1], soften(base[1], 0.5), atol=1e-5)
    np.testing.assert_allclose(got[2], (got[0] + got[1]) / 2, atol=1e-6)


def test_mixup_reaches_the_loss_and_is_seeded(data):
    cfg, train, _ = data
    cfg = cfg.replace(model={"members": ["cnn"]}, split={"val_fraction": 0}, train={"epochs": 1})
    losses = []
    for mix in (0.0, 0.4, 0.4):
        _, info = train_ensemble(cfg.replace(train={"mixup": mix}), LABELS, train, [], out=None,
                                 progress=False, log=lambda m: None)
        losses.append(info["history"]["cnn"][0]["train_loss"])
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)
    assert losses[1] == losses[2]


# -- speed perturbation ------------------------------------------------------------------------------------

def test_speed_perturbed_clips_carry_their_own_voices_statistics(data):
    cfg, train, _ = data
    st = speaker_statistics(train)
    fast = voice_statistics(train, [Perturbation(0.9), Perturbation(1.1)], cfg.features)
    assert set(fast) == {Voice(s, Perturbation(f)) for s in st for f in (0.9, 1.1)}
    assert Voice("s1", Perturbation(1.0)) == Voice("s1")
    assert not np.allclose(fast[Voice("s1", Perturbation(1.1))]["logmel_mean"], st["s1"]["logmel_mean"])
    clean = {Voice(s): v for s, v in st.items()}
    index = {l: i for i, l in enumerate(LABELS)}
    ws = WaveSet(train, index, 10**6, True, "centre", {**clean, **fast}, speeds=[0.9, 1.1])
    torch.manual_seed(0)
    seen = {}
    for _ in range(30):
        w, _, s = ws[0]
        seen[len(w)] = s
    n = len(train[0].wave)
    assert set(seen) == {n, round(n / 0.9), round(n / 1.1)}  # each factor drawn, duration / factor
    assert seen[n] is st["s1"] and seen[round(n / 1.1)] is fast[Voice("s1", Perturbation(1.1))]
    plain = WaveSet(train, index, 10**6, False, "centre", clean, speeds=[0.9, 1.1])  # evaluation: never perturbed
    assert {len(plain[0][0]) for _ in range(10)} == {n}


# -- noise with heard statistics ----------------------------------------------------------------------------

def test_noise_levels_span_the_range_on_a_grid():
    assert noise_levels((5.0, 30.0)) == [5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0, 22.5, 25.0, 27.5, 30.0]
    assert noise_levels((0.0, 6.0)) == [0.0, 2.5, 5.0, 6.0]
    assert noise_levels((10.0, 10.0)) == [10.0]


def test_noisy_training_clips_carry_their_noisy_voices_statistics(data):
    cfg, train, _ = data
    st = speaker_statistics(train)
    perts = [Perturbation(f, snr) for f in (1.0, 1.1) for snr in (0.0, 20.0)]
    noisy = voice_statistics(train, perts, cfg.features)
    assert set(noisy) == {Voice(s, p) for s in st for p in perts}
    quiet, loud = noisy[Voice("s1", Perturbation(1.0, 20.0))], noisy[Voice("s1", Perturbation(1.0, 0.0))]
    # white noise fills the quiet bands: the mean log-mel rises and the spread shrinks with the noise level
    rise = {k: (v["logmel_mean"] - st["s1"]["logmel_mean"]).mean() for k, v in (("0 dB", loud), ("20 dB", quiet))}
    assert rise["0 dB"] > rise["20 dB"] > 0
    assert loud["logmel_std"].mean() < st["s1"]["logmel_std"].mean()
    index = {l: i for i, l in enumerate(LABELS)}
    clean = {Voice(s): v for s, v in st.items()}
    ws = WaveSet(train, index, 10**6, True, "centre", {**clean, **noisy}, noise=(0.5, [0.0, 20.0]), heard=True)
    torch.manual_seed(0)
    seen = {}
    for _ in range(40):
        w, _, s = ws[0]
        err = w.numpy() - train[0].wave
        snr = 10 * np.log10(np.mean(train[0].wave ** 2) / max(np.mean(err ** 2), 1e-20))
        seen.setdefault(round(snr) if np.any(err) else None, []).append(s)
    assert set(seen) == {None, 0, 20}  # clean, and noise at each level, at the drawn SNR
    assert all(s is st["s1"] for s in seen[None])
    assert all(s is noisy[Voice("s1", Perturbation(1.0, 0.0))] for s in seen[0])
    assert all(s is noisy[Voice("s1", Perturbation(1.0, 20.0))] for s in seen[20])
    # noise_stats: clean: a noisy clip keeps its speaker's clean statistics
    ws_clean = WaveSet(train, index, 10**6, True, "centre", clean, noise=(1.0, [0.0]), heard=False)
    w, _, s = ws_clean[0]
    assert not np.array_equal(w.numpy(), train[0].wave) and s is st["s1"]
    plain = WaveSet(train, index, 10**6, False, "centre", clean, noise=(1.0, [0.0]))  # evaluation: never noisy
    assert np.array_equal(plain[0][0].numpy(), train[0].wave)


def test_heard_noise_statistics_are_the_speaker_default_reach_training_and_are_seeded(data):
    cfg, train, _ = data
    cfg = cfg.replace(model={"members": ["cnn"]}, split={"val_fraction": 0}, train={"epochs": 1})

    def loss(c):
        return train_ensemble(c, LABELS, train, [], out=None, progress=False,
                              log=lambda m: None)[1]["history"]["cnn"][0]["train_loss"]

    spk = cfg.replace(features={"normalisation": "speaker"})
    assert Config().train.noise_stats == "heard" and heard_noise(spk) and not heard_noise(cfg)
    losses = [loss(spk.replace(train={"noise_stats": ns})) for ns in ("clean", "heard", "heard")]
    assert losses[0] != pytest.approx(losses[1], rel=1e-4) and losses[1] == losses[2]
    # without speaker normalisation there are no speaker statistics: the setting changes nothing
    assert loss(cfg.replace(train={"noise_stats": "clean"})) == loss(cfg.replace(train={"noise_stats": "heard"}))


def test_speeds_reach_training_in_every_normalisation(data):
    cfg, train, _ = data
    cfg = cfg.replace(model={"members": ["cnn"]}, split={"val_fraction": 0}, train={"epochs": 1})
    for norm in ("utterance", "speaker"):
        c = cfg.replace(features={"normalisation": norm})
        losses = [train_ensemble(c.replace(train={"speeds": sp}), LABELS, train, [], out=None, progress=False,
                                 log=lambda m: None)[1]["history"]["cnn"][0]["train_loss"]
                  for sp in ([], [0.9, 1.1], [0.9, 1.1])]
        assert losses[0] != pytest.approx(losses[1], rel=1e-4) and losses[1] == losses[2]
