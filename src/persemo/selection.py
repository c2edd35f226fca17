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
3. keeps a candidate by ``selection.rule``: ``margin``, the first-listed candidate within ``selection.margin``
   UAR points of the best mean score (a team's vote is tuned on the rows it is scored on, which flatters
   teams a little; list simpler candidates first); or ``se``, the first-listed candidate whose mean per-fold
   deficit to the best is at most one standard error of that deficit (the one-standard-error rule): the
   first-listed candidate is then a default that only clear inner evidence overrules (the recommended list
   puts whisper alone first: thin evidence from few speakers per emotion chose worse than that default,
   ``benchmarks/results/confound_*``).

With ``selection.repeats`` R > 1 every member scores the training items on R inner speaker partitions
(``heads.base.Head``: the first partition chooses hyperparameters and calibration, the others refit them
as chosen, one fit per fold), so a candidate's score is the mean of R pooled UARs and the ``se`` rule sees
R x K paired fold scores. The folds of one partition are the same for every member and candidate (the
same speakers, seed and split), so fold scores pair across candidates. The R partitions reuse the same
clips, so the standard error divides by sqrt(K) (the folds of one partition), not sqrt(R x K).

Every candidate's scores (``inner_uar``, ``repeat_uar``, ``fold_uar``) are saved in the selection info, so
``choose`` on them gives the winner again. Also saved: ``soft_weights``, non-negative weights over the
candidates fitted on their inner held-out votes (least log-loss of the weighted mixture, first partition,
fair rows): a soft alternative to picking one, measured by the benchmarks (``benchmarks/confound.py``); a
saved model holds one member per kind, so it is not a rule here.

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
from .ensemble import soften
from .evaluation import compute_metrics
from .heads.base import uar
from .prepare import Item
from .training import inner_vote, train_ensemble

__all__ = ["choose", "fit_selected", "inner_scores", "inner_vote_uar", "soft_weights"]


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


def _partitions(model: Ensemble) -> int:
    reps = [m.train_oof_repeats for m in model.members]
    return min(len(r) for r in reps) if all(r is not None for r in reps) else 1


def inner_votes(model: Ensemble, repeat: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows (N,) bool, vote (N, C), folds (N,)): ``model``'s vote on its members' held-out rows of inner
    partition ``repeat`` (rows every member held out and whose emotion every inner training part held), and
    each row's inner fold (-1 unknown)."""
    members = model.members
    if _partitions(model) > repeat and all(m.train_fold_repeats is not None for m in members):
        oofs = [m.train_oof_repeats[repeat] for m in members]
        fair = np.all([m.train_fair_repeats[repeat] for m in members], axis=0)
        folds = members[0].train_fold_repeats[repeat]
    else:
        oofs = [m.train_oof for m in members]
        fair = np.all([m.train_fair if m.train_fair is not None else np.ones(len(o), bool)
                       for m, o in zip(members, oofs)], axis=0)
        folds = np.full(len(oofs[0]), -1)
    held = np.all([np.isfinite(o).all(1) for o in oofs], axis=0)
    vote = np.full(oofs[0].shape, np.nan)
    vote[held] = model.vote(np.stack([soften(o[held], float(t)) for o, t in zip(oofs, model.temperatures)]))
    return held & fair, vote, np.where(held, folds, -1)


def inner_scores(model: Ensemble, y: np.ndarray) -> dict:
    """A candidate's inner scores: ``inner_uar`` (the mean over partitions of its vote's pooled UAR on the
    fair held-out rows; all held-out rows where those cover fewer than two emotions), ``repeat_uar`` (R,) and
    ``fold_uar`` (R lists of K per-fold UARs, None where a fold's rows hold fewer than two emotions)."""
    repeat_uar, fold_uar = [], []
    for r in range(_partitions(model)):
        rows, vote, folds = inner_votes(model, r)
        if len(set(y[rows].tolist())) < 2:  # too few fair rows: every held-out row
            rows = np.isfinite(vote[:, 0])
        if not rows.any():
            raise ConfigError("selection: no training item was held out by the members' inner cross-validation")
        repeat_uar.append(uar(y[rows], vote[rows].argmax(1)))
        per = []
        for f in range(int(folds.max()) + 1):
            at = rows & (folds == f)
            per.append(uar(y[at], vote[at].argmax(1)) if len(set(y[at].tolist())) >= 2 else None)
        fold_uar.append(per)
    return {"inner_uar": float(np.mean(repeat_uar)), "repeat_uar": repeat_uar, "fold_uar": fold_uar}


def deficit(best: dict, other: dict) -> tuple[float, float] | None:
    """(mean, standard error) of ``best``'s per-fold inner UAR minus ``other``'s, over the folds both scored
    in every partition; the standard error divides by sqrt(K), K the folds of one partition (the partitions
    reuse the same clips). None with fewer than two paired folds."""
    d = [a - b for fa, fb in zip(best.get("fold_uar") or [], other.get("fold_uar") or [])
         for a, b in zip(fa, fb) if a is not None and b is not None]
    if len(d) < 2:
        return None
    k = max(len(f) for f in best["fold_uar"])
    return float(np.mean(d)), float(np.std(d, ddof=1) / np.sqrt(max(1, k)))


def choose(scores: list[dict], margin: float, rule: str = "margin") -> dict:
    """The winner among candidate scores (``inner_scores`` plus ``name``; skipped ones have no
    ``inner_uar``), in listed order. ``margin``: the first whose ``inner_uar`` is within ``margin`` points of
    the best. ``se``: the first whose mean per-fold deficit to the best is at most its standard error
    (``deficit``; without fold scores, the margin rule for that pair)."""
    scored = [s for s in scores if s.get("inner_uar") is not None]
    if not scored:
        raise ConfigError("selection: no candidate could be trained here (" + "; ".join(
            f"{s['name']}: {s.get('skipped')}" for s in scores) + "); install the extras they need "
            "(pip install 'persemo[encoder,opensmile]') or choose a fixed model with --config")
    top = max(scored, key=lambda s: s["inner_uar"])  # the first of the best
    best = top["inner_uar"]
    if rule == "margin":
        return next(s for s in scored if s["inner_uar"] >= best - margin / 100 - 1e-12)
    if rule != "se":
        raise ConfigError(f"selection.rule must be margin or se, not {rule!r}")
    for s in scored:
        if s is top:
            return s
        d = deficit(top, s)
        if (d[0] <= d[1] + 1e-12) if d is not None else s["inner_uar"] >= best - margin / 100 - 1e-12:
            return s
    return top


def soft_weights(votes: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """(M,) non-negative weights summing to one over M candidates' probability rows (M, N, C) of the same
    N labelled rows, minimising the log-loss of their weighted mixture (a softmax over free parameters,
    L-BFGS). With one candidate, [1]."""
    from scipy.optimize import minimize

    votes = np.clip(np.asarray(votes, np.float64), 1e-12, None)
    if len(votes) == 1:
        return np.ones(1)
    picked = votes[:, np.arange(len(y)), y]  # (M, N) each candidate's probability of the true class

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = np.exp(theta - theta.max())
        w /= w.sum()
        mix = w @ picked
        g_w = -(picked / mix).mean(1)  # d loss / d w
        return float(-np.mean(np.log(mix))), w * (g_w - w @ g_w)

    res = minimize(loss, np.zeros(len(votes)), jac=True, method="L-BFGS-B", options={"maxiter": 200})
    w = np.exp(res.x - res.x.max())
    return w / w.sum()


def _soft(fitted: dict, y: np.ndarray, n_classes: int) -> dict[str, float]:
    """``soft_weights`` of the fitted candidates on the rows every one of them scored fairly (partition 0)."""
    names = list(fitted)
    parts = [inner_votes(fitted[n][0]) for n in names]
    rows = np.all([p[0] for p in parts], axis=0)
    if len(set(y[rows].tolist())) < 2:
        return {}
    w = soft_weights(np.stack([p[1][rows] for p in parts]), y[rows], n_classes)
    return {n: float(v) for n, v in zip(names, w)}


def fit_selected(cfg: Config, labels: list[str], train: list[Item], val: list[Item], out: Path | None = None,
                 progress: bool = True, log=print, cache_dir=None,
                 candidates_out: dict | None = None) -> tuple[Ensemble, dict]:
    """``train_ensemble`` of ``cfg``, or with ``selection.candidates`` the selected candidate (see the module
    docstring): (model, info with ``info["selection"]``: every candidate's inner scores, members, seconds,
    the winner, the rule, margin and repeats, and the soft weights). ``candidates_out`` (a dict), if given, receives every trained candidate's model
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
            new = [key for key in keys.values() if key not in pool]
            if len(new) == 1:  # the one member not fitted before is what failed; of several, which is unknown
                failed[new[0]] = reason
            continue
        for m in model.members:
            if keys[m.kind] not in pool:
                pool[keys[m.kind]], facts[keys[m.kind]] = m, info["members"][m.kind]
        info = {**info, "members": {k: facts[key] for k, key in keys.items()}}
        inner = inner_scores(model, y)
        fitted[name] = (model, info)
        scores.append({"name": name, "members": list(cand.model.members), **inner,
                       "weights": model.weights.tolist(), "seconds": time.perf_counter() - t0})
        log(f"selection: {name} ({'+'.join(cand.model.members)}): inner-CV UAR {100 * inner['inner_uar']:.1f}%"
            + (f" (partitions {', '.join(f'{100 * u:.1f}' for u in inner['repeat_uar'])})"
               if len(inner["repeat_uar"]) > 1 else ""))
    win = choose(scores, cfg.selection.margin, cfg.selection.rule)
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
                                         "rule": cfg.selection.rule, "repeats": cfg.selection.repeats,
                                         "candidates": scores, "soft_weights": _soft(fitted, y, len(labels)),
                                         "seconds": time.perf_counter() - start, "members_fitted": len(pool)}}
