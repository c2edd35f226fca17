"""Soft voting over members, and the whole model: waveform -> features -> members -> probabilities."""

from __future__ import annotations

from collections.abc import Sequence

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
    one row per member in ``members`` order, then the weighted soft vote."""

    def __init__(self, cfg: Config, labels: Sequence[str]):
        super().__init__()
        self.cfg = cfg
        self.labels = list(labels)
        self.member_names = list(cfg.model.members)
        self.features = FeaturePipeline(cfg.features)
        self.members = nn.ModuleDict({n: build_member(n, cfg, len(self.labels)) for n in self.member_names})
        self.register_buffer("weights", torch.ones(len(self.member_names)) / len(self.member_names))

    def member_probs(self, wave: torch.Tensor, lengths: torch.Tensor | None = None,
                     speaker_stats: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
        logmel, mfcc, valid = self.features(wave, lengths, speaker_stats)
        return [torch.softmax(self.members[n](member_input(n, logmel, mfcc), valid), dim=-1)
                for n in self.member_names]

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None,
                speaker_stats: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        probs = self.member_probs(wave, lengths, speaker_stats)
        return torch.stack(probs + [soft_vote(probs, self.weights)])
