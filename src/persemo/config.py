"""Typed, frozen configuration: one dataclass per concern, written into every model artifact.

Defaults follow the described system (64 log-mel bands, 40 MFCCs, 126 frames of hop 512 at 16 kHz,
about 4 s). A JSON or YAML file, or keyword overrides, replace defaults; nothing reads global state.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from . import members as registry
from .corpora.labels import check_label_map
from .errors import ConfigError, MissingExtra


def check_speeds(name: str, speeds) -> None:
    if not (isinstance(speeds, (list, tuple)) and len(speeds) <= 8 and all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0.5 <= f <= 2.0 and f != 1.0
            for f in speeds)) or len(set(speeds)) != len(speeds):
        raise ConfigError(f"{name} must be a list of up to 8 distinct speed factors in [0.5, 2], none of them 1")


# upper bounds of the sizes a model is built from: a tampered or mistyped config fails with a line, not
# with an attempt to allocate gigabytes
FEATURE_BOUNDS = {"sample_rate": 192_000, "n_fft": 16_384, "hop_length": 16_384, "n_mels": 512, "n_mfcc": 256,
                  "mfcc_n_mels": 512, "frames": 20_000}
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = field(default=16000, metadata={"help": "audio is resampled to this rate (Hz)"})
    n_fft: int = field(default=1024, metadata={"help": "FFT size in samples (64 ms at 16 kHz)"})
    hop_length: int = field(default=512, metadata={"help": "frame hop in samples (32 ms at 16 kHz)"})
    n_mels: int = field(default=64, metadata={"help": "log-mel bands for the CNN"})
    f_min: float = field(default=0.0, metadata={"help": "lowest mel frequency (Hz)"})
    f_max: float = field(default=8000.0, metadata={"help": "highest mel frequency (Hz)"})
    n_mfcc: int = field(default=40, metadata={"help": "MFCC coefficients for the BiLSTM"})
    mfcc_n_mels: int = field(default=128, metadata={"help": "mel bands under the MFCC (librosa's default)"})
    mfcc_top_db: float | None = field(default=80.0, metadata={"help": "MFCC's dB floor below the peak (librosa)"})
    mfcc_deltas: bool = field(default=False, metadata={"help": "append delta and delta-delta MFCCs"})
    frames: int = field(default=126, metadata={"help": "fixed number of frames (126 x 512 / 16 kHz = 4.03 s)"})
    crop: str = field(default="centre", metadata={"help": "where to cut a long utterance: centre or start"})
    normalisation: str = field(
        default="utterance",
        metadata={"help": "utterance: each utterance by its own statistics; global: training-split "
                          "statistics saved with the model; speaker: each speaker by their own"},
    )
    logmel_utterance_scope: str = field(
        default="whole",
        metadata={"help": "utterance normalisation of the log-mel: feature (each band by its own mean and std, "
                          "which removes the average spectral shape) or whole (one mean and std over the "
                          "spectrogram, which keeps it; measured better on EmoDB: CNN UAR 53.3 vs 44.6); MFCCs "
                          "are always per coefficient"})
    mfcc_utterance_scope: str = field(
        default="feature",
        metadata={"help": "utterance normalisation of the MFCCs: feature (each coefficient by its own per-utterance "
                          "mean and std, which removes the utterance's average spectral envelope and dynamics) or "
                          "level (only the loudness removed: coefficient 0 minus its per-utterance mean, then every "
                          "coefficient standardised by the training split's statistics saved with the model; "
                          "gain-invariant, keeps envelope and dynamics)"})
    amin: float = field(default=1e-10, metadata={"help": "power floor before the logarithm"})
    enrolment: str | None = field(
        default=None,
        metadata={"help": "speaker normalisation from enrolment: an emotion label (e.g. neutral). Each training "
                          "speaker's statistics come from their utterances of this emotion only (a speaker "
                          "with none: from all of theirs), and so do the test speakers' in evaluation; a user "
                          "adapts with `persemo adapt` on recordings of that kind (calm speech). null: from all "
                          "of the speaker's utterances, no labels"})

    def __post_init__(self) -> None:
        if self.enrolment is not None and (not isinstance(self.enrolment, str) or not self.enrolment.strip()):
            raise ConfigError("features.enrolment must be an emotion label (e.g. neutral) or null")
        if self.enrolment is not None and self.normalisation != "speaker":
            raise ConfigError("features.enrolment needs features.normalisation: speaker")
        if self.logmel_utterance_scope not in ("feature", "whole"):
            raise ConfigError("features.logmel_utterance_scope must be 'feature' or 'whole', "
                              f"not {self.logmel_utterance_scope!r}")
        if self.mfcc_utterance_scope not in ("feature", "level"):
            raise ConfigError("features.mfcc_utterance_scope must be 'feature' or 'level', "
                              f"not {self.mfcc_utterance_scope!r}")
        if self.crop not in ("centre", "start"):
            raise ConfigError(f"features.crop must be 'centre' or 'start', not {self.crop!r}")
        if self.normalisation not in ("utterance", "global", "speaker"):
            raise ConfigError(
                f"features.normalisation must be 'utterance', 'global' or 'speaker', not {self.normalisation!r}")
        for name, top in FEATURE_BOUNDS.items():
            if not 0 < int(getattr(self, name)) <= top:
                raise ConfigError(f"features.{name} must be from 1 to {top}")
        if self.hop_length > self.n_fft:
            raise ConfigError("features.hop_length must not exceed features.n_fft")
        if self.n_mfcc > self.mfcc_n_mels:
            raise ConfigError("features.n_mfcc must not exceed features.mfcc_n_mels")

    @property
    def mfcc_dim(self) -> int:
        return self.n_mfcc * (3 if self.mfcc_deltas else 1)

    def extraction_key(self) -> dict[str, Any]:
        """The fields that change the cached (un-normalised, full-length) features."""
        keep = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max", "n_mfcc", "mfcc_n_mels",
                "mfcc_top_db", "mfcc_deltas", "amin")
        return {k: getattr(self, k) for k in keep}


@dataclass(frozen=True)
class ModelConfig:
    members: tuple[str, ...] = field(
        default=("cnn", "lstm"),
        metadata={"help": "ensemble members, in vote order, by kind: cnn (log-mel CNN), lstm (MFCC BiLSTM), smile "
                          "(a classifier on openSMILE functionals; the opensmile extra), whisper (a pretrained "
                          "Whisper encoder's embeddings; the encoder extra). Each kind's settings are its own "
                          "section, e.g. model: {members: [cnn, smile], cnn: {pooling: time}}"})
    temperatures: tuple[float, ...] = field(
        default=(),
        metadata={"help": "one softmax temperature per member of `members`, in its order (empty = 1 each): a "
                          "member's probabilities are softmax(logits / T) before the vote, T > 1 softening an "
                          "overconfident member; fitted by `persemo train --folds K` (calibration.json) or "
                          "by `calibration: validation`"})
    weights: tuple[float, ...] = field(
        default=(),
        metadata={"help": "fixed soft-vote weights, one per member of `members` (empty: chosen on the "
                          "validation split, equal without one); `persemo train --folds K` writes weights chosen "
                          "on the out-of-fold predictions to calibration.json"})
    calibration: str = field(
        default="none",
        metadata={"help": "none (use `temperatures`); validation: fit each member's temperature on the "
                          "validation split (least log-loss), then choose the vote weights on it; inner: the same "
                          "on the members' own inner cross-validation predictions for the training speakers (no "
                          "validation split needed; members with an inner CV only, e.g. smile and whisper)"})
    sections: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "each member kind's settings (its `Settings` dataclass), by kind; written as "
                          "model.<kind> in a config file"})

    def __post_init__(self) -> None:
        if not self.members or len(set(self.members)) != len(self.members) or not all(
                isinstance(m, str) for m in self.members):
            raise ConfigError(f"model.members must be a non-empty list of member kinds without repeats "
                              f"({', '.join(registry.known())}); got {list(self.members)}")
        sections = dict(self.sections)
        for kind in self.members:
            cls = _member_class(kind)
            if kind not in sections:
                sections[kind] = cls.Settings()
        for kind, settings in sections.items():
            cls = _member_class(kind)
            if not isinstance(settings, cls.Settings):
                raise ConfigError(f"model.{kind} must be {cls.__name__}'s settings")
        object.__setattr__(self, "sections", sections)
        if self.temperatures and (len(self.temperatures) != len(self.members) or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 100 for t in self.temperatures)):
            raise ConfigError(f"model.temperatures must give one number in (0, 100] per member of "
                              f"{list(self.members)} (or be empty); got {list(self.temperatures)}")
        if self.weights and (len(self.weights) != len(self.members) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w < float("inf") for w in self.weights)
                or sum(self.weights) <= 0):
            raise ConfigError(f"model.weights must give one non-negative number per member of {list(self.members)}, "
                              f"not all zero (or be empty); got {list(self.weights)}")
        if self.calibration not in ("none", "validation", "inner"):
            raise ConfigError(f"model.calibration must be 'none', 'validation' or 'inner', not {self.calibration!r}")

    def section(self, kind: str) -> Any:
        """The settings of member kind ``kind`` (its defaults when the config gives none)."""
        if kind not in self.sections:
            return _member_class(kind).Settings()
        return self.sections[kind]

    @property
    def member_temperatures(self) -> tuple[float, ...]:
        """``temperatures``, or 1 per member when it is empty."""
        return tuple(float(t) for t in self.temperatures) or (1.0,) * len(self.members)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"members": list(self.members), "temperatures": list(self.temperatures),
                               "weights": list(self.weights), "calibration": self.calibration}
        for kind, settings in self.sections.items():
            out[kind] = dataclasses.asdict(settings)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        own = {f.name for f in fields(cls)} - {"sections"}
        plain = {k: v for k, v in values.items() if k in own}
        sections: dict[str, dict] = {}
        unknown = []
        for key, value in values.items():
            if key in own:
                continue
            if key in registry.known() or _is_registered(key):
                if not isinstance(value, dict):
                    raise ConfigError(f"model.{key} must be a mapping of that member's settings")
                sections.setdefault(key, {}).update(value)
                continue
            # before member sections (persemo 0.1 configs and model.json files): model.<kind>_<field>; those
            # files listed every kind's fields, so the fields of a kind the model does not use are dropped
            kind, _, name = key.partition("_")
            if name and kind in registry.known():
                if kind in values.get("members", cls.members):
                    sections.setdefault(kind, {})[name] = value
                continue
            if isinstance(value, dict):  # a section: the settings of a member kind nobody registered
                raise ConfigError(f"model.{key}: unknown member kind {key!r} (known: {', '.join(registry.known())}); "
                                  f"a kind of your own must be registered (persemo.members.register) or declared "
                                  f"under the entry-point group {registry.ENTRY_POINTS!r}")
            unknown.append(key)
        if unknown:
            raise ConfigError(f"unknown field(s) in model: {', '.join(sorted(unknown))} (member kinds: "
                              f"{', '.join(registry.known())})")
        built = {kind: _build(_member_class(kind).Settings, vals, f"model.{kind}") for kind, vals in sections.items()}
        return _build(cls, plain, "model", sections=built)


def _member_class(kind: str) -> type:
    try:
        return registry.get(kind)
    except registry.UnknownMember as exc:
        raise ConfigError(f"model.members: {exc}") from None
    except ImportError as exc:  # an optional extra is missing
        raise MissingExtra(f"model.members: member kind {kind!r} needs a package that is not installed "
                          f"({exc}); see README, Configuration") from None


def _is_registered(kind: str) -> bool:
    try:
        registry.get(kind)
    except (registry.UnknownMember, ImportError):
        return False
    return True


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=60, metadata={"help": "maximum epochs"})
    batch_size: int = field(default=32, metadata={"help": "utterances per batch"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate"})
    weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay"})
    patience: int = field(default=15, metadata={"help": "early stopping patience in epochs"})
    monitor: str = field(default="uar", metadata={"help": "validation metric for early stopping: uar or macro_f1"})
    class_weights: bool = field(default=True, metadata={"help": "weight the loss by inverse class frequency"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing of the torch members "
                                                                   "(0 = none): softer, better-calibrated votes"})
    mixup: float = field(default=0.0, metadata={"help": "mixup for the torch members: each training batch's inputs "
                                                        "blended with a shuffled copy by a weight drawn from "
                                                        "Beta(mixup, mixup), the loss likewise; 0 = off"})
    noise_prob: float = field(default=0.5, metadata={"help": "probability of adding Gaussian noise to a training clip"})
    noise_snr_db: tuple[float, float] = field(default=(5.0, 30.0), metadata={"help": "range of injected noise SNR (dB)"})
    noise_stats: str = field(default="heard",
                             metadata={"help": "with normalisation speaker (ignored otherwise): the statistics a "
                                               "noisy training clip of the torch members is standardised by: heard "
                                               "(its speaker's clips with noise at the clip's SNR, drawn from a "
                                               "2.5 dB grid over noise_snr_db), as a speaker recorded in noise gets "
                                               "statistics from that noisy audio, or clean (its speaker's clean "
                                               "clips; the default before session 9)"})
    specaug_freq_masks: int = field(default=2, metadata={"help": "SpecAugment frequency masks (CNN only)"})
    specaug_freq_width: int = field(default=8, metadata={"help": "largest frequency mask, in mel bands"})
    specaug_time_masks: int = field(default=2, metadata={"help": "SpecAugment time masks (CNN only)"})
    specaug_time_width: int = field(default=16, metadata={"help": "largest time mask, in frames"})
    random_crop: bool = field(default=True, metadata={"help": "train on a random 126-frame window of long clips"})
    speeds: list[float] = field(default_factory=list,
                                metadata={"help": "speed perturbation for the torch members: each training clip "
                                                  "is played at a factor drawn uniformly from 1 and these (f "
                                                  "plays f times faster: tempo, pitch and formants x f); [] = off"})
    seed: int = field(default=0, metadata={"help": "seed for splits, initialisation and augmentation"})
    accelerator: str = field(default="cpu", metadata={"help": "lightning accelerator: cpu, gpu, auto"})
    devices: str = field(default="1", metadata={"help": "lightning devices: 1, 2, auto, ..."})
    strategy: str = field(default="auto", metadata={"help": "lightning strategy, e.g. ddp for several GPUs"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})

    def __post_init__(self) -> None:
        if self.monitor not in ("uar", "macro_f1"):
            raise ConfigError(f"train.monitor must be 'uar' or 'macro_f1', not {self.monitor!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("train.epochs and train.batch_size must be at least 1")
        if self.epochs > 100_000 or self.batch_size > 65_536:
            raise ConfigError("train.epochs must be at most 100000 and train.batch_size at most 65536")
        if self.accelerator not in ACCELERATORS:
            raise ConfigError(f"train.accelerator must be one of {', '.join(ACCELERATORS)}, not {self.accelerator!r}")
        if not 0 <= self.num_threads <= 1024:
            raise ConfigError("train.num_threads must be from 0 (torch's default) to 1024")
        check_speeds("train.speeds", self.speeds)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("train.label_smoothing must be in [0, 1)")
        if not 0.0 <= self.mixup <= 10.0:
            raise ConfigError("train.mixup must be in [0, 10] (the Beta distribution's parameter; 0 = off)")
        lo, hi = self.noise_snr_db
        if lo > hi:
            raise ConfigError("train.noise_snr_db must be (low, high) with low <= high")
        if self.noise_stats not in ("clean", "heard"):
            raise ConfigError(f"train.noise_stats must be 'clean' or 'heard', not {self.noise_stats!r}")


@dataclass(frozen=True)
class AdaptationConfig:
    """Speaker adaptation (models trained with ``features.normalisation: speaker``)."""

    shrink: float = field(
        default=10.0,
        metadata={"help": "speaker normalisation: a new speaker's statistics (evaluation, predict, adapt, the "
                          "service) are moved toward the model's training statistics by n / (n + k), n = the "
                          "speaker's utterances (windows of speech in a stream); 0 = none. Guards against a "
                          "speaker heard in one emotion only (see benchmarks/results/adaptation_emodb.md)"})
    single_companion: bool = field(
        default=True,
        metadata={"help": "with normalisation speaker: `persemo train` also trains the same ensemble with "
                          "per-utterance normalisation and saves it beside the model (single/); with speaker "
                          "statistics the two votes are averaged, without them the companion answers alone. "
                          "Costs a second training; keeps adaptation near the single-utterance result when a "
                          "speaker's audio misleads the statistics"})

    def __post_init__(self) -> None:
        if not (isinstance(self.shrink, (int, float)) and 0 <= self.shrink < float("inf")):
            raise ConfigError("adaptation.shrink must be a number >= 0")


SPLIT_KINDS = ("speaker", "random", "speaker+text")


@dataclass(frozen=True)
class SplitConfig:
    kind: str = field(default="speaker", metadata={"help": "speaker (independent), random (speaker-dependent), or "
                                                           "speaker+text (no speaker and no text on both sides; "
                                                           "utterances whose speaker and text fall on different "
                                                           "sides are left out of that split)"})
    val_fraction: float = field(default=0.15, metadata={"help": "share of speakers (or utterances) for validation; "
                                                                 "0 = none: every member trains the full epoch "
                                                                 "budget, keeps its last weights, equal votes"})
    test_fraction: float = field(default=0.15, metadata={"help": "share of speakers (or utterances) for test"})
    seed: int = field(default=0, metadata={"help": "split seed"})
    text_column: str = field(default="auto", metadata={"help": "speaker+text: the metadata column naming each "
                                                                "utterance's text; auto: text if the corpus has "
                                                                "it (EmoDB), else sentence (ASED)"})

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise ConfigError(f"split.kind must be one of {', '.join(SPLIT_KINDS)}, not {self.kind!r}")
        if not isinstance(self.text_column, str) or not self.text_column.strip():
            raise ConfigError("split.text_column must name a metadata column (or be auto)")
        if not (0 <= self.val_fraction < 1 and 0 < self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise ConfigError("split.val_fraction must be in [0, 1), split.test_fraction in (0, 1), and they "
                              "must sum below 1")


@dataclass(frozen=True)
class DataConfig:
    """How the corpus's labels are read."""

    labels: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "the user's label mapping FROM: TO, e.g. {calm: neutral}: merges or renames labels "
                          "before anything else sees them (the CLI's --labels replaces it). Without it labels "
                          "stay as the corpus writes them (the csv reader only normalises spellings: angry -> "
                          "anger); inspect and train say what was mapped"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", check_label_map(self.labels, "data.labels"))


MAX_CANDIDATES = 32
SELECTION_RULES = ("margin", "se")
# what `persemo train` uses without --config: the nested selection among the recommended candidates
RECOMMENDED = Path(__file__).resolve().parent / "configs" / "recommended.yaml"


@dataclass(frozen=True)
class SelectionConfig:
    """Nested selection (``persemo.selection``): the model is chosen among candidate configurations by
    speaker-grouped inner cross-validation on the training speakers only."""

    candidates: tuple = field(
        default=(),
        metadata={"help": "candidate configurations, each {name: NAME, model: {...}}: the model section laid over "
                          "this config's (members and their settings; temperatures, weights and calibration are "
                          "chosen on the inner CV). Empty = no selection, the model section is trained as it is. "
                          "Every member of a candidate needs an inner cross-validation (smile, whisper); a "
                          "candidate whose extra is not installed, or whose encoder cannot be loaded, is skipped "
                          "with a log line. List the simpler candidates first (see margin)"})
    margin: float = field(
        default=0.5,
        metadata={"help": "UAR points: the first-listed candidate within this margin of the best inner-CV score "
                          "wins (the vote of a team is tuned on the rows it is scored on, so a team's score is a "
                          "little optimistic; list simpler candidates first)"})

    rule: str = field(
        default="margin",
        metadata={"help": "how the inner scores choose: margin (the first-listed candidate within `margin` points "
                          "of the best mean inner UAR) or se (the first-listed candidate whose mean per-fold "
                          "deficit to the best is within one standard error of that deficit over the inner "
                          "folds of every partition)"})
    repeats: int = field(
        default=1,
        metadata={"help": "inner speaker partitions the candidates are scored on: the first chooses each "
                          "member's hyperparameters and calibration, each further one refits them as chosen on "
                          "another random speaker partition (one fit per fold) to score the candidates again; "
                          "their mean is the candidate's inner UAR"})

    def __post_init__(self) -> None:
        if not isinstance(self.candidates, (list, tuple)) or len(self.candidates) > MAX_CANDIDATES:
            raise ConfigError(f"selection.candidates must be a list of at most {MAX_CANDIDATES} candidates")
        names = []
        for i, c in enumerate(self.candidates):
            if not isinstance(c, dict) or set(c) - {"name", "model"} or not isinstance(c.get("model"), dict):
                raise ConfigError(f"selection.candidates[{i}] must be a mapping {{name: ..., model: {{...}}}}")
            name = c.get("name")
            if not isinstance(name, str) or not name or len(name) > 80:
                raise ConfigError(f"selection.candidates[{i}].name must be a short non-empty string")
            names.append(name)
        if len(set(names)) != len(names):
            raise ConfigError("selection.candidates: names must be unique")
        if not (isinstance(self.margin, (int, float)) and 0 <= self.margin <= 100):
            raise ConfigError("selection.margin must be a number of UAR points from 0 to 100")
        if self.rule not in SELECTION_RULES:
            raise ConfigError(f"selection.rule must be one of {', '.join(SELECTION_RULES)}, not {self.rule!r}")
        if not (isinstance(self.repeats, int) and not isinstance(self.repeats, bool) and 1 <= self.repeats <= 20):
            raise ConfigError("selection.repeats must be an integer from 1 to 20")


CORPUS_NAME_CHARS = "letters, digits, '_', '.' and '-'"


@dataclass(frozen=True)
class CorpusSource:
    """One corpus of a run on several corpora (a ``corpora:`` list entry in a config file)."""

    corpus: str = field(default="", metadata={"help": "its reader: shemo, emodb, ased or csv"})
    data: str = field(default="", metadata={"help": "its folder (shemo, emodb, ased) or manifest file (csv); a "
                                                    "relative path is taken from the working directory"})
    name: str = field(default="", metadata={"help": "what its utterance and speaker ids are prefixed with (emodb:03) "
                                                    "and its report rows named by; empty: the reader's name, or a csv "
                                                    "manifest's file stem. Unique within the list"})

    def __post_init__(self) -> None:
        for f in ("corpus", "data"):
            if not isinstance(getattr(self, f), str) or not getattr(self, f).strip():
                raise ConfigError(f"corpora: each entry needs {f}: a non-empty string")
        if not isinstance(self.name, str) or (self.name and not all(c.isalnum() or c in "_.-" for c in self.name)):
            raise ConfigError(f"corpora: name {self.name!r} must be made of {CORPUS_NAME_CHARS}")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    corpora: tuple[CorpusSource, ...] = field(
        default=(),
        metadata={"help": "train on several corpora at once: a list of {corpus, data, name} (`persemo train` "
                          "without --corpus/--data; those, when given, replace it). One emotion vocabulary (the "
                          "union), speaker ids kept apart per corpus, speaker-grouped folds within each corpus, "
                          "and report rows per corpus on that corpus's own emotions"})

    def __post_init__(self) -> None:
        if not isinstance(self.corpora, tuple) or not all(isinstance(c, CorpusSource) for c in self.corpora):
            raise ConfigError("corpora must be a list of {corpus, data, name} entries")
        if self.model.calibration == "validation" and self.split.val_fraction <= 0:
            raise ConfigError("model.calibration: validation needs a validation split (split.val_fraction > 0)")
        for name, cand in self.candidates():  # every candidate builds (or only lacks an optional extra)
            if isinstance(cand, MissingExtra):
                continue
            no_cv = [k for k in cand.model.members if not getattr(_member_class(k), "inner_cv", False)]
            if no_cv:
                raise ConfigError(f"selection.candidates[{name}]: {', '.join(no_cv)} has no inner cross-validation "
                                  f"to score it on the training speakers; candidates are made of members with one "
                                  f"(smile, whisper)")

    def candidates(self) -> list[tuple[str, "Config | MissingExtra"]]:
        """Each candidate of ``selection.candidates`` as (name, its whole config, without candidates of its
        own but with ``selection.repeats``, and with ``model.calibration: inner``), or (name, the
        ``MissingExtra`` error) when a member it names needs a package that is not installed."""
        out = []
        base = self.to_dict()
        base["selection"] = {"repeats": self.selection.repeats}  # the members score every inner partition
        for c in self.selection.candidates:
            model = merge({k: v for k, v in base["model"].items() if k not in ("members", "temperatures", "weights")},
                          c["model"])
            model.update(temperatures=[], weights=[], calibration="inner")
            model = {k: v for k, v in model.items()  # only the sections of its own members
                     if not isinstance(v, dict) or k in model.get("members", ())}
            try:
                out.append((c["name"], Config.from_dict({**base, "model": model})))
            except MissingExtra as exc:
                out.append((c["name"], exc))
            except ConfigError as exc:
                raise ConfigError(f"selection.candidates[{c['name']}]: {exc}") from None
        return out

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (self.model.to_dict() if f.name == "model" else
                         [dataclasses.asdict(c) for c in self.corpora] if f.name == "corpora" else
                         dataclasses.asdict(getattr(self, f.name)))
                for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        if not isinstance(data, dict):
            raise ConfigError("a config must be a mapping of sections (data, features, model, train, split, "
                              "adaptation, selection)")
        data = _upgrade(data)
        parts = {}
        for f in fields(cls):
            if f.name == "corpora":
                parts[f.name] = _corpora(data.get(f.name) or [])
                continue
            section = data.get(f.name, {})
            if not isinstance(section, dict):
                raise ConfigError(f"config section {f.name!r} must be a mapping")
            if f.name == "model":
                parts[f.name] = ModelConfig.from_dict(section)
            else:
                parts[f.name] = _build(f.default_factory, section, f.name)  # type: ignore[misc]
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        return cls(**parts)

    def replace(self, **sections: dict[str, Any]) -> "Config":
        """A copy with some fields of some sections replaced: ``cfg.replace(train={"epochs": 5})``."""
        merged = self.to_dict()
        for name, values in _upgrade(sections).items():  # a moved field given at its old place too
            if name not in merged:
                raise ConfigError(f"unknown config section {name!r}")
            if name == "corpora":  # a list: replaced as a whole
                merged[name] = values
                continue
            for key, value in values.items():  # a member's section merges field by field
                if isinstance(value, dict) and isinstance(merged[name].get(key), dict):
                    merged[name][key] = {**merged[name][key], **value}
                else:
                    merged[name][key] = value
        return Config.from_dict(merged)


def _corpora(entries: Any) -> tuple[CorpusSource, ...]:
    """The ``corpora:`` list of a config file as ``CorpusSource`` entries."""
    if not isinstance(entries, (list, tuple)):
        raise ConfigError("corpora must be a list of {corpus, data, name} entries")
    out = []
    for i, e in enumerate(entries):
        if isinstance(e, CorpusSource):
            out.append(e)
            continue
        if not isinstance(e, dict):
            raise ConfigError(f"corpora[{i}] must be a mapping {{corpus: ..., data: ..., name: ...}}")
        try:
            out.append(_build(CorpusSource, {k: str(v) if isinstance(v, Path) else v for k, v in e.items()},
                              f"corpora[{i}]"))
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("corpora:", f"corpora[{i}]:", 1)) from None
    return tuple(out)


# fields that moved to another section, by their old place: persemo 0.1 configs and model.json files load
MOVED = {("features", "speaker_shrink"): ("adaptation", "shrink"),
         ("features", "single_companion"): ("adaptation", "single_companion")}


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with moved fields (``MOVED``) in their new place; the new place wins where both are given."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for (sec, name), (new_sec, new_name) in MOVED.items():
        if isinstance(out.get(sec), dict) and name in out[sec]:
            value = out[sec].pop(name)
            target = out.setdefault(new_sec, {})
            if isinstance(target, dict):
                target.setdefault(new_name, value)
    return out


def _build(factory: Any, values: dict[str, Any], section: str, **given: Any) -> Any:
    known = {f.name: f for f in fields(factory)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"unknown field(s) in {section}: {', '.join(sorted(unknown))}")
    kwargs = {}
    for name, value in values.items():
        default = known[name].default
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{section}.{name} must be true or false, not {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"{section}.{name} must be a number, not {value!r}")
            if isinstance(default, int) and not float(value).is_integer():
                raise ConfigError(f"{section}.{name} must be a whole number, not {value!r}")
            value = type(default)(value)
        kwargs[name] = value
    return factory(**kwargs, **given)


def load_config(path: str | Path | None = None, **sections: dict[str, Any]) -> Config:
    """Defaults, then the JSON/YAML file at ``path`` (and the files it ``extends``), then ``sections``."""
    data = read_config_file(path) if path is not None else {}
    cfg = Config.from_dict(data)
    return cfg.replace(**sections) if sections else cfg


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's mapping. A file may name another with ``extends: PATH`` (relative to itself): that
    file's mapping is read first and this one laid over it (``merge``), so an overlay holds only what differs."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    if p.resolve() in _seen:
        raise ConfigError(f"{p}: extends itself through {' -> '.join(str(s) for s in _seen)}")
    text = p.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) if p.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is one clear error
        raise ConfigError(f"{p}: cannot parse config: {str(exc).splitlines()[0]}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config must be a mapping of sections")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{p}: extends must name a config file")
    return merge(read_config_file(p.parent / base, (*_seen, p.resolve())), data)


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` on ``base``, mapping by mapping (a list or value in ``overlay`` replaces the base's)."""
    out = dict(base)
    for k, v in overlay.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
