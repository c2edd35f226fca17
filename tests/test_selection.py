"""Nested selection (issue 22): candidates scored on the training speakers' inner CV only, each distinct
member fitted once, the winner kept as fitted, the choice reported per fold. Two small vector member kinds
are defined here: ``band`` (log energy in a few frequency bands: it hears the synthetic emotions' pitch, or
with ``view: noise`` numbers drawn from the clip's bytes that carry no emotion) and ``band2`` (the same,
a second kind, so that two can form a team)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pytest
from test_pipeline import write_synthetic_corpus
from test_training import LABELS, synth_items, tiny_config

from persemo import members
from persemo.artifact import load_model, save_model
from persemo.config import ConfigError
from persemo.crossval import cross_validate
from persemo.members.base import VectorMember
from persemo.pipeline import SELECTED_ROW, result_rows, run_train, selection_note
from persemo.selection import choose, fit_selected
from persemo.splits import make_folds
from persemo.training import predict_items

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")
FITS: list[str] = []  # (kind, view) of every member fit, in order


@dataclass(frozen=True)
class BandSettings:
    view: str = field(default="pitch", metadata={"help": "pitch (band energies) or noise (no emotion in it)"})


@members.register
class BandMember(VectorMember):
    kind = "band"
    Settings = BandSettings

    @property
    def stats_signature(self) -> str:
        return f"band {self.settings.view}"

    def clip_vectors(self, waves):
        rows = []
        for w in waves:
            w = np.asarray(w, np.float64)
            if self.settings.view == "noise":
                seed = int(hashlib.sha256(w.tobytes()).hexdigest()[:8], 16)
                rows.append(np.random.default_rng(seed).normal(size=6))
                continue
            spec = np.abs(np.fft.rfft(w, 4096)) ** 2
            edges = np.linspace(0, 400, 7).astype(int)  # 0-1.6 kHz in 6 bands
            rows.append(np.log([spec[a:b].sum() + 1e-9 for a, b in zip(edges[:-1], edges[1:])]))
        return np.stack(rows)

    def _fit(self, job):
        FITS.append(f"{self.kind}:{self.settings.view}")
        return super()._fit(job)


@members.register
class Band2Member(BandMember):
    kind = "band2"


CANDIDATES = [{"name": "noise", "model": {"members": ["band"], "band": {"view": "noise"}}},
              {"name": "pitch", "model": {"members": ["band"], "band": {"view": "pitch"}}},
              {"name": "pitch+noise", "model": {"members": ["band", "band2"], "band": {"view": "pitch"},
                                                "band2": {"view": "noise"}}}]


def selecting(candidates=CANDIDATES, **over):
    return tiny_config().replace(split={"val_fraction": 0}, selection={"candidates": candidates, **over})


# -- the config ---------------------------------------------------------------------------------------------

def test_candidates_are_whole_configs_with_an_inner_vote():
    cfg = selecting()
    got = dict(cfg.candidates())
    assert list(got) == ["noise", "pitch", "pitch+noise"]
    team = got["pitch+noise"]
    assert team.model.members == ("band", "band2") and team.model.calibration == "inner"
    assert team.model.section("band2").view == "noise" and not team.selection.candidates
    assert "cnn" not in team.model.to_dict()  # only its own members' sections
    assert team.features == cfg.features and team.train == cfg.train
    json.dumps(cfg.to_dict())  # the selection section is written into the run's config.json


@pytest.mark.parametrize("candidates, match", [
    ([{"name": "a", "model": {"members": ["cnn"]}}], r"selection.candidates\[a\]: cnn has no inner cross-validation"),
    ([{"name": "a", "model": {"members": ["nope"]}}], r"selection.candidates\[a\]: .*unknown member kind"),
    ([{"name": "a", "model": {"members": ["band"]}}] * 2, "names must be unique"),
    ([{"model": {"members": ["band"]}}], r"candidates\[0\].name"),
    ([{"name": "a", "members": ["band"]}], r"candidates\[0\] must be a mapping"),
    ("band", "must be a list"),
])
def test_bad_candidates_are_one_line_naming_the_field(candidates, match):
    with pytest.raises(ConfigError, match=match):
        selecting(candidates)


def test_choose_prefers_the_first_listed_within_the_margin():
    scores = [{"name": "a", "inner_uar": 0.80}, {"name": "s", "skipped": "no extra"},
              {"name": "b", "inner_uar": 0.804}, {"name": "c", "inner_uar": 0.79}]
    assert choose(scores, 0.5)["name"] == "a"
    assert choose(scores, 0.0)["name"] == "b"
    with pytest.raises(ConfigError, match="no candidate could be trained here"):
        choose([{"name": "s", "skipped": "no extra"}], 0.5)


# -- selecting -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def items():
    return synth_items(tiny_config(), per_class=6, speakers=("s1", "s2", "s3", "s4", "s5"))


def test_selection_picks_on_inner_cv_and_fits_each_member_once(items):
    train, test = items[: 48], items[48:]  # speakers s1-s4 train, s5 test
    FITS.clear()
    logs: list[str] = []
    model, info = fit_selected(selecting(), LABELS, train, [], log=logs.append)
    sel = info["selection"]
    # three distinct members (band:noise, band:pitch, band2:noise) for four member slots: fitted once each
    assert sorted(FITS) == ["band2:noise", "band:noise", "band:pitch"] and sel["members_fitted"] == 3
    scores = {c["name"]: c["inner_uar"] for c in sel["candidates"]}
    assert scores["pitch"] > 0.9 and scores["noise"] < 0.75  # the band energies hear the emotion, noise does not
    assert sel["winner"] in ("pitch", "pitch+noise") and model.selected == sel["winner"]
    assert scores[sel["winner"]] >= max(scores.values()) - 0.005
    assert any(f"selection: {sel['winner']} chosen" in m for m in logs)
    # the winner is the fitted model: its members answer on the held-out speaker
    y = np.array([LABELS.index(it.utt.emotion) for it in test])
    probs = predict_items(model, test, model.cfg)
    assert np.mean(probs[-1].argmax(1) == y) > 0.8
    assert SELECTED_ROW in result_rows(model, probs)
    assert "inner-CV UAR" in selection_note(info, 1)


def test_the_margin_picks_the_simpler_candidate_and_saved_model_loads(items, tmp_path):
    train = items[:48]
    model, info = fit_selected(selecting(margin=100.0), LABELS, train, [], log=lambda m: None)
    assert info["selection"]["winner"] == "noise"  # first listed: within 100 points of anything
    model, info = fit_selected(selecting(CANDIDATES[1:], margin=5.0), LABELS, train, [], log=lambda m: None)
    assert info["selection"]["winner"] == "pitch" and model.cfg.model.members == ("band",)
    save_model(tmp_path / "m", model)
    loaded, _, _ = load_model(tmp_path / "m")
    assert loaded.cfg.model.members == ("band",) and not loaded.cfg.selection.candidates
    np.testing.assert_allclose(predict_items(loaded, items[48:], loaded.cfg),
                               predict_items(model, items[48:], model.cfg), atol=1e-6)


def test_a_candidate_that_cannot_be_had_is_skipped(items, monkeypatch):
    def unavailable(self, waves):
        raise OSError("cannot reach the hub")

    monkeypatch.setattr(Band2Member, "clip_vectors", unavailable)
    logs: list[str] = []
    model, info = fit_selected(selecting(), LABELS, items[:48], [], log=logs.append)
    sel = {c["name"]: c for c in info["selection"]["candidates"]}
    assert sel["pitch+noise"]["skipped"] == "cannot reach the hub" and info["selection"]["winner"] == "pitch"
    assert any("skipping candidate pitch+noise: cannot reach the hub" in m for m in logs)


def test_outer_folds_measure_the_procedure(items):
    utts = [it.utt for it in items]
    splits = make_folds(utts, 5, "speaker", 0.0, 0)
    seen = []
    for fold in cross_validate(selecting(CANDIDATES[:2]), items, splits, LABELS, log=lambda m: None):
        seen.append(fold.info["selection"]["winner"])
        assert not {it.utt.speaker for it in fold.test} & {it.utt.speaker for it in fold.train}
    assert seen == ["pitch"] * 5


@pytest.mark.slow
def test_train_folds_reports_the_winner_of_every_fold(tmp_path):
    corpus = write_synthetic_corpus(tmp_path / "c", speakers=4, per_class=5)
    res = run_train("csv", corpus, tmp_path / "cv", selecting(CANDIDATES[:2]), folds=2, cache_dir=None,
                    progress=False, log=lambda m: None)
    assert res["results"][SELECTED_ROW]["pooled"]["n"] == 4 * 2 * 5
    report = (tmp_path / "cv" / "report" / "report.md").read_text(encoding="utf-8")
    assert "selected in fold 1 among the candidates" in report and "selected in fold 2" in report
    meta = json.loads((tmp_path / "cv" / "fold0" / "model.json").read_text(encoding="utf-8"))
    assert meta["training"]["selection"]["winner"] == "pitch"
    assert not (tmp_path / "cv" / "calibration.json").exists()  # the vote was chosen inside each fold


def test_a_member_that_failed_is_not_tried_again(items, monkeypatch):
    calls = []

    def unavailable(self, waves):
        calls.append(1)
        raise ImportError("the band2 extra is not installed")

    monkeypatch.setattr(Band2Member, "clip_vectors", unavailable)
    cands = CANDIDATES + [{"name": "noise2", "model": {"members": ["band2"], "band2": {"view": "noise"}}}]
    _, info = fit_selected(selecting(cands), LABELS, items[:48], [], log=lambda m: None)
    sel = {c["name"]: c for c in info["selection"]["candidates"]}
    assert sel["noise2"]["skipped"] == sel["pitch+noise"]["skipped"] == "the band2 extra is not installed"
    assert len(calls) == 1


def test_a_failed_pair_listed_first_does_not_condemn_its_other_member(items, monkeypatch):
    """The recommended list puts a pair (whisper + eGeMAPS) first: when its encoder cannot be had, the
    functional member it shares with a later candidate is not marked as failed with it."""
    def unavailable(self, waves):
        raise OSError("cannot reach the hub")

    monkeypatch.setattr(Band2Member, "clip_vectors", unavailable)
    cands = [CANDIDATES[2], CANDIDATES[1], CANDIDATES[0]]  # pitch+noise, pitch, noise
    _, info = fit_selected(selecting(cands, rule="se"), LABELS, items[:48], [], log=lambda m: None)
    sel = {c["name"]: c for c in info["selection"]["candidates"]}
    assert sel["pitch+noise"]["skipped"] == "cannot reach the hub"
    assert "skipped" not in sel["pitch"] and sel["pitch"]["inner_uar"] is not None
    assert info["selection"]["winner"] in ("pitch", "noise")


def test_pair_weight_hands_a_confounded_corpus_to_the_companion(items, tmp_path):
    """Training speakers heard in one emotion each: normalising a speaker by their own statistics removes the
    emotion, the speaker-normalised model's inner CV says so, and the paired vote goes to the companion."""
    from persemo.training import choose_pair_weight

    one = [it for it in items[:48] if (it.utt.speaker in ("s1", "s2")) == (it.utt.emotion == "anger")]
    y = np.array([LABELS.index(it.utt.emotion) for it in one])
    cands = CANDIDATES[1:2]
    single, _ = fit_selected(selecting(cands), LABELS, one, [], log=lambda m: None)
    adapted, _ = fit_selected(selecting(cands).replace(features={"normalisation": "speaker"}), LABELS, one, [],
                              log=lambda m: None)
    pair = choose_pair_weight(adapted, single, y, LABELS)
    assert pair["inner_uar"]["0.0"] > 0.9 and pair["inner_uar"]["1.0"] < 0.7
    assert pair["weight"] <= 0.2
    adapted.set_companion(single, pair["weight"])
    save_model(tmp_path / "pair", adapted)
    loaded, meta, _ = load_model(tmp_path / "pair")
    assert loaded.pair_weight == pair["weight"] and meta["companion"]["speaker_vote_weight"] == pair["weight"]
    # every training speaker heard in both emotions: the adapted model holds its share
    both = items[:48]
    yb = np.array([LABELS.index(it.utt.emotion) for it in both])
    single, _ = fit_selected(selecting(cands), LABELS, both, [], log=lambda m: None)
    adapted, _ = fit_selected(selecting(cands).replace(features={"normalisation": "speaker"}), LABELS, both, [],
                              log=lambda m: None)
    assert choose_pair_weight(adapted, single, yb, LABELS)["weight"] >= 0.3


# -- rules, repeated partitions, saved scores, the SVM head as a candidate ---------------------------------

def test_the_se_rule_keeps_the_simpler_candidate_unless_the_better_wins_by_more_than_its_error():
    simple = {"name": "simple", "inner_uar": 0.70, "fold_uar": [[0.60, 0.80, 0.70, 0.70]]}
    noisy = {"name": "noisy", "inner_uar": 0.75, "fold_uar": [[0.90, 0.60, 0.85, 0.65]]}  # deficit 0.05 +- 0.11
    steady = {"name": "steady", "inner_uar": 0.75, "fold_uar": [[0.66, 0.86, 0.76, 0.76]]}  # 0.06 +- 0
    assert choose([simple, noisy], 0.5, "se")["name"] == "simple"
    assert choose([simple, steady], 0.5, "se")["name"] == "steady"
    assert choose([simple, steady], 0.5, "margin")["name"] == "steady"
    assert choose([simple, noisy], 10.0, "margin")["name"] == "simple"
    no_folds = [{"name": "a", "inner_uar": 0.70}, {"name": "b", "inner_uar": 0.703}]
    assert choose(no_folds, 0.5, "se")["name"] == "a"  # no fold scores: the margin for that pair
    with pytest.raises(ConfigError, match="selection.rule"):
        selecting(rule="soft")
    with pytest.raises(ConfigError, match="selection.repeats"):
        selecting(repeats=0)


def test_repeated_partitions_are_saved_and_the_choice_is_reproducible_from_them(items):
    train = items[:48]
    model, info = fit_selected(selecting(rule="se", repeats=3), LABELS, train, [], log=lambda m: None)
    sel = info["selection"]
    assert sel["rule"] == "se" and sel["repeats"] == 3
    scored = [c for c in sel["candidates"] if "inner_uar" in c]
    for c in scored:
        assert len(c["repeat_uar"]) == 3 and len(c["fold_uar"]) == 3
        assert c["inner_uar"] == pytest.approx(np.mean(c["repeat_uar"]))
    again = json.loads(json.dumps(sel))  # as written into model.json
    for rule in ("se", "margin"):
        assert choose(again["candidates"], again["margin"], rule)["name"] == (
            sel["winner"] if rule == "se" else choose(sel["candidates"], sel["margin"])["name"])
    weights = sel["soft_weights"]
    assert set(weights) == {c["name"] for c in scored} and sum(weights.values()) == pytest.approx(1.0)
    assert weights["noise"] < max(weights.values())  # the candidate that hears no emotion weighs least
    # one partition reproduces the model fitted without repeats (the partitions only score)
    m1, i1 = fit_selected(selecting(), LABELS, train, [], log=lambda m: None)
    one = {c["name"]: c["repeat_uar"][0] for c in i1["selection"]["candidates"]}
    assert {c["name"]: c["repeat_uar"][0] for c in scored} == one
    np.testing.assert_array_equal(predict_items(m1, items[48:], m1.cfg)[-1],
                                  predict_items(*(lambda m: (m, items[48:], m.cfg))(
                                      fit_selected(selecting(repeats=3), LABELS, train, [], log=lambda m: None)[0]))[-1])


def test_soft_weights_favour_the_candidate_that_explains_the_labels():
    from persemo.selection import soft_weights

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    good = np.full((200, 3), 0.1)
    good[np.arange(200), y] = 0.8
    bad = rng.dirichlet(np.ones(3), 200)
    w = soft_weights(np.stack([bad, good]), y, 3)
    assert w[1] > 0.8 and w.min() >= 0 and w.sum() == pytest.approx(1.0)


@dataclass(frozen=True)
class RingSettings:
    kind: str = field(default="logreg", metadata={"help": "the head"})
    quantiles: int = field(default=0, metadata={"help": "quantiles"})
    noise_copies: int = field(default=0, metadata={"help": "copies"})
    calibration: str = field(default="temperature", metadata={"help": "calibration"})
    speeds: list = field(default_factory=list, metadata={"help": "speeds"})


@members.register
class RingMember(VectorMember):
    """Vectors whose class is the radius of a point in 4 dimensions (a ring per class, seeded by the clip's
    emotion and bytes): no linear boundary separates them, an RBF kernel does."""

    kind = "ring"
    Settings = RingSettings
    radius = {label: 1.0 + 1.5 * i for i, label in enumerate(LABELS)}

    def item_vectors(self, items, cache_dir=None):
        rows = []
        for it in items:
            rng = np.random.default_rng(int(hashlib.sha256(np.asarray(it.wave).tobytes()).hexdigest()[:8], 16))
            d = rng.normal(size=4)
            r = self.radius[it.utt.emotion] + rng.normal(0, 0.15)
            rows.append(np.concatenate([r * d / np.linalg.norm(d), rng.normal(size=2)]))
        return np.stack(rows)

    def clip_vectors(self, waves):  # not needed to fit or choose
        raise NotImplementedError


def test_a_corpus_where_the_svm_head_must_win_chooses_it(items):
    cands = [{"name": "ring-logreg", "model": {"members": ["ring"], "ring": {"kind": "logreg"}}},
             {"name": "ring-svm", "model": {"members": ["ring"], "ring": {"kind": "svm"}}}]
    for rule in ("margin", "se"):
        model, info = fit_selected(selecting(cands, rule=rule, repeats=2), LABELS, items[:48], [], log=lambda m: None)
        scores = {c["name"]: c["inner_uar"] for c in info["selection"]["candidates"]}
        assert scores["ring-svm"] > scores["ring-logreg"] + 0.2, scores
        assert info["selection"]["winner"] == "ring-svm" and model.members[0].head.kind == "svm"
