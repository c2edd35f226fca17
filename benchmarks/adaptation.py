"""Speaker adaptation on EmoDB: both protocols on the same folds and the same test utterances.

    python -m benchmarks.adaptation [--config configs/X.yaml] [--folds 5] [--epochs N] [--tag NAME]
                                    [--models-u DIR --models-s DIR] [--vote KINDS] [--results DIR]

Per fold (``persemo.crossval.cross_validate``, one loop per model on the same folds), two models are
trained on the same training speakers (or loaded: fold models saved by ``benchmarks.emodb --save-models``): one with per-utterance
normalisation (the "single utterance" protocol) and one with per-speaker normalisation, which is
then evaluated on the test speakers with statistics taken from (a) all of the speaker's test
utterances, (b) their neutral utterances only (enrolment), (c) utterances of one single non-neutral
emotion (the trap, averaged over emotions), and (d) n random utterances (the adaptation curve),
each plain, shrunk toward the training statistics by n / (n + k), and guarded (statistics dropped
when the model's own predictions over the pool look like one emotion); the shrunk vote is also
averaged with the single-utterance model's vote (both models; its fallback when the pool misleads). Labels are never used for
statistics except to *select* the enrolment and trap pools, which is what those scenarios mean.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from persemo.adaptation import effective_emotions
from persemo.cache import default_cache_dir
from persemo.config import load_config
from persemo.crossval import SINGLE_TAG, cross_validate
from persemo.evaluation import markdown_table
from persemo.pipeline import labels_of, load_items
from persemo.splits import make_folds
from persemo.statistics import shrink, speaker_statistics
from persemo.training import predict_items

from .common import (POOLED_NOTE, Rows, add_run_args, load_fit, machine_info, remembering, saved_config,
                     write_results)
from .emodb import _quiet

CURVE = (1, 2, 5, 10)
SHRINK_K = 10.0
MIN_EMOTIONS = 2.5
BOTH = "shrunk, averaged with the single-utterance model"


def _stats_fn(model, cache_dir):
    """items of one speaker -> that speaker's statistics from their audio, every member's own included
    (``statistics.speaker_statistics``, unshrunk: the variants below shrink or guard them)."""

    def stats(items) -> dict:
        (st,) = speaker_statistics(items, model, cache_dir).values()
        return st

    return stats


def run(corpus, data, cfg, folds, log=print, models_u: Path | None = None, models_s: Path | None = None,
        vote: list[str] | None = None) -> dict:
    """Both models per fold of ``cross_validate`` (trained, or loaded from ``models_u`` / ``models_s``), then
    every scenario on the fold's test speakers. ``vote``: the members whose equal vote is "the ensemble"
    (default: the models' own vote)."""
    pick: list[int] = []

    def _ens(probs: np.ndarray) -> np.ndarray:
        return probs[pick].mean(0) if pick else probs[-1]

    cfg_u = saved_config(models_u) if models_u else cfg.replace(features={"normalisation": "utterance",
                                                                          "enrolment": None})
    cfg_s = saved_config(models_s) if models_s else cfg.replace(features={"normalisation": "speaker"})
    if cfg_u.features.normalisation == "speaker" or cfg_s.features.normalisation != "speaker":
        raise SystemExit("--models-u must hold single-utterance models and --models-s speaker-normalised ones")
    cache_dir = default_cache_dir()
    items, _ = load_items(corpus, data, cfg_s, cache_dir, log)
    labels = labels_of(items)
    neutral = "neutral" if "neutral" in labels else None
    splits = make_folds([it.utt for it in items], folds, "speaker", cfg.split.val_fraction, cfg.split.seed)
    rng = np.random.default_rng(0)
    per = Rows(labels)  # the ensemble's rows
    members = Rows(labels)  # the main scenarios per member: "member · scenario"
    decisions: dict[str, list[float]] = {}

    def add(name, y, p, names=None):
        """p: (members + 1, N, C) from predict_items; the ensemble row goes to ``per``, members (when
        ``names``) to ``members``."""
        per.add(name, y, _ens(p))
        for i, n in enumerate(names or []):
            members.add(f"{n} · {name}", y, p[i])

    # the two models' loops advance together: fold k's single-utterance model, then its speaker-normalised one
    memo: dict = {}  # a test window's per-clip vectors do not depend on the model or the statistics
    folds_u = cross_validate(cfg_u, items, splits, labels, cache_dir=cache_dir, log=log, both_protocols=False,
                             fit=remembering(load_fit(models_u, log) if models_u else None, memo, log))
    folds_s = cross_validate(cfg_s, items, splits, labels, cache_dir=cache_dir, log=log, both_protocols=True,
                             fit=remembering(load_fit(models_s, log) if models_s else None, memo, log))
    for fu, fs in zip(folds_u, folds_s):
        m_u, m_s, test, y = fu.model, fs.model, fs.test, fs.y
        if m_u.adaptable or not m_s.adaptable:
            raise SystemExit("--models-u must hold single-utterance models and --models-s speaker-normalised ones")
        if vote:
            if m_u.member_names != m_s.member_names or not set(vote) <= set(m_s.member_names):
                raise SystemExit(f"--vote {','.join(vote)}: both models must have these members "
                                 f"(they have {m_u.member_names} and {m_s.member_names})")
            pick[:] = [m_s.member_names.index(n) for n in vote]
        names = m_s.member_names
        _stats = _stats_fn(m_s, cache_dir)
        p_u = fu.probs[SINGLE_TAG]
        add("single utterance (per-utterance normalisation)", y, p_u, m_u.member_names)
        single = _ens(p_u)  # the single-utterance model's vote, averaged in by the [both models] rows

        def both(p_s, keep=None):
            """The speaker model's vote under some statistics averaged with the single-utterance model's."""
            return (_ens(p_s) + (single if keep is None else single[keep])) / 2

        prior = m_s.global_stats()
        spk_items: dict[str, list] = {}
        for it in test:
            spk_items.setdefault(it.utt.speaker, []).append(it)
        base = fs.probs[SINGLE_TAG]  # speaker model with its global statistics (no adaptation)
        add("speaker-normalised model, no adaptation (global statistics)", y, base)
        base_by_id = {it.utt.id: _ens(base)[i] for i, it in enumerate(test)}

        def variant_stats(pool, variant: str, tag: str) -> dict:
            st = _stats(pool)
            if variant == "shrunk":
                return shrink(st, prior, len(pool), SHRINK_K)
            if variant == "guarded":
                eff = effective_emotions(np.stack([base_by_id[it.utt.id] for it in pool]))
                decisions.setdefault(tag, []).append(eff)
                if eff < MIN_EMOTIONS:
                    return dict(prior)
            return st

        def evaluate(pools: dict[str, list], tag: str):
            """pools: speaker -> the items whose audio gives that speaker's statistics."""
            for variant in ("plain", "shrunk", "guarded"):
                stats = {spk: variant_stats(pool, variant, tag) for spk, pool in pools.items()}
                p_s = predict_items(m_s, test, cfg_s, stats)
                add(f"{tag} [{variant}]", y, p_s, names if variant == "plain" else None)
                if variant == "shrunk":
                    per.add(f"{tag} [{BOTH}]", y, both(p_s))

        evaluate(spk_items, "speaker-adapted: all utterances")
        if neutral:
            pools = {s: [it for it in its if it.utt.emotion == neutral] or its for s, its in spk_items.items()}
            evaluate(pools, "speaker-adapted: neutral enrolment")
        # the trap: each speaker's statistics from one single non-neutral emotion; averaged over emotions
        trap_emotions = [l for l in labels if l != neutral]
        for variant in ("plain", "shrunk", "guarded"):
            tag = f"speaker-adapted: one-emotion trap [{variant}]"
            groups, by_member, groups_both = {}, {n: {} for n in names}, {}
            for emo in trap_emotions:
                stats = {}
                for s, its in spk_items.items():
                    pool = [it for it in its if it.utt.emotion == emo]
                    if pool:
                        stats[s] = variant_stats(pool, variant, "trap")
                keep = [i for i, it in enumerate(test) if it.utt.speaker in stats]
                if not keep:
                    continue
                p = predict_items(m_s, [test[i] for i in keep], cfg_s, stats)
                groups[emo] = (y[keep], _ens(p))
                if variant == "plain":
                    for j, n in enumerate(names):
                        by_member[n][emo] = (y[keep], p[j])
                if variant == "shrunk":
                    groups_both[emo] = (y[keep], both(p, np.array(keep)))
            per.add_mean(tag, groups)
            for n, g in by_member.items():
                if g:
                    members.add_mean(f"{n} · {tag}", g)
            if groups_both:
                per.add_mean(f"speaker-adapted: one-emotion trap [{BOTH}]", groups_both)
        for n in CURVE:
            pools = {s: [its[j] for j in rng.choice(len(its), size=min(n, len(its)), replace=False)]
                     for s, its in spk_items.items()}
            stats = {s: _stats(p) for s, p in pools.items()}
            add(f"adaptation curve: {n} utterance(s) [plain]", y, predict_items(m_s, test, cfg_s, stats))
            stats = {s: shrink(_stats(p), prior, len(p), SHRINK_K) for s, p in pools.items()}
            p_s = predict_items(m_s, test, cfg_s, stats)
            add(f"adaptation curve: {n} utterance(s) [shrunk]", y, p_s)
            per.add(f"adaptation curve: {n} utterance(s) [{BOTH}]", y, both(p_s))
        m_u.memo = m_s.memo = None
        memo.clear()
        log("  " + "; ".join(f"{k}: {100 * v[-1]['uar']:.1f}" for k, v in per.per.items()
                             if "curve" not in k and "[plain]" in k or k.startswith("single")))
    return {"labels": labels, "summary": per.summary(), "members": members.summary(),
            "guard": {k: {"min_emotions": MIN_EMOTIONS, "effective_emotions_mean": float(np.mean(v)),
                          "share_adapted": float(np.mean(np.array(v) >= MIN_EMOTIONS))} for k, v in decisions.items()},
            "shrink_k": SHRINK_K}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument("--models-u", type=Path, default=None,
                    help="single-utterance fold models saved by benchmarks.emodb --save-models (else trained here)")
    ap.add_argument("--models-s", type=Path, default=None,
                    help="speaker-normalised fold models saved by benchmarks.emodb --save-models (else trained here)")
    ap.add_argument("--vote", default=None, help="comma-separated members whose equal vote is the ensemble "
                                                 "(e.g. cnn,smile; default: the models' own vote)")
    a = ap.parse_args(argv)
    _quiet()
    over = {"train": {"epochs": a.epochs}} if a.epochs else {}
    cfg = load_config(a.config, **over)
    t0 = time.perf_counter()
    vote = a.vote.split(",") if a.vote else None
    res = run(a.corpus, a.data, cfg, a.folds, models_u=a.models_u, models_s=a.models_s, vote=vote)
    wall = time.perf_counter() - t0
    name = f"adaptation_{a.corpus}" + (f"_{a.tag}" if a.tag else "")
    cmd = "python -m benchmarks.adaptation" + (f" --config {a.config}" if a.config else "") + \
        (f" --epochs {a.epochs}" if a.epochs else "") + (f" --tag {a.tag}" if a.tag else "") + \
        (f" --models-u {a.models_u} --models-s {a.models_s}" if a.models_u else "") + \
        (f" --vote {a.vote}" if a.vote else "")
    md = [f"## Speaker adaptation, {a.corpus}, speaker-independent {a.folds}-fold "
          f"({'equal vote of ' + ' + '.join(vote) if vote else 'ensemble'})", "",
          f"Command: `{cmd}` ({wall / 60:.1f} min). The speaker-adapted protocol is transductive over each test "
          "speaker's unlabelled audio; it is reported apart from the single-utterance protocol, never mixed. "
          f"[shrunk]: statistics moved toward the training statistics by n/(n+{SHRINK_K:g}); [guarded]: "
          f"statistics dropped when the model's own predictions over the pool span fewer than {MIN_EMOTIONS} "
          f"effective emotions; [{BOTH}]: the shrunk speaker model's vote and the single-utterance model's "
          "vote averaged (two models). " + POOLED_NOTE + " Trap rows: the mean over the trap emotions (pooled: "
          "each emotion's predictions pooled over folds, then the mean).", "", markdown_table(res["summary"]), "",
          "Each member in the main scenarios (plain statistics), mean ± std over folds and pooled (%):", "",
          markdown_table(res["members"])]
    write_results(name, {"command": cmd, "config": cfg.to_dict(), "wall_seconds": wall, "machine": machine_info(),
                         **res}, "\n".join(md) + "\n", a.results)
    print("\n".join(md))


if __name__ == "__main__":
    main()
