"""Speaker adaptation on EmoDB: both protocols on the same folds and the same test utterances.

    python -m benchmarks.adaptation [--config configs/X.yaml] [--folds 5] [--epochs N] [--tag NAME]

Per fold, two models are trained on the same training speakers: one with per-utterance
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

from persemo.adaptation import effective_emotions, global_stats, shrink
from persemo.cache import default_cache_dir
from persemo.config import load_config
from persemo.evaluation import compute_metrics, markdown_table, summarise_folds
from persemo.pipeline import labels_of, load_items
from persemo.splits import check_speaker_independent, make_folds
from persemo.training import predict_items, speaker_statistics

from .common import add_run_args, fold_model, machine_info, write_results
from .emodb import _quiet

CURVE = (1, 2, 5, 10)
SHRINK_K = 10.0
MIN_EMOTIONS = 2.5
BOTH = "shrunk, averaged with the single-utterance model"


def _stats_fn(model, cache_dir):
    """items of one speaker -> that speaker's statistics from their audio, the smile member's included
    (``training.speaker_statistics``, unshrunk: the variants below shrink or guard them)."""

    def stats(items) -> dict:
        (st,) = speaker_statistics(items, model, cache_dir).values()
        return st

    return stats


def run(corpus, data, cfg, folds, log=print, models_u: Path | None = None, models_s: Path | None = None,
        vote: list[str] | None = None) -> dict:
    """``vote``: the members whose equal vote is "the ensemble" (default: the models' own vote)."""
    pick: list[int] = []

    def _ens(probs: np.ndarray) -> np.ndarray:
        return probs[pick].mean(0) if pick else probs[-1]

    cfg_u = cfg.replace(features={"normalisation": "utterance", "enrolment": None})
    cfg_s = cfg.replace(features={"normalisation": "speaker"})
    cache_dir = default_cache_dir()
    items, _ = load_items(corpus, data, cfg, default_cache_dir(), log)
    labels = labels_of(items)
    index = {l: i for i, l in enumerate(labels)}
    neutral = "neutral" if "neutral" in labels else None
    utts = [it.utt for it in items]
    by_id = {it.utt.id: it for it in items}
    splits = make_folds(utts, folds, "speaker", cfg.split.val_fraction, cfg.split.seed)
    rng = np.random.default_rng(0)
    per: dict[str, list[dict]] = {}
    members: dict[str, list[dict]] = {}  # the main scenarios per member: "member | scenario"
    decisions: dict[str, list[float]] = {}

    def add(name, y, p, names=None):
        """p: (members + 1, N, C) from predict_items; the ensemble row goes to ``per``, members (when
        ``names``) to ``members``."""
        per.setdefault(name, []).append(compute_metrics(y, _ens(p), labels))
        for i, n in enumerate(names or []):
            members.setdefault(f"{n} · {name}", []).append(compute_metrics(y, p[i], labels))

    for sp in splits:
        check_speaker_independent(sp, utts)
        train, val, test = ([by_id[i] for i in sp.train], [by_id[i] for i in sp.val], [by_id[i] for i in sp.test])
        y = np.array([index[it.utt.emotion] for it in test])
        log(f"fold {sp.fold + 1}/{folds}: test speakers {sorted({it.utt.speaker for it in test})}")
        test_ids = [it.utt.id for it in test]
        m_u = fold_model(models_u, sp.fold, test_ids, train, val, cfg_u, labels, log)
        m_s = fold_model(models_s, sp.fold, test_ids, train, val, cfg_s, labels, log)
        cfg_u, cfg_s = m_u.cfg, m_s.cfg
        if cfg_u.features.normalisation == "speaker" or cfg_s.features.normalisation != "speaker":
            raise SystemExit("--models-u must hold single-utterance models and --models-s speaker-normalised ones")
        if vote:
            if m_u.member_names != m_s.member_names or not set(vote) <= set(m_s.member_names):
                raise SystemExit(f"--vote {','.join(vote)}: both models must have these members "
                                 f"(they have {m_u.member_names} and {m_s.member_names})")
            pick[:] = [m_s.member_names.index(n) for n in vote]
        _stats = _stats_fn(m_s, cache_dir)
        memo: dict = {}  # a test window's openSMILE functionals do not depend on the statistics
        m_u.functional_memo = m_s.functional_memo = memo
        p_u = predict_items(m_u, test, cfg_u)
        add("single utterance (per-utterance normalisation)", y, p_u, m_u.member_names)
        single = _ens(p_u)  # the single-utterance model's vote, averaged in by the [both models] rows

        def both(y_, p_s, keep=None):
            """The speaker model's vote under some statistics averaged with the single-utterance model's."""
            su = single if keep is None else single[keep]
            return compute_metrics(y_, (_ens(p_s) + su) / 2, labels)
        prior = global_stats(m_s)
        spk_items: dict[str, list] = {}
        for it in test:
            spk_items.setdefault(it.utt.speaker, []).append(it)
        base = predict_items(m_s, test, cfg_s)  # speaker model with its global statistics (no adaptation)
        add("speaker-normalised model, no adaptation (global statistics)", y, base)
        base_by_id = {it.utt.id: _ens(base)[i] for i, it in enumerate(test)}

        def evaluate(pools: dict[str, list], tag: str):
            """pools: speaker -> the items whose audio gives that speaker's statistics."""
            for variant in ("plain", "shrunk", "guarded"):
                stats = {}
                for spk, pool in pools.items():
                    st = _stats(pool)
                    if variant == "shrunk":
                        st = shrink(st, prior, len(pool), SHRINK_K)
                    elif variant == "guarded":
                        eff = effective_emotions(np.stack([base_by_id[it.utt.id] for it in pool]))
                        decisions.setdefault(tag, []).append(eff)
                        if eff < MIN_EMOTIONS:
                            st = dict(prior)
                    stats[spk] = st
                p_s = predict_items(m_s, test, cfg_s, stats)
                add(f"{tag} [{variant}]", y, p_s, m_s.member_names if variant == "plain" else None)
                if variant == "shrunk":
                    per.setdefault(f"{tag} [{BOTH}]", []).append(both(y, p_s))

        evaluate(spk_items, "speaker-adapted: all utterances")
        if neutral:
            pools = {s: [it for it in its if it.utt.emotion == neutral] or its for s, its in spk_items.items()}
            evaluate(pools, "speaker-adapted: neutral enrolment")
        # the trap: each speaker's statistics from one single non-neutral emotion; averaged over emotions
        trap_emotions = [l for l in labels if l != neutral]
        trap_both: list[dict] = []
        for variant in ("plain", "shrunk", "guarded"):
            scores = []
            for emo in trap_emotions:
                stats = {}
                for s, its in spk_items.items():
                    pool = [it for it in its if it.utt.emotion == emo]
                    if not pool:
                        continue
                    st = _stats(pool)
                    if variant == "shrunk":
                        st = shrink(st, prior, len(pool), SHRINK_K)
                    elif variant == "guarded":
                        eff = effective_emotions(np.stack([base_by_id[it.utt.id] for it in pool]))
                        decisions.setdefault("trap", []).append(eff)
                        if eff < MIN_EMOTIONS:
                            st = dict(prior)
                    stats[s] = st
                keep = [i for i, it in enumerate(test) if it.utt.speaker in stats]
                sub = [test[i] for i in keep]
                p = predict_items(m_s, sub, cfg_s, stats)
                rows = [_ens(p)] + ([p[i] for i in range(len(m_s.member_names))] if variant == "plain" else [])
                scores.append([compute_metrics(y[keep], r, labels) for r in rows])
                if variant == "shrunk":
                    trap_both.append(both(y[keep], p, np.array(keep)))
            keys = ("accuracy", "macro_f1", "weighted_f1", "uar")
            tag = f"speaker-adapted: one-emotion trap [{variant}]"
            for j in range(len(scores[0])):
                avg = {k: float(np.mean([s[j][k] for s in scores])) for k in keys}
                if j == 0:
                    per.setdefault(tag, []).append(avg)
                else:
                    members.setdefault(f"{m_s.member_names[j - 1]} · {tag}", []).append(avg)
        per.setdefault(f"speaker-adapted: one-emotion trap [{BOTH}]", []).append(
            {k: float(np.mean([s[k] for s in trap_both])) for k in ("accuracy", "macro_f1", "weighted_f1", "uar")})
        for n in CURVE:
            pools = {s: [its[j] for j in rng.choice(len(its), size=min(n, len(its)), replace=False)]
                     for s, its in spk_items.items()}
            stats = {s: _stats(p) for s, p in pools.items()}
            add(f"adaptation curve: {n} utterance(s) [plain]", y, predict_items(m_s, test, cfg_s, stats))
            stats = {s: shrink(_stats(p), prior, len(p), SHRINK_K) for s, p in pools.items()}
            p_s = predict_items(m_s, test, cfg_s, stats)
            add(f"adaptation curve: {n} utterance(s) [shrunk]", y, p_s)
            per.setdefault(f"adaptation curve: {n} utterance(s) [{BOTH}]", []).append(both(y, p_s))
        log("  " + "; ".join(f"{k}: {100 * v[-1]['uar']:.1f}" for k, v in per.items()
                             if "curve" not in k and "[plain]" in k or k.startswith("single")))
    summary = {k: summarise_folds(v) for k, v in per.items()}
    return {"labels": labels, "summary": summary, "members": {k: summarise_folds(v) for k, v in members.items()},
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
          "vote averaged (two models). Mean ± std over folds (%).", "", markdown_table(res["summary"]), "",
          "Each member in the main scenarios (plain statistics), mean ± std over folds (%):", "",
          markdown_table(res["members"])]
    write_results(name, {"command": cmd, "config": cfg.to_dict(), "wall_seconds": wall, "machine": machine_info(),
                         **res}, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
