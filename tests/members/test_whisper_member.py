"""Member kind ``whisper``: a tiny randomly initialised Whisper checkpoint, written in the test in the hub's
layout, stands in for Whisper base (offline, seconds). Its blocks are chosen on the training speakers
only; the run directory carries the encoder and loads without its source; a reference is checked by its
sha256; speaker mode reads its own statistics; the vote can be chosen on the inner-CV predictions.
Its ONNX export: test_whisper_export.py."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from test_training import LABELS, synth_items, tiny_config

from persemo.artifact import ArtifactError, load_model, save_model
from persemo.config import ConfigError
from persemo.members.base import FitJob
from persemo.statistics import speaker_statistics
from persemo.training import predict_items, train_ensemble

transformers = pytest.importorskip("transformers", reason="the 'encoder' extra (transformers) is not installed")

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 2-block, width-32 Whisper saved as a hub-layout folder (what `source:` points at)."""
    cfg = transformers.WhisperConfig(d_model=32, encoder_layers=3, encoder_attention_heads=2, encoder_ffn_dim=64,
                                     num_mel_bins=80, max_source_positions=1500, decoder_layers=1,
                                     decoder_attention_heads=2, decoder_ffn_dim=32, vocab_size=64, num_labels=2)
    torch.manual_seed(0)
    model = transformers.WhisperForAudioClassification(cfg)
    with torch.no_grad():
        model.encoder.embed_positions.weight.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("ckpt") / "tiny-whisper"
    model.save_pretrained(out)
    return out


def _cfg(checkpoint, normalisation="global", **whisper):
    return tiny_config().replace(
        features={"normalisation": normalisation},
        model={"members": ["whisper"], "whisper": {"source": str(checkpoint), "noise_copies": 0, **whisper}},
        adaptation={"single_companion": False})


@pytest.fixture(scope="module")
def data():
    cfg = tiny_config()
    items = synth_items(cfg, per_class=4, speakers=("s1", "s2", "s3", "s4", "s5"))
    return [it for it in items if it.utt.speaker != "s5"], [it for it in items if it.utt.speaker == "s5"]


@pytest.fixture(scope="module")
def trained(checkpoint, data):
    cfg = _cfg(checkpoint)
    model, info = train_ensemble(cfg, LABELS, data[0], [], None, progress=False, log=lambda m: None)
    return cfg, model, info


def test_blocks_are_chosen_on_the_training_speakers_only(trained, data, checkpoint):
    cfg, model, info = trained
    sel = info["members"]["whisper"]["selection"]
    assert [r["blocks"] for r in sel] == [[1], [2], [3], [1, 2, 3]]  # each block, then the middle three
    best = max(r["inner_uar"] for r in sel)
    assert info["members"]["whisper"]["blocks"] in [r["blocks"] for r in sel if r["inner_uar"] == best]
    # the choice reads nothing but the training items: changing the test speaker changes nothing
    member = model.members[0]
    again = type(member)(cfg, LABELS)
    job = FitJob(cfg, LABELS, data[0], [], log=lambda m: None)
    assert again.choose_view(job) == tuple(info["members"]["whisper"]["blocks"])


def test_a_saved_member_carries_its_encoder_and_loads_without_the_source(trained, data, checkpoint, tmp_path):
    cfg, model, _ = trained
    p = predict_items(model, data[1], cfg)
    assert p.shape == (2, len(data[1]), 2) and np.allclose(p.sum(-1), 1, atol=1e-5)
    run = save_model(tmp_path / "run", model)
    moved = tmp_path / "gone"
    shutil.move(str(checkpoint), moved)  # the source is no longer there
    try:
        loaded, meta, _ = load_model(run)
        assert np.array_equal(predict_items(loaded, data[1], cfg), p)
        state = meta["member_state"]["whisper"]
        assert state["carries_weights"] and state["encoder"]["sha256"] == model.members[0].encoder.weights_sha256
    finally:
        shutil.move(str(moved), checkpoint)


def test_a_reference_is_fetched_and_checked_by_its_digest(checkpoint, data, tmp_path):
    cfg = _cfg(checkpoint, carry_weights=False, blocks=[2])
    model, _ = train_ensemble(cfg, LABELS, data[0], [], None, progress=False, log=lambda m: None)
    run = save_model(tmp_path / "ref", model)
    size_ref = (run / "model.safetensors").stat().st_size
    assert size_ref < 200_000  # no encoder tensors in it
    loaded, _, _ = load_model(run)
    assert np.array_equal(predict_items(loaded, data[1], cfg), predict_items(model, data[1], cfg))
    # another checkpoint at the same place is refused, not silently used
    other = transformers.WhisperForAudioClassification.from_pretrained(checkpoint)
    with torch.no_grad():
        other.encoder.layers[0].fc1.weight.add_(0.01)
    other.save_pretrained(tmp_path / "other")
    import json

    meta = json.loads((run / "model.json").read_text())
    meta["member_state"]["whisper"]["encoder"]["source"] = str(tmp_path / "other")
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="not the one it was trained with"):
        load_model(run)


def test_speaker_mode_reads_its_own_statistics(checkpoint, data):
    cfg = _cfg(checkpoint, "speaker", blocks=[2])
    model, _ = train_ensemble(cfg, LABELS, data[0], [], None, progress=False, log=lambda m: None)
    member = model.members[0]
    assert member.stat_keys == ("whisper_mean", "whisper_std")
    st = speaker_statistics(data[1], model)
    assert st["s5"]["whisper_mean"].shape == (32,)
    plain = predict_items(model, data[1], cfg)
    adapted = predict_items(model, data[1], cfg, st)
    # the speaker's own statistics are used (on this easy data the top answers agree; the log-odds move)
    assert not np.allclose(np.log(plain.astype(np.float64) + 1e-300), np.log(adapted.astype(np.float64) + 1e-300))


def test_the_vote_can_be_chosen_on_inner_cv_predictions(checkpoint, data):
    cfg = _cfg(checkpoint, blocks=[2]).replace(model={"members": ["whisper", "smile"], "calibration": "inner",
                                                      "smile": {"feature_set": "eGeMAPSv02", "noise_copies": 0}})
    pytest.importorskip("opensmile")
    model, info = train_ensemble(cfg, LABELS, data[0], [], None, progress=False, log=lambda m: None)
    assert all(m.train_oof is not None and m.train_oof.shape == (len(data[0]), 2) for m in model.members)
    assert info["calibration"] == "inner" and np.isclose(sum(info["ensemble_weights"]), 1)
    assert model.temperatures.tolist() == info["member_temperatures"] and all(t > 0 for t in model.temperatures)


def test_inner_calibration_refuses_members_without_an_inner_cv(checkpoint, data):
    cfg = _cfg(checkpoint, blocks=[2]).replace(model={"members": ["cnn", "whisper"], "calibration": "inner"})
    with pytest.raises(ConfigError, match="cnn has none"):
        train_ensemble(cfg, LABELS, data[0], [], None, progress=False, log=lambda m: None)


def test_settings_are_validated(checkpoint):
    for bad, name in [({"blocks": "middle"}, "blocks"), ({"blocks": [-1]}, "blocks"), ({"pooling": "max"}, "pooling"),
                      ({"kind": "forest"}, "kind"), ({"noise_copies": 11}, "noise_copies")]:
        with pytest.raises(ConfigError, match=f"whisper.{name}"):
            _cfg(checkpoint, **bad)

