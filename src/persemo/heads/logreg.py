"""``LogisticHead``: multinomial logistic regression, class-balanced, C by the inner grouped CV.

On EmoDB (5 folds, speakers held out) it is level in UAR with the RBF SVM and the MLP on ComParE
functionals, with the lowest log-loss and a 0.5 MB state (``benchmarks/results/peers_emodb.md``).
"""

from __future__ import annotations

import numpy as np

from .base import Head, cell_weights, full_scores, uar_oof

LOGREG_C = (1e-3, 1e-2, 1e-1, 1.0)  # ascending: each fit warm-starts from the last


def row_basis(Z: np.ndarray) -> np.ndarray | None:
    """(D, r) orthonormal basis of the span of Z's rows; None when there are no fewer rows than columns.

    An L2-penalised linear model's weights lie in that span (any part orthogonal to it leaves every score
    unchanged and only adds to the penalty), so fitting on ``Z @ basis`` (r <= N columns) and mapping the
    weights back by ``basis.T`` gives the same model as fitting on Z; with N clips and D >> N functionals
    (EmoDB: about 430 training clips, 6,373 ComParE features) the solver works on N instead of D variables:
    the member's C grid fits in about 0.6 of the time (``benchmarks/results/fit_speed.md``).
    """
    n, d = Z.shape
    if n >= d:  # nothing to gain
        return None
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    keep = s > s[0] * max(n, d) * np.finfo(np.float64).eps
    keep[0] = True  # at least one column, also for constant features (all zero once standardised)
    return vt[keep].T


def _in_basis(Z: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """Z's coordinates in ``row_basis``'s basis (Z itself without one)."""
    return Z if basis is None else Z @ basis


def masked_logreg(Z: np.ndarray, y: np.ndarray, allowed: np.ndarray, weights: np.ndarray, C: float,
                  start: np.ndarray | None = None, max_iter: int = 2000):
    """Multinomial logistic regression where row i's softmax runs over ``allowed[i]`` only (its corpus's
    emotions): the objective C * sum_i w_i * -log p_i(y_i) + |W|^2 / 2 (intercepts unpenalised), scikit-learn's
    with per-row weights, by L-BFGS with scikit-learn's scaling and tolerance. Z (N, D), y (N,) in 0..n-1 (each y_i allowed), allowed (N, n) bool,
    weights (N,). ``start``: the flat parameters of an earlier fit (a warm start). Returns (W (n, D), b (n,),
    the flat parameters). A class no row allows or has is pushed below the rest only by the penalty."""
    from scipy.optimize import minimize

    N, D = Z.shape
    n = allowed.shape[1]
    if not allowed[np.arange(N), y].all():
        raise ValueError("every row's own class must be allowed")
    off = np.where(allowed, 0.0, -np.inf)
    # divided by C * sum(w), as scikit-learn's lbfgs does, so that its gradient tolerance means the same here
    wC = np.asarray(weights, np.float64) / np.sum(weights)
    reg = 1.0 / (C * np.sum(weights))
    rows = np.arange(N)

    def loss(theta):
        W, b = theta[:n * D].reshape(n, D), theta[n * D:]
        L = Z @ W.T + b + off
        top = L.max(1, keepdims=True)
        E = np.exp(L - top)
        S = E.sum(1, keepdims=True)
        logp = L[rows, y] - top[:, 0] - np.log(S[:, 0])
        G = E / S
        G[rows, y] -= 1.0
        G *= wC[:, None]
        return (float(-(wC * logp).sum() + 0.5 * reg * (W * W).sum()),
                np.concatenate([(G.T @ Z + reg * W).ravel(), G.sum(0)]))

    theta0 = np.zeros(n * (D + 1)) if start is None else start
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": 1e-4, "ftol": 64 * np.finfo(float).eps})
    return res.x[:n * D].reshape(n, D), res.x[n * D:], res.x


class LogisticHead(Head):
    """Multinomial logistic regression (state: ``coef`` (C, D), ``intercept`` (C,)).

    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-2, 1, (20, 5)), rng.normal(2, 1, (20, 5))]); y = np.repeat([0, 1], 20)
    >>> LogisticHead().fit(X, y, n_classes=2).predict_proba(X).shape
    (40, 2)
    """

    kind = "logreg"
    hyper_names = ("C",)
    masks_training = True

    def search(self, Z, y, n, splits, seed):
        from sklearn.linear_model import LogisticRegression

        oofs = {C: np.full((len(y), n), np.nan) for C in LOGREG_C}
        for tr, te in splits:
            basis = row_basis(Z[tr])
            a, b = _in_basis(Z[tr], basis), _in_basis(Z[te], basis)
            if self.allowed is not None:  # several corpora: the masked fit, warm-started along the grid
                theta = None
                for C in LOGREG_C:
                    W, c, theta = masked_logreg(a, y[tr], self.allowed[tr], cell_weights(y[tr], self.cells[tr]), C,
                                                theta)
                    oofs[C][te] = self.among_allowed(b @ W.T + c, te)
                continue
            clf = LogisticRegression(class_weight="balanced", max_iter=2000, warm_start=True)
            for C in LOGREG_C:
                clf.set_params(C=C).fit(a, y[tr])
                oofs[C][te] = full_scores(clf.decision_function(b), clf.classes_, n)
        best = None
        for C in LOGREG_C:
            uar = uar_oof(y, oofs[C])
            if best is None or uar > best[0]:
                best = (uar, C, oofs[C])
        uar, C, oof = best
        return {"C": C}, uar, oof

    def fit_once(self, Z, y, n, hyper, seed, rows=None):
        from sklearn.linear_model import LogisticRegression

        basis = row_basis(Z)
        if self.allowed is not None:
            rows = np.arange(len(y)) if rows is None else rows
            W, c, _ = masked_logreg(_in_basis(Z, basis), y, self.allowed[rows], cell_weights(y, self.cells[rows]),
                                    hyper["C"])
            return {"coef": W if basis is None else W @ basis.T, "intercept": c}
        clf = LogisticRegression(C=hyper["C"], class_weight="balanced", max_iter=2000).fit(_in_basis(Z, basis), y)
        coef, intercept = (clf.coef_ if basis is None else clf.coef_ @ basis.T), clf.intercept_
        if n == 2:  # one row for classes[1]; two symmetric rows give the same softmax
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        return {"coef": coef, "intercept": intercept}

    @staticmethod
    def scores(arrays, meta, Z):
        return Z @ arrays["coef"].T + arrays["intercept"]
