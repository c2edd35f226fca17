"""The model directory: save -> load gives identical output; anything inconsistent is refused clearly;
a version-1 directory (persemo before the member redesign) loads and predicts as its version-2 save."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from persemo.artifact import FORMAT_VERSION, META, WEIGHTS, ArtifactError, load_model, model_arrays, read_meta, \
    save_model, sha256_file
from persemo.config import Config
from persemo.ensemble import Ensemble

LABELS = ["anger", "happiness", "neutral", "sadness"]


@pytest.fixture(scope="module")
def model():
    """An untrained ensemble whose every saved tensor differs from a fresh one's."""
    cfg = Config().replace(features={"normalisation": "global", "frames": 48},
                           model={"cnn": {"channels": [8, 16], "hidden": 16},
                                  "lstm": {"hidden": 16, "layers": 1, "pooling": "attention"}})
    torch.manual_seed(0)
    return _perturbed(Ensemble(cfg, LABELS))


def _perturbed(m: Ensemble) -> Ensemble:
    """``m`` with its BN running statistics and the front end's saved statistics moved off their defaults,
    and vote weights and temperatures of its own."""
    with torch.no_grad():
        modules = [("", m.front)] + [(mem.kind, mem.net) for mem in m.members if getattr(mem, "net", None) is not None]
        for _, module in modules:
            for name, buf in module.named_buffers():
                if buf.is_floating_point() and ("running" in name or "norm_" in name):
                    buf.copy_(buf + 0.3 * torch.rand_like(buf))
    n = len(m.members)
    m.set_weights([0.3, 0.7] if n == 2 else np.arange(1, n + 1))
    m.set_temperatures([1.5, 2.5] if n == 2 else np.linspace(0.8, 2.0, n))
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
    return save_model(tmp_path / "run", model, extra_meta={"trained_on": {"corpus": "csv"}})


def test_save_load_identical(saved, model, batch):
    loaded, meta, extra = load_model(saved)
    assert not loaded.front.training and not any(m.net.training for m in loaded.members)
    assert torch.equal(loaded(*batch), model(*batch))
    a, b = model_arrays(model), model_arrays(loaded)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert any(k.startswith("features.") for k in a) and any(k.startswith("members.lstm.") for k in a)
    assert meta["labels"] == LABELS and meta["members"] == ["cnn", "lstm"] and loaded.kinds == ["cnn", "lstm"]
    assert meta["member_state"] == {"cnn": {}, "lstm": {}}
    assert meta["ensemble_weights"] == pytest.approx([0.3, 0.7])
    assert meta["member_temperatures"] == pytest.approx([1.5, 2.5]) and loaded.temperatures == pytest.approx([1.5, 2.5])
    assert meta["format_version"] == FORMAT_VERSION and meta["trained_on"] == {"corpus": "csv"}
    assert meta["normalisation"] == "global" and meta["window_seconds"] == pytest.approx(47 * 512 / 16000)
    assert Config.from_dict(meta["config"]) == model.cfg
    assert extra == {}  # every array belongs to the front end or a member
    # the save is atomic: no temporary files left behind
    assert sorted(p.name for p in saved.iterdir()) == [META, WEIGHTS]


def test_the_fresh_model_differs(model, batch):
    # so the identity above is not a coincidence of default initialisation
    torch.manual_seed(5)
    fresh = Ensemble(model.cfg, LABELS).eval()
    assert not torch.allclose(fresh(*batch), model(*batch))


def test_tampered_weights_are_refused(saved):
    w = saved / WEIGHTS
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="digest"):
        load_model(saved)


def test_weights_from_another_save_are_refused(tmp_path, saved, model):
    torch.manual_seed(7)
    other = save_model(tmp_path / "other", Ensemble(model.cfg, LABELS))
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
    assert f"format version {FORMAT_VERSION + 1}" in msg and f"reads 1, {FORMAT_VERSION}" in msg
    assert str(saved / META) in msg and "\n" not in msg


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.pop("format"), "not a persemo model"),
    (lambda m: m.pop("labels"), "missing field 'labels'"),
    (lambda m: m["config"]["model"]["lstm"].update(pooling="median"), "bad config"),
    (lambda m: m["config"]["model"].update(lstm_pooling="median"), "bad config"),  # a legacy flat key too
    (lambda m: m["config"]["model"]["lstm"].update(hidden=32), "member 'lstm'.*do not fit"),
    (lambda m: m["config"]["features"].update(n_mels=32), "front end|do not fit"),
    (lambda m: m.update(member_temperatures=[1.5]), "one finite number per member"),
    (lambda m: m.update(member_temperatures=[1.5, 0.0]), "member_temperatures"),
    (lambda m: m.update(ensemble_weights=[-0.3, 1.3]), "ensemble_weights must be from 0 to 1e6"),
    (lambda m: m.update(members=["lstm", "cnn"]), "differ from the config"),
    (lambda m: m.update(labels=["anger", "anger"]), "labels"),
    (lambda m: m.pop("member_state"), "member_state"),
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
    assert torch.equal(loaded(*batch), model(*batch))


def test_run_dir_or_its_model_folder(tmp_path, model, batch):
    run = tmp_path / "runs" / "NAME"
    save_model(run / "model", model)
    for path in (run, run / "model"):
        p, meta = read_meta(path)
        assert p == run / "model"
        loaded, _, _ = load_model(path)
        assert torch.equal(loaded(*batch), model(*batch))


def test_resave_over_an_existing_model(saved, model, batch):
    save_model(saved, model)  # overwrite in place: still one consistent pair
    loaded, meta, extra = load_model(saved)
    assert extra == {} and "trained_on" not in meta
    assert torch.equal(loaded(*batch), model(*batch))


def test_an_artifact_without_temperatures_loads_uncalibrated(saved, model, batch):
    # a model.json without member_temperatures (saved before members had them): T = 1 for every member
    meta = json.loads((saved / META).read_text(encoding="utf-8"))
    del meta["member_temperatures"]
    (saved / META).write_text(json.dumps(meta), encoding="utf-8")
    loaded, _, _ = load_model(saved)
    assert loaded.temperatures.tolist() == [1.0, 1.0]
    at_one = Ensemble(model.cfg, LABELS, members=model.members)
    at_one.front = model.front
    at_one.set_weights(model.weights)
    assert torch.allclose(loaded(*batch), at_one(*batch), atol=1e-6)
    assert not torch.allclose(loaded(*batch), model(*batch), atol=1e-4)


# --- a speaker-normalised model with its single-utterance companion


def test_a_companion_is_saved_beside_and_loads_back(tmp_path, batch):
    cfg = Config().replace(features={"normalisation": "speaker", "frames": 48},
                           model={"cnn": {"channels": [8, 16]}, "lstm": {"hidden": 8, "layers": 1}})
    torch.manual_seed(0)
    adapted = _perturbed(Ensemble(cfg, LABELS))
    single = _perturbed(Ensemble(cfg.replace(features={"normalisation": "utterance"}), LABELS))
    adapted.set_companion(single)
    out = save_model(tmp_path / "paired", adapted)
    assert (out / "single" / META).is_file()
    loaded, meta, _ = load_model(out)
    assert loaded.companion is not None and loaded.member_names == ["cnn", "lstm", "single/cnn", "single/lstm"]
    assert meta["companion"]["weights_sha256"] == sha256_file(out / "single" / WEIGHTS)
    stats = {k: torch.from_numpy(np.stack([v * 1.1] * 3)).float() for k, v in adapted.global_stats().items()}
    assert torch.equal(loaded(*batch), adapted(*batch))
    assert torch.equal(loaded(*batch, stats), adapted(*batch, stats))
    # the companion of another save is refused
    torch.manual_seed(3)
    other = save_model(tmp_path / "other", _perturbed(Ensemble(single.cfg, LABELS)))
    shutil.copy(other / WEIGHTS, out / "single" / WEIGHTS)
    shutil.copy(other / META, out / "single" / META)
    with pytest.raises(ArtifactError, match="companion"):
        load_model(out)
    shutil.rmtree(out / "single")
    with pytest.raises(ArtifactError, match="companion .* is missing"):
        load_model(out)


# --- version 1 (persemo before the member redesign)


def _v1_config(cfg: Config) -> dict:
    """``cfg`` as version 1 wrote it: every member setting a flat ``model.<kind>_<field>`` key (v1 wrote the
    cnn, lstm and smile keys whatever the members), the adaptation settings among the features."""
    d = cfg.to_dict()
    model = {k: d["model"][k] for k in ("members", "temperatures", "weights", "calibration")}
    for kind in ("cnn", "lstm", "smile"):
        for name, value in dataclasses.asdict(cfg.model.section(kind)).items():
            model[f"{kind}_{name}"] = list(value) if isinstance(value, tuple) else value
    features = {**d["features"], "speaker_shrink": d["adaptation"]["shrink"],
                "single_companion": d["adaptation"]["single_companion"]}
    return {"features": features, "model": model, "train": d["train"], "split": d["split"]}


def _write_v1(v2_dir, out):
    """The version-1 directory of the model saved (version 2) in ``v2_dir``: torch tensors under ``features.*``
    and ``members.<kind>.*``, the torch members' vote buffers ``weights`` and ``temperatures``, the smile
    member's arrays under ``smile.*`` with its facts in ``meta["smile"]``; no ``member_state``."""
    from safetensors.numpy import load_file, save_file

    meta = json.loads((v2_dir / META).read_text(encoding="utf-8"))
    arrays = load_file(str(v2_dir / WEIGHTS))
    torch_kinds = [k for k in meta["members"] if k != "smile"]
    idx = [meta["members"].index(k) for k in torch_kinds]
    w = np.array(meta["ensemble_weights"], np.float32)[idx]
    v1 = {k.replace("members.smile.", "smile.", 1): v for k, v in arrays.items()}
    v1["weights"] = w / w.sum()
    v1["temperatures"] = np.array(meta["member_temperatures"], np.float32)[idx]
    assert any(k.startswith("smile.") for k in v1) and not any(k.startswith("members.smile.") for k in v1)
    out.mkdir()
    save_file(v1, str(out / WEIGHTS))
    state = meta.pop("member_state")
    meta["smile"] = {"state": state["smile"]["state"], "normalisation": "training", "arrays_prefix": "smile."}
    meta.pop("adaptation", None)
    meta.update(format_version=1, persemo_version="0.1.0", config=_v1_config(Config.from_dict(meta["config"])),
                weights_sha256=sha256_file(out / WEIGHTS))
    (out / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def smile_model():
    """cnn + lstm + smile (eGeMAPSv02: 88 functionals), the smile member's classifier fitted on a few
    generated clips, every other array moved off its defaults."""
    pytest.importorskip("opensmile")
    from persemo.smile import SmileMember

    cfg = Config().replace(features={"normalisation": "global", "frames": 48},
                           model={"members": ["cnn", "lstm", "smile"], "cnn": {"channels": [8, 16]},
                                  "lstm": {"hidden": 8, "layers": 1},
                                  "smile": {"feature_set": "eGeMAPSv02", "quantiles": 5}})
    torch.manual_seed(0)
    m = Ensemble(cfg, LABELS)
    smile = m.members[m.kinds.index("smile")]
    rng = np.random.default_rng(0)
    t = np.arange(12000) / 16000
    waves = [(0.3 * np.sin(2 * np.pi * (100 + 25 * i) * t * (1 + 0.1 * np.sin(2 * np.pi * (i % 5) * t)))
              + 0.01 * rng.standard_normal(len(t))).astype(np.float32) for i in range(16)]
    X = smile.clip_vectors(waves)
    y = np.arange(16) % len(LABELS)
    smile.head = SmileMember("logreg", "eGeMAPSv02", 5).fit(X, y, len(LABELS), groups=[f"s{i % 4}" for i in range(16)])
    return _perturbed(m)


def test_a_version_1_directory_loads_and_predicts_as_its_version_2_save(tmp_path, smile_model, batch):
    v2 = save_model(tmp_path / "v2", smile_model)
    v1 = _write_v1(v2, tmp_path / "v1")
    _, raw = read_meta(v1)
    assert raw["format_version"] == 1 and "member_state" not in raw and "cnn_channels" in raw["config"]["model"]
    a, meta_a, extra_a = load_model(v2)
    b, meta_b, extra_b = load_model(v1)
    assert extra_a == {} and extra_b == {}  # the vote buffers and the smile arrays all found their place
    assert b.kinds == ["cnn", "lstm", "smile"] and b.cfg == a.cfg
    assert meta_b["format_version"] == FORMAT_VERSION and meta_b["member_state"]["smile"] == meta_a["member_state"]["smile"]
    np.testing.assert_array_equal(b.weights, a.weights)
    np.testing.assert_array_equal(b.temperatures, a.temperatures)
    assert b.cfg.adaptation.shrink == a.cfg.adaptation.shrink
    xa, xb = model_arrays(a), model_arrays(b)
    assert xa.keys() == xb.keys() and all(np.array_equal(xa[k], xb[k]) for k in xa)
    out_a, out_b = a(*batch), b(*batch)
    assert out_a.shape == (4, 3, len(LABELS))
    assert torch.equal(out_b, out_a)
    assert torch.equal(out_a, smile_model(*batch))
    # the smile member's row is its own (not a copy of a torch member's)
    assert not torch.allclose(out_a[2], out_a[0])
    # saving what was loaded from version 1 writes version 2, which loads the same again
    again = save_model(tmp_path / "again", b)
    assert read_meta(again)[1]["format_version"] == FORMAT_VERSION
    assert torch.equal(load_model(again)[0](*batch), out_a)


def test_a_version_1_torch_model_without_temperatures_loads_uncalibrated(tmp_path, model, batch):
    # version 1 from before members had temperatures: neither the JSON field nor the buffer
    from safetensors.numpy import load_file, save_file

    src = save_model(tmp_path / "v2", model)
    out = tmp_path / "v1"
    out.mkdir()
    arrays = load_file(str(src / WEIGHTS))
    arrays["weights"] = np.array(model.weights, np.float32)
    save_file(arrays, str(out / WEIGHTS))
    meta = json.loads((src / META).read_text(encoding="utf-8"))
    meta.pop("member_state")
    meta.pop("member_temperatures")
    meta.update(format_version=1, config=_v1_config(model.cfg), weights_sha256=sha256_file(out / WEIGHTS))
    (out / META).write_text(json.dumps(meta), encoding="utf-8")
    loaded, meta, extra = load_model(out)
    assert extra == {} and loaded.temperatures.tolist() == [1.0, 1.0] and meta["member_temperatures"] == [1.0, 1.0]
    expect = Ensemble(model.cfg, LABELS, members=model.members)
    expect.front = model.front
    expect.set_weights(model.weights)
    assert torch.allclose(loaded(*batch), expect(*batch), atol=1e-6)


def test_a_version_1_torch_model_loads_without_the_smile_extra(tmp_path, model, batch, monkeypatch):
    from safetensors.numpy import load_file, save_file

    from persemo import members as registry

    src = save_model(tmp_path / "v2", model)
    out = tmp_path / "v1"
    out.mkdir()
    arrays = load_file(str(src / WEIGHTS))
    arrays.update(weights=np.array(model.weights, np.float32), temperatures=np.array(model.temperatures, np.float32))
    save_file(arrays, str(out / WEIGHTS))
    meta = json.loads((src / META).read_text(encoding="utf-8"))
    meta.pop("member_state")
    meta.update(format_version=1, config=_v1_config(model.cfg), weights_sha256=sha256_file(out / WEIGHTS))
    (out / META).write_text(json.dumps(meta), encoding="utf-8")
    # as on a machine without the opensmile extra: the smile kind cannot be imported
    monkeypatch.delitem(registry._REGISTRY, "smile", raising=False)
    monkeypatch.setitem(registry.BUILTIN, "smile", "persemo.members._not_installed_for_this_test")
    loaded, _, _ = load_model(out)
    assert torch.equal(loaded(*batch), model(*batch))
