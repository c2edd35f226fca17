"""``SvmHead``: an RBF support vector machine, class-balanced, C and gamma by the inner grouped CV.

Fitted with scikit-learn (libsvm) on a precomputed kernel (the squared distances once for every gamma);
run in numpy from the state alone: support vectors, dual coefficients, intercepts, the support counts
and gamma (libsvm's layout). Its scores are sklearn's 'ovr' values (one-vs-one votes plus a tie-breaking
confidence), mapped to probabilities by the head's calibration.
"""

from __future__ import annotations

import numpy as np

from .base import Head, full_scores, uar_oof

SVM_C = (1.0, 10.0, 100.0)
SVM_GAMMA_X_DIM = (0.1, 0.3, 1.0)  # gamma = value / n_features (1 / n_features is sklearn's 'scale' here)
SVM_SCORES = "ovr"  # what calibration maps: summed one-vs-one values ('confidence') or sklearn's 'ovr'
# above this many training rows the grid is searched on a random subset of this many (the inner folds kept),
# and only the chosen point is fitted on every row of each inner fold: libsvm's cost grows about with the
# square of the rows, so on ASED with two noisy copies (~6,000 rows) the full 9-point grid took 93 s
SVM_SEARCH_ROWS = 1500


def sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of a and b, (len(a), len(b)): an RBF kernel's input."""
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def rbf_ovo(X: np.ndarray, support_vectors: np.ndarray, dual_coef: np.ndarray, intercept: np.ndarray,
            n_support: np.ndarray, gamma: float) -> np.ndarray:
    """One-vs-one decision values of an RBF SVM (libsvm's layout), (N, C(C-1)/2), positive for the
    pair's first class. X (N, D); support_vectors (S, D) grouped by class; dual_coef (C-1, S);
    intercept (C(C-1)/2,) in pair order (0,1), (0,2), ..., (1,2), ...; n_support (C,)."""
    X = np.asarray(X, np.float64)
    sv = np.asarray(support_vectors, np.float64)
    sq = (X * X).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * X @ sv.T
    K = np.exp(-gamma * np.maximum(sq, 0.0))
    start = np.concatenate([[0], np.cumsum(n_support)])
    n_classes = len(n_support)
    out = np.empty((len(X), n_classes * (n_classes - 1) // 2))
    k = 0
    for i in range(n_classes):
        si = slice(start[i], start[i + 1])
        for j in range(i + 1, n_classes):
            sj = slice(start[j], start[j + 1])
            out[:, k] = K[:, si] @ dual_coef[j - 1, si] + K[:, sj] @ dual_coef[i, sj] + intercept[k]
            k += 1
    return out


def ovo_votes(ovo: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, C(C-1)/2) one-vs-one values -> (votes, confidence sums), each (N, C)."""
    votes = np.zeros((len(ovo), n_classes))
    conf = np.zeros((len(ovo), n_classes))
    k = 0
    for i in range(n_classes):
        for j in range(i + 1, n_classes):
            conf[:, i] += ovo[:, k]
            conf[:, j] -= ovo[:, k]
            votes[:, i] += ovo[:, k] > 0
            votes[:, j] += ovo[:, k] <= 0
            k += 1
    return votes, conf


def rbf_decision_function(X: np.ndarray, support_vectors: np.ndarray, dual_coef: np.ndarray,
                          intercept: np.ndarray, n_support: np.ndarray, gamma: float) -> np.ndarray:
    """sklearn ``SVC(kernel='rbf', decision_function_shape='ovr').decision_function`` in numpy, (N, C):
    one-vs-one votes plus a tie-breaking confidence in (-1/3, 1/3), as sklearn's
    ``_ovr_decision_function`` (arguments as ``rbf_ovo``)."""
    votes, conf = ovo_votes(rbf_ovo(X, support_vectors, dual_coef, intercept, n_support, gamma),
                            len(n_support))
    return votes + conf / (3.0 * (np.abs(conf) + 1.0))


def svm_scores(ovo: np.ndarray, n_classes: int, kind: str) -> np.ndarray:
    """The (N, C) scores the calibration sees: sklearn's 'ovr' values or the raw 'confidence' sums."""
    votes, conf = ovo_votes(ovo, n_classes)
    return votes + conf / (3.0 * (np.abs(conf) + 1.0)) if kind == "ovr" else conf



class SvmHead(Head):
    """RBF SVM (state: ``support_vectors`` (S, D), ``dual_coef`` (C-1, S), ``intercept`` (C(C-1)/2,),
    ``n_support`` (C,); meta: C, gamma, svm_scores)."""

    kind = "svm"
    hyper_names = ("C", "gamma")

    def search(self, Z, y, n, splits, seed):
        d = Z.shape[1]
        if len(y) <= SVM_SEARCH_ROWS:
            uar, C, gx, oof = self._grid(Z, y, n, splits)
            return {"C": C, "gamma": gx / d, "svm_scores": SVM_SCORES}, uar, oof
        # a large training set: the grid on a random subset (each inner fold keeps its own rows of it), then
        # the chosen point's held-out scores on every row, one fit per inner fold
        keep = np.sort(np.random.default_rng([seed, len(y)]).choice(len(y), SVM_SEARCH_ROWS, replace=False))
        where = np.full(len(y), -1)
        where[keep] = np.arange(len(keep))
        sub = [(where[tr][where[tr] >= 0], where[te][where[te] >= 0]) for tr, te in splits]
        _, C, gx, _ = self._grid(Z[keep], y[keep], n, sub)
        hyper = {"C": C, "gamma": gx / d, "svm_scores": SVM_SCORES, "search_rows": SVM_SEARCH_ROWS}
        oof = self._refit_scores(Z, y, n, splits, hyper, seed)
        return hyper, uar_oof(y, oof), oof

    @staticmethod
    def _grid(Z, y, n, splits):
        """(inner UAR, C, gamma x dim, held-out scores) of the best grid point."""
        from sklearn.svm import SVC

        dist = sq_distances(Z, Z)  # once, for every gamma
        best = None
        for gx in SVM_GAMMA_X_DIM:
            K = np.exp(-(gx / Z.shape[1]) * dist)
            for C in SVM_C:
                oof = np.full((len(y), n), np.nan)
                for tr, te in splits:
                    if len(te) == 0 or len(np.unique(y[tr])) < 2:
                        continue
                    clf = SVC(C=C, kernel="precomputed", class_weight="balanced", decision_function_shape="ovo")
                    clf.fit(K[np.ix_(tr, tr)], y[tr])
                    ovo = clf.decision_function(K[np.ix_(te, tr)])
                    ovo = -ovo[:, None] if ovo.ndim == 1 else ovo  # binary: sklearn's sign is libsvm's flipped
                    scores = svm_scores(ovo, len(clf.classes_), SVM_SCORES)
                    oof[te] = full_scores(scores, clf.classes_, n)
                uar = uar_oof(y, oof)
                if best is None or uar > best[0]:
                    best = (uar, C, gx, oof)
        return best

    def fit_once(self, Z, y, n, hyper, seed, rows=None):
        from sklearn.svm import SVC

        clf = SVC(C=hyper["C"], kernel="rbf", gamma=hyper["gamma"], class_weight="balanced").fit(Z, y)
        sign = -1.0 if n == 2 else 1.0  # sklearn flips the binary case's signs from libsvm's
        return {"support_vectors": clf.support_vectors_, "dual_coef": sign * clf.dual_coef_,
                "intercept": sign * clf.intercept_, "n_support": clf.n_support_.astype(np.int64)}

    @staticmethod
    def scores(arrays, meta, Z):
        ovo = rbf_ovo(Z, arrays["support_vectors"], arrays["dual_coef"], arrays["intercept"],
                      arrays["n_support"], float(meta["gamma"]))
        return svm_scores(ovo, len(arrays["n_support"]), meta["svm_scores"])
