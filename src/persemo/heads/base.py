"""``Head``: what every classifier head shares, one vector per clip -> calibrated class probabilities.

A head is fitted on (N, D) vectors (openSMILE functionals, an encoder's pooled states) with speaker groups.
Everything a kind shares lives here: an optional per-feature Gaussianisation (``gaussianise``),
standardisation, the inner speaker-grouped cross-validation that picks the kind's hyperparameters, the
calibration map fitted on its fair held-out rows (``heads.calibration``), the held-out probabilities the
ensemble's vote and the nested selection are chosen on, and the state (numpy arrays + a JSON-able dict;
no pickles). A kind is one subclass (``heads.logreg``, ``heads.svm``, ``heads.mlp``) with three methods:

- ``search(Z, y, n, splits, seed)`` -> (hyperparameters, inner UAR, held-out scores (N, n)): its grid,
  scored by the inner CV on standardised rows Z;
- ``fit_once(Z, y, n, hyper, seed)`` -> arrays: one fit at chosen hyperparameters;
- ``scores(arrays, meta, Z)`` -> (N, n) uncalibrated scores, in numpy, from the state alone.

Several corpora (``corpus`` given to ``fit`` with more than one value): an emotion a row's corpus does not have
is not a candidate for that row. Its held-out scores for such emotions are set below the others (the inner
UAR, the calibration and the selection judge each clip among its corpus's emotions), and a kind with
``masks_training`` (the logistic head) leaves them out of the row's softmax in training too, with each corpus
and emotion weighted alike (``cell_weights``), so the larger corpus does not set the boundaries alone. The
SVM and MLP heads still train on the union (one-vs-one pairs and one softmax over every emotion).

Repeated inner CV (``repeats`` > 1): after the search on the first speaker partition, the chosen
hyperparameters are refitted on ``repeats - 1`` further random speaker partitions of the same training rows
(cheap: one fit per fold, no grid), giving each training row one held-out probability row per partition
(``oof_repeats``, with each row's fold in ``fold_repeats``): what the nested selection's standard-error
rule measures differences between candidates on. The hyperparameters and calibration stay those of the
first partition, so the model itself does not depend on ``repeats``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from .calibration import CALIBRATIONS, calibrated, fit_matrix_calibration, fit_temperature_calibration

STATE_FORMAT = 1
INNER_FOLDS = 4  # inner grouped CV folds for hyperparameters and calibration
GAUSS_CLIP = 5.199337582605575  # the normal quantile of 1 - 1e-7: where ``gaussianise`` stops (sklearn's bound)
KINDS: dict[str, type["Head"]] = {}  # kind -> its class (each subclass registers itself)


def fit_quantiles(X: np.ndarray, n: int) -> np.ndarray:
    """(N, D) -> (n, D): each feature's quantiles at n evenly spaced levels from 0 to 1 (non-decreasing)."""
    if n < 2:
        raise ValueError(f"need at least 2 quantile levels, got {n}")
    q = np.percentile(np.asarray(X, np.float64), np.linspace(0.0, 100.0, n), axis=0)
    return np.maximum.accumulate(q, axis=0)


def gaussianise(X: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, D) float64: each feature mapped through its training quantiles (``fit_quantiles``) to
    a standard normal: piecewise linear onto the quantile levels, then the normal's inverse CDF, clipped at
    +-``GAUSS_CLIP``; values beyond the training range go to the nearest end. Ties in the quantiles
    (features with repeated values) map to the middle of their levels. Label-free and monotone per
    feature, so it keeps each feature's order and removes the shape of its distribution: skewed, heavy-tailed
    functionals stop dominating a linear model (``sklearn.preprocessing.QuantileTransformer`` with
    ``output_distribution="normal"`` gives the same numbers; tested).

    >>> q = fit_quantiles(np.arange(11.0)[:, None], 3)            # quantiles 0, 5, 10
    >>> gaussianise(np.array([[5.0], [10.0], [20.0]]), q).ravel().round(3).tolist()
    [0.0, 5.199, 5.199]
    """
    from scipy.special import ndtri

    X = np.asarray(X, np.float64)
    q = np.asarray(quantiles, np.float64)
    if X.ndim != 2 or q.ndim != 2 or q.shape[1] != X.shape[1]:
        raise ValueError(f"X must be (N, D) and quantiles (n, D); got {X.shape} and {q.shape}")
    n = len(q)
    step = 1.0 / (n - 1)
    below = np.zeros(X.shape, np.int64)  # per value: how many quantiles lie strictly below it ...
    upto = np.zeros(X.shape, np.int64)  # ... and how many at or below it
    for level in q:
        below += level < X
        upto += level <= X
    # interpolate from the last quantile at or below x upward, and from the first at or above it downward;
    # the two agree between distinct quantiles and average to the middle of a run of tied ones
    j = np.clip(upto - 1, 0, n - 2)
    lo, hi = np.take_along_axis(q, j, 0), np.take_along_axis(q, j + 1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = (j + (X - lo) / (hi - lo)) * step
        k = np.clip(below, 1, n - 1)
        lo, hi = np.take_along_axis(q, k - 1, 0), np.take_along_axis(q, k, 0)
        down = (k - (hi - X) / (hi - lo)) * step
    u = 0.5 * (up + down)
    u[X >= q[-1]] = 1.0  # beyond the training range (and a constant feature's value): the nearest end
    u[X <= q[0]] = 0.0
    return np.clip(ndtri(u), -GAUSS_CLIP, GAUSS_CLIP)



def inner_splits(y: np.ndarray, groups: np.ndarray | None, seed: int,
                 repeat: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner CV (train rows, test rows): grouped by speaker when there are groups to hold out, else
    stratified. ``repeat`` 0 is scikit-learn's ``GroupKFold`` (sizes balanced, deterministic); repeat r > 0 a
    random grouped partition (speakers shuffled with ``seed`` and r, each put in the fold with the fewest rows)."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    if groups is not None and len(np.unique(groups)) >= 3:
        names, codes = np.unique(groups, return_inverse=True)
        k = min(INNER_FOLDS, len(names))
        if repeat == 0:
            return list(GroupKFold(n_splits=k).split(y, y, groups))
        rng = np.random.default_rng([seed, repeat])
        sizes = np.bincount(codes)
        load, fold_of = np.zeros(k), np.empty(len(names), np.int64)
        for g in rng.permutation(len(names)):
            fold_of[g] = int(np.argmin(load))
            load[fold_of[g]] += sizes[g]
        fold = fold_of[codes]
        return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]
    n = max(2, min(INNER_FOLDS, int(np.bincount(y).min())))
    return list(StratifiedKFold(n_splits=n, shuffle=True, random_state=seed + 1000 * repeat).split(y, y))


def uar(y: np.ndarray, pred: np.ndarray) -> float:
    """Unweighted average recall over the classes present in y."""
    present = np.unique(y)
    return float(np.mean([np.mean(pred[y == c] == c) for c in present]))


def uar_oof(y: np.ndarray, oof: np.ndarray) -> float:
    """The UAR of held-out scores (N, C) on the rows that have them (finite)."""
    covered = np.isfinite(oof[:, 0])
    return uar(y[covered], oof[covered].argmax(1))


def cell_weights(y: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(N,) per-row weights n_rows / (n_cells * count of the row's cell), a cell being a (corpus, class) pair
    present in the rows: every corpus and every emotion in it weighs alike (one corpus: scikit-learn's
    ``class_weight='balanced'``).

    >>> cell_weights(np.array([0, 0, 1, 0]), np.array([0, 0, 0, 1])).round(3).tolist()
    [0.667, 0.667, 1.333, 1.333]
    """
    key = np.asarray(cells, np.int64) * (int(np.max(y)) + 1) + np.asarray(y, np.int64)
    _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    return len(y) / (len(counts) * counts[inv].astype(np.float64))


def balanced_weights(y: np.ndarray, n: int) -> np.ndarray:
    """Per-class weights n_rows / (n_present * count): scikit-learn's ``class_weight='balanced'``."""
    counts = np.bincount(y, minlength=n).astype(np.float64)
    return np.where(counts > 0, len(y) / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0)


def full_scores(dec: np.ndarray, classes: np.ndarray, n: int) -> np.ndarray:
    """Decision values over ``classes`` -> (N, n), absent classes far below the rest."""
    if dec.ndim == 1:  # sklearn's binary case: one column, positive for classes[1]
        dec = np.stack([-dec / 2, dec / 2], axis=1)
    out = np.repeat(dec.min(axis=1, keepdims=True) - 1.0, n, axis=1)
    out[:, classes] = dec
    return out


class Head:
    """Standardisation + a classifier of one kind + calibration; state is arrays + a dict (see module doc).

    ``Head.create(kind, ...)`` builds the head of that kind (``KINDS``); ``Head.from_state`` rebuilds any
    kind from its state. ``quantiles`` > 0: each value is first Gaussianised through that many of its
    training quantiles (kept in the state). ``calibration``: 'temperature' (one temperature on the fair inner
    held-out scores: never changes the classifier's decisions) or 'matrix' (the full multinomial Platt map
    used before issue 22, which can overrule them; on EmoDB it cost 2-5 UAR points with all emotions and
    10-30 with training speakers heard in one or two emotions, ``benchmarks/results/confound_emodb.md``).
    """

    kind: ClassVar[str] = ""
    hyper_names: ClassVar[tuple[str, ...]] = ()  # the hyperparameters ``chosen`` reports
    masks_training: ClassVar[bool] = False  # several corpora: leaves a corpus's absent emotions out of its rows' loss

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            KINDS[cls.kind] = cls

    def __init__(self, feature_set: str | None = None, quantiles: int = 0, calibration: str = "temperature",
                 repeats: int = 1):
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, not {calibration!r}")
        if quantiles == 1 or quantiles < 0:
            raise ValueError(f"quantiles must be 0 (off) or at least 2, not {quantiles}")
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, not {repeats}")
        self.calibration = calibration
        self.feature_set = feature_set
        self.quantiles = int(quantiles)
        self.repeats = int(repeats)
        self.arrays: dict[str, np.ndarray] = {}
        self.meta: dict = {}
        self.oof_proba: np.ndarray | None = None  # after fit: held-out probabilities of the training rows
        self.oof_fair: np.ndarray | None = None  # after fit: rows whose class their inner training part held
        # after fit, one per inner partition (the first is oof_proba's): (R, N, n_classes) held-out
        # probabilities, (R, N) each row's inner fold (-1: not held out) and (R, N) fair rows
        self.oof_repeats: np.ndarray | None = None
        self.fold_repeats: np.ndarray | None = None
        self.fair_repeats: np.ndarray | None = None
        # while fitting on several corpora: each row's corpus code (N,) and allowed classes (N, present classes)
        self.cells: np.ndarray | None = None
        self.allowed: np.ndarray | None = None

    @staticmethod
    def create(kind: str, feature_set: str | None = None, quantiles: int = 0, calibration: str = "temperature",
               repeats: int = 1) -> "Head":
        """A new, unfitted head of ``kind`` (one of ``KINDS``)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        return KINDS[kind](feature_set, quantiles, calibration, repeats)

    # --- what a kind defines
    def search(self, Z: np.ndarray, y: np.ndarray, n: int, splits: list, seed: int) -> tuple[dict, float, np.ndarray]:
        raise NotImplementedError

    def fit_once(self, Z: np.ndarray, y: np.ndarray, n: int, hyper: dict, seed: int,
                 rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``rows``: which of the training rows Z's are (None: all), for the per-row corpus facts."""
        raise NotImplementedError

    @staticmethod
    def scores(arrays: dict[str, np.ndarray], meta: dict, Z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # --- shared
    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int, groups: Sequence | None = None,
            seed: int = 0, origin: Sequence | None = None, corpus: Sequence | None = None) -> "Head":
        """X (N, D) vectors, y (N,) class indices in 0..n_classes-1, groups (N,) speakers or None.

        ``origin`` (N,): for augmented training data, each row's original row (an original's is its own
        index). The inner CV that picks the hyperparameters and fits the calibration then splits the
        originals and puts every copy in its original's fold, so no clip is judged by a model trained on
        its own copy (with speaker groups that holds anyway: copies share their original's speaker).
        Held-out copies are scored too: scoring originals only, the default member fell from 74.5 to
        71.8 UAR on EmoDB (``benchmarks/results/emodb_smile_origin.md``), its C chosen for clean clips alone.

        ``corpus`` (N,): each row's corpus; with more than one, each row is judged among its corpus's
        emotions (the ones its corpus has in y; see the module docstring).
        """
        X = np.asarray(X, np.float64)
        y = np.asarray(y, np.int64)
        if X.ndim != 2 or len(y) != len(X):
            raise ValueError(f"X must be (N, D) and y (N,); got {X.shape} and {y.shape}")
        origin = np.arange(len(y)) if origin is None else np.asarray(origin, np.int64)
        if origin.shape != y.shape or origin.min() < 0 or origin.max() >= len(y) or np.any(
                origin[origin] != origin):
            raise ValueError("origin must give each row's original row, and an original row's own index")
        if y.min() < 0 or y.max() >= n_classes:
            raise ValueError(f"labels must be in 0..{n_classes - 1}")
        present = np.unique(y)
        if len(present) < 2:
            raise ValueError("need at least two classes to fit")
        yc = np.searchsorted(present, y)  # classes renumbered 0..P-1 over the present ones
        self.cells = self.allowed = None
        if corpus is not None:
            names, cells = np.unique(np.asarray(corpus, str), return_inverse=True)
            if len(cells) != len(y):
                raise ValueError("corpus must give each row's corpus")
            if len(names) > 1:
                has = np.zeros((len(names), len(present)), bool)
                has[cells, yc] = True
                self.cells, self.allowed = cells, has[cells]
        g = None if groups is None else np.asarray(groups)
        extra = {}
        if self.quantiles:
            extra["quantiles"] = fit_quantiles(X, self.quantiles)
            X = gaussianise(X, extra["quantiles"])
        mean = X.mean(0)
        std = X.std(0)
        scale = np.where(std > 1e-12, std, 1.0)
        Z = (X - mean) / scale
        firsts = np.flatnonzero(origin == np.arange(len(y)))
        where = np.full(len(y), -1)
        where[firsts] = np.arange(len(firsts))
        fold = where[origin]  # each row's original's position among the originals
        partitions = []
        for r in range(self.repeats):
            partitions.append([(np.flatnonzero(np.isin(fold, tr)), np.flatnonzero(np.isin(fold, te))) for tr, te in
                               inner_splits(yc[firsts], None if g is None else g[firsts], seed, r)])
        splits = partitions[0]
        P = len(present)
        hyper, inner_uar, oof = self.search(Z, yc, P, splits, seed)
        if self.allowed is not None:  # judged among each row's own corpus's emotions
            oof = self.among_allowed(oof)
            inner_uar = uar_oof(yc, oof)
        arrays = self.fit_once(Z, yc, P, hyper, seed)
        fair = _fair(yc, splits) & np.isfinite(oof[:, 0])
        covered = np.isfinite(oof[:, 0])
        # calibrate on the held-out rows whose class the inner model that scored them was trained on: with
        # speakers heard in few emotions (issue 22), holding a speaker out often removes their emotions from
        # the inner training part, and those rows, wrong by construction, taught the full matrix map to
        # overrule the classifier (EmoDB, 1 emotion per training speaker: 20 vs 37 UAR on eGeMAPS)
        self.oof_fair = fair  # the held-out rows whose class the inner model saw
        if self.calibration == "matrix":  # as before issue 22 (on every held-out row)
            cal_w, cal_b = fit_matrix_calibration(oof[covered], yc[covered], P)
        else:
            cal_w, cal_b = fit_temperature_calibration(oof[fair], yc[fair], P)
        # each training row's calibrated probabilities from the inner fold that held it out (NaN where no
        # fold did): held-out predictions on the training speakers, for choosing a vote inside them
        probs, folds, fairs = [], [], []
        for r, part in enumerate(partitions):
            scores = oof if r == 0 else self.among_allowed(self._refit_scores(Z, yc, P, part, hyper, seed))
            probs.append(self._oof_probabilities(scores, present, n_classes, cal_w, cal_b))
            folds.append(_fold_of(len(y), part, np.isfinite(scores[:, 0])))
            fairs.append(_fair(yc, part) & np.isfinite(scores[:, 0]))
        self.oof_repeats, self.fold_repeats, self.fair_repeats = np.stack(probs), np.stack(folds), np.stack(fairs)
        self.oof_proba = self.oof_repeats[0]
        # C order, as from_state keeps them: the same BLAS path, so a reloaded head gives the same bits
        # (a fitted coefficient matrix can come Fortran-ordered, e.g. scikit-learn 1.9.1's coef_)
        self.arrays = {k: np.ascontiguousarray(v) for k, v in {
            "mean": mean, "scale": scale, "classes": present.astype(np.int64), "cal_w": cal_w, "cal_b": cal_b,
            **extra, **arrays}.items()}
        self.meta = {"format": STATE_FORMAT, "kind": self.kind, "n_classes": int(n_classes),
                     "quantiles": self.quantiles, "n_features": int(X.shape[1]), "feature_set": self.feature_set,
                     "calibration": self.calibration,
                     "inner_cv": {"folds": len(splits), "grouped": g is not None and len(np.unique(g)) >= 3,
                                  "uar": inner_uar},
                     **hyper}
        if self.allowed is not None:
            self.meta["corpora"] = {str(c): [int(present[k]) for k in np.flatnonzero(has[i])] for i, c in enumerate(names)}
        self.cells = self.allowed = None  # facts of the training rows only
        return self

    def among_allowed(self, scores: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Scores (N, P) of the training rows (or of ``rows``) with each row's absent emotions (several corpora)
        set 10 below its lowest allowed score; unchanged with one corpus."""
        if self.allowed is None:
            return scores
        allowed = self.allowed if rows is None else self.allowed[rows]
        out = np.array(scores, np.float64)
        ok = np.isfinite(out[:, 0])
        low = np.where(allowed, out, np.inf).min(1, keepdims=True) - 10.0
        out[ok] = np.where(allowed[ok], out[ok], low[ok])
        return out

    def _refit_scores(self, Z, y, n, part, hyper, seed) -> np.ndarray:
        """Held-out scores (N, n) of one more inner partition, at the chosen hyperparameters."""
        out = np.full((len(y), n), np.nan)
        for tr, te in part:
            present = np.unique(y[tr])
            if len(present) < 2:  # nothing to fit: these rows stay unscored
                continue
            if self.allowed is not None and self.masks_training:  # every class kept: the mask is per class
                present = np.arange(n)
            arrays = self.fit_once(Z[tr], np.searchsorted(present, y[tr]), len(present), hyper, seed, rows=tr)
            out[te] = full_scores(self.scores(arrays, hyper, Z[te]), present, n)
        return out

    @staticmethod
    def _oof_probabilities(scores, present, n_classes, cal_w, cal_b) -> np.ndarray:
        covered = np.isfinite(scores[:, 0])
        out = np.full((len(scores), n_classes), np.nan)
        out[np.ix_(covered, present)] = calibrated(scores[covered], cal_w, cal_b)
        out[covered] = np.nan_to_num(out[covered], nan=0.0)
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, D) vectors -> (N, n_classes) probabilities; classes absent in training get 0."""
        if not self.arrays:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.meta["n_features"]:
            raise ValueError(f"expected (N, {self.meta['n_features']}) features, got {X.shape}")
        p = calibrated(self.raw_scores(X), self.arrays["cal_w"], self.arrays["cal_b"])
        out = np.zeros((len(X), self.meta["n_classes"]))
        out[:, self.arrays["classes"]] = p
        return out

    def raw_scores(self, X: np.ndarray) -> np.ndarray:
        """Uncalibrated class scores (N, present classes) of raw vectors (N, D)."""
        return state_scores(self.arrays, self.meta, X)

    @property
    def chosen(self) -> dict:
        """The hyperparameters the inner CV chose."""
        return {k: self.meta[k] for k in self.hyper_names if k in self.meta}

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, meta): numpy arrays (for safetensors) and a JSON-able dict; all inference needs."""
        return dict(self.arrays), dict(self.meta)  # C order already (fit, from_state)

    @staticmethod
    def from_state(arrays: dict[str, np.ndarray], meta: dict) -> "Head":
        """The head of the kind ``meta`` names, from ``state()``'s arrays and meta."""
        if meta.get("format") != STATE_FORMAT or meta.get("kind") not in KINDS:
            raise ValueError(f"not a classifier head state (format {meta.get('format')}, kind {meta.get('kind')})")
        # states without the calibration field were fitted with the matrix map
        m = KINDS[meta["kind"]](meta.get("feature_set"), int(meta.get("quantiles", 0)),
                                meta.get("calibration", "matrix"))
        m.arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        m.meta = dict(meta)
        return m


def state_scores(arrays: dict[str, np.ndarray], meta: dict, X: np.ndarray) -> np.ndarray:
    """Uncalibrated class scores (N, C) of raw vectors, from a head's state alone."""
    X = np.asarray(X, np.float64)
    if "quantiles" in arrays:
        X = gaussianise(X, arrays["quantiles"])
    Z = (X - arrays["mean"]) / arrays["scale"]
    if meta.get("kind") not in KINDS:
        raise ValueError(f"unknown head kind {meta.get('kind')!r}")
    return KINDS[meta["kind"]].scores(arrays, meta, Z)


def _fair(y: np.ndarray, part: list) -> np.ndarray:
    """The rows held out by a fold whose training part held their class."""
    fair = np.zeros(len(y), bool)
    for tr, te in part:
        fair[te] = np.isin(y[te], y[tr])
    return fair


def _fold_of(n: int, part: list, covered: np.ndarray) -> np.ndarray:
    """(n,) each row's fold in ``part``, -1 where it was not held out (or not scored)."""
    fold = np.full(n, -1, np.int64)
    for f, (_, te) in enumerate(part):
        fold[te] = f
    fold[~covered] = -1
    return fold
