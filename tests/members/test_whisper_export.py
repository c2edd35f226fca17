"""The whisper member in ONNX: exported whole (log-mel, encoder, pooling, head) and equal to the torch
member over lengths and batches; beside the smile member, which stays out with a note; settings without
a graph refused in one line naming them; served by the ONNX ``Recogniser``; and, where ../shared holds
them, Whisper base on real EmoDB clips. A tiny random Whisper (test_whisper_member's) stands in offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import LABELS
from test_whisper_member import _cfg, checkpoint, data  # noqa: F401 - fixtures

from persemo.artifact import load_model, save_model
from persemo.training import train_ensemble

pytest.importorskip("transformers", reason="the 'encoder' extra (transformers) is not installed")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from persemo.export import (ExportError, export_onnx, load_recogniser, pad_waves,  # noqa: E402
                            session, synthetic_clip)

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")
SHARED = (Path(__file__).resolve().parents[2] / ".." / "shared").resolve()
TOL = 1e-3  # the bound; measured differences are about 1e-6


def _train(cfg, items):
    return train_ensemble(cfg, LABELS, items, [], None, progress=False, log=lambda m: None)[0]


def _diff(model, sess, lengths, seed=0) -> float:
    wave, lens = pad_waves([synthetic_clip(n, seed + i) for i, n in enumerate(lengths)])
    with torch.inference_mode():
        ref = model(torch.from_numpy(wave), torch.from_numpy(lens)).numpy()
    got = sess.run(["probs"], {"wave": wave, "lengths": lens})[0]
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max())


@pytest.fixture(scope="module")
def exported(checkpoint, data, tmp_path_factory):  # noqa: F811 - the imported fixtures
    model = _train(_cfg(checkpoint, blocks=[1, 2]), data[0])
    run = save_model(tmp_path_factory.mktemp("wx") / "run", model)
    return run, export_onnx(run), load_model(run)[0]


def test_the_whole_member_is_exported_and_checked(exported):
    run, rep, _ = exported
    assert rep.members == ["whisper"] and rep.omitted == [] and rep.notes == []
    assert rep.max_diff < TOL and len(rep.diffs) == 5


@pytest.mark.parametrize("lengths", [[3000], [16000 * 3, 8000, 1234], [40000, 64000, 16001, 500, 20000]])
def test_onnxruntime_equals_torch_over_lengths_and_batches(exported, lengths):
    run, rep, model = exported
    assert _diff(model, session(rep.path, 1), lengths) < TOL


def test_the_onnx_recogniser_serves_it(exported):
    run, rep, _ = exported
    wave = synthetic_clip(int(16000 * 2.5), seed=4)  # longer than the 1-s window: five windows
    ref = load_recogniser(run).predict_wave(wave)
    got = load_recogniser(run, "onnx", threads=1).predict_wave(wave)
    assert got["emotion"] == ref["emotion"] and len(got["windows"]) == len(ref["windows"]) == 5
    np.testing.assert_allclose(list(got["probabilities"].values()), list(ref["probabilities"].values()), atol=TOL)


def test_speaker_mode_exports_its_single_utterance_normalisation(checkpoint, data, tmp_path):  # noqa: F811
    model = _train(_cfg(checkpoint, "speaker", blocks=[2], kind="mlp"), data[0])
    assert model.members[0].norm is not None
    run = save_model(tmp_path / "spk", model)
    rep = export_onnx(run)
    assert rep.max_diff < TOL and any("single-utterance" in n for n in rep.notes)
    assert _diff(load_model(run)[0], session(rep.path, 1), [16000, 7000]) < TOL


def test_beside_smile_the_graph_holds_whisper_and_notes_smile(checkpoint, data, tmp_path):  # noqa: F811
    pytest.importorskip("opensmile")
    cfg = _cfg(checkpoint, blocks=[2]).replace(model={"members": ["whisper", "smile"],
                                                      "smile": {"feature_set": "eGeMAPSv02", "noise_copies": 0}})
    run = save_model(tmp_path / "pair", _train(cfg, data[0]))
    rep = export_onnx(run)  # checked against the torch model's own whisper row and its re-vote
    assert rep.members == ["whisper"] and rep.omitted == ["smile"] and rep.max_diff < TOL
    assert any("smile" in n and "no torch graph" in n for n in rep.notes)
    rec = load_recogniser(rep.path, "onnx")
    assert rec.members == ["whisper"] and rec.probabilities([synthetic_clip(9000)]).shape == (2, 1, 2)


@pytest.mark.parametrize("setting, pattern", [({"kind": "svm"}, r"model\.whisper\.kind: a svm head"),
                                              ({"quantiles": 5}, r"model\.whisper\.quantiles")])
def test_settings_without_a_graph_are_refused_naming_them(checkpoint, data, tmp_path, setting, pattern):  # noqa: F811
    run = save_model(tmp_path / "bad", _train(_cfg(checkpoint, blocks=[2], **setting), data[0]))
    with pytest.raises(ExportError, match=pattern):
        export_onnx(run, check=False)


def test_whisper_base_on_real_clips(tmp_path):
    """Whisper base (../shared) with a logistic head fitted on 24 EmoDB clips: onnxruntime within 1e-3 of
    torch on other EmoDB clips, alone and batched."""
    base, emodb = SHARED / "models" / "whisper-base", SHARED / "data" / "emodb" / "wav"
    if not (base / "config.json").is_file() or not emodb.is_dir():
        pytest.skip(f"needs {base} and {emodb} (../shared)")
    from persemo.audio import load_audio
    from persemo.corpora import scan_corpus
    from persemo.ensemble import Ensemble
    from persemo.prepare import Item
    from test_training import tiny_config

    from persemo.features import Spectra

    utts = [u for u in scan_corpus("emodb", emodb, durations=False).utterances if u.emotion in LABELS]
    utts = sorted(utts, key=lambda u: u.id)
    cfg = tiny_config().replace(model={"members": ["whisper"], "whisper": {
        "source": str(base), "blocks": [3], "noise_copies": 0}}, adaptation={"single_companion": False})
    spectra = Spectra(cfg.features)
    train = []
    for u in utts[:24]:
        w = load_audio(u.path, 16000)
        with torch.inference_mode():
            lm, mf, _ = spectra(torch.from_numpy(w)[None])
        train.append(Item(u, w, lm[0].numpy(), mf[0].numpy()))
    model = _train(cfg, train)
    assert isinstance(model, Ensemble)
    run = save_model(tmp_path / "base", model)
    rep = export_onnx(run)
    assert rep.max_diff < TOL
    sess = session(rep.path, 1)
    waves = [load_audio(u.path, 16000)[: 64000] for u in utts[-4:]]
    wave, lens = pad_waves(waves)
    loaded = load_model(run)[0]
    with torch.inference_mode():
        ref = loaded(torch.from_numpy(wave), torch.from_numpy(lens)).numpy()
    assert np.abs(sess.run(["probs"], {"wave": wave, "lengths": lens})[0] - ref).max() < TOL
    one = sess.run(["probs"], {"wave": waves[0][None], "lengths": np.array([len(waves[0])])})[0]
    assert np.abs(one[:, 0] - ref[:, 0]).max() < TOL


def test_serve_backend_onnx_serves_it(exported):
    pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
    import io

    import soundfile as sf
    from fastapi.testclient import TestClient

    from persemo.serve import Settings, create_app

    run, _, _ = exported
    wave = synthetic_clip(int(16000 * 1.5), seed=6)
    buf = io.BytesIO()
    sf.write(buf, wave, 16000, format="WAV", subtype="FLOAT")
    want = load_recogniser(run).predict_wave(wave)
    with TestClient(create_app(run, Settings(backend="onnx", vad="energy", warmup=False))) as c:
        r = c.post("/v1/predict", content=buf.getvalue(), headers={"content-type": "audio/wav"})
        assert r.status_code == 200, r.text
        got = r.json()
    assert got["members"].keys() == {"whisper"}
    np.testing.assert_allclose(list(got["probabilities"].values()), list(want["probabilities"].values()), atol=TOL)
