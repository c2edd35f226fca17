"""How a head's class scores become probabilities: a temperature, or the full multinomial Platt map.

Both are fitted on the head's inner cross-validation held-out scores (``heads.base.Head.fit``) and stored
as a linear map ``(cal_w (C, C), cal_b (C,))``: probabilities = softmax(scores @ cal_w.T + cal_b).
"""

from __future__ import annotations

import numpy as np

CALIBRATIONS = ("temperature", "matrix")
MIN_CALIBRATION_ROWS = 10  # fewer fair held-out rows than this (or one class): temperature 1


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) scores."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def calibrated(scores: np.ndarray, cal_w: np.ndarray, cal_b: np.ndarray) -> np.ndarray:
    """Probabilities softmax(scores @ cal_w.T + cal_b) over the present classes."""
    return softmax(scores @ cal_w.T + cal_b)


def fit_matrix_calibration(scores: np.ndarray, y: np.ndarray, n_present: int,
                           l2: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial Platt scaling: W (C, C), b (C,) minimising log-loss of softmax(scores @ W.T + b) on
    held-out scores (N, C) with labels y in 0..C-1, plus ``l2`` * ||W - I / s||^2 (s: the scores' std)
    to stay near plain temperature scaling when the held-out set is small."""
    from scipy.optimize import minimize

    C = n_present
    onehot = np.eye(C)[y]
    scale = 1.0 / max(1e-6, float(scores.std()))  # start near a sensible temperature

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[: C * C].reshape(C, C), theta[C * C:]
        P = softmax(scores @ W.T + b)
        n = len(y)
        nll = -np.sum(onehot * np.log(np.clip(P, 1e-300, None))) / n
        R = W - scale * np.eye(C)
        G = (P - onehot) / n
        gW = G.T @ scores + 2 * l2 * R
        return nll + l2 * float(np.sum(R * R)), np.concatenate([gW.ravel(), G.sum(0)])

    theta0 = np.concatenate([(scale * np.eye(C)).ravel(), np.zeros(C)])
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return res.x[: C * C].reshape(C, C), res.x[C * C:]


def fit_temperature_calibration(scores: np.ndarray, y: np.ndarray, n_present: int,
                                min_rows: int = MIN_CALIBRATION_ROWS, l2: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Temperature scaling as a calibration map: W = I / T, b = 0 with T minimising the log-loss of
    softmax(scores / T) (plus ``l2`` * log(T)^2) on held-out scores (N, C), labels y in 0..C-1. It never changes which class scores
    highest, so the classifier's decisions (and UAR) are its own. With fewer than ``min_rows`` rows or a
    single class, T = 1 (a logistic regression's own probabilities)."""
    from scipy.optimize import minimize_scalar

    C = n_present
    y = np.asarray(y, np.int64)
    if len(y) < min_rows or len(np.unique(y)) < 2:
        return np.eye(C), np.zeros(C)
    rows = np.arange(len(y))

    def nll(log_inv_t: float) -> float:  # + l2 * log(1/T)^2: separable held-out scores stop short of one-hot
        z = scores * np.exp(log_inv_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[rows, y])) + l2 * log_inv_t ** 2

    res = minimize_scalar(nll, bounds=(-7.0, 7.0), method="bounded", options={"xatol": 1e-4})
    return np.exp(res.x) * np.eye(C), np.zeros(C)

