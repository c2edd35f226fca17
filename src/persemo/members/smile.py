"""Member kind ``smile``: a calibrated classifier on openSMILE functionals of the window (ComParE_2016 or
eGeMAPSv02; the ``opensmile`` extra).

Training uses each utterance's whole-clip functionals (cached by file content, shared with the peer
benchmark), while evaluation and inference compute them on the model's window (the centre or each 4-s
window): identical for clips of at most one window, a longer context otherwise. The classifier,
calibration, noisy and speed copies and speaker normalisation are ``VectorMember``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..prepare import Item
from ..heads import DEFAULT_KIND
from ..smile import FEATURE_SETS, cache_key, functionals_from_waves, item_functionals, speed_functionals
from . import register
from .base import Batch, VectorMember, check_vector_settings

try:  # the optional extra: without it, the member kind is known but cannot be built
    import opensmile  # noqa: F401
except ImportError as exc:  # pragma: no cover - CI installs the extra
    raise ImportError("the smile member needs the opensmile package: pip install 'persemo[opensmile]'",
                      name="opensmile") from exc


@dataclass(frozen=True)
class SmileSettings:
    feature_set: str = field(
        default="ComParE_2016",
        metadata={"help": "openSMILE functionals: ComParE_2016 (6373) or eGeMAPSv02 (88)"})
    kind: str = field(
        default=DEFAULT_KIND,
        metadata={"help": "the classifier: logreg (multinomial logistic regression), svm (RBF) or mlp (one "
                          "hidden layer); each calibrated on inner cross-validation"})
    noise_copies: int = field(
        default=1,
        metadata={"help": "noisy copies of each training utterance it also learns from (white noise at an SNR "
                          "drawn from train.noise_snr_db); 0 = clean only, which collapsed to chance at 10 dB "
                          "SNR on EmoDB"})
    noise_kinds: list[str] = field(
        default_factory=lambda: ["white"],
        metadata={"help": "the noise of the noisy copies, copy i taking kind i modulo the list: white (Gaussian) or "
                          "babble (the sum of four other training speakers' clips)"})
    quantiles: int = field(
        default=0,
        metadata={"help": "0 = off; n >= 2: each functional is first Gaussianised through n of its training "
                          "quantiles (monotone, label-free; kept in the model), then standardised"})
    calibration: str = field(
        default="temperature",
        metadata={"help": "how the classifier's scores become probabilities: temperature (one temperature on the "
                          "fair inner held-out rows; never changes its answer) or matrix (the full Platt map used "
                          "before issue 22, which overruled the classifier on speaker-confounded data)"})
    speeds: list[float] = field(
        default_factory=list,
        metadata={"help": "speed-perturbed copies of each training utterance it also learns from, one per "
                          "factor (f plays f times faster); [] = none, [0.9, 1.1] = Kaldi's recipe"})

    def __post_init__(self) -> None:
        if self.feature_set not in FEATURE_SETS:
            raise ConfigError(f"model.smile.feature_set must be one of {', '.join(FEATURE_SETS)}, "
                              f"not {self.feature_set!r}")
        check_vector_settings("smile", self)


@register
class SmileFunctionals(VectorMember):
    """openSMILE functionals of each window -> ``VectorMember``'s calibrated classifier."""

    kind = "smile"
    Settings = SmileSettings
    threads = 2  # openSMILE workers for a batch of windows (it releases the GIL)

    @property
    def stats_signature(self) -> str:
        return self.settings.feature_set

    def clip_vectors(self, waves: Sequence[np.ndarray], memo: dict | None = None) -> np.ndarray:
        return functionals_from_waves(list(waves), self.settings.feature_set, self.threads, memo)

    def item_vectors(self, items: Sequence[Item], cache_dir: Path | None = None) -> np.ndarray:
        return item_functionals(items, self.settings.feature_set, cache_dir)

    def vectors_key(self) -> dict:
        return cache_key(self.settings.feature_set)

    def speed_vectors(self, items: Sequence[Item], factor: float, cache_dir: Path | None = None) -> np.ndarray:
        return speed_functionals(items, factor, self.settings.feature_set, cache_dir)

    def probabilities(self, batch: Batch) -> np.ndarray:
        if self.head is None:
            raise RuntimeError(f"{self.kind} member is not fitted")
        X = np.asarray(self.clip_vectors(batch.rows(), batch.memo), np.float64)
        return self.head.predict_proba(self.normalise(X, batch))
