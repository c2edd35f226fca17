"""Config: defaults, JSON/YAML files (and the files they extend), overrides, member sections, moved fields,
and errors that name the offending field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from persemo import members as registry
from persemo.config import AdaptationConfig, Config, ConfigError, DataConfig, FeatureConfig, ModelConfig, \
    SplitConfig, TrainConfig, load_config, read_config_file
from persemo.features import frames_for, samples_for_frames


def test_defaults_describe_the_system():
    cfg = load_config()
    f = cfg.features
    assert (f.sample_rate, f.n_fft, f.hop_length) == (16000, 1024, 512)
    assert (f.n_mels, f.n_mfcc, f.mfcc_n_mels, f.frames) == (64, 40, 128, 126)
    assert (f.f_min, f.f_max) == (0.0, 8000.0)
    assert f.mfcc_dim == 40 and FeatureConfig(mfcc_deltas=True).mfcc_dim == 120
    # 126 frames of hop 512 at 16 kHz: about 4 s
    assert samples_for_frames(f.frames, f.hop_length) == 64000
    assert frames_for(64000, f.hop_length) == 126
    assert cfg.model.members == ("cnn", "lstm")
    assert cfg.split.kind == "speaker"  # speaker-independent by default
    assert cfg == Config()


def test_every_field_has_help_text():
    member_settings = [registry.get(k).Settings for k in ("cnn", "lstm", "smile")]
    for section in (DataConfig, FeatureConfig, ModelConfig, TrainConfig, SplitConfig, AdaptationConfig,
                    *member_settings):
        for f in dataclasses.fields(section):
            assert f.metadata.get("help"), f"{section.__name__}.{f.name} has no help text"


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.features.n_mels = 32  # type: ignore[misc]


def test_json_file(tmp_path):
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps({"features": {"n_mels": 32, "mfcc_deltas": True},
                             "train": {"epochs": 3, "noise_snr_db": [10, 20]}}))
    cfg = load_config(p)
    assert cfg.features.n_mels == 32 and cfg.features.mfcc_deltas is True
    assert cfg.train.epochs == 3
    assert cfg.train.noise_snr_db == (10.0, 20.0) and isinstance(cfg.train.noise_snr_db, tuple)
    # untouched fields keep their defaults
    assert cfg.features.n_mfcc == 40 and cfg.model == ModelConfig() and cfg.split == SplitConfig()


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_file(tmp_path, suffix):
    p = tmp_path / f"cfg{suffix}"
    p.write_text("features:\n  frames: 200\n  crop: start\nmodel:\n  members: [lstm]\n"
                 "split:\n  kind: random\n  seed: 7\n")
    cfg = load_config(p)
    assert cfg.features.frames == 200 and cfg.features.crop == "start"
    assert cfg.model.members == ("lstm",)
    assert cfg.split.kind == "random" and cfg.split.seed == 7


def test_empty_yaml_gives_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load_config(p) == Config()


def test_file_then_overrides(tmp_path):
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps({"train": {"epochs": 3, "lr": 0.01}}))
    cfg = load_config(p, train={"epochs": 5})
    assert cfg.train.epochs == 5 and cfg.train.lr == 0.01


def test_number_coercion():
    cfg = Config.from_dict({"train": {"lr": 1}, "features": {"f_max": 7000}})
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0
    assert isinstance(cfg.features.f_max, float)


@pytest.mark.parametrize("data, names", [
    ({"features": {"n_melz": 32}}, ["n_melz", "features"]),
    ({"train": {"epochs": 2, "learning_rate": 0.1}}, ["learning_rate", "train"]),
    ({"featurez": {}}, ["featurez"]),
])
def test_unknown_field_is_named(tmp_path, data, names):
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    for name in names:
        assert name in str(exc.value)


@pytest.mark.parametrize("data, name", [
    ({"features": {"crop": "middle"}}, "crop"),
    ({"features": {"normalisation": "batch"}}, "normalisation"),
    ({"features": {"n_mels": 0}}, "n_mels"),
    ({"features": {"n_mfcc": 200}}, "n_mfcc"),
    ({"features": {"mfcc_deltas": "yes"}}, "mfcc_deltas"),
    ({"train": {"epochs": "ten"}}, "epochs"),
    ({"train": {"epochs": True}}, "epochs"),
    ({"train": {"epochs": 2.5}}, "epochs"),  # not silently cut to 2
    ({"train": {"epochs": float("inf")}}, "epochs"),
    ({"train": {"monitor": "accuracy"}}, "monitor"),
    ({"train": {"label_smoothing": 1.0}}, "label_smoothing"),
    ({"train": {"noise_snr_db": [30, 5]}}, "noise_snr_db"),
    ({"train": {"noise_stats": "noisy"}}, "noise_stats"),
    ({"model": {"members": ["cnn", "transformer"]}}, "members"),
    ({"model": {"members": ["cnn", "cnn"]}}, "members"),
    ({"model": {"cnn": {"pooling": "max"}}}, "model.cnn.pooling"),
    ({"model": {"cnn": {"channels": [8, 0]}}}, "model.cnn.channels"),
    ({"model": {"cnn": {"poolin": "time"}}}, "poolin"),
    ({"model": {"cnn": "time"}}, "model.cnn"),
    ({"model": {"lstm": {"layers": 0}}}, "model.lstm"),
    ({"model": {"lstm_pooling": "max"}}, "model.lstm.pooling"),  # a legacy flat key is checked as its section's
    ({"model": {"smile": {"quantiles": 1}}}, "model.smile.quantiles"),
    ({"model": {"transformer_depth": 3}}, "transformer_depth"),
    ({"adaptation": {"shrink": -1}}, "adaptation.shrink"),
    ({"adaptation": {"single_companion": "yes"}}, "single_companion"),
    ({"adaptation": {"shrinkage": 3}}, "shrinkage"),
    ({"split": {"kind": "gender"}}, "kind"),
    ({"split": {"val_fraction": 0.6, "test_fraction": 0.5}}, "fraction"),
    ({"split": {"val_fraction": -0.1}}, "val_fraction"),
    ({"split": {"text_column": " "}}, "split.text_column"),
    ({"data": {"labels": ["calm", "neutral"]}}, "data.labels must be a mapping"),
    ({"data": {"labels": {"calm": ""}}}, "data.labels"),
    ({"data": {"labels": {"calm": "calm"}}}, "data.labels: 'calm' is mapped to itself"),
    ({"data": {"labelz": {}}}, "labelz"),
    ({"features": []}, "features"),
    ({"features": {"enrolment": "neutral"}}, "enrolment"),  # needs normalisation: speaker
    ({"features": {"normalisation": "speaker", "enrolment": " "}}, "enrolment"),
])
def test_bad_values_are_named(data, name):
    with pytest.raises(ConfigError, match=name):
        Config.from_dict(data)


def test_replace_returns_a_new_config():
    cfg = Config()
    new = cfg.replace(train={"epochs": 5}, features={"n_mels": 32})
    assert new.train.epochs == 5 and new.features.n_mels == 32
    assert cfg.train.epochs == 60 and cfg.features.n_mels == 64  # the original is unchanged
    assert new.train.lr == cfg.train.lr
    with pytest.raises(ConfigError, match="trian"):
        cfg.replace(trian={"epochs": 5})
    with pytest.raises(ConfigError, match="epoch"):
        cfg.replace(train={"epoch": 5})


def test_dict_round_trip_through_json():
    cfg = Config().replace(model={"members": ["cnn", "lstm", "smile"], "cnn": {"channels": (16, 32)},
                                  "smile": {"quantiles": 20, "speeds": [0.9, 1.1]}},
                           train={"noise_snr_db": (0.0, 10.0)}, adaptation={"shrink": 4.0})
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.model.section("cnn").channels == (16, 32)
    assert again.model.section("smile").speeds == [0.9, 1.1]


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{features: ")
    with pytest.raises(ConfigError, match="bad.json"):
        load_config(bad)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(not_mapping)


def test_no_validation_split_is_allowed():
    assert Config.from_dict({"split": {"val_fraction": 0}}).split.val_fraction == 0


_REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted([*(_REPO / "configs").glob("*.yaml"),
                                         *(_REPO / "benchmarks" / "configs").glob("*.yaml")]),
                         ids=lambda p: str(p.relative_to(_REPO)))
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.model.members and cfg.train.epochs > 0


def test_temperatures_and_calibration_are_checked():
    assert Config().model.member_temperatures == (1.0, 1.0)
    cfg = Config().replace(model={"temperatures": [1.5, 3]})
    assert cfg.model.member_temperatures == (1.5, 3.0)
    for bad in ([1.5], [1.0, 0.0], [1.0, -2.0], [1.0, "x"]):
        with pytest.raises(ConfigError, match="model.temperatures"):
            Config().replace(model={"temperatures": bad})
    with pytest.raises(ConfigError, match="model.calibration"):
        Config().replace(model={"calibration": "platt"})
    with pytest.raises(ConfigError, match="val_fraction > 0"):
        Config().replace(model={"calibration": "validation"}, split={"val_fraction": 0})


def test_mixup_is_checked():
    assert Config().train.mixup == 0.0
    with pytest.raises(ConfigError, match="train.mixup"):
        Config().replace(train={"mixup": -0.2})


def test_fixed_vote_weights_are_checked():
    assert Config().replace(model={"weights": [0.3, 0.7]}).model.weights == (0.3, 0.7)
    for bad in ([1.0], [0.0, 0.0], [-0.1, 1.1]):
        with pytest.raises(ConfigError, match="model.weights"):
            Config().replace(model={"weights": bad})


# --- member sections


def test_model_sections_parse():
    cfg = Config.from_dict({"model": {"members": ["cnn", "lstm"], "cnn": {"pooling": "time", "channels": [16, 32]},
                                      "lstm": {"hidden": 8, "pooling": "attention"}}})
    cnn, lstm = cfg.model.section("cnn"), cfg.model.section("lstm")
    assert isinstance(cnn, registry.get("cnn").Settings) and isinstance(lstm, registry.get("lstm").Settings)
    assert cnn.pooling == "time" and cnn.channels == (16, 32) and isinstance(cnn.channels, tuple)
    assert cnn.hidden == 0 and cnn.dropout == 0.25  # the rest of the section keeps its defaults
    assert (lstm.hidden, lstm.pooling, lstm.layers) == (8, "attention", 2)
    # a kind the config gives no section gets its defaults
    assert Config().model.section("cnn") == registry.get("cnn").Settings()
    # sections are written as model.<kind>, never as flat keys
    d = cfg.to_dict()["model"]
    assert d["cnn"]["pooling"] == "time" and d["lstm"]["hidden"] == 8
    assert not any("_" in k and k.split("_")[0] in registry.known() for k in d)


def test_a_section_for_a_kind_outside_members_is_kept():
    cfg = Config.from_dict({"model": {"members": ["cnn"], "lstm": {"hidden": 8}}})
    assert cfg.model.members == ("cnn",) and cfg.model.section("lstm").hidden == 8


def test_legacy_flat_model_keys_still_map_to_sections():
    legacy = Config.from_dict({"model": {"members": ["cnn", "lstm", "smile"], "cnn_pooling": "time",
                                         "cnn_channels": [16, 32], "lstm_hidden": 64, "smile_quantiles": 20,
                                         "smile_feature_set": "eGeMAPSv02"}})
    sections = Config.from_dict({"model": {"members": ["cnn", "lstm", "smile"],
                                           "cnn": {"pooling": "time", "channels": [16, 32]}, "lstm": {"hidden": 64},
                                           "smile": {"quantiles": 20, "feature_set": "eGeMAPSv02"}}})
    assert legacy == sections
    assert legacy.model.section("cnn").pooling == "time" and legacy.model.section("smile").quantiles == 20
    assert "cnn_pooling" not in legacy.to_dict()["model"] and legacy.to_dict()["model"]["cnn"]["pooling"] == "time"
    # a flat key and its section's field together: both reach the section
    mixed = Config.from_dict({"model": {"cnn": {"channels": [16, 32]}, "cnn_pooling": "time"}})
    assert mixed.model.section("cnn") == sections.model.section("cnn")


def test_replace_merges_a_member_section_field_by_field():
    cfg = Config.from_dict({"model": {"cnn": {"pooling": "time", "channels": [16, 32]}}})
    new = cfg.replace(model={"cnn": {"hidden": 8}})
    assert new.model.section("cnn") == registry.get("cnn").Settings(channels=(16, 32), hidden=8, pooling="time")
    assert cfg.model.section("cnn").hidden == 0


def test_members_and_its_sections_are_checked_together():
    with pytest.raises(ConfigError, match="transformer"):
        Config.from_dict({"model": {"transformer": {"depth": 2}}})
    with pytest.raises(ConfigError, match="model.members"):
        Config.from_dict({"model": {"members": []}})


# --- extends: overlays


def test_extends_lays_a_file_over_its_base(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "model:\n  members: [cnn, lstm]\n  cnn: {channels: [8, 16], pooling: time}\n"
        "train:\n  epochs: 7\n  lr: 0.01\n  speeds: [0.9, 1.1]\n")
    (tmp_path / "sub").mkdir()
    overlay = tmp_path / "sub" / "overlay.yaml"
    overlay.write_text("extends: ../base.yaml\nmodel:\n  cnn: {hidden: 16}\ntrain:\n  epochs: 3\n  speeds: [0.8]\n")
    cfg = load_config(overlay)
    # mappings merge key by key, values and lists replace the base's; the path is relative to the overlay
    assert cfg.model.members == ("cnn", "lstm")
    assert cfg.model.section("cnn").channels == (8, 16) and cfg.model.section("cnn").pooling == "time"
    assert cfg.model.section("cnn").hidden == 16
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.speeds) == (3, 0.01, [0.8])
    assert "extends" not in read_config_file(overlay)
    # overrides still come last
    assert load_config(overlay, train={"epochs": 5}).train.epochs == 5


def test_extends_chains_and_mixes_json_and_yaml(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"features": {"n_mels": 32}, "train": {"epochs": 2}}))
    (tmp_path / "b.yaml").write_text("extends: a.json\ntrain: {epochs: 4, seed: 3}\n")
    (tmp_path / "c.yaml").write_text("extends: b.yaml\ntrain: {seed: 9}\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.features.n_mels, cfg.train.epochs, cfg.train.seed) == (32, 4, 9)


def test_an_extends_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\ntrain: {epochs: 2}\n")
    (tmp_path / "b.yaml").write_text("extends: c.yaml\n")
    (tmp_path / "c.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("extends: ./self.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "self.yaml")


def test_bad_extends(tmp_path):
    (tmp_path / "missing.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "number.yaml").write_text("extends: 3\n")
    with pytest.raises(ConfigError, match="extends"):
        load_config(tmp_path / "number.yaml")


# --- adaptation section and moved fields


def test_adaptation_section():
    cfg = Config()
    assert cfg.adaptation == AdaptationConfig() and cfg.adaptation.shrink == 10.0
    assert cfg.adaptation.single_companion is True
    cfg = Config.from_dict({"adaptation": {"shrink": 4, "single_companion": False}})
    assert cfg.adaptation.shrink == 4.0 and isinstance(cfg.adaptation.shrink, float)
    assert cfg.adaptation.single_companion is False
    assert cfg.to_dict()["adaptation"] == {"shrink": 4.0, "single_companion": False}


def test_legacy_feature_fields_move_to_adaptation(tmp_path):
    old = {"features": {"normalisation": "speaker", "speaker_shrink": 3, "single_companion": False}}
    cfg = Config.from_dict(old)
    assert cfg.adaptation.shrink == 3.0 and cfg.adaptation.single_companion is False
    assert cfg.features.normalisation == "speaker"
    assert old["features"]["speaker_shrink"] == 3  # the caller's mapping is not changed
    assert "speaker_shrink" not in cfg.to_dict()["features"]
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # where both places are given, the new one wins
    both = Config.from_dict({"features": {"speaker_shrink": 3}, "adaptation": {"shrink": 7}})
    assert both.adaptation.shrink == 7.0
    # a file in the old shape loads too
    p = tmp_path / "old.yaml"
    p.write_text("features:\n  normalisation: speaker\n  speaker_shrink: 5\n")
    assert load_config(p).adaptation.shrink == 5.0
    with pytest.raises(ConfigError, match="adaptation.shrink"):
        Config.from_dict({"features": {"speaker_shrink": -2}})


def test_data_section_and_speaker_text_split(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text("data:\n  labels: {Calm: neutral, joy: happiness}\nsplit: {kind: speaker+text, text_column: prompt}\n")
    cfg = load_config(p)
    assert cfg.data.labels == {"calm": "neutral", "joy": "happiness"}  # lower case, as the readers write labels
    assert (cfg.split.kind, cfg.split.text_column) == ("speaker+text", "prompt")
    assert Config().data.labels == {} and Config().split.text_column == "auto"
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.to_dict()["data"] == {"labels": {"calm": "neutral", "joy": "happiness"}}
