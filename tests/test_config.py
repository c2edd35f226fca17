"""Config: defaults, JSON/YAML files, overrides, and errors that name the offending field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from persemo.config import Config, ConfigError, FeatureConfig, ModelConfig, SplitConfig, TrainConfig, load_config
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
    for section in (FeatureConfig, ModelConfig, TrainConfig, SplitConfig):
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
    ({"split": {"kind": "gender"}}, "kind"),
    ({"split": {"val_fraction": 0.6, "test_fraction": 0.5}}, "fraction"),
    ({"split": {"val_fraction": -0.1}}, "val_fraction"),
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
    cfg = Config().replace(model={"cnn_channels": (16, 32)}, train={"noise_snr_db": (0.0, 10.0)})
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


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


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
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
