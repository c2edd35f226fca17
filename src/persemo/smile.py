"""openSMILE functionals (ComParE_2016, eGeMAPSv02): extraction, caching and per-speaker normalisation.

Extraction: each utterance is loaded with ``persemo.audio.load_audio`` (16 kHz mono float32) and passed
to ``opensmile.Smile.process_signal``; the functionals vector is cached on disk, keyed by the file's
content, the feature set and the opensmile version. openSMILE releases the GIL while it works, so two
threads, each with its own ``Smile``, are 1.4-1.8x faster than one on two cores (measured on EmoDB).

The classifiers on these vectors are ``persemo.heads`` (shared with the encoder member); ``SmileMember``,
``MEMBER_KINDS`` and the head helpers imported below keep their old names here for existing code.
"""

from __future__ import annotations

import hashlib

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, AudioError, load_audio, speed_perturb
from .cache import FeatureCache, file_digest
from .corpora.base import Problem, Utterance
from .heads import DEFAULT_KIND, HEAD_KINDS, Head, make_head
from .heads import fit_quantiles, gaussianise, rbf_decision_function, rbf_ovo, row_basis, sq_distances  # noqa: F401
from .heads.logreg import LOGREG_C  # noqa: F401  (old names, see the module docstring)

FEATURE_SETS = {"ComParE_2016": 6373, "eGeMAPSv02": 88}  # name -> number of functionals
MEMBER_KINDS = HEAD_KINDS  # the classifier kinds (``persemo.heads``), under their old name


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


# ----------------------------------------------------------------- the classifier's old names (compatible)

class SmileMember:
    """The classifier head's old name: ``SmileMember(kind, feature_set, quantiles, calibration)`` builds
    ``heads.make_head``'s head of that kind, and ``SmileMember.from_state`` is ``heads.Head.from_state``
    (saved states load unchanged). New code uses ``persemo.heads``."""

    def __new__(cls, kind: str = DEFAULT_KIND, feature_set: str | None = None, quantiles: int = 0,
                calibration: str = "temperature") -> Head:
        return make_head(kind, feature_set, quantiles, calibration)

    from_state = staticmethod(Head.from_state)
