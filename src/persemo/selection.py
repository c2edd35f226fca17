"""Nested selection: the training corpus chooses the model among candidate configurations (issue 22).

``selection.candidates`` lists candidate configurations (members and their settings). Inside one training
part (a split's, or an outer fold's), ``fit_selected``:

1. fits each distinct member (kind, settings, normalisation) once on all the training items. Every
   candidate member has an inner speaker-grouped cross-validation over the training speakers
   (``Member.inner_cv``: the vector members), which gives a held-out probability row for every training
   item (``Member.train_oof``) and costs nothing extra: the member runs it anyway to choose its classifier
   and calibration;
2. scores each candidate by the UAR of its vote on those held-out rows, with its members' temperatures and
   vote weights chosen on the same rows (``model.calibration: inner``: the numbers its final vote uses);
3. keeps the first-listed candidate within ``selection.margin`` UAR points of the best score (a team's vote
   is tuned on the rows it is scored on, which flatters teams a little; list simpler candidates first).

The winner's members are the ones already fitted on all the training items: nothing is trained twice, and
nothing outside the training part is read. The outer folds (``persemo train --folds``) then measure the
whole procedure. A candidate that needs an extra that is not installed, or whose encoder cannot be loaded
(no network for a hub id), is skipped with a log line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .config import Config, ConfigError
from .ensemble import Ensemble
from .evaluation import compute_metrics
from .prepare import Item
from .training import inner_vote, train_ensemble

__all__ = ["choose", "fit_selected", "inner_vote_uar"]


def member_key(cfg: Config, kind: str) -> str:
    """What makes two candidates' members the same fitted member."""
    return json.dumps([kind, cfg.model.to_dict().get(kind), cfg.features.normalisation, cfg.features.enrolment],
                      sort_keys=True, default=str)


def inner_vote_uar(model: Ensemble, y: np.ndarray, labels: list[str]) -> float:
    """The UAR of ``model``'s vote (its temperatures and weights) on its members' inner-CV held-out rows of
    the training items whose emotion the inner training part held (all held-out rows where those cover fewer
    than two emotions); rows some member's inner CV did not hold out are left out."""
    fair = inner_vote(model, fair=True)
    if fair is None:
        raise ConfigError("selection: every candidate member needs an inner cross-validation")
    rows, vote = fair
    if len(set(y[rows].tolist())) < 2:  # too few fair rows: every held-out row
        rows, vote = inner_vote(model)
    if not rows.any():
        raise ConfigError("selection: no training item was held out by the members' inner cross-validation")
    return float(compute_metrics(y[rows], vote, labels)["uar"])


def choose(scores: list[dict], margin: float) -> dict:
    """The first candidate (in listed order) whose ``inner_uar`` is within ``margin`` points of the best."""
    scored = [s for s in scores if s.get("inner_uar") is not None]
    if not scored:
        raise ConfigError("selection: no candidate could be trained here (" + "; ".join(
            f"{s['name']}: {s.get('skipped')}" for s in scores) + "); install the extras they need "
            "(pip install 'persemo[encoder,opensmile]') or choose a fixed model with --config")
    best = max(s["inner_uar"] for s in scored)
    return next(s for s in scored if s["inner_uar"] >= best - margin / 100 - 1e-12)


def fit_selected(cfg: Config, labels: list[str], train: list[Item], val: list[Item], out: Path | None = None,
                 progress: bool = True, log=print, cache_dir=None,
                 candidates_out: dict | None = None) -> tuple[Ensemble, dict]:
    """``train_ensemble`` of ``cfg``, or with ``selection.candidates`` the selected candidate (see the module
    docstring): (model, info with ``info["selection"]``: every candidate's inner UAR, members, seconds, the
    winner and the margin). ``candidates_out`` (a dict), if given, receives every trained candidate's model
    by name (benchmarks report them all on the test speakers)."""
    if not cfg.selection.candidates:
        return train_ensemble(cfg, labels, train, val, out, progress, log, cache_dir=cache_dir)
    index = {l: i for i, l in enumerate(labels)}
    y = np.array([index[it.utt.emotion] for it in train])
    pool: dict[str, object] = {}  # member_key -> fitted member
    facts: dict[str, dict] = {}  # member_key -> what its fit reported
    fitted: dict[str, tuple[Ensemble, dict]] = {}
    scores: list[dict] = []
    memo: dict = {}  # the vector members' noisy copies, shared by the candidates' fits
    failed: dict[str, str] = {}  # member_key -> why it could not be had (its candidate was skipped)
    start = time.perf_counter()
    log(f"selection: {len(cfg.selection.candidates)} candidates ("
        + ", ".join(c["name"] for c in cfg.selection.candidates) + ") scored by inner speaker-grouped CV on the "
        f"{len({it.utt.speaker for it in train})} training speakers")
    for name, cand in cfg.candidates():
        if isinstance(cand, Exception):
            log(f"selection: skipping candidate {name}: {cand}")
            scores.append({"name": name, "skipped": str(cand)})
            continue
        t0 = time.perf_counter()
        keys = {k: member_key(cand, k) for k in cand.model.members}
        keep = {k: pool[key] for k, key in keys.items() if key in pool}
        known_bad = [failed[key] for key in keys.values() if key in failed]
        if known_bad:  # a member that could not be had for an earlier candidate: not tried again
            log(f"selection: skipping candidate {name}: {known_bad[0]}")
            scores.append({"name": name, "skipped": known_bad[0]})
            continue
        try:
            model, info = train_ensemble(cand, labels, train, val, out, progress, log, cache_dir=cache_dir, keep=keep,
                                         memo=memo)
        except (ImportError, OSError) as exc:  # an extra or an encoder that cannot be had here
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log(f"selection: skipping candidate {name}: {reason}")
            scores.append({"name": name, "skipped": reason})
            failed.update({key: reason for key in keys.values() if key not in pool})
            continue
        for m in model.members:
            if keys[m.kind] not in pool:
                pool[keys[m.kind]], facts[keys[m.kind]] = m, info["members"][m.kind]
        info = {**info, "members": {k: facts[key] for k, key in keys.items()}}
        uar = inner_vote_uar(model, y, labels)
        fitted[name] = (model, info)
        scores.append({"name": name, "members": list(cand.model.members), "inner_uar": uar,
                       "weights": model.weights.tolist(), "seconds": time.perf_counter() - t0})
        log(f"selection: {name} ({'+'.join(cand.model.members)}): inner-CV UAR {100 * uar:.1f}%")
    win = choose(scores, cfg.selection.margin)
    best = max(s["inner_uar"] for s in scores if s.get("inner_uar") is not None)
    if candidates_out is not None:
        candidates_out.update({n: m for n, (m, _) in fitted.items()})
    model, info = fitted[win["name"]]
    model.selected = win["name"]
    runner = [s for s in scores if s.get("inner_uar") is not None and s is not win]
    log(f"selection: {win['name']} chosen, inner-CV UAR {100 * win['inner_uar']:.1f}%"
        + (f" (best {100 * best:.1f}%, margin {cfg.selection.margin:g})" if best > win["inner_uar"] else "")
        + (f"; next {max(runner, key=lambda s: s['inner_uar'])['name']}" if runner else "")
        + f"; {len(pool)} members fitted for {len(scores)} candidates in {time.perf_counter() - start:.0f} s")
    return model, {**info, "selection": {"winner": win["name"], "margin": cfg.selection.margin,
                                         "candidates": scores, "seconds": time.perf_counter() - start,
                                         "members_fitted": len(pool)}}
