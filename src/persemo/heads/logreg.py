"""``LogisticHead``: multinomial logistic regression, class-balanced, C by the inner grouped CV.

On EmoDB (5 folds, speakers held out) it is level in UAR with the RBF SVM and the MLP on ComParE
functionals, with the lowest log-loss and a 0.5 MB state (``benchmarks/results/peers_emodb.md``).
"""

from __future__ import annotations

import numpy as np

from .base import Head, full_scores, uar_oof

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


class LogisticHead(Head):
    """Multinomial logistic regression (state: ``coef`` (C, D), ``intercept`` (C,)).

    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-2, 1, (20, 5)), rng.normal(2, 1, (20, 5))]); y = np.repeat([0, 1], 20)
    >>> LogisticHead().fit(X, y, n_classes=2).predict_proba(X).shape
    (40, 2)
    """

    kind = "logreg"
    hyper_names = ("C",)

    def search(self, Z, y, n, splits, seed):
        from sklearn.linear_model import LogisticRegression

        oofs = {C: np.full((len(y), n), np.nan) for C in LOGREG_C}
        for tr, te in splits:
            basis = row_basis(Z[tr])
            a, b = _in_basis(Z[tr], basis), _in_basis(Z[te], basis)
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

    def fit_once(self, Z, y, n, hyper, seed):
        from sklearn.linear_model import LogisticRegression

        basis = row_basis(Z)
        clf = LogisticRegression(C=hyper["C"], class_weight="balanced", max_iter=2000).fit(_in_basis(Z, basis), y)
        coef, intercept = (clf.coef_ if basis is None else clf.coef_ @ basis.T), clf.intercept_
        if n == 2:  # one row for classes[1]; two symmetric rows give the same softmax
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        return {"coef": coef, "intercept": intercept}

    @staticmethod
    def scores(arrays, meta, Z):
        return Z @ arrays["coef"].T + arrays["intercept"]
