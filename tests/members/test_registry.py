"""Adding a member kind is one new file (issue 20): a fourth kind, ``prior``, defined here and nowhere
else, votes the training class prior. Registered with ``persemo.members.register``, it trains beside a
CNN (``train_ensemble``), saves and reloads (``persemo.artifact``) predicting the same, joins the vote, is
left out of the ONNX graph with its reason in the notes, answers in the service, and its config section
round-trips. Nothing under src/ names it."""

from __future__ import annotations

import ast
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from test_training import LABELS, synth_items, tiny_config

from persemo import members
from persemo.artifact import META, WEIGHTS, load_model, save_model
from persemo.config import Config, ConfigError
from persemo.errors import ConfigError as ErrorsConfigError
from persemo.members.base import Batch, FitJob, Member
from persemo.training import predict_items, train_ensemble

SRC = Path(__file__).resolve().parents[2] / "src"
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")


# -- the new member kind: this block is all it takes ---------------------------------------------------

@dataclass(frozen=True)
class PriorSettings:
    smoothing: float = field(default=1.0, metadata={"help": "added to every class's training count"})

    def __post_init__(self) -> None:
        if not (isinstance(self.smoothing, float) and 0.0 <= self.smoothing <= 1e6):
            raise ErrorsConfigError(f"model.prior.smoothing must be a number from 0 to 1e6, not {self.smoothing!r}")


@members.register
class PriorMember(Member):
    """Votes the training class prior, (count + smoothing) / total, whatever the audio."""

    kind = "prior"
    Settings = PriorSettings
    not_exportable = "it votes the training class prior, which depends on no audio"

    def __init__(self, cfg: Config, labels):
        super().__init__(cfg, labels)
        self.prior: np.ndarray | None = None

    def fit(self, job: FitJob) -> dict[str, Any]:
        counts = np.bincount(job.y, minlength=len(self.labels)).astype(np.float64)
        smoothed = counts + self.settings.smoothing
        self.prior = smoothed / smoothed.sum()
        return {"counts": counts.astype(int).tolist(), "prior": self.prior.tolist()}

    def probabilities(self, batch: Batch) -> np.ndarray:
        if self.prior is None:
            raise RuntimeError("prior member is not fitted")
        return np.tile(self.prior, (len(batch), 1))

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        if self.prior is None:
            raise ValueError("prior member is not fitted: nothing to save")
        return {"prior": self.prior.copy()}, {"smoothing": self.settings.smoothing}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if set(arrays) != {"prior"} or np.shape(arrays["prior"]) != (len(self.labels),):
            raise ValueError(f"expected one array 'prior' of {len(self.labels)} values, got {sorted(arrays)}")
        self.prior = np.asarray(arrays["prior"], np.float64)

    # torch_module(): Member's default, None (not exportable)


# -- the proof --------------------------------------------------------------------------------------------

MEMBERS = ["cnn", "prior"]
SMOOTHING = 0.5


def _cfg() -> Config:
    return tiny_config(epochs=1).replace(model={"members": MEMBERS, "prior": {"smoothing": SMOOTHING}})


@pytest.fixture(scope="module")
def data():
    cfg = _cfg()
    # unbalanced training classes, so the prior is not uniform
    train = synth_items(cfg, per_class=4, speakers=("s1", "s2", "s3"))
    train = [it for i, it in enumerate(train) if it.utt.emotion == "anger" or i % 2 == 0]
    val = synth_items(cfg, per_class=3, speakers=("s4",), seed=1)
    return cfg, train, val


@pytest.fixture(scope="module")
def trained(data):
    cfg, train, val = data
    model, info = train_ensemble(cfg, LABELS, train, val, out=None, progress=False, log=lambda m: None)
    return model, info


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("prior_model"), trained[0])


def _expected_prior(train) -> np.ndarray:
    counts = np.array([sum(it.utt.emotion == l for it in train) for l in LABELS], np.float64)
    return (counts + SMOOTHING) / (counts + SMOOTHING).sum()


def test_the_kind_is_registered():
    assert members.get("prior") is PriorMember and "prior" in members.known()
    assert "prior" not in members.BUILTIN
    with pytest.raises(members.UnknownMember, match="prior"):  # the error lists the known kinds
        members.get("posterior")


def test_config_section_round_trips():
    cfg = _cfg()
    assert cfg.model.members == tuple(MEMBERS) and cfg.model.section("prior") == PriorSettings(SMOOTHING)
    d = cfg.to_dict()
    assert d["model"]["prior"] == {"smoothing": SMOOTHING}
    assert Config.from_dict(json.loads(json.dumps(d))) == cfg
    assert Config().replace(model={"members": MEMBERS}).model.section("prior") == PriorSettings()  # defaults
    with pytest.raises(ConfigError, match="model.prior.smoothing"):
        cfg.replace(model={"prior": {"smoothing": -1.0}})
    with pytest.raises(ConfigError, match="model.prior.smoothing"):
        cfg.replace(model={"prior": {"smoothing": "lots"}})
    with pytest.raises(ConfigError, match="unknown field.*model.prior"):
        cfg.replace(model={"prior": {"alpha": 1.0}})


def test_it_trains_and_votes_the_training_prior(data, trained):
    cfg, train, val = data
    model, info = trained
    assert model.kinds == MEMBERS and isinstance(model.members[1], PriorMember)
    want = _expected_prior(train)
    assert not np.allclose(want, 1 / len(LABELS))  # unbalanced: a uniform vote would not pass
    np.testing.assert_allclose(model.members[1].prior, want)
    assert info["members"]["prior"]["prior"] == pytest.approx(want.tolist())
    assert "val_score" in info["members"]["prior"] and info["history"]["prior"] == []
    assert len(info["ensemble_weights"]) == 2 and sum(info["ensemble_weights"]) == pytest.approx(1.0)
    probs = predict_items(model, val, cfg)
    assert probs.shape == (3, len(val), len(LABELS))
    np.testing.assert_allclose(probs[1], np.tile(want, (len(val), 1)), atol=1e-6)  # every window: the prior


def test_it_joins_the_vote(data, trained):
    cfg, _, val = data
    model, _ = trained
    probs = predict_items(model, val, cfg)
    # the vote row is the weighted mean of the member rows, the prior's included
    np.testing.assert_allclose(probs[-1], np.tensordot(model.weights, probs[:-1], axes=1), atol=1e-6)
    chosen = model.weights.copy()
    try:
        model.set_weights([0.6, 0.4])
        got = predict_items(model, val, cfg)
        np.testing.assert_allclose(got[-1], 0.6 * got[0] + 0.4 * got[1], atol=1e-6)
        assert not np.allclose(got[-1], got[0], atol=1e-3)  # with weight, the prior moves the vote
    finally:
        model.set_weights(chosen)


def test_it_saves_reloads_and_predicts_identically(data, trained, saved):
    cfg, _, val = data
    model, _ = trained
    meta = json.loads((saved / META).read_text(encoding="utf-8"))
    assert meta["members"] == MEMBERS and meta["member_state"]["prior"] == {"smoothing": SMOOTHING}
    assert meta["config"]["model"]["prior"] == {"smoothing": SMOOTHING}
    from safetensors.numpy import load_file

    arrays = load_file(str(saved / WEIGHTS))
    np.testing.assert_array_equal(arrays["members.prior.prior"], model.members[1].prior)
    loaded, meta2, extra = load_model(saved)
    assert loaded.kinds == MEMBERS and isinstance(loaded.members[1], PriorMember) and extra == {}
    np.testing.assert_array_equal(loaded.weights, model.weights)
    np.testing.assert_array_equal(predict_items(loaded, val, cfg), predict_items(model, val, cfg))


def test_it_is_left_out_of_onnx_with_its_reason(saved, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from persemo.export import OnnxRecogniser, export_onnx

    rep = export_onnx(saved, tmp_path / "m.onnx")
    assert rep.members == ["cnn"] and rep.omitted == ["prior"] and rep.weights == pytest.approx([1.0])
    assert any("prior" in n and PriorMember.not_exportable in n for n in rep.notes)
    assert rep.max_diff is not None and rep.max_diff < 1e-4
    assert OnnxRecogniser.load(rep.path).meta["onnx"]["omitted_members"] == ["prior"]


def test_it_runs_in_the_service(saved):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import soundfile as sf

    from persemo.export import synthetic_clip
    from persemo.inference import Recogniser
    from persemo.serve import Settings, create_app

    rec = Recogniser.load(saved)
    prior = rec.model.members[1].prior
    buf = io.BytesIO()
    sf.write(buf, synthetic_clip(int(1.5 * 16000), seed=4), 16000, format="WAV", subtype="PCM_16")
    with TestClient(create_app(rec, Settings(warmup=False))) as client:
        assert client.get("/v1/model").json()["members"] == MEMBERS
        r = client.post("/v1/predict", files={"file": ("a.wav", buf.getvalue(), "audio/wav")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["members"]) == set(MEMBERS)
    assert [body["members"]["prior"][l] for l in LABELS] == pytest.approx(prior.tolist(), abs=1e-5)
    w = rec.model.weights
    for l in LABELS:  # the answer is the vote of both rows
        assert body["probabilities"][l] == pytest.approx(w[0] * body["members"]["cnn"][l]
                                                         + w[1] * body["members"]["prior"][l], abs=1e-5)


def _code_strings(tree: ast.AST) -> list[str]:
    """Every string constant of a module that is not a docstring."""
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


def test_nothing_under_src_names_it():
    """No source file names the kind: no string in code says "prior" and no class is called Prior, and no
    other file under src/ says it at all. (``prior`` as a plain word in prose and as a variable name,
    the shrinkage prior of speaker statistics, is older and unrelated; the registry's docstring uses
    this kind as its example.)"""
    word = re.compile(r"\bprior\b", re.IGNORECASE)
    py = sorted(SRC.rglob("*.py"))
    assert len(py) > 20
    for path in py:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert not [s for s in _code_strings(tree) if word.search(s)], path
        assert not [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and "prior" in n.name.lower()], path
    # the package's own files; not build metadata beside it (an editable install's egg-info copies README)
    others = [p for p in (SRC / "persemo").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    for path in others:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        assert not word.search(text), path
