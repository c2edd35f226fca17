"""What every ensemble member implements, and the two shapes most members take.

A member turns a batch of windows (16 kHz waveforms, at most one model window each) into class
probabilities. The ensemble (``persemo.ensemble``) holds a list of members, softens each by its
temperature and averages them by the vote weights; the artifact, speaker statistics, calibration,
export, the service and the benchmarks loop over members and never ask which kind they are.

``Member`` (the protocol):

- ``kind`` (its registry name) and ``Settings`` (a frozen dataclass: its section ``model.<kind>``);
- ``fit(job)`` trains it on ``job.train`` (``FitJob``), returning JSON-able facts for the report;
- ``probabilities(batch)`` -> (B, C) at temperature 1, for a ``Batch`` (waveforms, the shared
  front end's features computed once for all members, and speaker statistics if any);
- speaker statistics of its own, for a member with per-clip vectors in speaker mode: ``stat_keys``
  (the keys it reads), ``clip_vectors(waves)`` / ``item_vectors(items)`` (one row per clip: a
  speaker's statistics are the mean and std of theirs), ``stats_signature`` (what the vectors are, so a
  statistics file made for another member is refused) and ``global_stats`` (the fallback);
- ``state()`` -> (arrays, meta) for safetensors + JSON, and ``load_state(arrays, meta)``;
- ``torch_module()``: an ``nn.Module`` (logmel, mfcc, valid) -> logits for ONNX export, or None with
  ``not_exportable`` saying why.

``TorchMember`` is a network on the shared front end's log-mel or MFCC frames, trained by
``persemo.torch_training``; ``VectorMember`` is a calibrated classifier on one vector per clip (openSMILE
functionals, encoder embeddings), fitted by inner speaker-grouped cross-validation.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from ..audio import mix_voices
from ..config import Config, check_speeds
from ..encoders.whisper import wave_digest
from ..errors import ConfigError
from ..features import FeaturePipeline
from ..prepare import Item
from ..cache import FeatureCache
from ..heads import HEAD_KINDS, Head, make_head
from ..statistics import Perturbation, StatsBook, enrolment_rows, vector_stats


@dataclass
class FitJob:
    """Everything a member's ``fit`` may use: the training (and validation) items, the model's front end
    with its statistics set, the speaker statistics of those items' voices (speaker mode), where to cache
    and log."""

    cfg: Config
    labels: list[str]
    train: list[Item]
    val: list[Item] = field(default_factory=list)
    front: FeaturePipeline | None = None
    stats: StatsBook | None = None
    cache_dir: Path | None = None
    log: Callable[[str], None] = print
    log_dir: Path | None = None
    progress: bool = False
    # the torch members' training loop (``torch_training.fit_torch``), handed in by ``training`` so that
    # inference never imports Lightning
    fit_torch: Callable | None = None
    # a dict shared by several fits on the same items (the nested selection): a vector member remembers its
    # noisy copies' vectors there (``VectorMember.remembered_vectors``), so two settings of one kind that read
    # the same vectors compute them once
    memo: dict | None = None

    @property
    def y(self) -> np.ndarray:
        index = {l: i for i, l in enumerate(self.labels)}
        return np.array([index[it.utt.emotion] for it in self.train], dtype=np.int64)


class Batch:
    """A batch of windows as every member sees it.

    ``wave`` (B, S) zero-padded 16 kHz waveforms, ``lengths`` (B,) samples; ``speaker_stats`` maps a
    statistics key to a (B, D) tensor (each row's speaker), or is None (single utterance). The front
    end's normalised, fixed-length features are computed once, on first request, for all members.
    ``memo`` (a dict, or None) lets a member remember per-window results across calls (benchmarks).
    """

    def __init__(self, wave: torch.Tensor, lengths: torch.Tensor | None, front: FeaturePipeline | None,
                 speaker_stats: dict[str, torch.Tensor] | None = None, memo: dict | None = None):
        self.wave = torch.as_tensor(wave)
        if self.wave.dim() == 1:
            self.wave = self.wave[None]
        self.lengths = (torch.full((self.wave.shape[0],), self.wave.shape[1], dtype=torch.long) if lengths is None
                        else torch.as_tensor(lengths))
        self.front, self.speaker_stats, self.memo = front, speaker_stats, memo
        self._features: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.wave.shape[0])

    def features(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logmel (B, n_mels, frames), mfcc (B, D, frames), valid (B,)), normalised as the model was."""
        if self._features is None:
            self._features = self.front(self.wave, self.lengths, self.speaker_stats)
        return self._features

    def rows(self) -> list[np.ndarray]:
        """Each window's valid samples, float32 (B arrays)."""
        return [self.wave[i, : int(n)].detach().cpu().numpy() for i, n in enumerate(self.lengths)]

    def stat(self, key: str) -> np.ndarray | None:
        """The (B, D) speaker statistics under ``key``, or None when not given."""
        if self.speaker_stats is None or key not in self.speaker_stats:
            return None
        v = self.speaker_stats[key]
        return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


def babble_of(items: Sequence[Item], i: int, rng: np.random.Generator, voices: int = 4,
              others: Sequence[int] | None = None) -> np.ndarray:
    """Babble for training item ``i`` (``audio.mix_voices``): up to ``voices`` other training clips of other
    speakers (``others``: their indices, when the caller has them), cut or repeated to its length: background
    speech, as in the benchmarks' babble condition (which is made of other test clips)."""
    n = len(items[i].wave)
    if others is None:
        others = [j for j in range(len(items)) if items[j].utt.speaker != items[i].utt.speaker]
    others = list(others) or [j for j in range(len(items)) if j != i]
    picked = rng.choice(others, size=min(voices, len(others)), replace=False) if others else []
    out = mix_voices([items[j].wave for j in picked], n)
    if not out.any():  # nothing to mix (one clip, or silent ones): white noise
        out = rng.standard_normal(n).astype(np.float32)
    return out


def check_vector_settings(kind: str, s) -> None:
    """The settings every ``VectorMember`` shares (``kind`` of classifier, ``quantiles``, ``noise_copies``,
    ``speeds``, ``calibration``), checked with errors that name ``model.<kind>.<field>``."""
    if s.kind not in HEAD_KINDS:
        raise ConfigError(f"model.{kind}.kind must be one of {', '.join(HEAD_KINDS)}, not {s.kind!r}")
    if not (isinstance(s.noise_copies, int) and 0 <= s.noise_copies <= 10):
        raise ConfigError(f"model.{kind}.noise_copies must be an integer from 0 to 10")
    if not (s.quantiles == 0 or 2 <= s.quantiles <= 1000):
        raise ConfigError(f"model.{kind}.quantiles must be 0 (off) or an integer from 2 to 1000")
    if s.calibration not in ("temperature", "matrix"):
        raise ConfigError(f"model.{kind}.calibration must be temperature or matrix, not {s.calibration!r}")
    check_speeds(f"model.{kind}.speeds", s.speeds)
    kinds = getattr(s, "noise_kinds", ["white"])
    if not (isinstance(kinds, (list, tuple)) and 1 <= len(kinds) <= 4 and all(k in ("white", "babble") for k in kinds)):
        raise ConfigError(f"model.{kind}.noise_kinds must be a list of white and/or babble, not {kinds!r}")


class Member:
    """The protocol (see the module docstring). Subclasses set ``kind`` and ``Settings``."""

    kind: ClassVar[str] = ""
    Settings: ClassVar[type] = object
    not_exportable: ClassVar[str] = "this member kind has no torch graph"
    # whether ``fit`` runs an inner speaker-grouped cross-validation that sets ``train_oof`` (what
    # ``model.calibration: inner`` and the nested selection score a member on)
    inner_cv: ClassVar[bool] = False
    # whether ``fit`` reads ``FitJob.stats`` (every training voice's front-end statistics, speaker mode):
    # computed only for models with such a member
    reads_voice_stats: ClassVar[bool] = False

    def __init__(self, cfg: Config, labels: Sequence[str]):
        self.cfg = cfg
        self.labels = list(labels)
        self.settings = cfg.model.section(self.kind)

    # --- training and inference
    def fit(self, job: FitJob) -> dict[str, Any]:
        raise NotImplementedError

    # after fit, a member with an inner cross-validation sets ``train_oof``: (N_train, C) held-out
    # probabilities of the training items (rows NaN where no inner fold held the item out)
    train_oof: np.ndarray | None = None
    # and ``train_fair``: (N_train,) bool, the rows whose emotion the inner fold's training part held (a row
    # whose emotion was not there is wrong by construction: speakers heard in few emotions), or None
    train_fair: np.ndarray | None = None
    # and, with ``selection.repeats`` R > 1, one of each per inner speaker partition: ``train_oof_repeats``
    # (R, N_train, C), ``train_fold_repeats`` (R, N_train) each row's inner fold (-1: not held out) and
    # ``train_fair_repeats`` (R, N_train); the first partition's are ``train_oof`` and ``train_fair``
    train_oof_repeats: np.ndarray | None = None
    train_fold_repeats: np.ndarray | None = None
    train_fair_repeats: np.ndarray | None = None

    def probabilities(self, batch: Batch) -> np.ndarray:
        """(B, C) class probabilities at temperature 1."""
        raise NotImplementedError

    # --- speaker statistics of its own (members with one vector per clip, in speaker mode)
    @property
    def stat_keys(self) -> tuple[str, ...]:
        return ()

    def clip_vectors(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError(f"{self.kind} has no per-clip vectors")

    def item_vectors(self, items: Sequence[Item], cache_dir: Path | None = None) -> np.ndarray:
        return self.clip_vectors([it.wave for it in items])

    @property
    def stats_signature(self) -> str | None:
        return None

    def global_stats(self) -> dict[str, np.ndarray]:
        return {}

    # --- the artifact
    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        return {}, {}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if arrays:
            raise ValueError(f"unexpected arrays {sorted(arrays)[:3]}")

    # --- export
    def torch_module(self) -> nn.Module | None:
        return None

    def wave_module(self) -> nn.Module | None:
        """A member that reads the waveform itself (not the front end's frames): its whole graph, (wave (B, S),
        lengths (B,)) -> log-probabilities (B, C), or None (``torch_module`` or ``not_exportable`` then)."""
        return None


class _Logits(nn.Module):
    """An exportable view of a torch member: (logmel, mfcc, valid) -> logits."""

    def __init__(self, net: nn.Module, use_mfcc: bool):
        super().__init__()
        self.net, self.use_mfcc = net, use_mfcc

    def forward(self, logmel: torch.Tensor, mfcc: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.net(mfcc if self.use_mfcc else logmel, valid)


class TorchMember(Member):
    """A network on the front end's frames: ``net`` (x (B, D, frames), valid (B,)) -> logits (B, C).

    ``uses`` names the frames it reads ("logmel" or "mfcc"); ``augment`` is its train-time transform of
    them (none by default). Trained by ``persemo.torch_training.fit_torch``.
    """

    uses: ClassVar[str] = "logmel"
    reads_voice_stats = True

    def __init__(self, cfg: Config, labels: Sequence[str]):
        super().__init__(cfg, labels)
        self.net = self.build()

    def build(self) -> nn.Module:
        raise NotImplementedError

    def augment(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return x

    def inputs(self, logmel: torch.Tensor, mfcc: torch.Tensor) -> torch.Tensor:
        return mfcc if self.uses == "mfcc" else logmel

    def logits(self, batch: Batch) -> torch.Tensor:
        logmel, mfcc, valid = batch.features()
        return self.net(self.inputs(logmel, mfcc), valid)

    def fit(self, job: FitJob) -> dict[str, Any]:
        if job.fit_torch is None:
            raise ValueError("FitJob.fit_torch is not set: train through persemo.training.train_ensemble")
        return job.fit_torch(self, job)

    def probabilities(self, batch: Batch) -> np.ndarray:
        self.net.eval()
        with torch.inference_mode():
            return torch.softmax(self.logits(batch), dim=-1).numpy()

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        return {k: v.detach().cpu().contiguous().numpy() for k, v in self.net.state_dict().items()}, {}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        own = self.net.state_dict()
        missing, extra = set(own) - set(arrays), set(arrays) - set(own)
        if missing or extra:
            raise ValueError(f"tensors do not fit the config (missing {sorted(missing)[:3]}, unexpected "
                             f"{sorted(extra)[:3]})")
        try:
            self.net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        except RuntimeError as exc:
            raise ValueError(f"tensors do not fit the config ({str(exc).splitlines()[0]})") from None
        self.net.eval()

    def torch_module(self) -> nn.Module:
        return _Logits(self.net, self.uses == "mfcc")


class VectorMember(Member):
    """A calibrated classifier head (``persemo.heads``: standardisation, logistic regression, RBF SVM or
    MLP, a temperature on inner speaker-grouped CV) on one vector per clip.

    Subclasses define ``clip_vectors(waves)`` (N, D) and may cache them in ``item_vectors``. Settings it
    reads when present: ``kind``, ``quantiles``, ``noise_copies`` (noisy copies of each training clip at an
    SNR from ``train.noise_snr_db``), ``noise_kinds`` and ``speeds`` (speed-perturbed copies).

    A white-noise copy depends on the clip alone (its noise and SNR seeded by the clip's samples, the copy's
    index and ``train.seed``), so every outer fold of a k-fold run that trains on a clip gets the same copy,
    and its vectors are cached on disk beside the clean ones (``copy_vectors``): computed once per run. A
    babble copy is made of other training speakers' clips, so it stays per fit (remembered in ``FitJob.memo``
    across the candidates of one selection).

    Speaker mode: each training speaker's vectors are standardised by that speaker's own mean and std
    (``<kind>_mean``/``<kind>_std`` in the speaker statistics; a copy set by the statistics of its own
    copies: a speaker heard in noise, or faster, is a voice of its own); the training vectors' overall
    mean and std are kept as the fallback for a clip without speaker statistics.
    """

    inner_cv = True

    def __init__(self, cfg: Config, labels: Sequence[str]):
        super().__init__(cfg, labels)
        self.head: Head | None = None  # fitted in ``fit``
        # after fit: (N_train, C) probabilities of the training clips from the inner CV folds that held each
        # out (NaN rows where none did): what ``model.calibration: inner`` chooses the vote on
        self.train_oof: np.ndarray | None = None
        self.norm: tuple[np.ndarray, np.ndarray] | None = None  # speaker mode: (mean, std) of training vectors

    @property
    def speaker_mode(self) -> bool:
        return self.cfg.features.normalisation == "speaker"

    @property
    def stat_keys(self) -> tuple[str, ...]:
        return (f"{self.kind}_mean", f"{self.kind}_std") if self.speaker_mode else ()

    def global_stats(self) -> dict[str, np.ndarray]:
        if self.norm is None:
            return {}
        k = self.stat_keys
        return {k[0]: self.norm[0].astype(np.float32), k[1]: self.norm[1].astype(np.float32)}

    def speed_vectors(self, items: Sequence[Item], factor: float, cache_dir: Path | None = None) -> np.ndarray:
        """Vectors of ``items`` played ``factor`` times faster."""
        return self.clip_vectors([Perturbation(factor).apply(it.wave) for it in items])

    def _setting(self, name: str, default):
        return getattr(self.settings, name, default)

    def fit(self, job: FitJob) -> dict[str, Any]:
        # BLAS threads as many as torch's: on a busy machine more threads than cores made these small fits
        # up to 50x slower (measured: a 430 x 512 logistic regression 1.6 s vs 0.03 s)
        with threadpool_limits(limits=max(1, torch.get_num_threads())):
            return self._fit(job)

    def _fit(self, job: FitJob) -> dict[str, Any]:
        start = time.perf_counter()
        items = job.train
        X = np.asarray(self.item_vectors(items, job.cache_dir), np.float64)
        y = job.y
        speakers = [it.utt.speaker for it in items]
        rng = np.random.default_rng(job.cfg.train.seed + 7)
        lo, hi = job.cfg.train.noise_snr_db
        copies = []
        kinds = list(self._setting("noise_kinds", ["white"]))
        by_speaker = {s: [j for j, sp in enumerate(speakers) if sp != s] for s in set(speakers)} \
            if "babble" in kinds else {}  # each speaker's babble sources: the other speakers' clips
        copy_seconds = 0.0
        for c in range(int(self._setting("noise_copies", 0))):
            t0 = time.perf_counter()
            if kinds[c % len(kinds)] == "white":
                copies.append(self.white_copy_vectors(items, c, job))
            else:
                waves = [Perturbation(snr_db=float(rng.uniform(lo, hi))).apply(
                    it.wave, rng, babble_of(items, i, rng, others=by_speaker[speakers[i]])) for i, it in enumerate(items)]
                copies.append(self.remembered_vectors(waves, job.memo))
            copy_seconds += time.perf_counter() - t0
        faster = [np.asarray(self.speed_vectors(items, f, job.cache_dir), np.float64)
                  for f in self._setting("speeds", [])]
        if self.speaker_mode:
            self.norm = vector_stats(X)
            rows = enrolment_rows(items, job.cfg.features.enrolment)

            def by_speaker(A):
                per = {s: vector_stats(A[idx]) for s, idx in rows.items()}
                return np.stack([per[s][0] for s in speakers]), np.stack([per[s][1] for s in speakers])

            for group in (copies, faster):  # each copy set by its own speaker statistics
                for i, F in enumerate(group):
                    mu, sd = by_speaker(F)
                    group[i] = (F - mu) / sd
            mean, std = by_speaker(X)
            X = (X - mean) / std
        copies += faster
        origin = np.tile(np.arange(len(X)), 1 + len(copies))  # the inner CV keeps copies with their originals
        corpus = [it.utt.corpus for it in items] * (1 + len(copies))  # several: each clip among its own emotions
        if copies:
            X = np.concatenate([X, *copies])
            y = np.concatenate([y] * (1 + len(copies)))
            speakers = speakers * (1 + len(copies))
        self.head = make_head(self._setting("kind", "logreg"), self.stats_signature, int(self._setting("quantiles", 0)),
                              self._setting("calibration", "temperature"), job.cfg.selection.repeats).fit(
            X, y, len(self.labels), groups=speakers, seed=job.cfg.train.seed, origin=origin, corpus=corpus)
        n = len(items)  # the original training clips' held-out rows
        self.train_oof, self.train_fair = self.head.oof_proba[:n], self.head.oof_fair[:n]
        self.train_oof_repeats = self.head.oof_repeats[:, :n]
        self.train_fold_repeats = self.head.fold_repeats[:, :n]
        self.train_fair_repeats = self.head.fair_repeats[:, :n]
        seconds = time.perf_counter() - start
        inner = self.head.meta["inner_cv"]
        job.log(f"{self.kind}: {self.head.kind} on {X.shape[1]} values per clip, inner {inner['folds']}-fold UAR "
                f"{100 * inner['uar']:.1f}% ({seconds:.0f} s)")
        return {"inner_cv_uar": inner["uar"], "chosen": self.head.chosen, "seconds": seconds,
                "dimensions": int(X.shape[1]), "copy_seconds": copy_seconds}

    def normalise(self, X: np.ndarray, batch: Batch) -> np.ndarray:
        if self.norm is None:
            return X
        keys = self.stat_keys
        mean, std = batch.stat(keys[0]), batch.stat(keys[1])
        if mean is None or std is None:
            mean, std = self.norm
        return (X - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)

    def white_copy_vectors(self, items: Sequence[Item], copy: int, job: FitJob) -> np.ndarray:
        """(N, D) vectors of each item's white-noise copy number ``copy``: noise and SNR (from
        ``train.noise_snr_db``) drawn from a generator seeded by the clip's samples, ``copy`` and ``train.seed``,
        so a clip's copy is the same in every fit; cached on disk under ``job.cache_dir`` (``copy_vectors``)."""
        lo, hi = job.cfg.train.noise_snr_db
        seed = job.cfg.train.seed
        digests = [wave_digest(it.wave) for it in items]

        def wave(i: int) -> np.ndarray:
            rng = np.random.default_rng([seed, copy, int(digests[i][:16], 16)])
            return Perturbation(snr_db=float(rng.uniform(lo, hi))).apply(items[i].wave, rng)

        return self.copy_vectors(digests, wave, f"white copy {copy} seed {seed} snr {lo:g}..{hi:g}", job.cache_dir,
                                 job.memo)

    def copy_vectors(self, digests: Sequence[str], wave: Callable[[int], np.ndarray], tag: str,
                     cache_dir: Path | None, memo: dict | None) -> np.ndarray:
        """(N, D) vectors of perturbed clips that depend on the clip alone: clip i's perturbed wave is
        ``wave(i)``, made only on a miss; cached under ``cache_dir`` by the clean clip's ``digests[i]``, the
        ``tag`` (what was done to it) and ``vectors_key`` (what the vectors are); without a cache directory,
        ``remembered_vectors``."""
        if cache_dir is None:
            return self.remembered_vectors([wave(i) for i in range(len(digests))], memo)
        cache = FeatureCache(cache_dir, {**self.vectors_key(), "copy": tag})
        hits = [cache.get(d) for d in digests]
        todo = [i for i, h in enumerate(hits) if h is None or "x" not in h]
        if todo:
            for i, x in zip(todo, self.clip_vectors([wave(i) for i in todo])):
                hits[i] = {"x": np.asarray(x, np.float32)}
                cache.put(digests[i], hits[i])
        return np.stack([h["x"] for h in hits]).astype(np.float64)

    def vectors_key(self) -> dict:
        """What this member's clip vectors are (for cache keys): its kind and ``stats_signature``."""
        return {"kind": "member-vectors", "member": self.kind, "signature": self.stats_signature}

    def remembered_vectors(self, waves: Sequence[np.ndarray], memo: dict | None) -> np.ndarray:
        """``clip_vectors``, looked up in ``memo`` (a dict the caller keeps, e.g. for one benchmark run) by the
        member's kind, its ``stats_signature`` and the window's samples; computed for the misses only."""
        if memo is None:
            return np.asarray(self.clip_vectors(waves), np.float64)
        keys = [(self.kind, self.stats_signature, hashlib.sha256(np.ascontiguousarray(w, np.float32).tobytes())
                 .hexdigest()) for w in waves]
        todo = [i for i, k in enumerate(keys) if k not in memo]
        if todo:
            for i, row in zip(todo, self.clip_vectors([waves[i] for i in todo])):
                memo[keys[i]] = np.asarray(row, np.float64)
        return np.stack([memo[k] for k in keys])

    def probabilities(self, batch: Batch) -> np.ndarray:
        if self.head is None:
            raise RuntimeError(f"{self.kind} member is not fitted")
        X = self.remembered_vectors(batch.rows(), batch.memo)
        return self.head.predict_proba(self.normalise(X, batch))

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        if self.head is None:
            raise ValueError(f"{self.kind} member is not fitted: nothing to save")
        arrays, meta = self.head.state()
        if self.norm is not None:
            if {"train_mean", "train_std"} & set(arrays):
                raise ValueError("classifier arrays clash with the normalisation statistics")
            arrays = {**arrays, "train_mean": np.asarray(self.norm[0], np.float64),
                      "train_std": np.asarray(self.norm[1], np.float64)}
        return arrays, {"state": meta, "normalisation": "speaker" if self.norm is not None else "training"}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
            raise ValueError("its state (classifier facts) is missing")
        arrays = dict(arrays)
        if meta.get("normalisation") == "speaker":
            if "train_mean" not in arrays or "train_std" not in arrays:
                raise ValueError("its normalisation statistics (train_mean, train_std) are missing")
            self.norm = (np.asarray(arrays.pop("train_mean"), np.float64),
                         np.asarray(arrays.pop("train_std"), np.float64))
        elif self.speaker_mode:
            raise ValueError("a speaker-normalised model's member was saved without speaker normalisation")
        try:
            self.head = Head.from_state(arrays, meta["state"])
        except (ValueError, KeyError) as exc:
            raise ValueError(f"bad classifier state ({exc})") from None
        if self.head.feature_set != self.stats_signature:
            raise ValueError(f"it was fitted on {self.head.feature_set}, the config says {self.stats_signature}")
        if self.head.meta.get("n_classes") != len(self.labels):
            raise ValueError(f"it was fitted for {self.head.meta.get('n_classes')} classes, the model has "
                             f"{len(self.labels)}")
