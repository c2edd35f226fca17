"""A vector member as one torch module, for ONNX export: its per-clip vectors, then its fitted head.

A vector member (``members.base.VectorMember``) turns each clip into one vector and a fitted classifier
head (``SmileMember``'s state: standardisation, a classifier, a calibration map) into probabilities, in
numpy. Here the head is rebuilt from its saved arrays as torch operations:

    z = calibration(classifier((x - centre) / scale))        (B, P) over the P classes seen in training
    out = log_softmax(z) in the model's C columns, log(1e-12) in the columns of unseen classes

``centre`` and ``scale`` fold the member's single-utterance normalisation (its training vectors' mean and
std, in speaker mode) into the head's own standardisation. The output is log-probabilities at temperature
1, floored at log(1e-12) as ``ensemble.soften`` floors them, so the exported graph's
``softmax(out / T)`` is the ensemble's softened member row.

Heads it builds: logistic regression (an affine map) and the MLP (affine, ReLU, affine), each followed
by the calibration's affine map. It refuses, with ``NotExportable`` naming the setting, the RBF SVM
(support vectors and one-vs-one votes) and the quantile step (an inverse normal CDF per value).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

LOG_FLOOR = math.log(1e-12)  # ensemble.soften clips probabilities at 1e-12 before its log


class NotExportable(ValueError):
    """A member (or one of its settings) has no torch graph; the message says which and why."""


def _f32(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float64), dtype=np.float32))


class Head(nn.Module):
    """forward(x (B, D)) -> (B, C) log-probabilities at temperature 1 (see the module docstring)."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict,
                 norm: tuple[np.ndarray, np.ndarray] | None = None, setting: str = "head"):
        super().__init__()
        kind = meta.get("kind")
        if "quantiles" in arrays or int(meta.get("quantiles", 0) or 0):
            raise NotExportable(f"{setting}.quantiles: the quantile step (an inverse normal CDF per value) has no "
                                "ONNX graph here; set quantiles: 0 to export this member")
        if kind not in ("logreg", "mlp"):
            raise NotExportable(f"{setting}.kind: a {kind} head (support vectors, one-vs-one votes) has no ONNX "
                                "graph here; logreg and mlp export")
        mean = np.asarray(arrays["mean"], np.float64)
        scale = np.asarray(arrays["scale"], np.float64)
        if norm is not None:  # ((x - m) / s - mean) / scale = (x - (m + mean s)) / (s scale)
            m, s = (np.asarray(a, np.float64) for a in norm)
            mean, scale = m + mean * s, s * scale
        cal_w = np.asarray(arrays["cal_w"], np.float64)
        cal_b = np.asarray(arrays["cal_b"], np.float64)
        self.register_buffer("centre", _f32(mean))
        if kind == "logreg":  # one affine map: coefficients, calibration and 1 / scale folded (float64, then float32)
            w = (np.asarray(arrays["coef"], np.float64).T @ cal_w.T) / scale[:, None]
            b = np.asarray(arrays["intercept"], np.float64) @ cal_w.T + cal_b
            self.register_buffer("w", _f32(w))
            self.register_buffer("b", _f32(b))
            self.hidden = None
        else:
            self.hidden = nn.Linear(len(mean), len(arrays["b1"]))
            with torch.no_grad():
                self.hidden.weight.copy_(_f32(np.asarray(arrays["w1"], np.float64) / scale[None, :]))
                self.hidden.bias.copy_(_f32(arrays["b1"]))
            w = np.asarray(arrays["w2"], np.float64).T @ cal_w.T
            b = np.asarray(arrays["b2"], np.float64) @ cal_w.T + cal_b
            self.register_buffer("w", _f32(w))
            self.register_buffer("b", _f32(b))
        n_classes = int(meta["n_classes"])
        classes = np.asarray(arrays["classes"], np.int64)
        place = np.zeros((len(classes), n_classes), np.float32)  # seen class i -> its column in the model
        place[np.arange(len(classes)), classes] = 1.0
        self.register_buffer("place", torch.from_numpy(place))
        self.register_buffer("unseen", torch.from_numpy((place.sum(0) == 0).astype(np.float32) * LOG_FLOOR))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self.centre
        if self.hidden is not None:
            x = torch.relu(self.hidden(x))
        z = torch.matmul(x, self.w) + self.b
        logp = torch.clamp(torch.log_softmax(z, dim=-1), min=LOG_FLOOR)
        return torch.matmul(logp, self.place) + self.unseen


class VectorGraph(nn.Module):
    """forward(wave (B, S), lengths (B,)) -> (B, C) log-probabilities: ``vectors`` (a module giving the
    member's (B, D) per-clip vectors from the waveform) followed by its ``Head``."""

    def __init__(self, vectors: nn.Module, head: Head):
        super().__init__()
        self.vectors, self.head = vectors, head

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.vectors(wave, lengths))


__all__ = ["Head", "LOG_FLOOR", "NotExportable", "VectorGraph"]
