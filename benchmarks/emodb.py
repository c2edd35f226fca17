"""Speaker-independent k-fold cross-validation of the ensemble on EmoDB (or any corpus).

    python -m benchmarks.emodb [--config configs/X.yaml] [--folds 5] [--epochs N] [--tag NAME]
                               [--save-models DIR] [--reuse-members DIR] [--results DIR]

Writes benchmarks/results/emodb[_TAG].json and .md: per member, every smaller team of members and the
ensemble, accuracy, macro-F1 and UAR as mean ± std over folds and pooled over all out-of-fold
predictions, per-class recall, training time, and the per-fold test probabilities (so other benchmarks
can combine members without retraining). The folds are ``persemo.splits.make_folds(..., kind="speaker",
seed)``, the same as the openSMILE peers', and the loop is ``persemo.crossval.cross_validate``. A
speaker-normalised model is tested speaker-adapted (each test speaker's statistics from all their test
utterances, no labels), any other single utterance.

``--reuse-members DIR`` (fold models saved by an earlier ``--save-models DIR``) keeps each saved member
whose settings (its config section, and the shared features and train sections) are unchanged and fits
the others; the vote is chosen anew.
"""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from pathlib import Path

import numpy as np

from persemo.cache import default_cache_dir
from persemo.config import load_config
from persemo.crossval import SINGLE_TAG, SPEAKER_TAG, cross_validate
from persemo.evaluation import markdown_table, per_class_table
from persemo.pipeline import SELECTED_ROW, labels_of, load_items
from persemo.splits import make_folds

from .common import POOLED_NOTE, Rows, add_run_args, machine_info, reuse_fit, save_fold_model, write_results

ROOT = Path(__file__).resolve().parents[1]


def _quiet() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def fold_rows(model, probs: np.ndarray, chosen_on: str | None) -> dict[str, np.ndarray]:
    """Each member's row, every smaller team's equal vote, the ensemble's equal vote and, where its vote was
    chosen on data (``chosen_on``: "val", "inner CV"), the model's own vote as "ensemble (weighted on ...)"."""
    names = model.member_names
    rows = {n: probs[i] for i, n in enumerate(names)}
    for r in range(2, len(names)):  # every smaller team, equal votes (from the same predictions)
        for combo in itertools.combinations(range(len(names)), r):
            rows[" + ".join(names[i] for i in combo) + " (equal)"] = probs[list(combo)].mean(0)
    if len(names) > 1:
        rows["ensemble (equal)"] = probs[:-1].mean(0)
        if chosen_on:
            rows[f"ensemble (weighted on {chosen_on})"] = probs[-1]
    return rows


def run(corpus: str, data: Path, cfg, folds: int, log=print, save_models: Path | None = None,
        reuse_members: Path | None = None) -> dict:
    cache_dir = default_cache_dir()
    items, _ = load_items(corpus, data, cfg, cache_dir, log)
    labels = labels_of(items)
    splits = make_folds([it.utt for it in items], folds, "speaker", cfg.split.val_fraction, cfg.split.seed)
    fit = reuse_fit(reuse_members, cache_dir, log) if reuse_members is not None else None
    table = Rows(labels)
    fold_records = []
    winners: list[dict] = []
    times: dict[str, list[float]] = {}
    protocols = set()
    for fold in cross_validate(cfg, items, splits, labels, fit=fit, cache_dir=cache_dir, log=log,
                               both_protocols=False):
        model, info = fold.model, fold.info
        for n, m in info["members"].items():
            if "seconds" in m and not m.get("kept"):
                times.setdefault(n, []).append(m["seconds"])
        if save_models is not None:  # so that other benchmarks can evaluate (or reuse) the same models
            save_fold_model(save_models, fold, folds)
        tag = SPEAKER_TAG if model.adaptable else SINGLE_TAG
        protocols.add(tag)
        chosen_on = "inner CV" if info.get("calibration") == "inner" else "val" if info.get("validation", True) else None
        rows = fold_rows(model, fold.probs[tag], chosen_on)
        sel = info.get("selection")
        if sel:  # the nested selection: the procedure's answer in every fold, whichever candidate won
            rows[SELECTED_ROW] = fold.probs[tag][-1]
            times.setdefault("selection (every candidate)", []).append(sel["seconds"])
            winners.append({"fold": fold.split.fold, "winner": sel["winner"], "candidates": sel["candidates"]})
        for n, p in rows.items():
            table.add(n, fold.y, p)
        fold_records.append({"fold": fold.split.fold, "test_ids": [it.utt.id for it in fold.test],
                             "y": fold.y.tolist(), "weights": model.weights.tolist(),
                             "members": {n: info["members"].get(n, {}) for n in model.kinds},
                             "probs": {n: np.round(p, 5).tolist() for n, p in rows.items()}})
        log("  " + ", ".join(f"{n} UAR {100 * table.per[n][-1]['uar']:.1f}" for n in rows))
    summary = table.summary()
    return {"labels": labels, "protocol": protocols.pop(), "summary": summary,
            "pooled": {n: s["pooled"] for n, s in summary.items()}, "folds": fold_records, "selection": winners,
            "train_seconds": {n: {"per_fold_mean": float(np.mean(t)), "total": float(np.sum(t))}
                              for n, t in times.items()}}


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-seed", type=int, default=None,
                    help="seed for initialisation and augmentation only (default: --seed); the folds stay "
                         "those of --seed, so runs that differ only here can be combined (benchmarks combine)")
    ap.add_argument("--save-models", type=Path, default=None,
                    help="save each fold's model to DIR/foldK (for benchmarks.adaptation, suite --models, and "
                         "--reuse-members)")
    ap.add_argument("--reuse-members", type=Path, default=None, metavar="DIR",
                    help="fold models saved by an earlier --save-models DIR: keep each member whose settings are "
                         "unchanged, fit the others")
    a = ap.parse_args(argv)
    _quiet()
    over = {"train": {"seed": a.seed if a.train_seed is None else a.train_seed}, "split": {"seed": a.seed}}
    if a.epochs:
        over["train"]["epochs"] = a.epochs
    cfg = load_config(a.config, **over)
    if not a.data.exists():
        raise SystemExit(f"benchmarks.emodb: data not found: {a.data}")
    t0 = time.perf_counter()
    res = run(a.corpus, a.data, cfg, a.folds, save_models=a.save_models, reuse_members=a.reuse_members)
    wall = time.perf_counter() - t0
    name = f"{a.corpus}" + (f"_{a.tag}" if a.tag else "")
    cmd = "python -m benchmarks.emodb" + (f" --config {a.config}" if a.config else "") + \
        (f" --folds {a.folds}" if a.folds != 5 else "") + \
        (f" --epochs {a.epochs}" if a.epochs else "") + (f" --tag {a.tag}" if a.tag else "") + \
        (f" --train-seed {a.train_seed}" if a.train_seed is not None else "") + \
        (f" --reuse-members {a.reuse_members}" if a.reuse_members else "")
    data = {"benchmark": "speaker-independent k-fold", "corpus": a.corpus, "k_folds": a.folds, "command": cmd,
            "config": cfg.to_dict(), "wall_seconds": wall, "machine": machine_info(), **res}
    md = [f"## {a.corpus}: speaker-independent {a.folds}-fold cross-validation", "",
          f"Command: `{cmd}` ({wall / 60:.1f} min on this machine). Folds grouped by speaker "
          f"(no speaker in both train and test), seed {a.seed}"
          + (f", training seed {a.train_seed}" if a.train_seed is not None else "")
          + f"; normalisation: {cfg.features.normalisation}, protocol: {res['protocol']}"
          + (f" (enrolment: statistics from each speaker's {cfg.features.enrolment} utterances)"
             if cfg.features.enrolment else "") + ". " + POOLED_NOTE, "",
          markdown_table(res["summary"]), "",
          "Per-class recall, pooled over folds (%):", "", per_class_table(res["pooled"], res["labels"]), "",
          "Training time per fold (s): " + (", ".join(f"{n} {v['per_fold_mean']:.0f}"
                                                     for n, v in res["train_seconds"].items()) or "none trained")]
    if res["selection"]:
        md += ["", "Nested selection, per fold (inner-CV UAR on the training speakers, %; the winner in bold):", "",
               "| fold | " + " | ".join(c["name"] for c in res["selection"][0]["candidates"]) + " |",
               "|---|" + "---|" * len(res["selection"][0]["candidates"])]
        for w in res["selection"]:
            md.append(f"| {w['fold'] + 1} | " + " | ".join(
                "skipped" if c.get("inner_uar") is None else
                (f"**{100 * c['inner_uar']:.1f}**" if c["name"] == w["winner"] else f"{100 * c['inner_uar']:.1f}")
                for c in w["candidates"]) + " |")
    write_results(name, data, "\n".join(md) + "\n", a.results)
    print("\n".join(md))


if __name__ == "__main__":
    main()
