"""The model directory: save -> load gives identical output; anything inconsistent is refused clearly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from persemo.artifact import FORMAT_VERSION, META, WEIGHTS, ArtifactError, load_model, read_meta, save_model
from persemo.config import Config
from persemo.models.ensemble import Ensemble

LABELS = ["anger", "happiness", "neutral", "sadness"]


@pytest.fixture(scope="module")
def model():
    """An untrained ensemble whose every saved tensor differs from a fresh one's."""
    cfg = Config().replace(features={"normalisation": "global", "frames": 48},
                           model={"cnn_channels": [8, 16], "cnn_hidden": 16, "lstm_hidden": 16, "lstm_layers": 1,
                                  "lstm_pooling": "attention"})
    torch.manual_seed(0)
    m = Ensemble(cfg, LABELS)
    with torch.no_grad():
        for name, buf in m.named_buffers():
            if buf.is_floating_point() and ("running" in name or "norm_" in name):
                buf.copy_(buf + 0.3 * torch.rand_like(buf))  # BN running stats, normalisation statistics
        m.weights.copy_(torch.tensor([0.3, 0.7]))
        m.temperatures.copy_(torch.tensor([1.5, 2.5]))
    return m.eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([24000, 9000, 30000])
    wave = 0.1 * torch.randn(3, 30000, generator=g)
    for i, n in enumerate(lengths.tolist()):
        wave[i, n:] = 0
    return wave, lengths


@pytest.fixture
def saved(tmp_path, model):
    return save_model(tmp_path / "run", model, extra_arrays={"extra.vector": np.arange(5, dtype=np.float32)},
                      extra_meta={"trained_on": {"corpus": "csv"}})


def test_save_load_identical(saved, model, batch):
    loaded, meta, extra = load_model(saved)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(*batch), model(*batch))
    a, b = model.state_dict(), loaded.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert meta["labels"] == LABELS and meta["members"] == ["cnn", "lstm"]
    assert meta["ensemble_weights"] == pytest.approx([0.3, 0.7])
    assert meta["member_temperatures"] == pytest.approx([1.5, 2.5]) and loaded.temperatures == pytest.approx([1.5, 2.5])
    assert meta["format_version"] == FORMAT_VERSION and meta["trained_on"] == {"corpus": "csv"}
    assert meta["normalisation"] == "global" and meta["window_seconds"] == pytest.approx(47 * 512 / 16000)
    assert Config.from_dict(meta["config"]) == model.cfg
    np.testing.assert_array_equal(extra["extra.vector"], np.arange(5))
    # the save is atomic: no temporary files left behind
    assert sorted(p.name for p in saved.iterdir()) == [META, WEIGHTS]


def test_the_fresh_model_differs(model, batch):
    # so the identity above is not a coincidence of default initialisation
    torch.manual_seed(5)
    fresh = Ensemble(model.cfg, LABELS).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(*batch), model(*batch))


def test_tampered_weights_are_refused(saved):
    w = saved / WEIGHTS
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="digest"):
        load_model(saved)


def test_weights_from_another_save_are_refused(tmp_path, saved, model):
    other = save_model(tmp_path / "other", model, extra_arrays={"extra.vector": np.ones(5, np.float32)})
    shutil.copy(other / WEIGHTS, saved / WEIGHTS)
    with pytest.raises(ArtifactError, match="different models|digest"):
        load_model(saved)


def test_wrong_format_version(saved):
    meta = json.loads((saved / META).read_text(encoding="utf-8"))
    meta["format_version"] = FORMAT_VERSION + 1
    (saved / META).write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ArtifactError) as exc:
        load_model(saved)
    msg = str(exc.value)
    assert f"format version {FORMAT_VERSION + 1}" in msg and f"expects {FORMAT_VERSION}" in msg
    assert str(saved / META) in msg and "\n" not in msg


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.pop("format"), "not a persemo model"),
    (lambda m: m.pop("labels"), "missing field 'labels'"),
    (lambda m: m["config"]["model"].update(lstm_pooling="median"), "bad config"),
    (lambda m: m["config"]["model"].update(lstm_hidden=32), "do not fit"),
    (lambda m: m.update(member_temperatures=[1.5, 2.0]), "disagree"),
    (lambda m: m.update(member_temperatures=[1.5]), "one number per member"),
])
def test_bad_meta_is_refused(saved, edit, match):
    meta = json.loads((saved / META).read_text(encoding="utf-8"))
    edit(meta)
    (saved / META).write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ArtifactError, match=match):
        load_model(saved)


def test_missing_or_broken_files(tmp_path, saved):
    with pytest.raises(ArtifactError, match="not found"):
        load_model(tmp_path / "nowhere")
    (saved / META).write_text("{not json", encoding="utf-8")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_model(saved)
    (saved / META).unlink()
    with pytest.raises(ArtifactError, match=f"no {META}"):
        load_model(saved)


def test_missing_weights(saved):
    (saved / WEIGHTS).unlink()
    with pytest.raises(ArtifactError, match=f"{WEIGHTS} is missing"):
        load_model(saved)


def test_leftover_temp_files_do_not_break_loading(saved, model, batch):
    # what a save killed half-way leaves: temporary files beside a complete earlier save
    (saved / ".weights.abc123.tmp").write_bytes(b"\x00" * 100)
    (saved / f".{META}.xyz.tmp").write_text('{"format": "persemo-model", "format_version": 99}')
    loaded, _, _ = load_model(saved)
    with torch.no_grad():
        assert torch.equal(loaded(*batch), model(*batch))


def test_run_dir_or_its_model_folder(tmp_path, model, batch):
    run = tmp_path / "runs" / "NAME"
    save_model(run / "model", model)
    for path in (run, run / "model"):
        p, meta = read_meta(path)
        assert p == run / "model"
        loaded, _, _ = load_model(path)
        with torch.no_grad():
            assert torch.equal(loaded(*batch), model(*batch))


def test_resave_over_an_existing_model(saved, model, batch):
    save_model(saved, model)  # overwrite in place: still one consistent pair
    loaded, meta, extra = load_model(saved)
    assert extra == {} and "trained_on" not in meta
    with torch.no_grad():
        assert torch.equal(loaded(*batch), model(*batch))


def test_an_artifact_from_before_temperatures_loads_uncalibrated(saved, model, batch):
    # saved by the previous release: no member_temperatures in the JSON, no temperatures tensor
    from safetensors.torch import load_file, save_file

    from persemo.artifact import _sha256

    tensors = load_file(str(saved / WEIGHTS))
    del tensors["temperatures"]
    save_file(tensors, str(saved / WEIGHTS))
    meta = json.loads((saved / META).read_text(encoding="utf-8"))
    del meta["member_temperatures"]
    meta["weights_sha256"] = _sha256(saved / WEIGHTS)
    (saved / META).write_text(json.dumps(meta), encoding="utf-8")
    loaded, _, _ = load_model(saved)
    assert loaded.temperatures == [1.0, 1.0]
    with torch.no_grad():
        model.temperatures.fill_(1.0)
        try:
            assert torch.allclose(loaded(*batch), model(*batch), atol=1e-6)
        finally:
            model.temperatures.copy_(torch.tensor([1.5, 2.5]))
