"""The smile member (a classifier on openSMILE functionals) as a third ensemble member: config, a tiny
train_ensemble run with cnn + lstm + smile (eGeMAPSv02, cheap), the artifact round trip, Recogniser,
speaker statistics, and ONNX export of the torch members only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("opensmile")

from test_training import LABELS, synth_items, tiny_config  # noqa: E402

from persemo import members  # noqa: E402
from persemo.artifact import META, WEIGHTS, ArtifactError, load_model, save_model  # noqa: E402
from persemo.config import Config, ConfigError, load_config  # noqa: E402
from persemo.ensemble import Ensemble  # noqa: E402
from persemo.inference import Recogniser  # noqa: E402
from persemo.members.base import FitJob  # noqa: E402
from persemo.smile import FEATURE_SETS, functionals_from_waves, item_functionals  # noqa: E402
from persemo.statistics import speaker_statistics, vector_stats  # noqa: E402
from persemo.training import predict_items, train_ensemble  # noqa: E402

MEMBERS = ["cnn", "lstm", "smile"]
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch and one BLAS thread: tiny models on a shared, busy machine."""
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(n)


def _cfg(normalisation: str = "global") -> Config:
    return tiny_config(epochs=1).replace(model={"members": MEMBERS, "smile": {"feature_set": "eGeMAPSv02"}},
                                         features={"normalisation": normalisation})


def _fit(cfg: Config, train, cache_dir=None):
    """A smile member of ``cfg`` fitted on ``train`` by itself (``Member.fit``): (member, info)."""
    member = members.get("smile")(cfg, LABELS)
    info = member.fit(FitJob(cfg, LABELS, train, cache_dir=cache_dir, log=lambda m: None))
    return member, info


def _smile(model: Ensemble):
    return model.members[model.kinds.index("smile")]


@pytest.fixture(scope="module")
def trained():
    cfg = _cfg()
    train = synth_items(cfg, per_class=5, speakers=("s1", "s2", "s3"))
    val = synth_items(cfg, per_class=3, speakers=("s4",), seed=1)
    model, info = train_ensemble(cfg, LABELS, train, val, out=None, progress=False, log=lambda m: None)
    return cfg, model, info, val


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("smile_model"), trained[1])


# -- config --------------------------------------------------------------------------------------------

def test_config_fields_and_validation():
    m = Config().model
    assert m.members == ("cnn", "lstm") and "smile" not in m.sections
    assert m.section("smile").feature_set == "ComParE_2016" and m.section("smile").kind == "logreg"  # defaults
    cfg = load_config(model={"members": ["cnn", "lstm", "smile"], "smile": {"feature_set": "eGeMAPSv02",
                                                                            "kind": "svm"}})
    assert cfg.model.members == ("cnn", "lstm", "smile") and cfg.model.section("smile").kind == "svm"
    assert cfg.model.section("smile").feature_set == "eGeMAPSv02"
    assert cfg.to_dict()["model"]["smile"]["kind"] == "svm"  # written as its own section
    assert Config.from_dict(cfg.to_dict()) == cfg
    # persemo 0.1's flat keys still parse, into the section
    old = Config.from_dict({"model": {"members": ["cnn", "smile"], "smile_kind": "svm", "smile_quantiles": 5}})
    assert old.model.section("smile").kind == "svm" and old.model.section("smile").quantiles == 5
    assert load_config(model={"members": ["smile"]}).model.members == ("smile",)
    for bad, name in [({"members": ["cnn", "opensmile"]}, "members"), ({"members": ["cnn", "cnn"]}, "members"),
                      ({"members": []}, "members"), ({"smile": {"feature_set": "IS09"}}, "smile.feature_set"),
                      ({"smile": {"kind": "forest"}}, "smile.kind"), ({"smile": {"quantiles": 1}}, "smile.quantiles"),
                      ({"smile": {"quantiles": -3}}, "smile.quantiles"),
                      ({"smile": {"quantiles": 2.5}}, "smile.quantiles"), ({"members": ["smile"], "smile_kind": "forest"}, "smile.kind"),
                      ({"smile": {"colour": "red"}}, "smile"), ({"smile": "svm"}, "smile")]:
        with pytest.raises(ConfigError, match=name):
            Config.from_dict({"model": bad})


def test_every_member_is_built_and_an_unfitted_smile_member_is_not_saved():
    cfg = _cfg()
    ens = Ensemble(cfg, LABELS)
    assert ens.kinds == MEMBERS and ens.member_names == MEMBERS and ens.weights.shape == (3,)
    assert [m.torch_module() is not None for m in ens.members] == [True, True, False]
    with pytest.raises(ValueError, match="smile"):
        Ensemble(cfg, LABELS, members=ens.members[:2])  # the config lists smile: the member is required
    with pytest.raises(RuntimeError, match="smile member is not fitted"):
        ens.member_probs(torch.zeros(1, 16000))
    with pytest.raises(ValueError, match="smile"):
        save_model("/nonexistent", ens)


def test_functionals_from_waves_match_whole_file_functionals():
    cfg = _cfg()
    items = synth_items(cfg, per_class=1, speakers=("s1",))
    X = functionals_from_waves([it.wave for it in items], "eGeMAPSv02", threads=2)
    assert X.shape == (2, FEATURE_SETS["eGeMAPSv02"]) and X.dtype == np.float32 and np.all(np.isfinite(X))
    np.testing.assert_array_equal(X, functionals_from_waves([it.wave for it in items], "eGeMAPSv02"))
    np.testing.assert_array_equal(X, item_functionals(items, "eGeMAPSv02"))  # no file: from the waves


# -- a tiny run --------------------------------------------------------------------------------------------

def test_weights_cover_all_three_members(trained):
    from persemo.export import _vote_plan

    cfg, model, info, val = trained
    assert isinstance(model, Ensemble) and model.member_names == MEMBERS
    w = info["ensemble_weights"]
    assert len(w) == 3 and sum(w) == pytest.approx(1.0) and min(w) >= 0
    np.testing.assert_allclose(model.weights, w)
    # what ONNX export votes: the torch members' share, renormalised over them
    kept, kept_w, omitted, _ = _vote_plan(model)
    assert kept == [0, 1] and kept_w == pytest.approx(w[:2]) and list(omitted) == ["smile"]
    assert set(info["members"]) == set(MEMBERS) and set(info["history"]) == set(MEMBERS)
    assert info["history"]["cnn"] and info["history"]["lstm"] and info["history"]["smile"] == []
    assert info["members"]["smile"]["dimensions"] == FEATURE_SETS["eGeMAPSv02"]
    assert 0 <= info["members"]["smile"]["inner_cv_uar"] <= 1
    head = _smile(model).head
    assert head.feature_set == "eGeMAPSv02" and head.kind == "logreg"
    probs = predict_items(model, val, cfg)
    assert probs.shape == (4, len(val), 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[-1], np.tensordot(np.array(w) / sum(w), probs[:-1], axes=1), atol=1e-6)


def test_save_load_identical_probabilities(trained, saved):
    cfg, model, info, val = trained
    meta = json.loads((saved / META).read_text(encoding="utf-8"))
    assert meta["members"] == MEMBERS and meta["ensemble_weights"] == pytest.approx(info["ensemble_weights"])
    state = meta["member_state"]["smile"]["state"]
    assert state["kind"] == "logreg" and state["feature_set"] == "eGeMAPSv02"
    assert meta["member_state"]["cnn"] == {} and meta["member_state"]["lstm"] == {}
    from safetensors.numpy import load_file

    keys = load_file(str(saved / WEIGHTS)).keys()
    assert "members.smile.coef" in keys and any(k.startswith("members.cnn.") for k in keys)
    assert {k.split(".")[0] for k in keys} == {"features", "members"}
    assert not any(p.suffix in (".pkl", ".pickle", ".joblib") for p in saved.iterdir())
    loaded, meta2, extra = load_model(saved)
    assert isinstance(loaded, Ensemble) and loaded.member_names == MEMBERS and extra == {}
    np.testing.assert_array_equal(predict_items(loaded, val, cfg), predict_items(model, val, cfg))


def test_recogniser_reports_every_member(saved):
    from persemo.export import synthetic_clip

    rec = Recogniser.load(saved)
    assert rec.members == MEMBERS
    for seconds in (1.5, 2.5):  # one window, and several (the window is about 1 s here)
        out = rec.predict_wave(synthetic_clip(int(seconds * 16000), seed=3))
        assert set(out["members"]) == set(MEMBERS)
        assert sum(out["members"]["smile"].values()) == pytest.approx(1.0, abs=1e-5)
        assert out["emotion"] in LABELS
    assert "windows" in out and all(set(w["members"]) == set(MEMBERS) for w in out["windows"])


def test_missing_opensmile_is_one_clear_error(saved, monkeypatch):
    import sys

    from persemo import members as registry

    monkeypatch.setitem(sys.modules, "opensmile", None)  # import opensmile -> ImportError
    # as in a fresh process: the smile member's module not imported yet, its kind not registered
    monkeypatch.delitem(sys.modules, "persemo.members.smile")
    monkeypatch.delitem(registry._REGISTRY, "smile")
    with pytest.raises(ArtifactError) as exc:
        load_model(saved)
    msg = str(exc.value)
    assert "opensmile" in msg and "pip install" in msg and "\n" not in msg


def test_export_writes_the_torch_members(saved, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from typer.testing import CliRunner

    from persemo.cli import app
    from persemo.export import OnnxRecogniser, export_onnx

    rep = export_onnx(saved, tmp_path / "m.onnx")
    assert rep.members == ["cnn", "lstm"] and rep.omitted == ["smile"] and rep.max_diff < 1e-4
    assert any("smile" in n and "no torch graph" in n for n in rep.notes)
    assert OnnxRecogniser.load(rep.path).members == ["cnn", "lstm"]
    res = CliRunner().invoke(app, ["export", "--model", str(saved), "--out", str(tmp_path / "cli.onnx")])
    assert res.exit_code == 0, res.output
    assert "members cnn, lstm" in res.stdout and "note: members smile have no torch graph" in res.stdout


def test_smile_alone(tmp_path):
    """members [smile]: no torch member to train; the vote is the smile member's; export refuses clearly."""
    cfg = _cfg().replace(model={"members": ["smile"]})
    train = synth_items(cfg, per_class=4, speakers=("s1", "s2", "s3"))
    val = synth_items(cfg, per_class=2, speakers=("s4",), seed=1)
    model, info = train_ensemble(cfg, LABELS, train, val, out=None, progress=False, log=lambda m: None)
    assert info["ensemble_weights"] == [1.0] and model.kinds == ["smile"]
    assert all(m.torch_module() is None for m in model.members)
    probs = predict_items(model, val, cfg)
    assert probs.shape == (2, len(val), 2)
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)
    d = save_model(tmp_path / "alone", model)
    np.testing.assert_array_equal(predict_items(load_model(d)[0], val, cfg), probs)
    pytest.importorskip("onnx")
    from persemo.export import ExportError, export_onnx

    with pytest.raises(ExportError, match="torch graph"):
        export_onnx(d, check=False)


# -- speaker normalisation ---------------------------------------------------------------------------------

def test_speaker_mode_uses_the_speakers_functional_statistics(tmp_path):
    cfg = _cfg("speaker").replace(model={"members": ["lstm", "smile"]})
    train = synth_items(cfg, per_class=4, speakers=("s1", "s2", "s3"))
    val = synth_items(cfg, per_class=3, speakers=("s4",), seed=1)
    model, info = train_ensemble(cfg, LABELS, train, val, out=None, progress=False, log=lambda m: None)
    assert model.member_names == ["lstm", "smile"] and _smile(model).norm is not None
    assert model.stat_keys()[-2:] == ("smile_mean", "smile_std")
    stats = speaker_statistics(val, model)
    assert {"smile_mean", "smile_std"} <= set(stats["s4"]) and stats["s4"]["smile_mean"].shape == (88,)
    adapted, plain = predict_items(model, val, cfg, stats), predict_items(model, val, cfg)
    assert not np.allclose(adapted[1], plain[1])  # the smile row: own statistics vs training statistics
    # round trip, and Recogniser's speaker statistics carry the functional statistics too
    d = save_model(tmp_path / "spk", model)
    loaded, meta, _ = load_model(d)
    assert meta["member_state"]["smile"]["normalisation"] == "speaker"
    np.testing.assert_array_equal(predict_items(loaded, val, cfg, stats), adapted)
    rec = Recogniser.load(d)
    st = rec.speaker_stats([it.wave for it in val], shrink_k=0)
    np.testing.assert_allclose(st["smile_mean"], stats["s4"]["smile_mean"], rtol=1e-5)
    out = rec.predict_wave(val[0].wave, speaker_stats=st)
    assert out["adapted"] and set(out["members"]) == {"lstm", "smile"}
    from persemo.adaptation import StatsError, load_stats, save_stats

    fc = rec.meta["config"]["features"]
    assert rec.stats_signatures == {"smile": "eGeMAPSv02"}
    assert rec.stats_requirements == {"smile": (("smile_mean", "smile_std"), "eGeMAPSv02")}
    p = save_stats(tmp_path / "spk_stats", st, fc, len(val), 1.0, signatures=rec.stats_signatures)
    back = load_stats(p, fc, rec.stats_requirements)
    assert all(np.array_equal(back[k], st[k]) for k in st)
    torch_only = save_stats(tmp_path / "old", {k: v for k, v in st.items() if not k.startswith("smile")}, fc, 3, 1.0)
    with pytest.raises(StatsError, match="smile member"):
        load_stats(torch_only, fc, rec.stats_requirements)
    other = save_stats(tmp_path / "other", st, fc, 3, 1.0, signatures={"smile": "ComParE_2016"})
    with pytest.raises(StatsError, match="ComParE_2016"):  # statistics of another feature set
        load_stats(other, fc, rec.stats_requirements)


# -- noisy copies ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("normalisation", ["global", "speaker"])
def test_noisy_copies_change_the_fit_and_are_seeded(normalisation):
    cfg = _cfg(normalisation).replace(model={"members": ["smile"], "smile": {"noise_copies": 0}})
    train = synth_items(cfg, per_class=4, speakers=("s1", "s2", "s3"))
    probe = synth_items(cfg, per_class=2, speakers=("s4",), seed=1)
    X = functionals_from_waves([it.wave for it in probe], "eGeMAPSv02")
    if normalisation == "speaker":  # the member sees speaker-standardised functionals
        from persemo.smile import normalise_by_group

        X = normalise_by_group(X, ["s4"] * len(X))
    clean, _ = _fit(cfg, train)
    noisy_cfg = cfg.replace(model={"smile": {"noise_copies": 1}})
    a, _ = _fit(noisy_cfg, train)
    b, _ = _fit(noisy_cfg, train)
    assert clean.settings.noise_copies == 0 and a.settings.noise_copies == 1
    np.testing.assert_array_equal(a.head.predict_proba(X), b.head.predict_proba(X))
    assert not np.allclose(a.head.predict_proba(X), clean.head.predict_proba(X))


# -- speed-perturbed copies -------------------------------------------------------------------------------

def test_speed_functionals_are_those_of_the_perturbed_wave_and_cached(tmp_path):
    from persemo.audio import speed_perturb
    from persemo.smile import speed_functionals

    cfg = _cfg()
    items = synth_items(cfg, per_class=1, speakers=("s1",))[:3]
    got = speed_functionals(items, 0.9, "eGeMAPSv02", tmp_path)
    want = functionals_from_waves([speed_perturb(it.wave, 0.9) for it in items], "eGeMAPSv02")
    np.testing.assert_array_equal(got, want)
    assert not np.allclose(got, functionals_from_waves([it.wave for it in items], "eGeMAPSv02"))
    entries = list(tmp_path.rglob("*.safetensors"))
    assert len(entries) == len({it.wave.tobytes() for it in items})  # one entry per distinct waveform
    for e in entries:  # a second call reads the cache: corrupt it and the rows change
        e.write_bytes(b"")
    np.testing.assert_array_equal(speed_functionals(items, 0.9, "eGeMAPSv02", tmp_path), want)  # unreadable: recomputed
    from safetensors.numpy import save_file

    for e in tmp_path.rglob("*.safetensors"):
        save_file({"x": np.full(FEATURE_SETS["eGeMAPSv02"], 7.0, np.float32)}, str(e))
    assert np.all(speed_functionals(items, 0.9, "eGeMAPSv02", tmp_path) == 7.0)
    assert not np.any(speed_functionals(items, 1.1, "eGeMAPSv02", tmp_path) == 7.0)  # another factor, other keys


@pytest.mark.parametrize("normalisation", ["global", "speaker"])
def test_speed_copies_enter_the_fit(normalisation, tmp_path):
    cfg = _cfg(normalisation).replace(model={"members": ["smile"], "smile": {"noise_copies": 0}})
    train = synth_items(cfg, per_class=4, speakers=("s1", "s2", "s3"))
    probe = functionals_from_waves([it.wave for it in synth_items(cfg, per_class=2, speakers=("s4",), seed=1)],
                                   "eGeMAPSv02")
    if normalisation == "speaker":  # the member sees speaker-standardised functionals
        from persemo.smile import normalise_by_group

        probe = normalise_by_group(probe, ["s4"] * len(probe))
    plain, info0 = _fit(cfg, train)
    fast_cfg = cfg.replace(model={"smile": {"speeds": [0.9, 1.1]}})
    fast, info1 = _fit(fast_cfg, train, cache_dir=tmp_path)
    assert plain.settings.speeds == [] and fast.settings.speeds == [0.9, 1.1]
    assert info1["chosen"]["C"] == fast.head.meta["C"]
    assert list(tmp_path.rglob("*.safetensors"))  # the speed copies' functionals were cached
    assert not np.allclose(fast.head.predict_proba(probe), plain.head.predict_proba(probe))
    if normalisation == "speaker":
        # the fallback statistics are the clean training functionals', copies left out
        np.testing.assert_allclose(fast.norm[0], vector_stats(item_functionals(train, "eGeMAPSv02"))[0], rtol=1e-6)
    else:
        assert fast.norm is None


def test_smile_speeds_are_validated():
    for bad in ({"smile": {"speeds": [1.0]}}, {"smile": {"speeds": [0.9, 0.9]}}, {"smile": {"speeds": [3]}},
                {"members": ["smile"], "smile_speeds": [1.0]}):
        with pytest.raises(ConfigError, match="smile.speeds"):
            Config().replace(model=bad)
    assert Config().replace(model={"smile": {"speeds": [0.9, 1.1]}}).model.section("smile").speeds == [0.9, 1.1]


def test_enrolment_standardises_each_speaker_by_their_enrolment_functionals():
    cfg = _cfg("speaker").replace(model={"members": ["smile"], "smile": {"noise_copies": 0}})
    train = synth_items(cfg, per_class=4, speakers=("s1", "s2", "s3"))
    every, _ = _fit(cfg, train)
    enrolled, _ = _fit(cfg.replace(features={"enrolment": "sadness"}), train)
    # each training speaker standardised by their sadness clips: sadness sits at 0, anger far from it
    a, b = every.head.state()[0], enrolled.head.state()[0]
    assert a.keys() == b.keys() and not all(np.allclose(a[k], b[k]) for k in a)
    from persemo.smile import functional_stats

    X = item_functionals(train, "eGeMAPSv02")
    calm = np.array([it.utt.emotion == "sadness" for it in train])
    spk = np.array([it.utt.speaker for it in train])
    mean, std = functional_stats(X[(spk == "s1") & calm])
    Z = (X[spk == "s1"] - mean) / std
    assert np.abs(Z[calm[spk == "s1"]].mean(0)).max() < 1e-6  # s1's sadness clips centred on 0
    p_calm = enrolled.head.predict_proba(Z[calm[spk == "s1"]])[:, LABELS.index("sadness")]
    assert p_calm.mean() > 0.5


# -- temperatures ------------------------------------------------------------------------------------------

def test_member_temperatures_round_trip_with_a_smile_member(trained, tmp_path):
    from persemo.ensemble import soften

    cfg, model, _, val = trained
    base = predict_items(model, val, cfg)
    try:
        model.set_temperatures([1.2, 2.0, 0.7])
        got = predict_items(model, val, cfg)
        np.testing.assert_allclose(got[2], soften(base[2], 0.7), atol=1e-5)  # the smile member's row
        d = save_model(tmp_path / "temps", model)
        loaded, meta, _ = load_model(d)
        assert meta["member_temperatures"] == pytest.approx([1.2, 2.0, 0.7])
        np.testing.assert_array_equal(predict_items(loaded, val, cfg), got)
    finally:
        model.set_temperatures([1.0, 1.0, 1.0])


def test_row_basis_gives_the_same_logistic_regression():
    """Fitting in the span of the rows is exact for an L2 penalty, and only a speed-up."""
    from sklearn.linear_model import LogisticRegression

    from persemo.smile import row_basis

    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 300))
    y = rng.integers(0, 3, 60)
    X[:, :4] += y[:, None]
    B = row_basis(X)
    assert B.shape == (300, 60)
    np.testing.assert_allclose(B.T @ B, np.eye(60), atol=1e-10)
    for C in (1e-2, 1.0):
        full = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(X, y)
        small = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(X @ B, y)
        np.testing.assert_allclose(small.coef_ @ B.T, full.coef_, atol=1e-7)
        np.testing.assert_allclose(small.intercept_, full.intercept_, atol=1e-7)
    assert row_basis(X[:, :40]) is None  # no fewer rows than columns: nothing to gain, no projection
    assert row_basis(np.zeros((5, 20))).shape == (20, 1)  # constant features: still a column to fit on


def test_speaker_mode_standardises_each_noisy_copy_set_by_its_own_statistics(monkeypatch):
    from persemo.heads import Head

    cfg = _cfg("speaker").replace(model={"members": ["smile"], "smile": {"noise_copies": 1, "quantiles": 5}})
    train = synth_items(cfg, per_class=3, speakers=("s1", "s2", "s3"))
    seen = {}
    real_fit = Head.fit

    def spy(self, X, y, n_classes, groups=None, seed=0, origin=None, corpus=None):
        seen.update(X=np.asarray(X), groups=np.asarray(groups), origin=np.asarray(origin))
        return real_fit(self, X, y, n_classes, groups=groups, seed=seed, origin=origin, corpus=corpus)

    monkeypatch.setattr(Head, "fit", spy)
    member, info = _fit(cfg, train)
    X, groups, origin = seen["X"], seen["groups"], seen["origin"]
    copy = origin != np.arange(len(origin))
    assert copy.sum() == len(train)
    for s in ("s1", "s2", "s3"):  # originals and copies alike: mean 0 per speaker, by their own statistics
        for rows in (copy & (groups == s), ~copy & (groups == s)):
            np.testing.assert_allclose(X[rows].mean(0), 0.0, atol=1e-5)
    assert member.head.quantiles == 5 and member.head.state()[0]["quantiles"].shape == (5, X.shape[1])
    assert info["dimensions"] == X.shape[1]


def test_the_calibration_setting_reaches_the_classifier():
    assert Config().model.section("smile").calibration == "temperature"
    cfg = Config().replace(model={"members": ["smile"], "smile": {"calibration": "matrix"}})
    assert cfg.model.section("smile").calibration == "matrix"
    with pytest.raises(ConfigError, match="smile.calibration"):
        Config().replace(model={"members": ["smile"], "smile": {"calibration": "platt"}})
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-1, 1, (24, 6)), rng.normal(1, 1, (24, 6))])
    y = np.repeat([0, 1], 24)
    groups = np.tile(["a", "b", "c", "d"], 12)
    from persemo.smile import SmileMember

    for how in ("temperature", "matrix"):
        head = SmileMember("logreg", None, 0, how).fit(X, y, 2, groups=groups)
        assert head.meta.get("calibration", "matrix") == how


def test_a_white_copy_depends_on_the_clip_alone_and_is_cached_on_disk(tmp_path, monkeypatch):
    """The same clip gets the same white-noise copy whatever else is in the training part (every outer fold),
    and a second fit reads its vectors from the cache instead of computing them."""
    from persemo.members.base import VectorMember

    cfg = _cfg().replace(model={"members": ["smile"], "smile": {"feature_set": "eGeMAPSv02", "noise_copies": 1,
                                                                 "noise_kinds": ["white"]}})
    train = synth_items(cfg, per_class=3, speakers=("s1", "s2", "s3"))
    member = members.get("smile")(cfg, LABELS)
    job = FitJob(cfg, LABELS, train, cache_dir=tmp_path, log=lambda m: None)
    computed = []
    real = type(member).clip_vectors

    def spy(self, waves, memo=None):
        computed.append(len(waves))
        return real(self, waves, memo)

    monkeypatch.setattr(type(member), "clip_vectors", spy)
    all_rows = VectorMember.white_copy_vectors(member, train, 0, job)
    part = VectorMember.white_copy_vectors(member, train[::2], 0, FitJob(cfg, LABELS, train[::2], log=lambda m: None))
    np.testing.assert_allclose(part, all_rows[::2], atol=1e-5)  # the same copies without any cache
    assert computed == [len(train), len(train[::2])]
    again = VectorMember.white_copy_vectors(member, train, 0, job)
    np.testing.assert_array_equal(again, all_rows)
    assert computed == [len(train), len(train[::2])]  # all from the cache
    other = VectorMember.white_copy_vectors(member, train, 1, job)  # copy 1: other noise
    assert not np.allclose(other, all_rows)
