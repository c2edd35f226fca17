"""Issue 23: a run directory that cannot lie, artifacts validated before anything is built from them,
one audio loader for the CLI and the service, stale temporary files cleaned, clear errors on bad command
lines. Each case failed (a traceback, exit 1, a silent fallback or a wrong answer) before it was fixed."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from persemo.artifact import ArtifactError, load_model, save_model, sha256_file
from persemo.atomic import STALE_SECONDS, atomic_write_text
from persemo.audio import AudioError, load_audio
from persemo.cli import app
from persemo.config import Config, ConfigError, load_config
from persemo.ensemble import Ensemble

LABELS = ["anger", "neutral", "sadness"]
runner = CliRunner()


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    cfg = Config().replace(features={"normalisation": "global", "frames": 32},
                           model={"cnn": {"channels": [4, 8]}, "lstm": {"hidden": 8, "layers": 1}})
    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("m") / "run", Ensemble(cfg, LABELS))


@pytest.fixture
def run(tmp_path, saved_dir):
    """A fresh copy of the saved model directory, to tamper with."""
    out = tmp_path / "run"
    out.mkdir()
    for f in saved_dir.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def _meta(run: Path) -> dict:
    return json.loads((run / "model.json").read_text())


def _write_meta(run: Path, meta: dict) -> None:
    (run / "model.json").write_text(json.dumps(meta))


def _replace_weights(run: Path, data: bytes) -> None:
    """New weights bytes with a matching digest in model.json: only the content can refuse them."""
    (run / "model.safetensors").write_bytes(data)
    meta = _meta(run)
    meta["weights_sha256"] = sha256_file(run / "model.safetensors")
    _write_meta(run, meta)


@pytest.mark.parametrize("data", [
    b"",  # empty
    b"\x80\x04\x95" + b"pickle" * 20,  # a pickle, not safetensors
    (10**15).to_bytes(8, "little") + b"{}",  # a header that claims a petabyte
    None,  # truncated: the real file cut in half
], ids=["empty", "pickle", "huge-header", "truncated"])
def test_broken_weights_with_a_matching_digest_are_one_error(run, data):
    if data is None:
        whole = (run / "model.safetensors").read_bytes()
        data = whole[: len(whole) // 2]
    _replace_weights(run, data)
    with pytest.raises(ArtifactError, match="model.safetensors"):
        load_model(run)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(labels=None), "labels"),
    (lambda m: m.update(labels="abcdef"), "labels"),
    (lambda m: m.update(labels=[1, 2, 3]), "labels"),
    (lambda m: m.update(ensemble_weights=[1e308, -5]), "ensemble_weights"),
    (lambda m: m.update(ensemble_weights=[1e308, 1e308]), "ensemble_weights"),
    (lambda m: m["config"]["features"].update(n_mels=10**12), "n_mels"),
    (lambda m: m["config"]["features"].update(frames=10**12), "frames"),
    (lambda m: m["config"]["model"]["lstm"].update(hidden=10**12), "hidden"),
    (lambda m: m["config"]["model"]["cnn"].update(channels=7), "channels"),
    (lambda m: m["config"].pop("features"), "features"),
], ids=["labels-null", "labels-string", "labels-ints", "weights-negative", "weights-overflow", "n_mels-huge",
        "frames-huge", "lstm-huge", "channels-int", "no-features"])
def test_tampered_metadata_is_refused_before_anything_is_built(run, edit, match):
    meta = _meta(run)
    edit(meta)
    _write_meta(run, meta)
    with pytest.raises(ArtifactError, match=match):
        load_model(run)


def test_deeply_nested_json_is_one_error(run):
    (run / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ArtifactError, match="model.json"):
        load_model(run)


def test_cli_predict_on_a_tampered_model_is_one_line_and_exit_2(run, tmp_path):
    meta = _meta(run)
    meta["config"]["features"]["n_mels"] = 10**12
    _write_meta(run, meta)
    wav = tmp_path / "a.wav"
    sf.write(wav, 0.1 * np.sin(np.arange(16000) / 9).astype(np.float32), 16000)
    res = runner.invoke(app, ["predict", "--model", str(run), str(wav)])
    assert res.exit_code == 2
    assert "Traceback" not in res.output and res.output.count("persemo: error") == 1


def _truncated_wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, (0.1 * np.sin(np.arange(44100) / 7)).astype(np.float32), 22050, format="WAV", subtype="PCM_16")
    data = buf.getvalue()
    return data[: len(data) // 2]


def test_one_loader_refuses_a_truncated_wav_from_a_path_and_from_bytes(tmp_path):
    data = _truncated_wav()
    p = tmp_path / "cut.wav"
    p.write_bytes(data)
    for src in (p, data):
        with pytest.raises(AudioError, match="truncated WAV: the header declares"):
            load_audio(src)


def test_cli_predict_refuses_a_truncated_wav_with_exit_2(saved_dir, tmp_path):
    p = tmp_path / "cut.wav"
    p.write_bytes(_truncated_wav())
    res = runner.invoke(app, ["predict", "--model", str(saved_dir), str(p)])
    assert res.exit_code == 2 and "truncated WAV" in res.output


def test_service_answers_the_same_truncated_wav_with_422(saved_dir):
    from fastapi.testclient import TestClient

    from persemo.inference import Recogniser
    from persemo.serve.app import create_app

    client = TestClient(create_app(Recogniser.load(saved_dir)))
    r = client.post("/v1/predict", files={"file": ("cut.wav", _truncated_wav(), "audio/wav")})
    assert r.status_code == 422 and "truncated WAV" in r.json()["detail"]


def test_predict_on_a_folder_says_so(saved_dir, tmp_path):
    res = runner.invoke(app, ["predict", "--model", str(saved_dir), str(tmp_path)])
    assert res.exit_code == 2 and "a folder, not an audio file" in res.output


def test_stale_temporary_files_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "model.json"
    old = tmp_path / ".model.json.abc123.tmp"
    fresh = tmp_path / ".model.json.def456.tmp"
    for f in (old, fresh):
        f.write_text("half")
    past = time.time() - STALE_SECONDS - 10
    os.utime(old, (past, past))
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    assert not old.exists()  # a killed writer's leftover
    assert fresh.exists()  # may belong to a live writer


@pytest.mark.parametrize("over, match", [
    ({"train": {"accelerator": "tpu"}}, "accelerator"),
    ({"train": {"epochs": 10**9}}, "epochs"),
    ({"model": {"cnn": {"channels": 7}}}, "channels"),
])
def test_bad_config_values_are_config_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, **over)


def test_cli_train_with_out_pointing_at_a_file(tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    res = runner.invoke(app, ["train", "--corpus", "csv", "--data", str(tmp_path / "nothing.csv"), "--out", str(f)])
    assert res.exit_code == 2 and "Traceback" not in res.output
