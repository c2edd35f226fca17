"""Soft voting over members, and the whole model: waveform -> features -> members -> probabilities.

Two levels. ``Ensemble`` is the torch module: the shared front end and the torch members (cnn, lstm);
its output and its ``weights`` buffer cover those members only (the vote renormalised over them), so it
exports to ONNX as it is. ``FullEnsemble`` is the model: the ``Ensemble`` plus an optional
``SmileMember`` (openSMILE functionals of the same window), every member in config order, and the soft
vote over all of them with the weights chosen on validation. Training, evaluation, ``Recogniser`` and
the artifact use ``FullEnsemble``; a model without a smile member gives exactly its ``Ensemble``'s output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..features import FeaturePipeline
from .cnn import CNN
from .lstm import BiLSTM


def soft_vote(probs: Sequence[torch.Tensor], weights: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """The weighted average of members' probability distributions, each (B, C) -> (B, C).

    Equal weights by default. Weights are normalised to sum to one.

    >>> soft_vote([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])])
    tensor([[0.5000, 0.5000]])
    """
    stacked = torch.stack(list(probs))  # (M, B, C)
    if weights is None:
        return stacked.mean(0)
    w = torch.as_tensor(weights, dtype=stacked.dtype, device=stacked.device).reshape(-1, 1, 1)
    if w.shape[0] != stacked.shape[0]:
        raise ValueError(f"{w.shape[0]} weights for {stacked.shape[0]} members")
    if torch.any(w < 0) or float(w.sum()) <= 0:
        raise ValueError("ensemble weights must be non-negative and not all zero")
    return (stacked * w).sum(0) / w.sum()


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of probabilities at a softmax temperature: softmax(log p / T); T = 1 returns them as they are."""
    if temperature == 1.0:
        return probs
    z = np.log(np.clip(probs, 1e-12, None)) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def at_unit_temperature(rows: np.ndarray, temperatures: Sequence[float]) -> np.ndarray:
    """Members' probability rows (M, N, C) given at ``temperatures`` back at T = 1 (as trained)."""
    return np.stack([soften(p, 1.0 / t) for p, t in zip(rows, temperatures)])


TORCH_MEMBERS = ("cnn", "lstm")
SMILE = "smile"
SMILE_PREFIX = "smile."  # the smile member's arrays in model.safetensors
SMILE_NORM = ("smile.train_mean", "smile.train_std")  # speaker mode: its training functionals' mean and std
SMILE_STAT_KEYS = ("smile_mean", "smile_std")  # a speaker's own functional statistics in speaker stats


def build_member(name: str, cfg: Config, n_classes: int) -> nn.Module:
    m = cfg.model
    if name == "cnn":
        return CNN(n_classes, m.cnn_channels, m.cnn_hidden, m.cnn_dropout, m.cnn_pooling, cfg.features.n_mels)
    if name == "lstm":
        return BiLSTM(cfg.features.mfcc_dim, n_classes, m.lstm_hidden, m.lstm_layers, m.lstm_dropout, m.lstm_pooling)
    raise ValueError(f"unknown member {name!r}")


def member_input(name: str, logmel: torch.Tensor, mfcc: torch.Tensor) -> torch.Tensor:
    return logmel if name == "cnn" else mfcc


class Ensemble(nn.Module):
    """forward(wave (B, S), lengths (B,) or None, speaker_stats or None) -> probabilities (M + 1, B, C):
    one row per torch member of ``cfg.model.members`` in its order, then their weighted soft vote.
    Members that are not torch modules (smile) live in ``FullEnsemble``."""

    def __init__(self, cfg: Config, labels: Sequence[str]):
        super().__init__()
        self.cfg = cfg
        self.labels = list(labels)
        self.member_names = [n for n in cfg.model.members if n in TORCH_MEMBERS]
        self.features = FeaturePipeline(cfg.features)
        self.members = nn.ModuleDict({n: build_member(n, cfg, len(self.labels)) for n in self.member_names})
        self.register_buffer("weights", torch.ones(len(self.member_names)) / max(1, len(self.member_names)))
        # softmax temperature per torch member (1: the logits as trained); part of the exported graph
        temps = dict(zip(cfg.model.members, cfg.model.member_temperatures))
        self.register_buffer("temperatures", torch.tensor([temps[n] for n in self.member_names], dtype=torch.float32))

    def member_probs(self, wave: torch.Tensor, lengths: torch.Tensor | None = None,
                     speaker_stats: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
        logmel, mfcc, valid = self.features(wave, lengths, speaker_stats)
        return [torch.softmax(self.members[n](member_input(n, logmel, mfcc), valid) / self.temperatures[i], dim=-1)
                for i, n in enumerate(self.member_names)]

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None,
                speaker_stats: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        probs = self.member_probs(wave, lengths, speaker_stats)
        return torch.stack(probs + [soft_vote(probs, self.weights)])


class FullEnsemble:
    """Every member of ``cfg.model.members``: the torch ``Ensemble`` plus an optional ``SmileMember``.

    ``model(wave (B, S), lengths (B,) or None, speaker_stats or None)`` -> probabilities (M + 1, B, C), a
    float32 tensor: one row per member in config order, then the soft vote with ``weights`` (over all
    members). The smile member classifies openSMILE functionals of each row's valid samples (the same
    window the torch members see). ``speaker_stats`` holds (B, D) tensors per key: the torch statistics
    and, for a speaker-normalised smile member, ``smile_mean``/``smile_std`` (without them it uses its
    training statistics, as the torch members use their global ones).

    Anything else (``features``, ``members``, ``state_dict``, ``to``, ...) is the torch ``Ensemble``'s.
    """

    def __init__(self, ensemble: Ensemble, smile=None, weights: Sequence[float] | None = None,
                 smile_norm: tuple[np.ndarray, np.ndarray] | None = None):
        self.ensemble = ensemble
        self.smile = smile  # a fitted smile.SmileMember, or None
        self.smile_norm = smile_norm  # speaker mode: (mean, std) of the training functionals, else None
        self.smile_threads = 2  # openSMILE workers for a batch of windows
        self.functional_memo: dict | None = None  # a dict: window functionals remembered (benchmarks)
        self.cfg: Config = ensemble.cfg
        self.labels = list(ensemble.labels)
        self.member_names = list(self.cfg.model.members)
        if (SMILE in self.member_names) != (smile is not None):
            raise ValueError(f"members {self.member_names}: a smile member must be given exactly when the config "
                             "lists one")
        self._weights = ensemble.weights
        self.smile_temperature = float(dict(zip(self.member_names, self.cfg.model.member_temperatures)).get(SMILE, 1.0))
        if weights is not None:
            self.set_weights(weights)
        elif not self.only_torch:
            self.set_weights(torch.ones(len(self.member_names)) / len(self.member_names))

    @property
    def only_torch(self) -> bool:
        return self.member_names == self.ensemble.member_names

    @property
    def weights(self) -> torch.Tensor:
        """Soft-vote weights over ``member_names`` (for a torch-only model, the Ensemble's own buffer)."""
        return self.ensemble.weights if self.only_torch else self._weights

    def set_weights(self, weights: Sequence[float] | torch.Tensor) -> None:
        """Weights over every member; the torch Ensemble's buffer gets its members' share, renormalised
        (equal weights when they have none), which is the vote an ONNX export of it computes."""
        w = torch.as_tensor(weights, dtype=torch.float32).reshape(-1).clone()
        if len(w) != len(self.member_names):
            raise ValueError(f"{len(w)} weights for members {self.member_names}")
        if torch.any(w < 0) or float(w.sum()) <= 0:
            raise ValueError("ensemble weights must be non-negative and not all zero")
        if self.only_torch:  # the buffer is the vote: kept as given, as before there were other members
            with torch.no_grad():
                self.ensemble.weights.copy_(w)
            self._weights = self.ensemble.weights
            return
        self._weights = w
        tw = torch.stack([w[self.member_names.index(n)] for n in self.ensemble.member_names]) \
            if self.ensemble.member_names else torch.zeros(0)
        if len(tw):
            tw = tw / tw.sum() if float(tw.sum()) > 0 else torch.ones(len(tw)) / len(tw)
        with torch.no_grad():
            self.ensemble.weights.copy_(tw)

    @property
    def temperatures(self) -> list[float]:
        """Each member's softmax temperature, over ``member_names`` (1 = uncalibrated)."""
        torch_t = dict(zip(self.ensemble.member_names, self.ensemble.temperatures.tolist()))
        return [self.smile_temperature if n == SMILE else float(torch_t[n]) for n in self.member_names]

    def set_temperatures(self, temperatures: Sequence[float]) -> None:
        """One temperature > 0 per member: its probabilities become softmax(log p / T) before the vote."""
        t = [float(x) for x in temperatures]
        if len(t) != len(self.member_names):
            raise ValueError(f"{len(t)} temperatures for members {self.member_names}")
        if not all(np.isfinite(x) and x > 0 for x in t):
            raise ValueError("member temperatures must be finite and positive")
        by_name = dict(zip(self.member_names, t))
        with torch.no_grad():
            self.ensemble.temperatures.copy_(torch.tensor([by_name[n] for n in self.ensemble.member_names],
                                                          dtype=torch.float32))
        self.smile_temperature = by_name.get(SMILE, 1.0)

    # --- torch-like conveniences
    def eval(self) -> "FullEnsemble":
        self.ensemble.eval()
        return self

    def train(self, mode: bool = True) -> "FullEnsemble":
        self.ensemble.train(mode)
        return self

    def __getattr__(self, name: str):
        if name in ("ensemble", "smile", "__setstate__"):  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.ensemble, name)

    # --- inference
    def smile_probs(self, waves: Sequence[np.ndarray], speaker_stats: dict | None = None) -> np.ndarray:
        """The smile member's (B, C) probabilities for 1-D 16 kHz waveforms (B windows)."""
        from ..smile import functionals_from_waves

        X = functionals_from_waves(waves, self.smile.feature_set, self.smile_threads,
                                   self.functional_memo).astype(np.float64)
        if self.smile_norm is not None:
            if speaker_stats is not None and all(k in speaker_stats for k in SMILE_STAT_KEYS):
                mean, std = (np.asarray(_numpy(speaker_stats[k]), np.float64) for k in SMILE_STAT_KEYS)
            else:
                mean, std = self.smile_norm
            X = (X - mean) / std
        return soften(self.smile.predict_proba(X), self.smile_temperature)

    def member_probs(self, wave: torch.Tensor, lengths: torch.Tensor | None = None,
                     speaker_stats: dict | None = None) -> list[torch.Tensor]:
        """One (B, C) tensor per member, in ``member_names`` order."""
        wave = torch.as_tensor(wave)
        out = {}
        if self.ensemble.member_names:
            out = dict(zip(self.ensemble.member_names, self.ensemble.member_probs(wave, lengths, speaker_stats)))
        if self.smile is not None:
            n = [wave.shape[1]] * wave.shape[0] if lengths is None else [int(x) for x in lengths]
            rows = [wave[i, : n[i]].detach().cpu().numpy() for i in range(wave.shape[0])]
            out[SMILE] = torch.from_numpy(self.smile_probs(rows, speaker_stats)).to(torch.float32)
        return [out[n] for n in self.member_names]

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor | None = None,
                 speaker_stats: dict | None = None) -> torch.Tensor:
        if self.smile is None:
            return self.ensemble(wave, lengths, speaker_stats)
        probs = self.member_probs(wave, lengths, speaker_stats)
        return torch.stack(probs + [soft_vote(probs, self.weights)])

    # --- the artifact
    def smile_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The smile member's arrays (under ``smile.``) and the JSON-able facts model.json keeps."""
        if self.smile is None:
            return {}, {}
        arrays, meta = self.smile.state()
        out = {SMILE_PREFIX + k: v for k, v in arrays.items()}
        if self.smile_norm is not None:
            if set(SMILE_NORM) & set(out):
                raise ValueError("smile member arrays clash with its normalisation statistics")
            out.update({k: np.asarray(v, np.float64) for k, v in zip(SMILE_NORM, self.smile_norm)})
        return out, {"state": meta, "normalisation": "speaker" if self.smile_norm is not None else "training",
                     "arrays_prefix": SMILE_PREFIX}


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


SINGLE_PREFIX = "single/"  # the companion's member rows: single/cnn, single/smile, ...


class PairedEnsemble:
    """A speaker-normalised ``FullEnsemble`` with its single-utterance companion (trained on the same
    data with per-utterance normalisation), so that adaptation cannot fall far below no adaptation.

    ``model(wave, lengths, speaker_stats)`` -> (M_a + M_s + 1, B, C): the adapted model's members (with
    the speaker statistics given, or its training statistics), the companion's members (named
    ``single/<member>``), then the vote. With speaker statistics the vote is the mean of the two
    ensembles' votes; without them it is the companion's alone: a lone clip is served by the model
    trained for lone clips. When a speaker's audio misleads the statistics (heard in one emotion only),
    the companion's vote keeps the answer near the single-utterance result (benchmarks/results/
    adaptation_emodb_time_both.md). Speaker statistics, ``smile``, ``features`` and the rest are the
    adapted model's.
    """

    def __init__(self, adapted: FullEnsemble, single: FullEnsemble):
        if adapted.cfg.features.normalisation != "speaker" or single.cfg.features.normalisation == "speaker":
            raise ValueError("a paired model is a speaker-normalised ensemble with a single-utterance companion")
        if list(adapted.labels) != list(single.labels):
            raise ValueError(f"the companion's labels {single.labels} differ from {adapted.labels}")
        self.adapted, self.single = adapted, single
        self.cfg: Config = adapted.cfg
        self.labels = list(adapted.labels)
        self.member_names = list(adapted.member_names) + [SINGLE_PREFIX + n for n in single.member_names]

    @property
    def temperatures(self) -> list[float]:
        return list(self.adapted.temperatures) + list(self.single.temperatures)

    def eval(self) -> "PairedEnsemble":
        self.adapted.eval()
        self.single.eval()
        return self

    def train(self, mode: bool = True) -> "PairedEnsemble":
        self.adapted.train(mode)
        self.single.train(mode)
        return self

    def __getattr__(self, name: str):
        if name in ("adapted", "single", "__setstate__"):
            raise AttributeError(name)
        return getattr(self.adapted, name)

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor | None = None,
                 speaker_stats: dict | None = None) -> torch.Tensor:
        pa = self.adapted(wave, lengths, speaker_stats)
        ps = self.single(wave, lengths)
        vote = ps[-1] if speaker_stats is None else (pa[-1] + ps[-1]) / 2
        return torch.cat([pa[:-1], ps[:-1], vote[None]])


def as_full(model) -> FullEnsemble:
    """``model`` if it is a ``FullEnsemble`` (or ``PairedEnsemble``), else a torch ``Ensemble`` wrapped as
    one (torch members only)."""
    if isinstance(model, (FullEnsemble, PairedEnsemble)):
        return model
    if SMILE in model.cfg.model.members:
        raise ValueError("this Ensemble's config lists a smile member but no SmileMember was given; "
                         "build a FullEnsemble(ensemble, smile, weights)")
    return FullEnsemble(model)
