"""The whole model: waveform -> the shared front end -> every member -> the soft vote.

``Ensemble`` is a list of members (``persemo.members``), each with a softmax temperature and a vote
weight, over one front end (``features.FeaturePipeline``: log-mel and MFCC frames, normalised, shared by
the members that read frames). A speaker-normalised model may carry a ``companion``: the same
ensemble trained with per-utterance normalisation. The companion is a voting policy: with speaker
statistics the vote is the weighted mean of the two ensembles' votes (``pair_weight`` for the adapted one,
0.5 unless chosen on inner CV), without them the companion's vote alone
(a lone clip is served by the model trained for lone clips), which keeps adaptation near the
single-utterance result when a speaker's audio misleads the statistics.

``model(wave (B, S), lengths (B,) or None, speaker_stats or None)`` -> float32 tensor (rows + 1, B, C):
one row per member (``member_names``; the companion's as ``single/<kind>``), then the vote.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import members as registry
from .config import Config
from .features import STAT_KEYS, FeaturePipeline
from .members.base import Batch, Member

COMPANION_PREFIX = "single/"  # the companion's member rows: single/<kind>


def soft_vote(probs: Sequence[torch.Tensor], weights: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """The weighted average of members' probability distributions, each (B, C) -> (B, C).

    Equal weights by default. Weights are normalised to sum to one.

    >>> soft_vote([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])])
    tensor([[0.5000, 0.5000]])
    """
    stacked = torch.stack([torch.as_tensor(p) for p in probs])  # (M, B, C)
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


def _check_weights(w: np.ndarray, n: int, names) -> np.ndarray:
    if w.shape != (n,):
        raise ValueError(f"{len(w)} weights for members {list(names)}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or float(w.sum()) <= 0:
        raise ValueError("ensemble weights must be finite, non-negative and not all zero")
    return w


class Ensemble:
    """Members over one front end, with temperatures, vote weights and an optional companion."""

    def __init__(self, cfg: Config, labels: Sequence[str], members: Sequence[Member] | None = None,
                 companion: "Ensemble | None" = None):
        self.cfg = cfg
        self.labels = list(labels)
        self.front = FeaturePipeline(cfg.features)
        self.members: list[Member] = (list(members) if members is not None else
                                      [registry.get(k)(cfg, self.labels) for k in cfg.model.members])
        if [m.kind for m in self.members] != list(cfg.model.members):
            raise ValueError(f"members {[m.kind for m in self.members]} differ from the config's "
                             f"{list(cfg.model.members)}")
        n = len(self.members)
        self.temperatures = np.array(cfg.model.member_temperatures, np.float64)
        w = np.array(cfg.model.weights or [1.0] * n, np.float64)
        self.weights = _check_weights(w, n, self.kinds) / w.sum()
        self.memo: dict | None = None  # a dict: members remember per-window results (benchmarks)
        self.companion: Ensemble | None = None
        self.selected: str | None = None  # the winning candidate's name, when nested selection chose it
        # with a companion and speaker statistics: the speaker-adapted vote's share of the paired vote (the
        # companion's is the rest); chosen on the two models' inner-CV predictions when they have them
        self.pair_weight = 0.5
        if companion is not None:
            self.set_companion(companion)

    # --- names and settings
    @property
    def kinds(self) -> list[str]:
        return [m.kind for m in self.members]

    @property
    def member_names(self) -> list[str]:
        """One name per output row before the vote: the members, then the companion's ``single/<kind>``."""
        own = self.kinds
        return own if self.companion is None else own + [COMPANION_PREFIX + n for n in self.companion.kinds]

    @property
    def adaptable(self) -> bool:
        """Whether the model reads speaker statistics (trained with speaker normalisation)."""
        return self.cfg.features.normalisation == "speaker"

    def set_companion(self, companion: "Ensemble", pair_weight: float | None = None) -> None:
        if pair_weight is not None and not (isinstance(pair_weight, (int, float)) and 0.0 <= pair_weight <= 1.0):
            raise ValueError(f"the pair weight must be a number from 0 to 1, not {pair_weight!r}")
        if not self.adaptable or companion.adaptable:
            raise ValueError("a companion pairs a speaker-normalised ensemble with a single-utterance one")
        if companion.labels != self.labels:
            raise ValueError(f"the companion's labels {companion.labels} differ from {self.labels}")
        if companion.companion is not None:
            raise ValueError("a companion has no companion of its own")
        self.companion = companion
        if pair_weight is not None:
            self.pair_weight = float(pair_weight)

    def set_weights(self, weights: Sequence[float]) -> None:
        w = np.asarray(weights, np.float64).reshape(-1)
        self.weights = _check_weights(w, len(self.members), self.kinds) / w.sum()

    def set_temperatures(self, temperatures: Sequence[float]) -> None:
        """One temperature > 0 per member: its probabilities become softmax(log p / T) before the vote."""
        t = np.asarray(temperatures, np.float64).reshape(-1)
        if t.shape != (len(self.members),):
            raise ValueError(f"{len(t)} temperatures for members {self.kinds}")
        if not np.all(np.isfinite(t)) or np.any(t <= 0):
            raise ValueError("member temperatures must be finite and positive")
        self.temperatures = t

    # --- statistics
    def all_members(self) -> list[Member]:
        """The members that read speaker statistics' sources (the companion's never do)."""
        return list(self.members)

    def stat_keys(self) -> tuple[str, ...]:
        """Every key a speaker's statistics must hold for this model."""
        return tuple(STAT_KEYS) + tuple(k for m in self.members for k in m.stat_keys)

    def global_stats(self) -> dict[str, np.ndarray]:
        """The training statistics: a speaker's fallback, and what their own are shrunk toward."""
        out = self.front.global_stats()
        for m in self.members:
            out.update(m.global_stats())
        return out

    # --- inference
    def eval(self) -> "Ensemble":
        self.front.eval()
        for m in self.members:
            net = getattr(m, "net", None)
            if net is not None:
                net.eval()
        if self.companion is not None:
            self.companion.eval()
        return self

    def member_probs(self, wave: torch.Tensor, lengths: torch.Tensor | None = None,
                     speaker_stats: dict | None = None) -> np.ndarray:
        """(M, B, C) float64: each member's probabilities at its temperature."""
        with torch.inference_mode():
            batch = Batch(torch.as_tensor(wave, dtype=torch.float32), lengths, self.front, speaker_stats, self.memo)
            return np.stack([soften(np.asarray(m.probabilities(batch), np.float64), float(t))
                             for m, t in zip(self.members, self.temperatures)])

    def vote(self, probs: np.ndarray) -> np.ndarray:
        """(M, B, C) -> (B, C): the weighted average."""
        return np.tensordot(self.weights, probs, axes=1)

    def predict(self, wave, lengths=None, speaker_stats: dict | None = None) -> np.ndarray:
        """(rows + 1, B, C) float32: each member's row (the companion's too), then the vote."""
        if speaker_stats is not None and not self.adaptable:
            speaker_stats = None  # a single-utterance model has no use for them
        own = self.member_probs(wave, lengths, speaker_stats)
        vote = self.vote(own)
        rows = [own]
        if self.companion is not None:
            comp = self.companion.predict(wave, lengths)
            rows.append(comp[:-1])
            vote = comp[-1] if speaker_stats is None else self.pair_weight * vote + (1 - self.pair_weight) * comp[-1]
        return np.concatenate(rows + [vote[None]]).astype(np.float32)

    def __call__(self, wave, lengths=None, speaker_stats: dict | None = None) -> torch.Tensor:
        return torch.from_numpy(self.predict(wave, lengths, speaker_stats))
