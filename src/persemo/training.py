"""Training the ensemble: the front end's statistics, every member by its own ``fit``, then the vote.

``train_ensemble`` sets the front end's saved statistics (global and speaker modes), builds the
speaker statistics of every training voice (speaker mode, ``statistics.training_statistics``), fits each
member of ``model.members`` in turn (``Member.fit``: the torch members by ``torch_training``, the vector
members by inner speaker-grouped CV on the training split only) and chooses the vote weights (and, with
``model.calibration: validation``, the temperatures) on the validation split, where every member sees
the same window (the centre 4 s). ``predict_items`` runs a model on prepared items.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import lightning as L
import numpy as np
import torch

from .audio import noisy_versions
from .calibration import choose_weights, fit_temperature
from .config import Config, ConfigError
from .corpora.base import atomic_write_text
from .ensemble import Ensemble, at_unit_temperature, soften
from .evaluation import compute_metrics
from .features import crop_wave, pad_batch, window_samples
from .members.base import FitJob
from .prepare import Item
from .statistics import feature_statistics, speaker_statistics, training_statistics
from .torch_training import fit_torch

__all__ = ["crop_wave", "predict_items", "speaker_statistics", "train_ensemble", "window_samples", "write_history"]


def set_front_statistics(model: Ensemble, train_items: list[Item]) -> None:
    """The front end's saved statistics from the training items: every feature in global and speaker
    modes (a speaker's fallback), the level-free MFCCs' with ``features.mfcc_utterance_scope: level``."""
    cfg = model.cfg
    if cfg.features.normalisation in ("global", "speaker"):
        model.front.set_stats(feature_statistics(train_items))
    elif cfg.features.mfcc_utterance_scope == "level":
        model.front.set_stats(feature_statistics(train_items, mfcc_level=True), mfcc_only=True)


def train_ensemble(cfg: Config, labels: list[str], train_items: list[Item], val_items: list[Item],
                   out: Path | None = None, progress: bool = True, log=print, cache_dir=None,
                   keep: dict | None = None, memo: dict | None = None):
    """Train every member, set the front end's statistics and the vote; returns (``Ensemble``, info).

    ``keep``: members already fitted on these items, by kind, taken as they are instead of being fitted
    (e.g. a benchmark reusing the saved members whose settings did not change); the vote is chosen anew.
    ``memo``: a dict several fits on the same items share (``FitJob.memo``)."""
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    enrol = cfg.features.enrolment
    if enrol is not None and enrol not in labels:
        raise ConfigError(f"features.enrolment: {enrol!r} is not an emotion of this corpus ({', '.join(labels)})")
    keep = dict(keep or {})
    model = Ensemble(cfg, labels)
    if keep:
        model.members = [keep.get(m.kind, m) for m in model.members]
    set_front_statistics(model, train_items)
    stats = (training_statistics(cfg, train_items, val_items)
             if model.adaptable and any(m.reads_voice_stats for m in model.members) else None)
    job = FitJob(cfg, list(labels), train_items, val_items, model.front, stats, cache_dir, log,
                 out / "logs" if out is not None else None, progress, fit_torch, memo)
    members: dict[str, dict] = {}
    history: dict[str, list] = {}
    for member in model.members:
        if member.kind in keep:
            log(f"keeping {member.kind} as given (not refitted)")
            members[member.kind], history[member.kind] = {"kept": True}, []
            continue
        log(f"training {member.kind} on {len(train_items)} utterances, "
            + (f"validating on {len(val_items)}" if val_items else f"no validation ({cfg.train.epochs} epochs)"))
        L.seed_everything(cfg.train.seed, workers=True, verbose=False)
        info = dict(member.fit(job) or {})
        history[member.kind] = info.pop("history", [])
        members[member.kind] = info
    fixed = [float(w) / sum(cfg.model.weights) for w in cfg.model.weights] or None  # model.weights, if given
    n = len(model.members)
    if cfg.model.calibration == "inner":
        calibrate_inner(model, job.y, labels, fixed, log)
        return model, {"members": members, "ensemble_weights": model.weights.tolist(),
                       "member_temperatures": model.temperatures.tolist(), "validation": bool(val_items),
                       "calibration": "inner", "history": history}
    if not val_items:  # nothing to choose weights on: the config's, else equal votes
        model.set_weights(fixed or [1.0 / n] * n)
        return model, {"members": members, "ensemble_weights": model.weights.tolist(),
                       "member_temperatures": model.temperatures.tolist(), "validation": False, "history": history}
    val_stats = None
    if model.adaptable:  # validation speakers' own statistics, their members' vectors included
        val_stats = speaker_statistics(val_items, model, cache_dir, enrolment=enrol)
    index = {l: i for i, l in enumerate(labels)}
    y_val = np.array([index[it.utt.emotion] for it in val_items])
    probs = predict_items(model, val_items, cfg, val_stats)[:-1]
    for member, p in zip(model.members, probs):
        if members[member.kind].get("best_val_score") is None:
            score = compute_metrics(y_val, p, labels)
            members[member.kind]["val_score"] = float(score["uar" if cfg.train.monitor == "uar" else "macro_f1"])
    if cfg.model.calibration == "validation":  # each member's temperature first, then the weights on them
        raw = at_unit_temperature(probs, model.temperatures)  # refit from the output as trained
        temperatures = [fit_temperature(p, y_val) for p in raw]
        model.set_temperatures(temperatures)
        probs = np.stack([soften(p, t) for p, t in zip(raw, temperatures)])
        log("temperatures fitted on validation: " + ", ".join(f"{k} {t:.2f}" for k, t in
                                                               zip(model.kinds, temperatures)))
    model.set_weights(fixed or choose_weights(probs, y_val, labels))
    return model, {"members": members, "ensemble_weights": model.weights.tolist(),
                   "member_temperatures": model.temperatures.tolist(), "validation": True, "history": history}


def calibrate_inner(model: Ensemble, y: np.ndarray, labels: list[str], fixed=None, log=print) -> None:
    """``model.calibration: inner``: each member's temperature, then the vote weights, chosen on the members'
    inner cross-validation predictions for the training speakers (``Member.train_oof``): no validation split,
    and nothing outside the training data. Rows that some member's inner CV did not hold out are left out, and
    so are rows whose emotion the inner training part lacked (wrong by construction), unless the rest cover
    fewer than two emotions."""
    oofs = [m.train_oof for m in model.members]
    missing = [m.kind for m, o in zip(model.members, oofs) if o is None]
    if missing:
        raise ConfigError(f"model.calibration: inner needs members with an inner cross-validation; "
                          f"{', '.join(missing)} has none (use calibration: none, or validation with a split)")
    rows = held_out_rows(model.members)
    if rows.sum() < 2 or len(set(y[rows].tolist())) < 2:
        raise ConfigError("model.calibration: inner: too few held-out training predictions to calibrate on")
    fair = held_out_rows(model.members, fair=True)  # used where those cover two emotions
    if fair.sum() >= 2 and len(set(y[fair].tolist())) >= 2:
        rows = fair
    probs = np.stack([o[rows] for o in oofs])
    temperatures = [fit_temperature(p, y[rows]) for p in probs]
    model.set_temperatures(temperatures)
    weights = fixed or choose_weights(np.stack([soften(p, t) for p, t in zip(probs, temperatures)]), y[rows], labels)
    model.set_weights(weights)
    log("vote chosen on the members' inner-CV predictions for the training speakers: temperatures "
        + ", ".join(f"{k} {t:.2f}" for k, t in zip(model.kinds, temperatures)) + "; weights "
        + ", ".join(f"{k} {w:.2f}" for k, w in zip(model.kinds, model.weights)))


def held_out_rows(members, fair: bool = False) -> np.ndarray:
    """The training rows every member's inner CV held out (``Member.train_oof`` finite); with ``fair``, only
    those whose emotion every member's inner training part held (``Member.train_fair``)."""
    rows = np.all([np.isfinite(m.train_oof).all(1) for m in members], axis=0)
    if fair:
        for m in members:
            if m.train_fair is not None:
                rows &= m.train_fair
    return rows


def inner_vote(model: Ensemble, fair: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, vote): the vote of ``model`` (its temperatures and weights) on its members' inner-CV held-out
    predictions for the training items, on the rows every member held out (with ``fair``, only those whose
    emotion every member's inner training part held: ``Member.train_fair``); None if a member has none."""
    oofs = [m.train_oof for m in model.members]
    if any(o is None for o in oofs):
        return None
    rows = held_out_rows(model.members, fair)
    probs = np.stack([soften(o[rows], float(t)) for o, t in zip(oofs, model.temperatures)])
    return rows, model.vote(probs)


PAIR_GRID = tuple(i / 10 for i in range(11))


def choose_pair_weight(model: Ensemble, companion: Ensemble, y: np.ndarray, labels: list[str]) -> dict | None:
    """The speaker-adapted vote's share in the paired vote (``Ensemble.pair_weight``), chosen on both models'
    inner-CV predictions for the training speakers (max UAR over 0, 0.1, ..., 1; among ties the least log-loss,
    so a model whose held-out probabilities are flat, changing no answer there, gets no share). A
    speaker's held-out predictions in the speaker-normalised model's inner CV use that speaker's own
    statistics, so where training speakers are heard in few emotions (the statistics carry the emotion) the
    adapted model scores low here and the companion takes over. Only the fair held-out rows count (those whose
    emotion the inner training part held); with fewer than two emotions among them adaptation cannot be
    measured and gets no share (weight 0). None when a member has no inner CV."""
    a, b = inner_vote(model, fair=True), inner_vote(companion, fair=True)
    if a is None or b is None:
        return None
    rows = a[0] & b[0]
    if rows.sum() < 2 or len(set(y[rows].tolist())) < 2:  # nothing to measure adaptation on
        return {"weight": 0.0, "why": "fewer than two emotions among the fair held-out rows (training speakers "
                                      "heard in few emotions): the companion answers"}
    va, vb = a[1][rows[a[0]]], b[1][rows[b[0]]]
    yr = y[rows]
    scores, losses = {}, {}
    for w in PAIR_GRID:
        p = w * va + (1 - w) * vb
        scores[w] = float(compute_metrics(yr, p, labels)["uar"])
        losses[w] = float(-np.mean(np.log(np.clip(p[np.arange(len(yr)), yr], 1e-12, None))))
    best = max(scores.values())
    w = min((w for w, s in scores.items() if s >= best - 1e-9), key=lambda w: (round(losses[w], 9), abs(w - 0.5)))
    return {"weight": w, "inner_uar": {f"{k:.1f}": v for k, v in scores.items()},
            "inner_log_loss": {f"{k:.1f}": v for k, v in losses.items()}}


def predict_items(model: Ensemble, items: list[Item], cfg: Config,
                  stats: dict[str, dict[str, np.ndarray]] | None = None, noise_snr: float | None = None,
                  noise: str = "white", seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """Probabilities (rows + 1, N, C) for each item's evaluation window (centre 4 s), optionally with
    noise added at ``noise_snr`` dB: "white" Gaussian, or "babble" made of other items' speech.
    ``stats`` maps each speaker to their statistics (speaker-adapted protocol), or is None."""
    model.eval()
    n = window_samples(cfg)
    rng = np.random.default_rng(seed)
    waves = [crop_wave(it.wave, n, cfg.features.crop) for it in items]
    if noise_snr is not None:
        waves = noisy_versions(waves, noise_snr, noise, rng)
    keys = model.stat_keys()
    outs = []
    for b in range(0, len(items), batch_size):
        wave, lengths = pad_batch([np.ascontiguousarray(w, np.float32) for w in waves[b: b + batch_size]])
        st = None
        if stats is not None:
            part = [stats[it.utt.speaker] for it in items[b: b + batch_size]]
            st = {k: torch.from_numpy(np.stack([p[k] for p in part])).float() for k in keys if all(k in p for p in part)}
        outs.append(model.predict(wave, lengths, st))
    return np.concatenate(outs, axis=1)


def write_history(history: dict[str, list[dict]], out: Path) -> None:
    buf = io.StringIO()
    cols = ["member", "epoch", "train_loss", "val_loss", "val_uar", "val_macro_f1", "val_accuracy", "lr"]
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for name, rows in history.items():
        for r in rows:
            w.writerow({"member": name, **{k: r.get(k) for k in cols[1:]}})
    atomic_write_text(out, buf.getvalue())
