"""openSMILE functionals (ComParE_2016, eGeMAPSv02) and ``SmileMember``, a pickle-free classifier on them.

Extraction: each utterance is loaded with ``persemo.audio.load_audio`` (16 kHz mono float32) and passed
to ``opensmile.Smile.process_signal``; the functionals vector is cached on disk, keyed by the file's
content, the feature set and the opensmile version. openSMILE releases the GIL while it works, so two
threads, each with its own ``Smile``, are 1.4-1.8x faster than one on two cores (measured on EmoDB).

``SmileMember`` is an ensemble member whose whole state is numpy arrays plus a small JSON-able dict:
an optional per-feature Gaussianisation (``gaussianise``), standardisation, a classifier (RBF SVM,
multinomial logistic regression or a one-hidden-layer MLP) and a calibration map fitted on inner
cross-validation scores, so its probabilities mean something when averaged with other members'.
Inference is pure numpy; sklearn/torch are needed only to fit.
"""

from __future__ import annotations

import hashlib

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .audio import SAMPLE_RATE, AudioError, load_audio, speed_perturb
from .cache import FeatureCache, file_digest
from .corpora.base import Problem, Utterance

FEATURE_SETS = {"ComParE_2016": 6373, "eGeMAPSv02": 88}  # name -> number of functionals
MEMBER_KINDS = ("svm", "logreg", "mlp")
DEFAULT_KIND = "logreg"  # EmoDB 5-fold: UAR level with svm/mlp, lowest log-loss, 0.5 MB state (peers_emodb.md)
STATE_FORMAT = 1
INNER_FOLDS = 4  # inner grouped CV folds for hyperparameters and calibration

# Hyperparameter grids, chosen by inner grouped CV (UAR) on the training data only.
SVM_C = (1.0, 10.0, 100.0)
SVM_GAMMA_X_DIM = (0.1, 0.3, 1.0)  # gamma = value / n_features (1 / n_features is sklearn's 'scale' here)
SVM_SCORES = "ovr"  # what calibration maps: summed one-vs-one values ('confidence') or sklearn's 'ovr'
LOGREG_C = (1e-3, 1e-2, 1e-1, 1.0)  # ascending: each fit warm-starts from the last
MLP_WEIGHT_DECAY = (1e-3, 1e-1)
MLP_HIDDEN, MLP_EPOCHS, MLP_LR, MLP_DROPOUT = 128, 120, 1e-3, 0.5
GAUSS_CLIP = 5.199337582605575  # the normal quantile of 1 - 1e-7: where ``gaussianise`` stops (sklearn's bound)


# ----------------------------------------------------------------------------------------- extraction

def _new_smile(feature_set: str):
    import opensmile

    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                           feature_level=opensmile.FeatureLevel.Functionals)


def cache_key(feature_set: str) -> dict:
    """What a cached functionals vector depends on, besides the audio file's bytes."""
    import opensmile

    return {"kind": "opensmile-functionals", "feature_set": feature_set, "opensmile": opensmile.__version__,
            "sample_rate": SAMPLE_RATE}


def _path_of(u: Utterance | str | Path) -> str:
    return u.path if isinstance(u, Utterance) else str(u)


def extract_functionals(utterances: Sequence[Utterance | str | Path], feature_set: str = "ComParE_2016",
                        cache_dir: str | Path | None = None,
                        threads: int = 2) -> tuple[np.ndarray, list[str], list[Problem]]:
    """Functionals of each utterance (an ``Utterance`` or a path): (X, feature_names, problems).

    X is float32 (N_usable, D), D = 6373 for ComParE_2016 and 88 for eGeMAPSv02, one row per usable
    utterance in input order; an utterance that cannot be read or processed is left out and named in
    ``problems`` (``usable(utterances, problems)`` gives the rows' utterances). Vectors are cached under
    ``cache_dir`` (None: no cache). Non-finite values (rare; openSMILE on near-silent clips) become 0.
    """
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature_set must be one of {', '.join(FEATURE_SETS)}, not {feature_set!r}")
    dim = FEATURE_SETS[feature_set]
    names = list(_new_smile(feature_set).feature_names)
    cache = FeatureCache(cache_dir, cache_key(feature_set))
    local = threading.local()

    def one(path: str) -> tuple[np.ndarray | None, str | None]:
        try:
            digest = file_digest(path)
        except OSError as exc:
            return None, f"cannot read file ({exc.strerror or exc})"
        hit = cache.get(digest)
        if hit is not None and "x" in hit and hit["x"].shape == (dim,):
            return hit["x"], None
        try:
            wave = load_audio(path)
        except AudioError as exc:
            return None, exc.reason
        if getattr(local, "extractor", None) is None:
            local.extractor = _new_smile(feature_set)
        try:
            x = local.extractor.process_signal(wave, SAMPLE_RATE).to_numpy(dtype=np.float32).reshape(-1)
        except Exception as exc:  # noqa: BLE001 - openSMILE raises plain RuntimeErrors
            return None, f"openSMILE failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        cache.put(digest, {"x": x})
        return x, None

    paths = [_path_of(u) for u in utterances]
    if threads > 1 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(one, paths))
    else:
        results = [one(p) for p in paths]
    rows, problems = [], []
    for path, (x, reason) in zip(paths, results):
        if x is None:
            problems.append(Problem(path, reason or "unknown failure"))
        else:
            rows.append(x)
    X = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    return np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0), names, problems


_local = threading.local()  # each thread's Smile per feature set: creating one costs 0.1-0.5 s
_pool: ThreadPoolExecutor | None = None  # long-lived, so its threads keep their Smile objects
_pool_lock = threading.Lock()


def _thread_smile(feature_set: str):
    cache = getattr(_local, "smiles", None)
    if cache is None:
        cache = _local.smiles = {}
    if feature_set not in cache:
        cache[feature_set] = _new_smile(feature_set)
    return cache[feature_set]


def _signal_functionals(wave: np.ndarray, feature_set: str) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Segment too short, filling with NaN": NaN become 0 below
        x = _thread_smile(feature_set).process_signal(np.ascontiguousarray(wave, dtype=np.float32), SAMPLE_RATE)
    return x.to_numpy(dtype=np.float32).reshape(-1)


def functionals_from_waves(waves: Sequence[np.ndarray], feature_set: str = "ComParE_2016",
                           threads: int = 1, memo: dict | None = None) -> np.ndarray:
    """Functionals of 16 kHz mono waveforms (each a 1-D array, e.g. a model window): (N, D) float32.

    Computed with ``opensmile.Smile.process_signal`` at 16 kHz, as ``extract_functionals`` computes them
    from files, so a whole clip's waveform gives its file's vector. Not cached on disk; with ``memo`` (a
    dict the caller keeps, e.g. for one benchmark run) a waveform seen before is looked up by the hash of
    its samples. Non-finite values (a clip under ~0.1 s, or near silence) become 0. ``threads`` > 1
    spreads the waves over a pool.
    """
    global _pool
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature_set must be one of {', '.join(FEATURE_SETS)}, not {feature_set!r}")
    dim = FEATURE_SETS[feature_set]
    if len(waves) == 0:
        return np.zeros((0, dim), np.float32)
    if memo is not None:
        keys = [(feature_set, hashlib.sha256(np.ascontiguousarray(w, np.float32).tobytes()).hexdigest())
                for w in waves]
        todo = [i for i, k in enumerate(keys) if k not in memo]
        if todo:
            for i, row in zip(todo, functionals_from_waves([waves[i] for i in todo], feature_set, threads)):
                memo[keys[i]] = row
        return np.stack([memo[k] for k in keys])
    if threads > 1 and len(waves) > 1:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="persemo-smile")
        rows = list(_pool.map(lambda w: _signal_functionals(w, feature_set), waves))
    else:
        rows = [_signal_functionals(w, feature_set) for w in waves]
    X = np.stack(rows).astype(np.float32)
    if X.shape[1] != dim:
        raise RuntimeError(f"openSMILE gave {X.shape[1]} {feature_set} functionals, expected {dim}")
    return np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)


def speed_functionals(items: Sequence, factor: float, feature_set: str = "ComParE_2016",
                      cache_dir: str | Path | None = None, threads: int = 2) -> np.ndarray:
    """Functionals of each item's waveform played ``factor`` times faster (``audio.speed_perturb``): (N, D).

    With ``cache_dir``, cached by the waveform's samples, the feature set and the factor.
    """
    cache = FeatureCache(cache_dir, {**cache_key(feature_set), "speed": float(factor)})
    keys = [hashlib.sha256(np.ascontiguousarray(it.wave, np.float32).tobytes()).hexdigest()[:32] for it in items]
    out = np.zeros((len(items), FEATURE_SETS[feature_set]), np.float32)
    todo = []
    for i, k in enumerate(keys):
        hit = cache.get(k)
        if hit is not None and hit.get("x") is not None and hit["x"].shape == out.shape[1:]:
            out[i] = hit["x"]
        else:
            todo.append(i)
    if todo:
        X = functionals_from_waves([speed_perturb(items[i].wave, factor) for i in todo], feature_set, threads)
        for i, x in zip(todo, X):
            out[i] = x
            cache.put(keys[i], {"x": x})
    return out


def item_functionals(items: Sequence, feature_set: str = "ComParE_2016", cache_dir: str | Path | None = None,
                     threads: int = 2) -> np.ndarray:
    """Whole-utterance functionals of prepared items (``persemo.prepare.Item``: ``utt`` and ``wave``), (N, D).

    With ``cache_dir``, from ``extract_functionals``'s cache (keyed by the file's bytes, shared with the
    peer benchmark) for items whose file can be read, computing and caching missing ones; any other item
    (no such file, e.g. generated audio) from its waveform. An item's wave is its decoded file, so both
    routes give the same vector.
    """
    dim = FEATURE_SETS[feature_set]
    out = np.zeros((len(items), dim), np.float32)
    todo = list(range(len(items)))
    if cache_dir is not None and items:
        utts = [it.utt for it in items]
        X, _, problems = extract_functionals(utts, feature_set, cache_dir, threads)
        bad = {p.path for p in problems}
        rows = [i for i, u in enumerate(utts) if u.path not in bad]
        out[rows] = X
        todo = [i for i, u in enumerate(utts) if u.path in bad]
    if todo:
        out[todo] = functionals_from_waves([items[i].wave for i in todo], feature_set, threads)
    return out


def functional_stats(X: np.ndarray, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) functionals -> their mean and std (D,) float64, a std of at most ``eps`` replaced by 1:
    ``(X - mean) / std`` is what ``normalise_by_group`` does to one group."""
    block = np.asarray(X, np.float64)
    std = block.std(axis=0)
    return block.mean(axis=0), np.where(std > eps, std, 1.0)


def usable(utterances: Sequence[Utterance], problems: Sequence[Problem]) -> list[Utterance]:
    """The utterances that ``extract_functionals`` kept, in the order of its rows."""
    bad = {p.path for p in problems}
    return [u for u in utterances if _path_of(u) not in bad]


def normalise_by_group(X: np.ndarray, groups: Sequence, eps: float = 1e-8) -> np.ndarray:
    """(N, D) -> (N, D): each group's rows standardised by that group's own mean and std (no labels).

    Used per speaker: every speaker, in training or at test time, is normalised by their own utterances'
    statistics. A feature constant within a group becomes 0 there.

    >>> normalise_by_group(np.array([[1.0], [3.0], [10.0], [20.0]]), ["a", "a", "b", "b"]).ravel().tolist()
    [-1.0, 1.0, -1.0, 1.0]
    """
    return normalise_by_reference(X, groups, X, eps)


def normalise_by_reference(X: np.ndarray, groups: Sequence, ref: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(N, D) -> (N, D): each group's rows of ``X`` standardised by the mean and std of that group's rows of
    ``ref`` (N, D), aligned with ``X``: the same clips heard otherwise, e.g. a speaker enrolled in quiet and
    heard in noise. ``ref`` = ``X`` is ``normalise_by_group``.

    >>> X, ref = np.array([[1.0], [3.0], [10.0], [20.0]]), np.array([[0.0], [2.0], [10.0], [20.0]])
    >>> normalise_by_reference(X, ["a", "a", "b", "b"], ref).ravel().tolist()
    [0.0, 2.0, -1.0, 1.0]
    """
    X = np.asarray(X)
    ref = np.asarray(ref)
    groups = np.asarray(groups)
    if X.ndim != 2 or len(groups) != len(X) or ref.shape != X.shape:
        raise ValueError(f"X and ref must be (N, D) and groups (N,); got {X.shape}, {ref.shape} and {groups.shape}")
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64
    out = np.empty(X.shape, dtype=dtype)
    for g in np.unique(groups):
        rows = groups == g
        mean, std = functional_stats(ref[rows], eps)
        out[rows] = (X[rows].astype(np.float64) - mean) / std
    return out


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


# ----------------------------------------------------------------------------------- numpy inference

def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) scores."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


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


def _scores(arrays: dict[str, np.ndarray], meta: dict, X: np.ndarray) -> np.ndarray:
    """Uncalibrated class scores (N, C) of standardised features, from the state alone."""
    X = np.asarray(X, np.float64)
    if "quantiles" in arrays:
        X = gaussianise(X, arrays["quantiles"])
    Z = (X - arrays["mean"]) / arrays["scale"]
    kind = meta["kind"]
    if kind == "svm":
        ovo = rbf_ovo(Z, arrays["support_vectors"], arrays["dual_coef"], arrays["intercept"],
                      arrays["n_support"], float(meta["gamma"]))
        return svm_scores(ovo, len(arrays["n_support"]), meta["svm_scores"])
    if kind == "logreg":
        return Z @ arrays["coef"].T + arrays["intercept"]
    if kind == "mlp":
        H = np.maximum(Z @ arrays["w1"].T + arrays["b1"], 0.0)
        return H @ arrays["w2"].T + arrays["b2"]
    raise ValueError(f"unknown SmileMember kind {kind!r}")


def _calibrated(scores: np.ndarray, cal_w: np.ndarray, cal_b: np.ndarray) -> np.ndarray:
    """Probabilities softmax(scores @ cal_w.T + cal_b) over the present classes."""
    return softmax(scores @ cal_w.T + cal_b)


# ------------------------------------------------------------------------------------------- fitting

def _inner_splits(y: np.ndarray, groups: np.ndarray | None, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner CV: grouped by speaker when there are groups to hold out, else stratified."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    if groups is not None and len(np.unique(groups)) >= 3:
        cv = GroupKFold(n_splits=min(INNER_FOLDS, len(np.unique(groups))))
        return list(cv.split(y, y, groups))
    n = max(2, min(INNER_FOLDS, int(np.bincount(y).min())))
    return list(StratifiedKFold(n_splits=n, shuffle=True, random_state=seed).split(y, y))


def _uar(y: np.ndarray, pred: np.ndarray) -> float:
    present = np.unique(y)
    return float(np.mean([np.mean(pred[y == c] == c) for c in present]))


def _balanced_weights(y: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(y, minlength=n).astype(np.float64)
    return np.where(counts > 0, len(y) / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0)


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


CALIBRATIONS = ("temperature", "matrix")
MIN_CALIBRATION_ROWS = 10  # fewer fair held-out rows than this (or one class): temperature 1


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


class SmileMember:
    """Standardisation + classifier + calibration on openSMILE functionals; state is arrays + a dict.

    ``kind``: 'svm' (RBF SVM, class-balanced; C and gamma by inner CV), 'logreg' (multinomial logistic
    regression, class-balanced; C by inner CV) or 'mlp' (one hidden layer, torch to fit, numpy to run;
    weight decay and epochs by inner CV). Every kind's scores are mapped to probabilities by a
    temperature fitted on the inner CV's held-out scores (``calibration='temperature'``, which keeps the
    classifier's decisions), or by the multinomial Platt scaling used before issue 22 (``'matrix'``: a
    full C x C map that can overrule them; on EmoDB it cost 2-5 UAR points with all emotions and 10-30
    with training speakers heard in one or two emotions, ``benchmarks/results/confound_emodb.md``). ``quantiles`` > 0: each functional
    is first Gaussianised through that many of its training quantiles (``gaussianise``; kept in the state).

    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-2, 1, (20, 5)), rng.normal(2, 1, (20, 5))]); y = np.repeat([0, 1], 20)
    >>> m = SmileMember("logreg").fit(X, y, n_classes=2)
    >>> m.predict_proba(X).shape
    (40, 2)
    """

    def __init__(self, kind: str = DEFAULT_KIND, feature_set: str | None = None, quantiles: int = 0,
                 calibration: str = "temperature"):
        if kind not in MEMBER_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MEMBER_KINDS)}, not {kind!r}")
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, not {calibration!r}")
        self.calibration = calibration
        if quantiles == 1 or quantiles < 0:
            raise ValueError(f"quantiles must be 0 (off) or at least 2, not {quantiles}")
        self.kind = kind
        self.feature_set = feature_set
        self.quantiles = int(quantiles)
        self.arrays: dict[str, np.ndarray] = {}
        self.meta: dict = {}
        self.oof_proba: np.ndarray | None = None  # after fit: held-out probabilities of the training rows
        self.oof_fair: np.ndarray | None = None  # after fit: rows whose class their inner training part held

    # --- public API
    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int, groups: Sequence | None = None,
            seed: int = 0, origin: Sequence | None = None) -> "SmileMember":
        """X (N, D) functionals, y (N,) class indices in 0..n_classes-1, groups (N,) speakers or None.

        ``origin`` (N,): for augmented training data, each row's original row (an original's is its own
        index). The inner CV that picks the hyperparameters and fits the calibration then splits the
        originals and puts every copy in its original's fold, so no clip is judged by a model trained on
        its own copy (with speaker groups that holds anyway: copies share their original's speaker).
        Held-out copies are scored too: scoring originals only, the default member fell from 74.5 to
        71.8 UAR on EmoDB (``benchmarks/results/emodb_smile_origin.md``), its C chosen for clean clips alone.
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
        splits = []
        for tr, te in _inner_splits(yc[firsts], None if g is None else g[firsts], seed):
            splits.append((np.flatnonzero(np.isin(fold, tr)), np.flatnonzero(np.isin(fold, te))))
        fit_kind = {"svm": self._fit_svm, "logreg": self._fit_logreg, "mlp": self._fit_mlp}[self.kind]
        arrays, meta, oof = fit_kind(Z, yc, len(present), splits, seed)
        covered = np.isfinite(oof[:, 0])
        # calibrate on the held-out rows whose class the inner model that scored them was trained on: with
        # speakers heard in few emotions (issue 22), holding a speaker out often removes their emotions from
        # the inner training part, and those rows, wrong by construction, taught the full matrix map to
        # overrule the classifier (EmoDB, 1 emotion per training speaker: 20 vs 37 UAR on eGeMAPS)
        fair = np.zeros(len(y), bool)
        for tr, te in splits:
            fair[te] = np.isin(yc[te], yc[tr])
        fair &= covered
        self.oof_fair = fair  # the held-out rows whose class the inner model saw
        if self.calibration == "matrix":  # as before issue 22 (on every held-out row)
            cal_w, cal_b = fit_matrix_calibration(oof[covered], yc[covered], len(present))
        else:
            cal_w, cal_b = fit_temperature_calibration(oof[fair], yc[fair], len(present))
        # each training row's calibrated probabilities from the inner fold that held it out (NaN where no
        # fold did): held-out predictions on the training speakers, for choosing a vote inside them
        self.oof_proba = np.full((len(y), n_classes), np.nan)
        self.oof_proba[np.ix_(covered, present)] = _calibrated(oof[covered], cal_w, cal_b)
        self.oof_proba[covered] = np.nan_to_num(self.oof_proba[covered], nan=0.0)
        # C order, as from_state keeps them: the same BLAS path, so a reloaded member gives the same bits
        # (a fitted coefficient matrix can come Fortran-ordered, e.g. scikit-learn 1.9.1's coef_)
        self.arrays = {k: np.ascontiguousarray(v) for k, v in {
            "mean": mean, "scale": scale, "classes": present.astype(np.int64), "cal_w": cal_w, "cal_b": cal_b,
            **extra, **arrays}.items()}
        self.meta = {"format": STATE_FORMAT, "kind": self.kind, "n_classes": int(n_classes),
                     "quantiles": self.quantiles, "n_features": int(X.shape[1]), "feature_set": self.feature_set,
                     "calibration": self.calibration,
                     "inner_cv": {"folds": len(splits), "grouped": g is not None and len(np.unique(g)) >= 3,
                                  "uar": meta.pop("inner_uar")},
                     **meta}
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, D) functionals -> (N, n_classes) probabilities; classes absent in training get 0."""
        if not self.arrays:
            raise RuntimeError("SmileMember is not fitted")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.meta["n_features"]:
            raise ValueError(f"expected (N, {self.meta['n_features']}) features, got {X.shape}")
        p = _calibrated(_scores(self.arrays, self.meta, X), self.arrays["cal_w"], self.arrays["cal_b"])
        out = np.zeros((len(X), self.meta["n_classes"]))
        out[:, self.arrays["classes"]] = p
        return out

    @property
    def chosen(self) -> dict:
        """The hyperparameters the inner CV chose (C; gamma; weight decay and epochs)."""
        return {k: self.meta[k] for k in ("C", "gamma", "weight_decay", "epochs") if k in self.meta}

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, meta): numpy arrays (for safetensors) and a JSON-able dict; all inference needs."""
        return dict(self.arrays), dict(self.meta)  # C order already (fit, from_state)

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> "SmileMember":
        if meta.get("format") != STATE_FORMAT or meta.get("kind") not in MEMBER_KINDS:
            raise ValueError(f"not a SmileMember state (format {meta.get('format')}, kind {meta.get('kind')})")
        m = cls(meta["kind"], meta.get("feature_set"), int(meta.get("quantiles", 0)),
                meta.get("calibration", "matrix"))  # states without the field were fitted with the matrix map
        m.arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        m.meta = dict(meta)
        return m

    # --- one fitter per kind: (arrays, meta with 'inner_uar', out-of-fold scores (N, P))
    @staticmethod
    def _fit_svm(Z, y, n, splits, seed):
        from sklearn.svm import SVC

        d = Z.shape[1]
        dist = sq_distances(Z, Z)  # once, for every gamma
        best = None
        for gx in SVM_GAMMA_X_DIM:
            K = np.exp(-(gx / d) * dist)
            for C in SVM_C:
                oof = np.full((len(y), n), np.nan)
                for tr, te in splits:
                    clf = SVC(C=C, kernel="precomputed", class_weight="balanced", decision_function_shape="ovo")
                    clf.fit(K[np.ix_(tr, tr)], y[tr])
                    ovo = clf.decision_function(K[np.ix_(te, tr)])
                    ovo = -ovo[:, None] if ovo.ndim == 1 else ovo  # binary: sklearn's sign is libsvm's flipped
                    scores = svm_scores(ovo, len(clf.classes_), SVM_SCORES)
                    oof[te] = _full_scores(scores, clf.classes_, n)
                uar = _uar_oof(y, oof)
                if best is None or uar > best[0]:
                    best = (uar, C, gx, oof)
        uar, C, gx, oof = best
        clf = SVC(C=C, kernel="rbf", gamma=gx / d, class_weight="balanced").fit(Z, y)
        sign = -1.0 if n == 2 else 1.0  # sklearn flips the binary case's signs from libsvm's
        arrays = {"support_vectors": clf.support_vectors_, "dual_coef": sign * clf.dual_coef_,
                  "intercept": sign * clf.intercept_, "n_support": clf.n_support_.astype(np.int64)}
        return arrays, {"C": C, "gamma": gx / d, "svm_scores": SVM_SCORES, "inner_uar": uar}, oof

    @staticmethod
    def _fit_logreg(Z, y, n, splits, seed):
        from sklearn.linear_model import LogisticRegression

        oofs = {C: np.full((len(y), n), np.nan) for C in LOGREG_C}
        for tr, te in splits:
            basis = row_basis(Z[tr])
            a, b = _in_basis(Z[tr], basis), _in_basis(Z[te], basis)
            clf = LogisticRegression(class_weight="balanced", max_iter=2000, warm_start=True)
            for C in LOGREG_C:
                clf.set_params(C=C).fit(a, y[tr])
                oofs[C][te] = _full_scores(clf.decision_function(b), clf.classes_, n)
        best = None
        for C in LOGREG_C:
            uar = _uar_oof(y, oofs[C])
            if best is None or uar > best[0]:
                best = (uar, C, oofs[C])
        uar, C, oof = best
        basis = row_basis(Z)
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000).fit(_in_basis(Z, basis), y)
        coef, intercept = (clf.coef_ if basis is None else clf.coef_ @ basis.T), clf.intercept_
        if n == 2:  # one row for classes[1]; two symmetric rows give the same softmax
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        return {"coef": coef, "intercept": intercept}, {"C": C, "inner_uar": uar}, oof

    @staticmethod
    def _fit_mlp(Z, y, n, splits, seed):
        best = None
        for wd in MLP_WEIGHT_DECAY:
            curves, oofs = [], []
            for tr, te in splits:
                curve, scores = _train_mlp(Z[tr], y[tr], n, wd, MLP_EPOCHS, seed, Z[te], y[te])
                curves.append(curve)
                oofs.append((te, scores))
            mean_curve = np.mean(curves, axis=0)  # (checkpoints,) mean inner UAR
            k = int(np.argmax(mean_curve))
            if best is None or mean_curve[k] > best[0]:
                oof = np.full((len(y), n), np.nan)
                for te, scores in oofs:
                    oof[te] = scores[k]
                best = (float(mean_curve[k]), wd, (k + 1) * _MLP_EVERY, oof)
        uar, wd, epochs, oof = best
        arrays = _train_mlp(Z, y, n, wd, epochs, seed)
        return arrays, {"weight_decay": wd, "epochs": epochs, "hidden": MLP_HIDDEN, "inner_uar": uar}, oof


_MLP_EVERY = 10  # epochs between inner-CV checkpoints


def _full_scores(dec: np.ndarray, classes: np.ndarray, n: int) -> np.ndarray:
    """sklearn decision values over ``classes`` -> (N, n), absent classes far below the rest."""
    if dec.ndim == 1:  # sklearn's binary case: one column, positive for classes[1]
        dec = np.stack([-dec / 2, dec / 2], axis=1)
    out = np.repeat(dec.min(axis=1, keepdims=True) - 1.0, n, axis=1)
    out[:, classes] = dec
    return out


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


def sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of a and b, (len(a), len(b)): an RBF kernel's input."""
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def _in_basis(Z: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """Z's coordinates in ``row_basis``'s basis (Z itself without one)."""
    return Z if basis is None else Z @ basis


def _uar_oof(y: np.ndarray, oof: np.ndarray) -> float:
    covered = np.isfinite(oof[:, 0])
    return _uar(y[covered], oof[covered].argmax(1))


def _train_mlp(Z, y, n, weight_decay, epochs, seed, Zv=None, yv=None):
    """Full-batch AdamW on a ReLU MLP with input dropout and a class-weighted loss.

    With validation data: returns (UAR every _MLP_EVERY epochs (K,), scores at each checkpoint [K x (Nv, n)]).
    Without: returns the weights as float64 arrays w1 (H, D), b1 (H,), w2 (n, H), b2 (n,).
    """
    torch.manual_seed(seed)
    Xt = torch.as_tensor(Z, dtype=torch.float32)
    yt = torch.as_tensor(y)
    net = torch.nn.Sequential(torch.nn.Dropout(MLP_DROPOUT), torch.nn.Linear(Z.shape[1], MLP_HIDDEN),
                              torch.nn.ReLU(), torch.nn.Dropout(MLP_DROPOUT), torch.nn.Linear(MLP_HIDDEN, n))
    opt = torch.optim.AdamW(net.parameters(), lr=MLP_LR, weight_decay=weight_decay)
    lossf = torch.nn.CrossEntropyLoss(weight=torch.as_tensor(_balanced_weights(y, n), dtype=torch.float32))
    curve, scores = [], []
    Xv = None if Zv is None else torch.as_tensor(Zv, dtype=torch.float32)
    for epoch in range(1, epochs + 1):
        net.train()
        opt.zero_grad()
        lossf(net(Xt), yt).backward()
        opt.step()
        if Xv is not None and epoch % _MLP_EVERY == 0:
            net.eval()
            with torch.no_grad():
                s = net(Xv).double().numpy()
            scores.append(s)
            curve.append(_uar(yv, s.argmax(1)))
    if Xv is not None:
        return np.array(curve), scores
    lin1, lin2 = net[1], net[4]
    return {"w1": lin1.weight.detach().double().numpy(), "b1": lin1.bias.detach().double().numpy(),
            "w2": lin2.weight.detach().double().numpy(), "b2": lin2.bias.detach().double().numpy()}
