"""Member kind ``cnn``: a CNN on log-mel spectrograms (conv blocks of BatchNorm, ReLU and MaxPool,
pooling, dropout, linear), trained with SpecAugment."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..augment import spec_augment
from ..errors import ConfigError
from . import register
from .base import TorchMember


@dataclass(frozen=True)
class CNNSettings:
    channels: tuple[int, ...] = field(default=(32, 64, 128), metadata={"help": "filters per conv block"})
    hidden: int = field(default=0, metadata={"help": "extra fully connected layer before the classifier "
                                                     "(0 = none: pooled channels -> emotions, as described)"})
    pooling: str = field(default="gap", metadata={"help": "gap: global average over frequency and time (as "
                                                          "described); time: average over time only, keeping the "
                                                          "frequency axis (pitch and formant positions); "
                                                          "timestats: time with the standard deviation over time "
                                                          "beside the mean"})
    dropout: float = field(default=0.25, metadata={"help": "dropout before the classifier"})

    def __post_init__(self) -> None:
        if not (isinstance(self.channels, tuple) and 1 <= len(self.channels) <= 8 and all(
                isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 1024 for c in self.channels)):
            raise ConfigError(f"model.cnn.channels must be a list of 1 to 8 whole numbers from 1 to 1024, "
                              f"not {self.channels!r}")
        if not 0 <= self.hidden <= 8192:
            raise ConfigError("model.cnn.hidden must be from 0 to 8192")
        if self.pooling not in ("gap", "time", "timestats"):
            raise ConfigError(f"model.cnn.pooling must be 'gap', 'time' or 'timestats', not {self.pooling!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError("model.cnn.dropout must be in [0, 1)")


@register
class CNNMember(TorchMember):
    """The CNN on the front end's log-mel frames, SpecAugment in training (``train.specaug_*``)."""

    kind = "cnn"
    Settings = CNNSettings
    uses = "logmel"

    def build(self) -> nn.Module:
        s = self.settings
        return CNN(len(self.labels), s.channels, s.hidden, s.dropout, s.pooling, self.cfg.features.n_mels)

    def augment(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        t = self.cfg.train
        return spec_augment(x, t.specaug_freq_masks, t.specaug_freq_width, t.specaug_time_masks,
                            t.specaug_time_width, valid)


class CNN(nn.Module):
    """forward(logmel (B, n_mels, T), valid (B,) frames) -> logits (B, n_classes).

    Three blocks of 32 -> 64 -> 128 filters by default. ``pooling="gap"`` averages over frequency and
    time, so the 128 channels feed the classifier (as described); ``pooling="time"`` averages over time
    only and keeps the (pooled) frequency axis, channels x n_mels / 2**blocks features, so the position
    of energy in frequency (pitch, formants) reaches the classifier. ``hidden`` > 0 puts one more fully
    connected layer in between. ``pooling="timestats"`` is ``time`` with the standard deviation over time
    beside the mean (statistics pooling): how much each channel-frequency feature varies within the clip
    reaches the classifier too, twice the features.
    """

    def __init__(self, n_classes: int, channels: tuple[int, ...] = (32, 64, 128), hidden: int = 0,
                 dropout: float = 0.25, pooling: str = "gap", n_mels: int = 64):
        super().__init__()
        self.pooling = pooling
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c
        # channels-last (NHWC) weights and input: the CPU kernels of these convolutions, batch norms and
        # pools run about a quarter faster that way, with the same results up to rounding
        self.body = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        if pooling in ("time", "timestats"):
            c_in *= max(1, n_mels // 2 ** len(channels))
        if pooling == "timestats":
            c_in *= 2
        head: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden > 0:
            head += [nn.Linear(c_in, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            c_in = hidden
        head.append(nn.Linear(c_in, n_classes))
        self.head = nn.Sequential(*head)

    def forward(self, logmel: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(logmel.unsqueeze(1).contiguous(memory_format=torch.channels_last))  # (B, C, F', T')
        if self.pooling in ("time", "timestats"):
            h = h.flatten(1, 2).unsqueeze(2)  # (B, C * F', 1, T'): every channel-frequency pair is a feature
        if valid is None:
            mask = torch.ones(h.shape[0], h.shape[-1], device=h.device)
        else:
            # average only over time steps that cover real frames, so padding does not dilute short clips
            # each pooled step covers 2**blocks input frames (the pools floor); T / T' is not that
            # when T is not a multiple of it (126 frames -> 15 steps), and would drop a partly valid step
            t = h.shape[-1]
            scale = float(2 ** sum(isinstance(m, nn.MaxPool2d) for m in self.body))
            steps = torch.clamp(torch.ceil(valid.float() / scale), min=1.0)
            mask = (torch.arange(t, device=h.device)[None, :] < steps[:, None]).float()  # (B, T')
        h = h.mean(dim=2)  # (B, C', T')
        n = mask.sum(-1, keepdim=True)
        pooled = (h * mask[:, None, :]).sum(-1) / n
        if self.pooling == "timestats":
            var = (((h - pooled[..., None]) ** 2) * mask[:, None, :]).sum(-1) / n
            pooled = torch.cat([pooled, torch.sqrt(var + 1e-5)], dim=1)
        return self.head(pooled)
