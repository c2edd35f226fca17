"""Calibrating the vote: each member's softmax temperature and the vote weights, from held-out predictions.

A member that is confidently wrong on new speakers outvotes the others; a temperature fitted by least
log-loss on predictions for speakers it did not train on softens it without changing its own answers.
The vote weights are then chosen on the calibrated predictions (max UAR on a simplex grid).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from .ensemble import soften
from .evaluation import compute_metrics


def fit_temperature(probs: np.ndarray, y: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """The softmax temperature T that minimises the log-loss of softmax(log p / T) on held-out labels.

    ``probs`` (N, C) are one member's probabilities (at T = 1) for utterances it did not train on. T > 1
    softens an overconfident member, T < 1 sharpens a timid one; the arg-max, hence the member's own
    accuracy and UAR, does not change. Searched on a log scale in [lo, hi] (scipy's bounded Brent).
    """
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
    temps = [fit_temperature(p, y) for p in member_probs]
    return temps, choose_weights(np.stack([soften(p, t) for p, t in zip(member_probs, temps)]), y, labels)


def choose_weights(member_probs: np.ndarray, y: np.ndarray, labels: list[str], step: float = 0.1) -> list[float]:
    """Member weights on a simplex grid that maximise validation UAR; ties go to the most even weights."""
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


def cross_fold_calibration(oof: dict[str, list], members, labels: list[str], fitted_on: str) -> dict:
    """Member temperatures from k folds' test predictions (``train_once``'s ``oof``: protocol -> [(y, (M, N, C)
    probabilities at T = 1)] per fold).

    Per protocol: the temperatures fitted on every fold's predictions pooled, then the vote weights that
    maximise UAR on the calibrated pooled predictions (for a final model's ``model.temperatures`` and
    ``model.weights``), and per fold the metrics of the equal and the weighted vote with temperatures
    and weights fitted on the *other* folds only ("cross-fitted": no fold's labels calibrate or weigh
    its own predictions). ``fitted_on`` names the protocol the model is meant for (speaker-adapted when present).
    """
    members = list(members)
    out: dict = {"members": members, "protocols": {},
                 "fitted_on": fitted_on,
                 "how": "least log-loss softmax temperature per member on out-of-fold test predictions"}
    def fit(folds):  # temperatures, then vote weights on the calibrated probabilities (max UAR)
        return fit_vote(np.concatenate([f[1] for f in folds], axis=1), np.concatenate([f[0] for f in folds]), labels)

    for tag, folds in oof.items():
        temps, weights = fit(folds)
        per_fold: dict[str, list] = {}
        oof_probs: dict[str, list] = {}
        if len(folds) > 1 and len(members) > 1:
            for k, (y, probs) in enumerate(folds):
                ts, ws = fit([f for j, f in enumerate(folds) if j != k])
                cal = np.stack([soften(probs[m], t) for m, t in enumerate(ts)])
                for name, p in (("ensemble (equal, calibrated)", cal.mean(0)),
                                ("ensemble (weighted, calibrated)", np.tensordot(np.array(ws), cal, axes=1))):
                    per_fold.setdefault(name, []).append(compute_metrics(y, p, labels))
                    oof_probs.setdefault(name, []).append(p)
        out["protocols"][tag] = {"temperatures": temps, "weights": weights, "per_fold": per_fold,
                                 "probs": oof_probs, "y": [f[0] for f in folds]}
    return out
