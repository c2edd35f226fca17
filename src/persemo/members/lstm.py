"""Member kind ``lstm``: a bidirectional LSTM on MFCC frames with masked pooling over all frames'
hidden states."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from . import register
from .base import TorchMember


@dataclass(frozen=True)
class LSTMSettings:
    hidden: int = field(default=128, metadata={"help": "LSTM hidden size per direction"})
    layers: int = field(default=2, metadata={"help": "stacked BiLSTM layers"})
    dropout: float = field(default=0.25, metadata={"help": "dropout between LSTM layers and before the head"})
    pooling: str = field(default="meanmax", metadata={"help": "meanmax or attention pooling over frames"})

    def __post_init__(self) -> None:
        if not (1 <= self.hidden <= 4096 and 1 <= self.layers <= 8):
            raise ConfigError("model.lstm.hidden must be from 1 to 4096 and model.lstm.layers from 1 to 8")
        if self.pooling not in ("meanmax", "attention"):
            raise ConfigError(f"model.lstm.pooling must be 'meanmax' or 'attention', not {self.pooling!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError("model.lstm.dropout must be in [0, 1)")


@register
class LSTMMember(TorchMember):
    """The BiLSTM on the front end's MFCC frames."""

    kind = "lstm"
    Settings = LSTMSettings
    uses = "mfcc"

    def build(self) -> nn.Module:
        s = self.settings
        return BiLSTM(self.cfg.features.mfcc_dim, len(self.labels), s.hidden, s.layers, s.dropout, s.pooling)


class BiLSTM(nn.Module):
    """forward(mfcc (B, D, T), valid (B,) frames) -> logits (B, n_classes).

    ``pooling``: "meanmax" concatenates the masked mean and max of the hidden states; "attention"
    is a learned softmax weighting over frames.
    """

    def __init__(self, n_features: int, n_classes: int, hidden: int = 128, layers: int = 2,
                 dropout: float = 0.25, pooling: str = "meanmax"):
        super().__init__()
        self.pooling = pooling
        self.inp = nn.LayerNorm(n_features)
        self.lstm = nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        width = 2 * hidden
        if pooling == "attention":
            self.score = nn.Linear(width, 1)
        else:
            width *= 2
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, n_classes))

    def forward(self, mfcc: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        x = self.inp(mfcc.transpose(1, 2))  # (B, T, D)
        t = x.shape[1]
        if valid is None:
            h, _ = self.lstm(x)  # (B, T, 2H)
        else:
            # packed, so the backward direction starts at each clip's last valid frame, not in the padding
            packed = nn.utils.rnn.pack_padded_sequence(x, valid.clamp(min=1, max=t).cpu(), batch_first=True,
                                                       enforce_sorted=False)
            h, _ = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=t)
        if valid is None:
            mask = torch.ones(h.shape[0], t, device=h.device)
        else:
            mask = (torch.arange(t, device=h.device)[None, :] < valid.clamp(min=1)[:, None]).float()
        m = mask.unsqueeze(-1)
        if self.pooling == "attention":
            s = self.score(h).squeeze(-1).masked_fill(mask == 0, -1e4)
            w = torch.softmax(s, dim=1).unsqueeze(-1)
            pooled = (h * w).sum(1)
        else:
            mean = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
            mx = h.masked_fill(m == 0, -1e4).amax(1)
            pooled = torch.cat([mean, mx], dim=-1)
        return self.head(pooled)
