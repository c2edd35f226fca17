"""Speaker statistics: each speaker's own feature moments, from their unlabelled audio.

Speaker normalisation standardises a speaker's features by that speaker's own mean and std. The front
end's statistics are per-band moments of the log-mel and MFCC frames (``features.STAT_KEYS``); a member
with one vector per clip (``members.base.VectorMember``) adds the mean and std of its vectors under its
own keys. Labels are never read, except to pick enrolment recordings (``features.enrolment``).

In training, a clip that is perturbed (played faster, or with noise) is standardised by the statistics
of its speaker's clips perturbed the same way: a ``Voice`` is a speaker under a ``Perturbation``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .audio import add_noise, speed_perturb
from .features import STAT_KEYS, Spectra
from .prepare import Item


@dataclass(frozen=True)
class Perturbation:
    """How a training clip is altered: played ``speed`` times faster, then white noise at ``snr_db``
    (None: no noise). ``Perturbation()`` is the clip as recorded."""

    speed: float = 1.0
    snr_db: float | None = None

    def __str__(self) -> str:
        parts = ([f"speed {self.speed:g}"] if self.speed != 1.0 else []) + (
            [f"{self.snr_db:g} dB"] if self.snr_db is not None else [])
        return ", ".join(parts) or "clean"

    def apply(self, wave: np.ndarray, rng=None, noise: np.ndarray | None = None) -> np.ndarray:
        """``wave`` altered: speed first, then white noise at ``snr_db`` (``noise``: the unit Gaussian to
        scale, else drawn from ``rng``, a fresh generator when None). The one place training adds noise."""
        if self.speed != 1.0:
            wave = speed_perturb(wave, self.speed)
        if self.snr_db is not None:
            if noise is None and rng is None:
                rng = np.random.default_rng()
            wave = add_noise(wave, self.snr_db, rng, noise)
        return wave


CLEAN = Perturbation()


@dataclass(frozen=True)
class Voice:
    """A speaker as heard under a perturbation: the key of training statistics."""

    speaker: str
    perturbation: Perturbation = CLEAN


StatsBook = dict  # Voice -> {key: (D,) array}


def vector_stats(X: np.ndarray, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over rows of (N, D) per-clip vectors; a constant column gets std 1."""
    X = np.asarray(X, np.float64)
    mean = X.mean(0)
    std = X.std(0)
    return mean, np.where(std > eps, std, 1.0)


def remove_level(mfcc: np.ndarray) -> np.ndarray:
    """(D, T) MFCCs with coefficient 0's own mean removed: what ``features.mfcc_utterance_scope: level``
    standardises with the training statistics (``features.Normaliser``)."""
    out = np.array(mfcc, copy=True)
    out[0] -= out[0].mean()
    return out


def feature_statistics(items: Sequence[Item], mfcc_level: bool = False) -> dict[str, np.ndarray]:
    """Per-feature mean and std over every frame of ``items`` (un-normalised, full-length features; with
    ``mfcc_level``, of the MFCCs with each utterance's level removed, ``remove_level``)."""
    lm = np.concatenate([it.logmel for it in items], axis=1)
    mf = np.concatenate([remove_level(it.mfcc) if mfcc_level else it.mfcc for it in items], axis=1)
    return {"logmel_mean": lm.mean(1), "logmel_std": lm.std(1) + 1e-5,
            "mfcc_mean": mf.mean(1), "mfcc_std": mf.std(1) + 1e-5}


def enrolment_rows(items: Sequence[Item], enrolment: str | None = None) -> dict[str, list[int]]:
    """Each speaker's item indices that their statistics are computed from: all of them (``enrolment``
    None; labels are never read), or those labelled ``enrolment`` (e.g. neutral: the calm recordings a
    user enrols with), falling back to all of a speaker's utterances when they have none of that label.
    """
    by_spk: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_spk.setdefault(it.utt.speaker, []).append(i)
    if enrolment is None:
        return by_spk
    return {s: [i for i in idx if items[i].utt.emotion == enrolment] or idx for s, idx in by_spk.items()}


def shrink(stats: dict[str, np.ndarray], prior: dict[str, np.ndarray], n: float, k: float) -> dict[str, np.ndarray]:
    """Move ``stats`` toward ``prior`` by weight n / (n + k): little audio -> mostly the prior.

    k = 0 keeps ``stats`` unchanged. Standard deviations are combined in the log domain; keys the
    prior lacks are kept as they are.
    """
    if k <= 0:
        return dict(stats)
    a = n / (n + k)
    out = dict(stats)
    for key in [key for key in stats if key in prior]:
        if key.endswith("_std"):
            out[key] = np.exp(a * np.log(stats[key]) + (1 - a) * np.log(prior[key])).astype(np.float32)
        else:
            out[key] = (a * stats[key] + (1 - a) * prior[key]).astype(np.float32)
    return out


def speaker_statistics(items: Sequence[Item], model=None, cache_dir=None, shrink_k: float = 0.0,
                       enrolment: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Each speaker's own statistics over all their utterances (or those labelled ``enrolment``).

    With a ``model`` (an ``ensemble.Ensemble``), each of its members with statistics of their own
    (``stat_keys``) adds the mean and std of the speaker's per-clip vectors, and with ``shrink_k`` > 0
    every speaker's statistics are moved toward the model's training statistics by n / (n + shrink_k),
    n = the utterances they rest on, as predict and the service do.
    """
    by_spk = enrolment_rows(items, enrolment)
    out = {s: feature_statistics([items[i] for i in idx]) for s, idx in by_spk.items()}
    if model is not None:
        for member in model.all_members():
            keys = member.stat_keys
            if not keys:
                continue
            X = np.asarray(member.item_vectors(items, cache_dir), np.float64)
            for s, idx in by_spk.items():
                mean, std = vector_stats(X[idx])
                out[s].update({keys[0]: mean.astype(np.float32), keys[1]: std.astype(np.float32)})
        if shrink_k > 0:
            prior = model.global_stats()
            out = {s: shrink(st, prior, len(by_spk[s]), shrink_k) for s, st in out.items()}
    return out


def heard_items(items: Sequence[Item], waves: Iterable[np.ndarray], features_cfg) -> list[Item]:
    """``items`` with their waves replaced by ``waves`` (noisy, faster, cropped) and their log-mel and MFCC
    computed from those: the items as a model hears them, for speaker statistics of that audio."""
    spectra = Spectra(features_cfg).eval()
    out = []
    for it, w in zip(items, waves, strict=True):
        with torch.inference_mode():
            lm, mf, _ = spectra(torch.from_numpy(np.ascontiguousarray(w, np.float32))[None])
        out.append(Item(it.utt, w, lm[0].numpy(), mf[0].numpy()))
    return out


def noise_levels(snr_db: tuple[float, float], step: float = 2.5) -> list[float]:
    """The SNRs (dB) a noisy training clip is drawn from with heard statistics (``train.noise_stats``):
    the range's ends and every ``step`` between them."""
    lo, hi = snr_db
    levels = [lo + i * step for i in range(int(np.floor((hi - lo) / step + 1e-9)) + 1)]
    return levels + [hi] if hi - levels[-1] > 1e-6 else levels


def played_at(items: Sequence[Item], factor: float, features_cfg) -> list[Item]:
    """``items`` played ``factor`` times faster (``audio.speed_perturb``), their features recomputed."""
    return list(items) if factor == 1.0 else heard_items(
        items, [Perturbation(factor).apply(it.wave) for it in items], features_cfg)


def voice_statistics(items: Sequence[Item], perturbations: Sequence[Perturbation], features_cfg,
                     enrolment: str | None = None, seed: int = 0) -> StatsBook:
    """Each speaker's front-end statistics under each perturbation, from their clips altered so: for the
    perturbed training clips of a speaker-normalised model (``train.speeds``, ``train.noise_stats: heard``).
    Noise is drawn from one generator seeded by ``seed``, speeds in the order given."""
    rng = np.random.default_rng(seed)
    out: StatsBook = {}
    for speed in dict.fromkeys(p.speed for p in perturbations):
        base = played_at(items, speed, features_cfg)
        for p in (p for p in perturbations if p.speed == speed):
            heard = base if p.snr_db is None else heard_items(
                base, [Perturbation(snr_db=p.snr_db).apply(it.wave, rng) for it in base], features_cfg)
            for s, st in speaker_statistics(heard, enrolment=enrolment).items():
                out[Voice(s, p)] = st
    return out


def training_statistics(cfg, train: Sequence[Item], val: Sequence[Item]) -> StatsBook:
    """Every training and validation voice's front-end statistics for a speaker-normalised model: clean
    speakers, and the speeds and noise levels its torch training draws from (``train.speeds``, heard noise)."""
    enrol = cfg.features.enrolment
    book: StatsBook = {Voice(s): st for part in (train, val)
                       for s, st in speaker_statistics(part, enrolment=enrol).items()}
    perts = []
    for f in (1.0, *(float(f) for f in cfg.train.speeds)):  # noise drawn in this order, as measured before
        perts += [Perturbation(f)] if f != 1.0 else []
        if heard_noise(cfg):
            perts += [Perturbation(f, snr) for snr in noise_levels(cfg.train.noise_snr_db)]
    if perts:
        book.update(voice_statistics(train, perts, cfg.features, enrol, cfg.train.seed))
    return book


def heard_noise(cfg) -> bool:
    """Whether a noisy training clip of the torch members gets its speaker's statistics of that noisy audio
    (``train.noise_stats: heard`` in speaker mode)."""
    return cfg.features.normalisation == "speaker" and cfg.train.noise_stats == "heard" and cfg.train.noise_prob > 0


__all__ = ["CLEAN", "STAT_KEYS", "Perturbation", "StatsBook", "Voice", "enrolment_rows", "feature_statistics",
           "heard_items", "heard_noise", "noise_levels", "played_at", "shrink", "speaker_statistics",
           "training_statistics", "vector_stats", "voice_statistics"]
