"""Speaker-adaptive normalisation: a speaker's own feature statistics, from their unlabelled audio.

Emotion is a departure from a speaker's habits, so standardising each speaker's features by that
speaker's own mean and standard deviation removes much of the speaker and keeps the emotion. The
statistics need several utterances of the speaker and never their labels. They assume the pool spans
several emotions: a speaker heard in one emotion only has that emotion as their mean (the trap).

Statistics are computed here from waveforms with the model's own front end, optionally shrunk toward
the model's global (training) statistics by the amount of audio they rest on, and saved as
safetensors + JSON carrying the feature config they belong to; a mismatch is refused.

A model with a speaker-normalised smile member also gets ``smile_mean``/``smile_std``: the mean and
std of the speaker's clips' openSMILE functionals (one vector per clip), shrunk the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .corpora.base import atomic_write_text

STAT_KEYS = ("logmel_mean", "logmel_std", "mfcc_mean", "mfcc_std")
SMILE_STAT_KEYS = ("smile_mean", "smile_std")  # = models.ensemble.SMILE_STAT_KEYS (no torch import here)
FORMAT = "persemo-speaker-stats"


class StatsError(ValueError):
    """A speaker statistics file is missing, malformed or belongs to another feature config."""


def _frames(model, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Un-normalised full-length log-mel and MFCC frames of ``waves``, concatenated: (D, total frames)."""
    import torch

    spectra = model.features.spectra
    lm, mf = [], []
    with torch.inference_mode():
        for w in waves:
            logmel, mfcc, _ = spectra(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))
            lm.append(logmel[0].numpy())
            mf.append(mfcc[0].numpy())
    return np.concatenate(lm, 1), np.concatenate(mf, 1)


def stats_from_features(logmels: list[np.ndarray], mfccs: list[np.ndarray]) -> dict[str, np.ndarray]:
    lm, mf = np.concatenate(logmels, 1), np.concatenate(mfccs, 1)
    return {"logmel_mean": lm.mean(1).astype(np.float32), "logmel_std": (lm.std(1) + 1e-5).astype(np.float32),
            "mfcc_mean": mf.mean(1).astype(np.float32), "mfcc_std": (mf.std(1) + 1e-5).astype(np.float32)}


def _smile_norm(model):
    """(feature set, (mean, std)) of a model's speaker-normalised smile member, else None."""
    smile, norm = getattr(model, "smile", None), getattr(model, "smile_norm", None)
    return (smile.feature_set, norm) if smile is not None and norm is not None else None


def global_stats(model) -> dict[str, np.ndarray]:
    """The model's own training statistics (its fallback when a speaker's are not known)."""
    f = model.features
    out = {"logmel_mean": f.norm_mel.mean.numpy().copy(), "logmel_std": f.norm_mel.std.numpy().copy(),
           "mfcc_mean": f.norm_mfcc.mean.numpy().copy(), "mfcc_std": f.norm_mfcc.std.numpy().copy()}
    sm = _smile_norm(model)
    if sm is not None:
        out.update(smile_mean=sm[1][0].astype(np.float32), smile_std=sm[1][1].astype(np.float32))
    return out


def shrink(stats: dict[str, np.ndarray], prior: dict[str, np.ndarray], n: float, k: float) -> dict[str, np.ndarray]:
    """Move ``stats`` toward ``prior`` by weight n / (n + k): little audio -> mostly the prior.

    k = 0 keeps ``stats`` unchanged. Standard deviations are combined in the log domain.
    """
    if k <= 0:
        return dict(stats)
    a = n / (n + k)
    out = {}
    for key in [k for k in STAT_KEYS + SMILE_STAT_KEYS if k in stats and k in prior]:
        if key.endswith("_std"):
            out[key] = np.exp(a * np.log(stats[key]) + (1 - a) * np.log(prior[key])).astype(np.float32)
        else:
            out[key] = (a * stats[key] + (1 - a) * prior[key]).astype(np.float32)
    return out


def compute_speaker_stats(model, waves: list[np.ndarray], shrink_k: float = 0.0) -> dict[str, np.ndarray]:
    """A speaker's statistics from their (unlabelled) 16 kHz waveforms, optionally shrunk toward the
    model's global statistics by n / (n + shrink_k) with n the number of utterances."""
    if not waves:
        raise StatsError("no audio given for the speaker statistics")
    lm, mf = _frames(model, waves)
    st = stats_from_features([lm], [mf])
    sm = _smile_norm(model)
    if sm is not None:
        from .smile import functional_stats, functionals_from_waves

        mean, std = functional_stats(functionals_from_waves(waves, sm[0], threads=2))
        st.update(smile_mean=mean.astype(np.float32), smile_std=std.astype(np.float32))
    return shrink(st, global_stats(model), len(waves), shrink_k)


def save_stats(path: str | Path, stats: dict[str, np.ndarray], feature_config: dict, n_utterances: int,
               seconds: float, extra: dict | None = None, smile_feature_set: str | None = None) -> Path:
    """Write ``PATH`` (safetensors) and ``PATH.json`` (feature config, counts), atomically.

    ``smile_feature_set``: the functionals the stats' ``smile_mean``/``smile_std`` describe (if any)."""
    import os
    import tempfile

    from safetensors.numpy import save_file

    p = Path(path)
    if p.suffix != ".safetensors":
        p = p.with_suffix(".safetensors")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        save_file({k: np.ascontiguousarray(stats[k], dtype=np.float32) for k in STAT_KEYS + SMILE_STAT_KEYS
                   if k in stats}, tmp)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta = {"format": FORMAT, "feature_config": feature_config, "n_utterances": n_utterances,
            "seconds": round(seconds, 3), **(extra or {})}
    if smile_feature_set is not None and all(k in stats for k in SMILE_STAT_KEYS):
        meta["smile_feature_set"] = smile_feature_set
    atomic_write_text(p.with_suffix(".json"), json.dumps(meta, indent=1))
    return p


def load_stats(path: str | Path, feature_config: dict,
               smile_feature_set: str | None = None) -> dict[str, np.ndarray]:
    """Read statistics saved by ``save_stats``; refuse them if they belong to another feature config.

    ``smile_feature_set``: the model has a speaker-normalised smile member on these functionals, so the
    file must hold its ``smile_mean``/``smile_std`` (``save_stats`` records the set as ``smile_feature_set``).
    """
    from safetensors.numpy import load_file

    from .config import FeatureConfig

    p = Path(path)
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if not p.is_file() or not p.with_suffix(".json").is_file():
        raise StatsError(f"speaker statistics not found: {p} (and its .json)")
    try:
        meta = json.loads(p.with_suffix(".json").read_text(encoding="utf-8"))
        arrays = load_file(str(p))
    except Exception as exc:  # noqa: BLE001 - any read failure is one clear error
        raise StatsError(f"{p}: unreadable speaker statistics ({str(exc).splitlines()[0]})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StatsError(f"{p}: not a persemo speaker statistics file")
    theirs = FeatureConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                              for k, v in meta.get("feature_config", {}).items()}).extraction_key()
    ours = FeatureConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in feature_config.items()}).extraction_key()
    if theirs != ours:
        diff = sorted(k for k in ours if ours[k] != theirs.get(k))
        raise StatsError(f"{p}: statistics were computed with another feature config (differs in {', '.join(diff)}); "
                         "recompute them with `persemo adapt` for this model")
    missing = [k for k in STAT_KEYS if k not in arrays]
    if missing:
        raise StatsError(f"{p}: missing arrays {missing}")
    if smile_feature_set is None:
        return {k: arrays[k] for k in STAT_KEYS}
    theirs = meta.get("smile_feature_set")
    if any(k not in arrays for k in SMILE_STAT_KEYS) or theirs != smile_feature_set:
        got = f"{theirs} functional statistics" if theirs else "no openSMILE functional statistics"
        raise StatsError(f"{p}: the model's smile member needs {smile_feature_set} functional statistics, the file "
                         f"has {got}; recompute them with `persemo adapt` for this model")
    return {k: arrays[k] for k in STAT_KEYS + SMILE_STAT_KEYS}


def effective_emotions(probs: np.ndarray) -> float:
    """exp(entropy) of the mean predicted distribution over a pool of clips, (N, C) -> [1, C].

    About 1 when every clip looks like the same emotion; near C when the pool spans them all.
    """
    p = np.asarray(probs, dtype=np.float64).mean(0)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def guarded_stats(stats: dict[str, np.ndarray], prior: dict[str, np.ndarray], pool_probs: np.ndarray,
                  n: int, min_emotions: float = 2.5, shrink_k: float = 0.0) -> tuple[dict[str, np.ndarray], dict]:
    """Guard against the one-emotion trap: when the model's own single-utterance predictions over the
    speaker's pool look like fewer than ``min_emotions`` effective emotions, the pool's mean is likely the
    emotion itself, so the prior (global statistics) is used instead. Returns (stats, decision)."""
    eff = effective_emotions(pool_probs)
    if eff < min_emotions:
        return dict(prior), {"adapted": False, "effective_emotions": eff, "reason": "pool looks like one emotion"}
    return shrink(stats, prior, n, shrink_k), {"adapted": True, "effective_emotions": eff}
