"""Training: each member by its own Lightning run, then the ensemble weights on the validation split.

Data stays in memory as 16 kHz waveforms (prepared and cached by ``prepare``). Each training step
takes a random 4-s window of each clip, injects Gaussian noise at a random SNR, computes features in
the batch with the model's own ``FeaturePipeline`` (so training, evaluation, the service and an
exported model share one front end), applies SpecAugment for the CNN, and minimises class-weighted
cross-entropy with AdamW under a cosine learning rate. Early stopping watches validation UAR (or
macro-F1); the best epoch's weights are kept in memory (no checkpoint pickles).

A smile member (``model.members`` listing "smile") is fitted after the torch members on openSMILE
functionals of the training utterances (``smile.SmileMember``: inner grouped cross-validation and
calibration on the training split only). The ensemble weights over all members are then chosen on the
validation split, where every member sees the same window (the centre 4 s).
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import time
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .audio import add_noise, speed_perturb
from .config import Config, ConfigError
from .corpora.base import atomic_write_text
from .features import samples_for_frames
from .prepare import Item

STAT_KEYS = ("logmel_mean", "logmel_std", "mfcc_mean", "mfcc_std")


def window_samples(cfg: Config) -> int:
    """Samples in one model window: 126 frames of hop 512 -> 64,000 samples (4 s at 16 kHz)."""
    return samples_for_frames(cfg.features.frames, cfg.features.hop_length)


def crop_wave(wave: np.ndarray, n: int, mode: str = "centre") -> np.ndarray:
    """The evaluation window of a clip: the centre (or start) ``n`` samples; shorter clips unchanged."""
    if len(wave) <= n:
        return wave
    start = (len(wave) - n) // 2 if mode == "centre" else 0
    return wave[start: start + n]


def remove_level(mfcc: np.ndarray) -> np.ndarray:
    """(D, T) MFCCs with coefficient 0's own mean removed: what ``features.mfcc_utterance_scope: level``
    standardises with the training statistics (``features.Normaliser``)."""
    out = np.array(mfcc, copy=True)
    out[0] -= out[0].mean()
    return out


def feature_statistics(items: list[Item], mfcc_level: bool = False) -> dict[str, np.ndarray]:
    """Per-feature mean and std over every frame of ``items`` (un-normalised, full-length features; with
    ``mfcc_level``, of the MFCCs with each utterance's level removed, ``remove_level``)."""
    lm = np.concatenate([it.logmel for it in items], axis=1)
    mf = np.concatenate([remove_level(it.mfcc) if mfcc_level else it.mfcc for it in items], axis=1)
    return {"logmel_mean": lm.mean(1), "logmel_std": lm.std(1) + 1e-5,
            "mfcc_mean": mf.mean(1), "mfcc_std": mf.std(1) + 1e-5}


def enrolment_rows(items: list[Item], enrolment: str | None = None) -> dict[str, list[int]]:
    """Each speaker's item indices that their statistics are computed from: all of them (``enrolment``
    None; labels are never read), or those labelled ``enrolment`` (e.g. neutral: the calm recordings a
    user enrols with), falling back to all of a speaker's utterances when they have none of that label.
    """
    by_spk: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_spk.setdefault(it.utt.speaker, []).append(i)
    if enrolment is None:
        return by_spk
    out = {}
    for s, idx in by_spk.items():
        chosen = [i for i in idx if items[i].utt.emotion == enrolment]
        out[s] = chosen or idx
    return out


def speaker_statistics(items: list[Item], model=None, cache_dir=None, shrink_k: float = 0.0,
                       enrolment: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Each speaker's own feature statistics over all their utterances; labels are never read.

    With ``enrolment`` (an emotion label, ``features.enrolment``), over their utterances of that emotion
    only (``enrolment_rows``): the labels then pick the enrolment recordings and nothing else.
    With a ``model`` whose smile member is speaker-normalised, each speaker also gets ``smile_mean`` and
    ``smile_std``: the statistics of their utterances' whole-clip openSMILE functionals (cached under
    ``cache_dir`` by file content, see ``smile.item_functionals``). With a ``model`` and ``shrink_k`` > 0,
    each speaker's statistics are moved toward the model's training statistics by n / (n + shrink_k),
    n = the utterances they rest on (``adaptation.shrink``), as predict and the service do.
    """
    by_spk = enrolment_rows(items, enrolment)
    out = {s: feature_statistics([items[i] for i in idx]) for s, idx in by_spk.items()}
    if model is not None and getattr(model, "smile", None) is not None and model.smile_norm is not None:
        from .smile import functional_stats, item_functionals

        X = item_functionals(items, model.smile.feature_set, cache_dir)
        for s, idx in by_spk.items():
            mean, std = functional_stats(X[idx])
            out[s].update(smile_mean=mean.astype(np.float32), smile_std=std.astype(np.float32))
    if model is not None and shrink_k > 0:
        from .adaptation import global_stats, shrink

        prior = global_stats(model)
        out = {s: shrink(st, prior, len(by_spk[s]), shrink_k) for s, st in out.items()}
    return out


def fold_statistics(cfg: Config, train: list[Item], val: list[Item], test: list[Item], model=None,
                    cache_dir=None, shrink_k: float = 0.0) -> dict[str, dict[str, np.ndarray]]:
    """Every speaker's statistics in one fold of a speaker-normalised evaluation, from the utterances
    ``features.enrolment`` names (all, without it): training and validation speakers as in training,
    test speakers with the ``model``'s smile statistics too and shrunk by ``shrink_k``."""
    enrol = cfg.features.enrolment
    return {**speaker_statistics(train, enrolment=enrol), **speaker_statistics(val, enrolment=enrol),
            **speaker_statistics(test, model, cache_dir, shrink_k, enrol)}


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights N / (C * n_c), normalised; absent classes get weight 0."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32)


def speed_key(speaker: str, factor: float) -> str:
    """The statistics key of a speaker's clips played ``factor`` times faster: a voice of its own."""
    return speaker if factor == 1.0 else f"{speaker}@speed{factor:g}"


def heard_items(items: list[Item], waves, features_cfg) -> list[Item]:
    """``items`` with their waves replaced by ``waves`` (noisy, faster, cropped) and their log-mel and MFCC
    computed from those: the items as a model hears them, for speaker statistics of that audio."""
    from .features import Spectra

    spectra = Spectra(features_cfg).eval()
    out = []
    for it, w in zip(items, waves, strict=True):
        with torch.inference_mode():
            lm, mf, _ = spectra(torch.from_numpy(np.ascontiguousarray(w, np.float32))[None])
        out.append(Item(it.utt, w, lm[0].numpy(), mf[0].numpy()))
    return out


def heard_noise(cfg: Config) -> bool:
    """Whether a noisy training clip of the torch members gets its speaker's statistics of that noisy audio
    (``train.noise_stats: heard`` in speaker mode; the noise is then added by ``WaveSet``)."""
    return cfg.features.normalisation == "speaker" and cfg.train.noise_stats == "heard" and cfg.train.noise_prob > 0


def noise_key(key: str, snr_db: float) -> str:
    """The statistics key of a speaker's (``key``'s) clips heard with white noise at ``snr_db``."""
    return f"{key}@snr{snr_db:g}"


def noise_levels(snr_db: tuple[float, float], step: float = 2.5) -> list[float]:
    """The SNRs (dB) a noisy training clip is drawn from with heard statistics (``train.noise_stats``):
    the range's ends and every ``step`` between them."""
    lo, hi = snr_db
    levels = [lo + i * step for i in range(int(np.floor((hi - lo) / step + 1e-9)) + 1)]
    return levels + [hi] if hi - levels[-1] > 1e-6 else levels


def _as_voice(items: list[Item], key) -> list[Item]:
    """``items`` with each speaker renamed ``key(speaker)``: a voice (a speed, a noise) of its own."""
    return [dc_replace(it, utt=dc_replace(it.utt, speaker=key(it.utt.speaker))) for it in items]


def played_at(items: list[Item], factor: float, features_cfg) -> list[Item]:
    """``items`` played ``factor`` times faster (``audio.speed_perturb``), their features recomputed."""
    return items if factor == 1.0 else heard_items(items, [speed_perturb(it.wave, factor) for it in items],
                                                   features_cfg)


def speed_statistics(items: list[Item], speeds, features_cfg, enrolment: str | None = None
                     ) -> dict[str, dict[str, np.ndarray]]:
    """Each speaker's statistics at each speed factor (keys ``speed_key``), from their clips played that
    much faster, for the speed-perturbed training clips of a speaker-normalised model (``train.speeds``)."""
    out = {}
    for f in speeds:
        fast = _as_voice(played_at(items, f, features_cfg), lambda s, f=f: speed_key(s, f))
        out.update(speaker_statistics(fast, enrolment=enrolment))
    return out


def noise_statistics(items: list[Item], levels, features_cfg, enrolment: str | None = None, speeds=(),
                     seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Each speaker's statistics with white noise at each SNR of ``levels`` (keys ``noise_key`` of
    ``speed_key``), from their clips with that noise (at each speed of 1 and ``speeds``): for the noisy
    training clips of a speaker-normalised model with heard statistics (``train.noise_stats``)."""
    rng = np.random.default_rng(seed)
    out = {}
    for f in (1.0, *speeds):
        base = played_at(items, f, features_cfg)
        for snr in levels:
            noisy = heard_items(base, [add_noise(it.wave, snr, rng) for it in base], features_cfg)
            noisy = _as_voice(noisy, lambda s, f=f, snr=snr: noise_key(speed_key(s, f), snr))
            out.update(speaker_statistics(noisy, enrolment=enrolment))
    return out


class WaveSet(torch.utils.data.Dataset):
    """Items -> (window of the waveform, its length, label index, speaker stats or empty).

    In training with ``speeds``, each clip is played at a factor drawn uniformly from 1 and ``speeds``
    (``audio.speed_perturb``), with the statistics of its speaker at that factor (``speed_key``).
    In training with ``noise`` (probability, SNR levels), a window gets white noise with that probability,
    at an SNR drawn from the levels, and the statistics of its speaker heard so (``noise_key``): the
    injection of ``train.noise_stats: heard``, done here so that the clip and its statistics agree."""

    def __init__(self, items: list[Item], label_index: dict[str, int], n: int, train: bool, crop: str,
                 stats: dict[str, dict[str, np.ndarray]] | None = None, speeds=(),
                 noise: tuple[float, list[float]] | None = None):
        self.items, self.label_index, self.n, self.train, self.crop, self.stats = items, label_index, n, train, crop, stats
        self.speeds = list(speeds) if train else []
        self.noise = noise if train else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        it = self.items[i]
        w = it.wave
        factor = 1.0
        if self.speeds:
            k = int(torch.randint(0, len(self.speeds) + 1, (1,)))
            if k:
                factor = self.speeds[k - 1]
                w = speed_perturb(w, factor)
        if len(w) > self.n:
            if self.train:
                start = int(torch.randint(0, len(w) - self.n + 1, (1,)))
                w = w[start: start + self.n]
            else:
                w = crop_wave(w, self.n, self.crop)
        key = speed_key(it.utt.speaker, factor)
        if self.noise is not None and float(torch.rand(())) < self.noise[0]:
            snr = self.noise[1][int(torch.randint(0, len(self.noise[1]), (1,)))]
            w = add_noise(w, snr, None, torch.randn(len(w)).numpy())
            key = noise_key(key, snr)
        st = self.stats[key] if self.stats is not None else None
        return torch.from_numpy(np.ascontiguousarray(w)), self.label_index[it.utt.emotion], st


def collate(batch):
    waves, labels, stats = zip(*batch)
    lengths = torch.tensor([len(w) for w in waves])
    out = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        out[i, : len(w)] = w
    st = None
    if stats[0] is not None:
        st = {k: torch.from_numpy(np.stack([s[k] for s in stats])).float() for k in STAT_KEYS}
    return out, lengths, torch.tensor(labels), st


def _lit_module():
    import lightning as L

    from .augment import inject_noise, spec_augment
    from .evaluation import compute_metrics
    from .models.ensemble import member_input

    class LitMember(L.LightningModule):
        """One member with the shared front end; the front end's statistics are fixed buffers."""

        def __init__(self, name: str, features: nn.Module, member: nn.Module, cfg: Config, weights: torch.Tensor,
                     labels: list[str]):
            super().__init__()
            self.name, self.features, self.member, self.cfg, self.labels = name, features, member, cfg, labels
            self.loss = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.train.label_smoothing)
            self.history: list[dict] = []
            self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
            self._train_losses: list[float] = []

        def _logits(self, wave, lengths, stats, train: bool, mix=None):
            t = self.cfg.train
            if train and t.noise_prob > 0 and not heard_noise(self.cfg):  # heard: WaveSet adds the noise
                wave = inject_noise(wave, lengths, t.noise_snr_db, t.noise_prob)
            with torch.no_grad():
                logmel, mfcc, valid = self.features(wave, lengths, stats)
            x = member_input(self.name, logmel, mfcc)
            if train and self.name == "cnn":
                x = spec_augment(x, t.specaug_freq_masks, t.specaug_freq_width, t.specaug_time_masks,
                                 t.specaug_time_width, valid)
            if mix is not None:  # mixup: each clip's input blended with another clip's of the batch
                lam, perm = mix
                x = lam * x + (1 - lam) * x[perm]
                valid = torch.maximum(valid, valid[perm])
            return self.member(x, valid)

        def training_step(self, batch, _):
            wave, lengths, y, stats = batch
            alpha = self.cfg.train.mixup
            if alpha > 0 and len(y) > 1:
                lam = float(torch.distributions.Beta(alpha, alpha).sample())
                perm = torch.randperm(len(y))
                logits = self._logits(wave, lengths, stats, True, (lam, perm))
                loss = lam * self.loss(logits, y) + (1 - lam) * self.loss(logits, y[perm])
            else:
                loss = self.loss(self._logits(wave, lengths, stats, True), y)
            self._train_losses.append(float(loss.detach()))
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
            return loss

        def validation_step(self, batch, _):
            wave, lengths, y, stats = batch
            logits = self._logits(wave, lengths, stats, False)
            self._val.append((logits.detach(), y, self.loss(logits, y).detach() * len(y)))

        def on_validation_epoch_end(self):
            if not self._val:
                return
            logits = torch.cat([v[0] for v in self._val])
            y = torch.cat([v[1] for v in self._val])
            loss_sum = torch.stack([v[2] for v in self._val]).sum()
            self._val = []
            if self.trainer.world_size > 1:
                logits = self.all_gather(logits).flatten(0, 1)
                y = self.all_gather(y).flatten()
                loss_sum = self.all_gather(loss_sum).sum()
            m = compute_metrics(y.cpu().numpy(), torch.softmax(logits, -1).cpu().numpy(), self.labels)
            val_loss = float(loss_sum) / max(1, len(y))
            self.log_dict({"val_loss": val_loss, "val_uar": m["uar"], "val_macro_f1": m["macro_f1"],
                           "val_accuracy": m["accuracy"]}, prog_bar=True, sync_dist=False)
            if not self.trainer.sanity_checking:
                self.history.append({"epoch": int(self.current_epoch) + 1,
                                     "train_loss": float(np.mean(self._train_losses)) if self._train_losses else None,
                                     "val_loss": val_loss, "val_uar": m["uar"], "val_macro_f1": m["macro_f1"],
                                     "val_accuracy": m["accuracy"], "lr": float(self.optimizers().param_groups[0]["lr"])})
            self._train_losses = []

        def configure_optimizers(self):
            t = self.cfg.train
            opt = torch.optim.AdamW(self.member.parameters(), lr=t.lr, weight_decay=t.weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, t.epochs), eta_min=t.lr * 0.01)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    class KeepBest(L.Callback):
        """Keep the best validation epoch's member weights in memory."""

        def __init__(self, monitor: str):
            self.monitor, self.best, self.best_epoch, self.state = monitor, -np.inf, 0, None

        def on_validation_end(self, trainer, module):
            if trainer.sanity_checking:
                return
            v = trainer.callback_metrics.get(self.monitor)
            if v is not None and float(v) > self.best:
                self.best, self.best_epoch = float(v), int(trainer.current_epoch) + 1
                self.state = copy.deepcopy(module.member.state_dict())

    return LitMember, KeepBest


def _EpochLog():
    """A callback that records each epoch's mean training loss when there is no validation split."""
    import lightning as L

    class EpochLog(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            losses = module._train_losses
            module.history.append({"epoch": int(trainer.current_epoch) + 1,
                                   "train_loss": float(np.mean(losses)) if losses else None,
                                   "lr": float(module.optimizers().param_groups[0]["lr"])})
            module._train_losses = []

    return EpochLog()


@dataclass
class MemberResult:
    name: str
    best_epoch: int
    best_score: float
    epochs_run: int
    seconds: float
    history: list[dict]


def fit_member(name: str, model, cfg: Config, train_items: list[Item], val_items: list[Item],
               stats: dict[str, dict[str, np.ndarray]] | None, log_dir: Path | None,
               progress: bool = True) -> MemberResult:
    """Train ``model.members[name]`` in place; on return it holds the best validation epoch's weights."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping

    LitMember, KeepBest = _lit_module()
    t = cfg.train
    labels = model.labels
    index = {l: i for i, l in enumerate(labels)}
    n = window_samples(cfg)
    y = np.array([index[it.utt.emotion] for it in train_items])
    weights = class_weights(y, len(labels)) if t.class_weights else torch.ones(len(labels))
    g = torch.Generator().manual_seed(t.seed)
    noise = (t.noise_prob, noise_levels(t.noise_snr_db)) if heard_noise(cfg) else None
    dl_train = torch.utils.data.DataLoader(WaveSet(train_items, index, n, True, cfg.features.crop, stats, t.speeds,
                                                   noise),
                                           batch_size=t.batch_size, shuffle=True, collate_fn=collate, generator=g,
                                           drop_last=len(train_items) > t.batch_size)
    dl_val = None
    lit = LitMember(name, model.features, model.members[name], cfg, weights, labels)
    monitor = "val_uar" if t.monitor == "uar" else "val_macro_f1"
    keep = KeepBest(monitor)
    callbacks = []
    if val_items:
        dl_val = torch.utils.data.DataLoader(WaveSet(val_items, index, n, False, cfg.features.crop, stats),
                                             batch_size=64, shuffle=False, collate_fn=collate)
        callbacks = [keep, EarlyStopping(monitor=monitor, mode="max", patience=t.patience)]
    else:  # no validation: the whole epoch budget, the last weights; the history logs the training loss
        callbacks = [_EpochLog()]
    logger = False
    if log_dir is not None:
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(str(log_dir), name=name, version="")
    trainer = L.Trainer(max_epochs=t.epochs, accelerator=t.accelerator, devices=_devices(t.devices),
                        strategy=t.strategy, logger=logger, callbacks=callbacks, enable_checkpointing=False,
                        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
                        deterministic=True, log_every_n_steps=1)
    start = time.perf_counter()
    trainer.fit(lit, dl_train, dl_val)  # dl_val None: no validation loop
    seconds = time.perf_counter() - start
    if keep.state is not None:
        model.members[name].load_state_dict(keep.state)
    model.cpu()
    if not val_items:
        return MemberResult(name, len(lit.history), float("nan"), len(lit.history), seconds, lit.history)
    return MemberResult(name, keep.best_epoch, keep.best, len(lit.history), seconds, lit.history)


def _devices(spec: str):
    s = str(spec).strip()
    return int(s) if s.isdigit() else s


@torch.inference_mode()
def predict_items(model, items: list[Item], cfg: Config, stats: dict[str, dict[str, np.ndarray]] | None = None,
                  noise_snr: float | None = None, noise: str = "white", seed: int = 0,
                  batch_size: int = 64) -> np.ndarray:
    """Probabilities (members + 1, N, C) for each item's evaluation window (centre 4 s), optionally with
    noise added at ``noise_snr`` dB: "white" Gaussian, or "babble" made of other items' speech.

    ``model``: a ``FullEnsemble`` (every member, the smile one on the same window) or a torch ``Ensemble``.
    """
    from .audio import noisy_versions
    from .models.ensemble import SMILE_STAT_KEYS, as_full

    model = as_full(model).eval()
    n = window_samples(cfg)
    rng = np.random.default_rng(seed)
    waves = [crop_wave(it.wave, n, cfg.features.crop) for it in items]
    if noise_snr is not None:
        waves = noisy_versions(waves, noise_snr, noise, rng)
    outs = []
    for b in range(0, len(items), batch_size):
        chunk = waves[b: b + batch_size]
        lengths = torch.tensor([len(w) for w in chunk])
        wave = torch.zeros(len(chunk), int(lengths.max()))
        for i, w in enumerate(chunk):
            wave[i, : len(w)] = torch.from_numpy(np.ascontiguousarray(w))
        st = None
        if stats is not None:
            part = [stats[it.utt.speaker] for it in items[b: b + batch_size]]
            keys = STAT_KEYS + tuple(k for k in SMILE_STAT_KEYS if all(k in p for p in part))
            st = {k: torch.from_numpy(np.stack([p[k] for p in part])).float() for k in keys}
        outs.append(model(wave, lengths, st).numpy())
    return np.concatenate(outs, axis=1)


def fit_temperature(probs: np.ndarray, y: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """The softmax temperature T that minimises the log-loss of softmax(log p / T) on held-out labels.

    ``probs`` (N, C) are one member's probabilities (at T = 1) for utterances it did not train on. T > 1
    softens an overconfident member, T < 1 sharpens a timid one; the arg-max, hence the member's own
    accuracy and UAR, does not change. Searched on a log scale in [lo, hi] (scipy's bounded Brent).
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, None))
    y = np.asarray(y)
    if len(y) == 0:
        raise ValueError("no held-out utterances to fit a temperature on")

    def loss(log_t: float) -> float:
        return float(-np.mean(log_softmax(logp / np.exp(log_t), axis=1)[np.arange(len(y)), y]))

    res = minimize_scalar(loss, bounds=(np.log(lo), np.log(hi)), method="bounded")
    return float(np.clip(np.exp(res.x), lo, hi))


def fit_vote(member_probs: np.ndarray, y: np.ndarray, labels: list[str]) -> tuple[list[float], list[float]]:
    """(temperatures, weights) for members' held-out probabilities (M, N, C) at T = 1: each member's
    ``fit_temperature``, then the vote weights that maximise UAR on the calibrated rows (``choose_weights``)."""
    from .models.ensemble import soften

    temps = [fit_temperature(p, y) for p in member_probs]
    return temps, choose_weights(np.stack([soften(p, t) for p, t in zip(member_probs, temps)]), y, labels)


def choose_weights(member_probs: np.ndarray, y: np.ndarray, labels: list[str], step: float = 0.1) -> list[float]:
    """Member weights on a simplex grid that maximise validation UAR; ties go to the most even weights."""
    from .evaluation import compute_metrics

    m = member_probs.shape[0]
    if m == 1:
        return [1.0]
    ticks = np.round(np.arange(0, 1 + 1e-9, step), 6)
    best, best_w = -1.0, [1.0 / m] * m
    for w in itertools.product(ticks, repeat=m - 1):
        last = 1.0 - sum(w)
        if last < -1e-9:
            continue
        ws = np.array(list(w) + [max(0.0, last)])
        probs = np.tensordot(ws, member_probs, axes=1)
        score = compute_metrics(y, probs, labels)["uar"]
        evenness = -np.abs(ws - 1.0 / m).sum()
        if score > best + 1e-9 or (abs(score - best) <= 1e-9 and evenness > -np.abs(np.array(best_w) - 1.0 / m).sum()):
            best, best_w = score, ws.tolist()
    return [float(x) for x in best_w]


def write_history(history: dict[str, list[dict]], out: Path) -> None:
    buf = io.StringIO()
    cols = ["member", "epoch", "train_loss", "val_loss", "val_uar", "val_macro_f1", "val_accuracy", "lr"]
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for name, rows in history.items():
        for r in rows:
            w.writerow({"member": name, **{k: r.get(k) for k in cols[1:]}})
    atomic_write_text(out, buf.getvalue())


def fit_smile(cfg: Config, labels: list[str], train_items: list[Item], cache_dir=None, log=print):
    """The smile member on the training items' functionals: (SmileMember, smile_norm or None, info).

    Training uses each utterance's whole-clip functionals (cached by file content under ``cache_dir``),
    while evaluation and inference compute them on the model's window (the centre or each 4-s window):
    identical for clips of at most one window (EmoDB's are about 2-3 s), a longer context otherwise.
    Speaker normalisation: each training speaker's functionals are standardised by that speaker's own
    statistics (``smile.normalise_by_group``; with ``features.enrolment``, the statistics of their
    utterances of that emotion), and the training functionals' overall mean and std are kept as
    the fallback for a speaker whose statistics are not given.

    Noise: with ``model.smile_noise_copies`` = k, the member also learns from k noisy copies of every
    training utterance (white noise, SNR uniform in ``train.noise_snr_db``, seeded), their functionals
    computed from the noisy waveforms (not cached). In speaker mode a noisy copy is standardised by the
    statistics of its speaker's noisy copies, as a speaker recorded in noise gets statistics from that
    noisy audio (the speed copies' rule; on clean EmoDB level with standardising them by the speaker's
    clean statistics: 80.5 vs 80.7 UAR, ``benchmarks/results/emodb_smile_quantiles*_speaker.md``).

    Speed: with ``model.smile_speeds`` = [f, ...], the member also learns from each training utterance
    played f times faster (``audio.speed_perturb``; functionals cached by waveform and factor), labelled as
    the original and grouped with its speaker in the inner CV. In speaker mode a speed copy is a voice of
    its own: standardised by the statistics of its speaker's copies at that factor.
    """
    from .audio import noisy_versions
    from .smile import SmileMember, functional_stats, functionals_from_waves, item_functionals, speed_functionals

    m = cfg.model
    start = time.perf_counter()
    X = item_functionals(train_items, m.smile_feature_set, cache_dir)
    index = {l: i for i, l in enumerate(labels)}
    y = np.array([index[it.utt.emotion] for it in train_items])
    speakers = [it.utt.speaker for it in train_items]
    rng = np.random.default_rng(cfg.train.seed + 7)
    lo, hi = cfg.train.noise_snr_db
    copies = []
    for _ in range(m.smile_noise_copies):
        waves = [noisy_versions([it.wave], float(rng.uniform(lo, hi)), "white", rng)[0] for it in train_items]
        copies.append(functionals_from_waves(waves, m.smile_feature_set, threads=2))
    faster = [speed_functionals(train_items, f, m.smile_feature_set, cache_dir) for f in m.smile_speeds]
    norm = None
    if cfg.features.normalisation == "speaker":
        norm = functional_stats(X)
        rows = enrolment_rows(train_items, cfg.features.enrolment)

        def speaker_scaled(A):  # = normalise_by_group(A, speakers) without enrolment
            per = {s: functional_stats(A[idx]) for s, idx in rows.items()}
            return np.stack([per[s][0] for s in speakers]), np.stack([per[s][1] for s in speakers])

        for group in (copies, faster):  # each copy set by its own speaker statistics
            for i, F in enumerate(group):
                mu, sd = speaker_scaled(F)
                group[i] = (F - mu) / sd
        mean, std = speaker_scaled(X)
        X = ((X - mean) / std).astype(X.dtype)
    copies += faster
    origin = np.tile(np.arange(len(X)), 1 + len(copies))  # the inner CV keeps copies with their originals
    if copies:
        X = np.concatenate([X, *copies]).astype(X.dtype)
        y = np.concatenate([y] * (1 + len(copies)))
        speakers = speakers * (1 + len(copies))
    member = SmileMember(m.smile_kind, m.smile_feature_set, m.smile_quantiles).fit(
        X, y, len(labels), groups=speakers, seed=cfg.train.seed, origin=origin)
    seconds = time.perf_counter() - start
    inner = member.meta["inner_cv"]
    log(f"smile: {m.smile_kind} on {m.smile_feature_set} ({X.shape[1]} functionals), inner {inner['folds']}-fold "
        f"UAR {100 * inner['uar']:.1f}% ({seconds:.0f} s)")
    return member, norm, {"kind": m.smile_kind, "feature_set": m.smile_feature_set, "inner_cv_uar": inner["uar"],
                          "chosen": member.chosen,
                          "noise_copies": m.smile_noise_copies, "speeds": list(m.smile_speeds),
                          "quantiles": m.smile_quantiles, "seconds": seconds}


def train_ensemble(cfg: Config, labels: list[str], train_items: list[Item], val_items: list[Item],
                   out: Path | None = None, progress: bool = True, log=print, cache_dir=None):
    """Train every member, set normalisation statistics and ensemble weights; returns (model, info).

    ``model`` is a ``FullEnsemble``; ``cache_dir`` caches the smile member's functionals (if any).
    """
    import lightning as L

    from .models.ensemble import SMILE, Ensemble, FullEnsemble, at_unit_temperature, soften

    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    model = Ensemble(cfg, labels)
    mode = cfg.features.normalisation
    stats = None
    if mode in ("global", "speaker"):
        g = feature_statistics(train_items)
        model.features.norm_mel.set_stats(torch.from_numpy(g["logmel_mean"]), torch.from_numpy(g["logmel_std"]))
        model.features.norm_mfcc.set_stats(torch.from_numpy(g["mfcc_mean"]), torch.from_numpy(g["mfcc_std"]))
    elif cfg.features.mfcc_utterance_scope == "level":  # utterance mode: the MFCCs' level-free statistics
        g = feature_statistics(train_items, mfcc_level=True)
        model.features.norm_mfcc.set_stats(torch.from_numpy(g["mfcc_mean"]), torch.from_numpy(g["mfcc_std"]))
    if mode == "speaker":
        # training speakers by their own statistics, validation speakers by theirs (no labels used)
        enrol = cfg.features.enrolment
        if enrol is not None and enrol not in labels:
            raise ConfigError(f"features.enrolment: {enrol!r} is not an emotion of this corpus ({', '.join(labels)})")
        stats = fold_statistics(cfg, train_items, val_items, [])
        if cfg.train.speeds:
            stats.update(speed_statistics(train_items, cfg.train.speeds, cfg.features, enrol))
        if heard_noise(cfg):
            stats.update(noise_statistics(train_items, noise_levels(cfg.train.noise_snr_db), cfg.features, enrol,
                                          cfg.train.speeds, cfg.train.seed))
    results = {}
    for name in model.member_names:
        log(f"training {name} on {len(train_items)} utterances, "
            + (f"validating on {len(val_items)}" if val_items else f"no validation ({cfg.train.epochs} epochs)"))
        L.seed_everything(cfg.train.seed, workers=True, verbose=False)
        results[name] = fit_member(name, model, cfg, train_items, val_items, stats,
                                   out / "logs" if out is not None else None, progress)
        r = results[name]
        if val_items:
            log(f"{name}: best validation {cfg.train.monitor} {100 * r.best_score:.1f}% at epoch {r.best_epoch} "
                f"of {r.epochs_run} ({r.seconds:.0f} s)")
        else:
            log(f"{name}: {r.epochs_run} epochs, last weights kept ({r.seconds:.0f} s)")
    smile = smile_norm = smile_info = None
    if SMILE in cfg.model.members:
        log(f"fitting smile on {len(train_items)} utterances")
        smile, smile_norm, smile_info = fit_smile(cfg, labels, train_items, cache_dir, log)
    full = FullEnsemble(model, smile, None, smile_norm)
    members = {n: {"best_epoch": r.best_epoch, "best_val_score": r.best_score if val_items else None,
                   "epochs_run": r.epochs_run, "seconds": r.seconds} for n, r in results.items()}
    fixed = [float(w) / sum(cfg.model.weights) for w in cfg.model.weights] or None  # model.weights, if given
    if not val_items:  # nothing to choose weights on: the config's, else equal votes
        weights = fixed or [1.0 / len(full.member_names)] * len(full.member_names)
        full.set_weights(weights)
        if smile_info is not None:
            smile_info["val_score"] = None
            members[SMILE] = smile_info
        info = {"members": {n: members[n] for n in full.member_names}, "ensemble_weights": weights,
                "member_temperatures": full.temperatures, "validation": False,
                "history": {n: r.history for n, r in results.items()}}
        return full, info
    if smile_norm is not None:  # validation speakers' own functional statistics, for the weights below
        stats = {**stats, **speaker_statistics(val_items, full, cache_dir, enrolment=cfg.features.enrolment)}
    index = {l: i for i, l in enumerate(labels)}
    y_val = np.array([index[it.utt.emotion] for it in val_items])
    probs = predict_items(full, val_items, cfg, stats)
    temperatures = None
    if cfg.model.calibration == "validation":  # each member's temperature first, then the weights on them
        raw = at_unit_temperature(probs[:-1], full.temperatures)  # refit from the output as trained
        temperatures = [fit_temperature(p, y_val) for p in raw]
        full.set_temperatures(temperatures)
        probs = np.stack([soften(p, t) for p, t in zip(raw, temperatures)])
        log("temperatures fitted on validation: " + ", ".join(f"{n} {t:.2f}" for n, t in
                                                               zip(full.member_names, temperatures)))
    weights = fixed or choose_weights(probs[:-1] if temperatures is None else probs, y_val, labels)
    full.set_weights(weights)
    if smile_info is not None:
        from .evaluation import compute_metrics

        score = compute_metrics(y_val, probs[full.member_names.index(SMILE)], labels)
        smile_info["val_score"] = float(score["uar" if cfg.train.monitor == "uar" else "macro_f1"])
        members[SMILE] = smile_info
    info = {"members": {n: members[n] for n in full.member_names}, "ensemble_weights": weights,
            "member_temperatures": full.temperatures, "validation": True,
            "history": {n: r.history for n, r in results.items()}}
    return full, info
