"""Speaker-adaptive normalisation: a speaker's own feature statistics, from their unlabelled audio.

Emotion is a departure from a speaker's habits, so standardising each speaker's features by that
speaker's own mean and standard deviation removes much of the speaker and keeps the emotion. The
statistics need several utterances of the speaker and never their labels. They assume the pool spans
several emotions: a speaker heard in one emotion only has that emotion as their mean (the trap).

Statistics are computed here from waveforms with the model's own front end, optionally shrunk toward
the model's global (training) statistics by the amount of audio they rest on, and saved as
safetensors + JSON carrying the feature config they belong to; a mismatch is refused.

A member with speaker statistics of its own (``Member.stat_keys``: the mean and std of its per-clip
vectors, e.g. openSMILE functionals) adds them; a statistics file records what each member's describe
(``Member.stats_signature``), and a file made for another member is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from .atomic import atomic_write, atomic_write_text
from .config import FeatureConfig
from .features import STAT_KEYS
from .statistics import shrink, vector_stats

FORMAT = "persemo-speaker-stats"


class StatsError(ValueError):
    """A speaker statistics file is missing, malformed or belongs to another feature config."""


def _frames(model, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Un-normalised full-length log-mel and MFCC frames of ``waves``, concatenated: (D, total frames)."""
    spectra = model.front.spectra
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


def global_stats(model) -> dict[str, np.ndarray]:
    """The model's own training statistics (its fallback when a speaker's are not known)."""
    return model.global_stats()


def compute_speaker_stats(model, waves: list[np.ndarray], shrink_k: float = 0.0) -> dict[str, np.ndarray]:
    """A speaker's statistics from their (unlabelled) 16 kHz waveforms, optionally shrunk toward the
    model's global statistics by n / (n + shrink_k) with n the number of utterances."""
    if not waves:
        raise StatsError("no audio given for the speaker statistics")
    lm, mf = _frames(model, waves)
    st = stats_from_features([lm], [mf])
    for member in model.members:
        keys = member.stat_keys
        if keys:
            mean, std = vector_stats(member.clip_vectors(waves))
            st.update({keys[0]: mean.astype(np.float32), keys[1]: std.astype(np.float32)})
    return shrink(st, global_stats(model), len(waves), shrink_k)


def save_stats(path: str | Path, stats: dict[str, np.ndarray], feature_config: dict, n_utterances: int,
               seconds: float, extra: dict | None = None, signatures: dict[str, str] | None = None) -> Path:
    """Write ``PATH`` (safetensors) and ``PATH.json`` (feature config, counts, ``signatures``: what each
    member's statistics describe, by kind), atomically."""
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p.with_suffix(".safetensors")
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in stats.items()}
    atomic_write(p, lambda tmp: save_file(arrays, tmp))
    meta = {"format": FORMAT, "feature_config": feature_config, "n_utterances": n_utterances,
            "seconds": round(seconds, 3), **(extra or {}), "signatures": dict(signatures or {})}
    atomic_write_text(p.with_suffix(".json"), json.dumps(meta, indent=1))
    return p


def _feature_key(values: dict) -> dict:
    return FeatureConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()
                            if k in FeatureConfig.__dataclass_fields__}).extraction_key()


def load_stats(path: str | Path, feature_config: dict, requirements: dict | None = None) -> dict[str, np.ndarray]:
    """Read statistics saved by ``save_stats``; refuse them if they belong to another feature config, or lack
    what a member needs: ``requirements`` maps each such member's kind to (its stat keys, its signature)."""
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
    try:
        theirs, ours = _feature_key(meta.get("feature_config", {})), _feature_key(feature_config)
    except (TypeError, ValueError) as exc:
        raise StatsError(f"{p}: bad feature_config ({exc})") from None
    if theirs != ours:
        diff = sorted(k for k in ours if ours[k] != theirs.get(k))
        raise StatsError(f"{p}: statistics were computed with another feature config (differs in {', '.join(diff)}); "
                         "recompute them with `persemo adapt` for this model")
    missing = [k for k in STAT_KEYS if k not in arrays]
    if missing:
        raise StatsError(f"{p}: missing arrays {missing}")
    out = {k: arrays[k] for k in STAT_KEYS}
    signatures = meta.get("signatures") if isinstance(meta.get("signatures"), dict) else {}
    for kind, (keys, signature) in (requirements or {}).items():
        if any(k not in arrays for k in keys) or signatures.get(kind) != signature:
            got = signatures.get(kind)
            raise StatsError(f"{p}: the model's {kind} member needs statistics of {signature}, the file has "
                             f"{got if got else 'none'}; recompute them with `persemo adapt` for this model")
        out.update({k: arrays[k] for k in keys})
    return out


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
