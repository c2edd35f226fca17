"""``MlpHead``: a one-hidden-layer ReLU network (torch to fit, numpy to run), weight decay and the number
of epochs by the inner grouped CV.

Full-batch AdamW with input dropout and a class-weighted loss; sized for thousands of functionals.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Head, balanced_weights, uar

MLP_WEIGHT_DECAY = (1e-3, 1e-1)
MLP_HIDDEN, MLP_EPOCHS, MLP_LR, MLP_DROPOUT = 128, 120, 1e-3, 0.5
MLP_EVERY = 10  # epochs between inner-CV checkpoints


def train_mlp(Z, y, n, weight_decay, epochs, seed, Zv=None, yv=None, hidden: int | None = None):
    """Full-batch AdamW on a ReLU MLP with input dropout and a class-weighted loss.

    With validation data: returns (UAR every MLP_EVERY epochs (K,), scores at each checkpoint [K x (Nv, n)]).
    Without: returns the weights as float64 arrays w1 (H, D), b1 (H,), w2 (n, H), b2 (n,).
    """
    hidden = MLP_HIDDEN if hidden is None else hidden
    torch.manual_seed(seed)
    Xt = torch.as_tensor(Z, dtype=torch.float32)
    yt = torch.as_tensor(y)
    net = torch.nn.Sequential(torch.nn.Dropout(MLP_DROPOUT), torch.nn.Linear(Z.shape[1], hidden),
                              torch.nn.ReLU(), torch.nn.Dropout(MLP_DROPOUT), torch.nn.Linear(hidden, n))
    opt = torch.optim.AdamW(net.parameters(), lr=MLP_LR, weight_decay=weight_decay)
    lossf = torch.nn.CrossEntropyLoss(weight=torch.as_tensor(balanced_weights(y, n), dtype=torch.float32))
    curve, scores = [], []
    Xv = None if Zv is None else torch.as_tensor(Zv, dtype=torch.float32)
    for epoch in range(1, epochs + 1):
        net.train()
        opt.zero_grad()
        lossf(net(Xt), yt).backward()
        opt.step()
        if Xv is not None and epoch % MLP_EVERY == 0:
            net.eval()
            with torch.no_grad():
                s = net(Xv).double().numpy()
            scores.append(s)
            curve.append(uar(yv, s.argmax(1)))
    if Xv is not None:
        return np.array(curve), scores
    lin1, lin2 = net[1], net[4]
    return {"w1": lin1.weight.detach().double().numpy(), "b1": lin1.bias.detach().double().numpy(),
            "w2": lin2.weight.detach().double().numpy(), "b2": lin2.bias.detach().double().numpy()}


class MlpHead(Head):
    """One hidden layer (state: ``w1`` (H, D), ``b1`` (H,), ``w2`` (C, H), ``b2`` (C,))."""

    kind = "mlp"
    hyper_names = ("weight_decay", "epochs")

    def search(self, Z, y, n, splits, seed):
        best = None
        for wd in MLP_WEIGHT_DECAY:
            curves, oofs = [], []
            for tr, te in splits:
                curve, scores = train_mlp(Z[tr], y[tr], n, wd, MLP_EPOCHS, seed, Z[te], y[te])
                curves.append(curve)
                oofs.append((te, scores))
            mean_curve = np.mean(curves, axis=0)  # (checkpoints,) mean inner UAR
            k = int(np.argmax(mean_curve))
            if best is None or mean_curve[k] > best[0]:
                oof = np.full((len(y), n), np.nan)
                for te, scores in oofs:
                    oof[te] = scores[k]
                best = (float(mean_curve[k]), wd, (k + 1) * MLP_EVERY, oof)
        uar_, wd, epochs, oof = best
        return {"weight_decay": wd, "epochs": epochs, "hidden": MLP_HIDDEN}, uar_, oof

    def fit_once(self, Z, y, n, hyper, seed, rows=None):
        return train_mlp(Z, y, n, hyper["weight_decay"], hyper["epochs"], seed, hidden=hyper.get("hidden"))

    @staticmethod
    def scores(arrays, meta, Z):
        H = np.maximum(Z @ arrays["w1"].T + arrays["b1"], 0.0)
        return H @ arrays["w2"].T + arrays["b2"]
