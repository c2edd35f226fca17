"""The training loop of the torch members (``members.base.TorchMember``), one Lightning run per member.

Data stays in memory as 16 kHz waveforms (prepared and cached by ``prepare``). Each training step takes
a random window of each clip, perturbs it (``statistics.Perturbation``: a speed drawn from 1 and
``train.speeds``, then white noise with probability ``train.noise_prob`` at an SNR from
``train.noise_snr_db``), computes features in the batch with the model's own front end (so training,
evaluation, the service and an exported model share one), applies the member's own augmentation
(SpecAugment for the CNN), and minimises class-weighted cross-entropy with AdamW under a cosine
learning rate. Early stopping watches validation UAR (or macro-F1); the best epoch's weights are kept
in memory (no checkpoint pickles).

Noise is added in one place, ``WaveSet``, per clip. In speaker mode each clip is standardised by its
speaker's statistics under the same perturbation (``statistics.Voice``), with ``train.noise_stats:
clean`` by the speaker's clean (or speed-only) statistics.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from .config import Config
from .evaluation import compute_metrics
from .features import STAT_KEYS, crop_wave, pad_batch, window_samples
from .members.base import FitJob, TorchMember
from .prepare import Item
from .statistics import CLEAN, Perturbation, StatsBook, Voice, heard_noise, noise_levels


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights N / (C * n_c), normalised; absent classes get weight 0."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32)


class WaveSet(torch.utils.data.Dataset):
    """Items -> (window of the waveform, label index, speaker statistics or None).

    In training, a clip is played at a factor drawn uniformly from 1 and ``speeds``, a random window is
    cut, and with ``noise`` = (probability, SNRs) white noise is added at an SNR drawn from the list of
    levels, or uniformly from the range when given a (low, high) tuple (probability 0: never). ``stats`` (speaker mode) is looked up by the clip's ``Voice``: with
    ``heard`` the perturbation as applied, else the speed alone (the speaker's clean statistics at that
    speed). Evaluation cuts the centre (or start) window and perturbs nothing.
    """

    def __init__(self, items: list[Item], label_index: dict[str, int], n: int, train: bool, crop: str,
                 stats: StatsBook | None = None, speeds=(), noise: tuple[float, list | tuple] | None = None,
                 heard: bool = False):
        self.items, self.label_index, self.n, self.train, self.crop, self.stats = items, label_index, n, train, crop, stats
        self.speeds = list(speeds) if train else []
        self.noise = noise if train and noise is not None and noise[0] > 0 else None
        self.heard = heard

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
                w = Perturbation(factor).apply(w)
        if len(w) > self.n:
            if self.train:
                start = int(torch.randint(0, len(w) - self.n + 1, (1,)))
                w = w[start: start + self.n]
            else:
                w = crop_wave(w, self.n, self.crop)
        pert = Perturbation(factor) if factor != 1.0 else CLEAN
        if self.noise is not None and float(torch.rand(())) < self.noise[0]:
            levels = self.noise[1]
            if isinstance(levels, tuple):
                snr = float(levels[0] + (levels[1] - levels[0]) * float(torch.rand(())))
            else:
                snr = levels[int(torch.randint(0, len(levels), (1,)))]
            w = Perturbation(snr_db=snr).apply(w, noise=torch.randn(len(w)).numpy())
            if self.heard:
                pert = Perturbation(factor, snr)
        st = self.stats[Voice(it.utt.speaker, pert)] if self.stats is not None else None
        return torch.from_numpy(np.ascontiguousarray(w, np.float32)), self.label_index[it.utt.emotion], st


def collate(batch):
    waves, labels, stats = zip(*batch)
    wave, lengths = pad_batch(list(waves))
    st = None
    if stats[0] is not None:
        st = {k: torch.from_numpy(np.stack([s[k] for s in stats])).float() for k in STAT_KEYS}
    return wave, lengths, torch.tensor(labels), st


class LitMember(L.LightningModule):
    """One torch member with the shared front end; the front end's statistics are fixed buffers."""

    def __init__(self, member: TorchMember, front: nn.Module, cfg: Config, weights: torch.Tensor):
        super().__init__()
        self.kind, self.front, self.net, self.cfg, self.labels = member.kind, front, member.net, cfg, member.labels
        self._member = [member]  # not a submodule: its net is
        self.loss = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.train.label_smoothing)
        self.history: list[dict] = []
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._train_losses: list[float] = []

    def _logits(self, wave, lengths, stats, train: bool, mix=None):
        member = self._member[0]
        with torch.no_grad():
            logmel, mfcc, valid = self.front(wave, lengths, stats)
        x = member.inputs(logmel, mfcc)
        if train:
            x = member.augment(x, valid)
        if mix is not None:  # mixup: each clip's input blended with another clip's of the batch
            lam, perm = mix
            x = lam * x + (1 - lam) * x[perm]
            valid = torch.maximum(valid, valid[perm])
        return self.net(x, valid)

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
        opt = torch.optim.AdamW(self.net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
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
            self.state = copy.deepcopy(module.net.state_dict())


class EpochLog(L.Callback):
    """Records each epoch's mean training loss when there is no validation split."""

    def on_train_epoch_end(self, trainer, module):
        losses = module._train_losses
        module.history.append({"epoch": int(trainer.current_epoch) + 1,
                               "train_loss": float(np.mean(losses)) if losses else None,
                               "lr": float(module.optimizers().param_groups[0]["lr"])})
        module._train_losses = []


def _devices(spec: str):
    s = str(spec).strip()
    return int(s) if s.isdigit() else s


def fit_torch(member: TorchMember, job: FitJob) -> dict:
    """Train ``member.net`` in place on ``job.train``; on return it holds the best validation epoch's
    weights (the last epoch's without validation). Returns the facts the report keeps."""
    cfg, t = job.cfg, job.cfg.train
    L.seed_everything(t.seed, workers=True, verbose=False)
    index = {l: i for i, l in enumerate(job.labels)}
    n = window_samples(cfg)
    weights = class_weights(job.y, len(job.labels)) if t.class_weights else torch.ones(len(job.labels))
    g = torch.Generator().manual_seed(t.seed)
    heard = heard_noise(cfg)
    # heard statistics exist for a grid of SNRs; otherwise the SNR is uniform over the range
    noise = (t.noise_prob, noise_levels(t.noise_snr_db) if heard else tuple(t.noise_snr_db))
    train_set = WaveSet(job.train, index, n, True, cfg.features.crop, job.stats, t.speeds, noise, heard)
    dl_train = torch.utils.data.DataLoader(train_set, batch_size=t.batch_size, shuffle=True, collate_fn=collate,
                                           generator=g, drop_last=len(job.train) > t.batch_size)
    lit = LitMember(member, job.front, cfg, weights)
    monitor = "val_uar" if t.monitor == "uar" else "val_macro_f1"
    keep = KeepBest(monitor)
    dl_val = None
    if job.val:
        dl_val = torch.utils.data.DataLoader(WaveSet(job.val, index, n, False, cfg.features.crop, job.stats),
                                             batch_size=64, shuffle=False, collate_fn=collate)
        callbacks = [keep, EarlyStopping(monitor=monitor, mode="max", patience=t.patience)]
    else:  # no validation: the whole epoch budget, the last weights; the history logs the training loss
        callbacks = [EpochLog()]
    logger = CSVLogger(str(job.log_dir), name=member.kind, version="") if job.log_dir is not None else False
    trainer = L.Trainer(max_epochs=t.epochs, accelerator=t.accelerator, devices=_devices(t.devices),
                        strategy=t.strategy, logger=logger, callbacks=callbacks, enable_checkpointing=False,
                        enable_progress_bar=job.progress, enable_model_summary=False, num_sanity_val_steps=0,
                        deterministic=True, log_every_n_steps=1)
    start = time.perf_counter()
    trainer.fit(lit, dl_train, dl_val)
    seconds = time.perf_counter() - start
    if keep.state is not None:
        member.net.load_state_dict(keep.state)
    member.net.cpu().eval()
    job.front.cpu()
    epochs = len(lit.history)
    if job.val:
        job.log(f"{member.kind}: best validation {t.monitor} {100 * keep.best:.1f}% at epoch {keep.best_epoch} "
                f"of {epochs} ({seconds:.0f} s)")
    else:
        job.log(f"{member.kind}: {epochs} epochs, last weights kept ({seconds:.0f} s)")
    return {"best_epoch": keep.best_epoch if job.val else epochs,
            "best_val_score": keep.best if job.val else None, "epochs_run": epochs, "seconds": seconds,
            "history": lit.history}
