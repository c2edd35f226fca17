"""ONNX export: onnxruntime equals torch over lengths and batch sizes, the file describes itself,
``OnnxRecogniser`` answers as ``Recogniser`` does, and ``persemo export`` works and fails in one line.

Models are untrained, with their classifier weights scaled up so the distributions are peaked as a
trained model's are (near-uniform outputs would hide differences).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from persemo.artifact import ArtifactError, load_model, save_model  # noqa: E402
from persemo.cli import app  # noqa: E402
from persemo.config import load_config  # noqa: E402
from persemo.export import (TOLERANCE, ExportError, OnnxRecogniser, export_onnx, load_recogniser,  # noqa: E402
                            pad_waves, session, synthetic_clip)
from persemo.inference import Recogniser  # noqa: E402
from persemo.members.base import TorchMember  # noqa: E402
from persemo.ensemble import Ensemble  # noqa: E402

LABELS = ["anger", "neutral", "sadness", "happiness", "surprise", "fear"]
SR = 16000
TINY = {"features": {"mfcc_deltas": True, "n_mfcc": 13, "mfcc_n_mels": 40, "n_mels": 32, "frames": 63,
                     "crop": "start", "mfcc_utterance_scope": "level"},
        "model": {"cnn": {"channels": [8, 16], "hidden": 0, "pooling": "time"},
                  "lstm": {"hidden": 16, "layers": 1, "pooling": "attention"}}}


def _model(cfg, seed: int = 0) -> Ensemble:
    torch.manual_seed(seed)
    m = Ensemble(cfg, LABELS).eval()
    with torch.no_grad():
        for member in m.members:
            if isinstance(member, TorchMember):
                member.net.head[-1].weight.mul_(25.0)
    return m


def _save(path, cfg, **kw):
    return save_model(path, _model(cfg), **kw)


def _max_diff(model: Ensemble, sess, lengths: list[int], seed: int = 0) -> float:
    waves = [synthetic_clip(n, seed + i) for i, n in enumerate(lengths)]
    wave, lens = pad_waves(waves)
    with torch.inference_mode():
        ref = model(torch.from_numpy(wave), torch.from_numpy(lens)).numpy()
    got = sess.run(["probs"], {"wave": wave, "lengths": lens})[0]
    assert got.shape == ref.shape == (len(model.member_names) + 1, len(lengths), len(LABELS))
    return float(np.abs(got - ref).max())


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on shared, busy cores torch's thread barriers make two threads ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    """The default config's model, saved and exported (with the built-in check)."""
    d = _save(tmp_path_factory.mktemp("default"), load_config())
    report = export_onnx(d)
    return d, report, load_model(d)[0]


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_export_check_passes_and_is_reported(default_export):
    d, rep, _ = default_export
    assert rep.path == d / "model.onnx" and rep.path.is_file()
    assert rep.members == ["cnn", "lstm"] and rep.omitted == [] and rep.notes == []
    assert len(rep.diffs) == 5 and rep.max_diff < TOLERANCE
    assert not list(d.glob(".*.tmp"))  # the temp file was renamed, not left behind


@pytest.mark.parametrize("lengths", [[SR // 5], [3 * SR, SR, 64000], [90000, 5000, 64001, 1234, 40000]])
def test_onnxruntime_equals_torch_over_lengths_and_batches(default_export, lengths):
    d, _, model = default_export
    assert _max_diff(model, session(d / "model.onnx", 1), lengths) < TOLERANCE


def test_exported_file_carries_the_model_json(default_export):
    import onnx

    d, rep, model = default_export
    proto = onnx.load(str(rep.path))
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    saved = json.loads((d / "model.json").read_text())
    assert props["labels"] == LABELS and props["members"] == ["cnn", "lstm"]
    assert props["config"] == saved["config"] and props["persemo_version"] == saved["persemo_version"]
    assert props["weights_sha256"] == saved["weights_sha256"]
    assert props["onnx"]["opset"] == 17 and props["onnx"]["check"]["max_abs_diff"] < TOLERANCE
    assert props["supported_modes"] == ["single-utterance"]
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    assert [i.name for i in proto.graph.input] == ["wave", "lengths"] and dims == [["batch", "samples"], ["batch"]]


def test_onnx_recogniser_answers_as_torch_on_a_long_clip(default_export):
    d, rep, _ = default_export
    wave = synthetic_clip(9 * SR, seed=5)
    ref = Recogniser.load(d).predict_wave(wave)
    for source in (d, rep.path):  # the run directory (model.json beside) and the bare .onnx file
        rec = load_recogniser(source, backend="onnx", threads=1)
        assert isinstance(rec, OnnxRecogniser) and rec.windows(len(wave)) == Recogniser.load(d).windows(len(wave))
        got = rec.predict_wave(wave)
        assert got["emotion"] == ref["emotion"] and len(got["windows"]) == len(ref["windows"]) == 4
        for a, b in zip([ref] + ref["windows"], [got] + got["windows"]):
            assert a["emotion"] == b["emotion"]
            np.testing.assert_allclose(list(b["probabilities"].values()), list(a["probabilities"].values()),
                                       atol=1e-4)
            for m in ("cnn", "lstm"):
                np.testing.assert_allclose(list(b["members"][m].values()), list(a["members"][m].values()),
                                           atol=1e-4)
        assert rec.info()["labels"] == LABELS and rec.info()["window_seconds"] == 4.0
    assert max(ref["probabilities"].values()) > 0.3  # peaked, so the comparison means something


def test_onnx_backend_refuses_speaker_stats_and_bad_backend(default_export):
    d, _, _ = default_export
    rec = load_recogniser(d, "onnx")
    stats = {k: np.zeros(64 if "logmel" in k else 40) for k in ("logmel_mean", "logmel_std", "mfcc_mean", "mfcc_std")}
    with pytest.raises(ExportError, match="speaker statistics"):
        rec.predict_wave(synthetic_clip(SR), speaker_stats=stats)
    with pytest.raises(ValueError, match="backend"):
        load_recogniser(d, "tflite")


def test_cli_export_tiny_config(runner, tmp_path):
    """deltas, attention pooling, a 2-s window, start crop, no hidden layer, the CNN pooled over time and
    the MFCCs' level scope: exported and equal to torch."""
    cfg = load_config(**TINY)
    d = _save(tmp_path / "run", cfg)
    out = tmp_path / "exported" / "tiny.onnx"
    res = runner.invoke(app, ["export", "--model", str(d), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and f"wrote {out}" in res.stdout and "1.984 s (one window)" in res.stdout
    model = load_model(d)[0]
    assert _max_diff(model, session(out), [SR // 2, 50000, 31744, 7000]) < TOLERANCE
    rec = OnnxRecogniser.load(out)
    assert rec.window == 31744 and rec.predict_wave(synthetic_clip(5 * SR))["emotion"] in LABELS


def test_cli_missing_model_is_one_line_exit_2(runner, tmp_path):
    res = runner.invoke(app, ["export", "--model", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0 and "model not found" in res.stderr


def test_speaker_model_with_a_non_torch_member(tmp_path):
    """A speaker-normalised model with a 'smile' member (no torch graph): the graph holds the torch
    members with global statistics, the vote is renormalised over them, and the file says so."""
    pytest.importorskip("opensmile")
    from persemo.smile import FEATURE_SETS, SmileMember
    from persemo.statistics import vector_stats

    cfg = load_config(**{**TINY, "features": {**TINY["features"], "normalisation": "speaker"},
                         "model": {**TINY["model"], "members": ["cnn", "lstm", "smile"],
                                   "smile": {"feature_set": "eGeMAPSv02"}}})
    m = _model(cfg, seed=1)
    m.front.norm_mel.set_stats(torch.full((32,), -40.0), torch.full((32,), 15.0))
    m.front.norm_mfcc.set_stats(torch.linspace(-100, 10, 39), torch.linspace(60, 5, 39))
    smile = m.members[m.kinds.index("smile")]  # fitted on made-up functionals: only its presence matters here
    rng = np.random.default_rng(0)
    X = rng.normal(size=(36, FEATURE_SETS["eGeMAPSv02"]))
    y = np.arange(36) % len(LABELS)
    smile.head = SmileMember("logreg", "eGeMAPSv02").fit(X, y, len(LABELS), groups=np.arange(36) // 12)
    smile.norm = vector_stats(X)
    m.set_weights([0.5, 0.3, 0.2])
    d = save_model(tmp_path, m)
    rep = export_onnx(d)
    assert rep.members == ["cnn", "lstm"] and rep.omitted == ["smile"] and rep.max_diff < TOLERANCE
    assert rep.weights == pytest.approx([0.625, 0.375])
    assert any("smile" in n and "only cnn, lstm" in n for n in rep.notes)
    assert any("global statistics" in n for n in rep.notes)
    rec = OnnxRecogniser.load(rep.path)
    assert rec.members == ["cnn", "lstm"] and rec.meta["onnx"]["omitted_members"] == ["smile"]
    assert Recogniser.load(d).members == ["cnn", "lstm", "smile"]  # the torch backend keeps all three
    probs = rec.probabilities([synthetic_clip(SR), synthetic_clip(3 * SR, 2)])
    np.testing.assert_allclose(probs[2], 0.625 * probs[0] + 0.375 * probs[1], atol=1e-6)
    # the torch members in single-utterance mode (global statistics), as Recogniser runs them
    with torch.inference_mode():
        wave, lens = pad_waves([synthetic_clip(SR), synthetic_clip(3 * SR, 2)])
        ref = m(torch.from_numpy(wave), torch.from_numpy(lens)).numpy()
    np.testing.assert_allclose(probs[:2], ref[:2], atol=TOLERANCE)


def test_stale_or_foreign_onnx_is_refused(default_export, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    _, rep, _ = default_export
    # a model directory whose weights differ from the ones model.onnx was exported from
    run = save_model(tmp_path / "run", _model(load_config(**TINY)))
    (run / "model.onnx").write_bytes(rep.path.read_bytes())
    with pytest.raises(ArtifactError, match="exported from other weights"):
        load_recogniser(run, "onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    plain = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(ArtifactError, match="not a persemo ONNX export"):
        load_recogniser(tmp_path / "plain.onnx", "onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no model.onnx"):
        load_recogniser(tmp_path / "empty", "onnx")
