"""Speaker-independent k-fold cross-validation of the ensemble on EmoDB (or any corpus).

    python -m benchmarks.emodb [--config configs/X.yaml] [--folds 5] [--epochs N] [--tag NAME]

Writes benchmarks/results/emodb[_TAG].json and .md: per member and ensemble, accuracy, macro-F1 and
UAR as mean and std over folds, per-class recall, training time, and the per-fold test probabilities
(so other benchmarks can combine members without retraining). The folds are
``persemo.splits.make_folds(..., kind="speaker", seed=0)``, the same as the openSMILE peers'.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np

from persemo.artifact import save_model
from persemo.cache import default_cache_dir
from persemo.config import load_config
from persemo.evaluation import compute_metrics, markdown_table, per_class_table, summarise_folds
from persemo.pipeline import labels_of, load_items
from persemo.splits import check_speaker_independent, make_folds
from persemo.training import fold_statistics, predict_items, train_ensemble

from .common import add_run_args, fold_model, machine_info, write_results

ROOT = Path(__file__).resolve().parents[1]


def _quiet() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _refit_smile(models: Path, sp, test, train, val, cfg, labels, log):
    """The fold's saved model (``--save-models`` of an earlier run, checked to be this fold's) with its
    torch members kept and the smile member fitted anew with ``cfg``'s smile settings (added, when the
    saved model has torch members only; ``cfg``'s members must list the same torch members): members are
    trained independently (same data, same seed), so this is the run with only the smile member changed."""
    from persemo.models.ensemble import FullEnsemble
    from persemo.training import fit_smile

    old = fold_model(models, sp.fold, [it.utt.id for it in test], train, val, cfg, labels, log)
    smile_fields = ["members"] + [f.name for f in fields(cfg.model) if f.name.startswith("smile_")]
    mine = old.cfg.replace(model={k: getattr(cfg.model, k) for k in smile_fields})
    torch_members = [n for n in cfg.model.members if n != "smile"]
    if (mine.features.normalisation != cfg.features.normalisation or "smile" not in cfg.model.members
            or torch_members != old.ensemble.member_names):
        raise SystemExit(f"{models}: its models do not match this config (normalisation, torch members "
                         f"{old.ensemble.member_names}), or the config has no smile member")
    old.ensemble.cfg = mine
    smile, norm, sinfo = fit_smile(mine, labels, train, default_cache_dir(), log)
    full = FullEnsemble(old.ensemble, smile, None, norm)
    info = {"members": {n: ({"seconds": float("nan")} if n != "smile" else sinfo) for n in full.member_names},
            "ensemble_weights": full.weights.tolist(), "validation": bool(val)}
    return full, info


def run(corpus: str, data: Path, cfg, folds: int, log=print, save_models: Path | None = None,
        reuse_torch: Path | None = None) -> dict:
    items, _ = load_items(corpus, data, cfg, default_cache_dir(), log)
    labels = labels_of(items)
    index = {l: i for i, l in enumerate(labels)}
    utts = [it.utt for it in items]
    splits = make_folds(utts, folds, "speaker", cfg.split.val_fraction, cfg.split.seed)
    per: dict[str, list[dict]] = {}
    fold_records = []
    times: dict[str, list[float]] = {}
    by_id = {it.utt.id: it for it in items}
    for sp in splits:
        check_speaker_independent(sp, utts)
        train = [by_id[i] for i in sp.train]
        val = [by_id[i] for i in sp.val]
        test = [by_id[i] for i in sp.test]
        log(f"fold {sp.fold + 1}/{folds}: train {len(train)}, val {len(val)}, test {len(test)} "
            f"(test speakers {sorted({it.utt.speaker for it in test})})")
        if reuse_torch is None:
            model, info = train_ensemble(cfg, labels, train, val, None, progress=False, log=log)
        else:
            model, info = _refit_smile(reuse_torch, sp, test, train, val, cfg, labels, log)
        for n, m in info["members"].items():
            times.setdefault(n, []).append(m["seconds"])
        if save_models is not None:  # so that other benchmarks can evaluate the same models
            save_model(save_models / f"fold{sp.fold}", model,
                       extra_meta={"benchmark_fold": {"fold": sp.fold, "folds": folds, "seed": cfg.split.seed,
                                                      "test_ids": [it.utt.id for it in test]}})
        stats = None
        if cfg.features.normalisation == "speaker":
            # each test speaker's own statistics (also of the smile member's functionals), no labels; with
            # features.enrolment, from their test utterances of that emotion (the enrolment protocol)
            stats = fold_statistics(cfg, train, val, test, model, default_cache_dir())
        probs = predict_items(model, test, cfg, stats)
        y = np.array([index[it.utt.emotion] for it in test])
        names = model.member_names
        rows = {n: probs[i] for i, n in enumerate(names)}
        for r in range(2, len(names)):  # every smaller team, equal votes (from the same predictions)
            for combo in itertools.combinations(range(len(names)), r):
                rows[" + ".join(names[i] for i in combo) + " (equal)"] = probs[list(combo)].mean(0)
        if len(names) > 1:
            rows["ensemble (equal)"] = probs[:-1].mean(0)
            if info.get("validation", True):
                rows["ensemble (weighted on val)"] = probs[-1]
        for n, p in rows.items():
            per.setdefault(n, []).append(compute_metrics(y, p, labels))
        fold_records.append({"fold": sp.fold, "test_ids": [it.utt.id for it in test], "y": y.tolist(),
                             "weights": info["ensemble_weights"],
                             "members": {n: info["members"][n] for n in model.member_names},
                             "probs": {n: np.round(p, 5).tolist() for n, p in rows.items()}})
        log("  " + ", ".join(f"{n} UAR {100 * per[n][-1]['uar']:.1f}" for n in rows))
    summary = {n: summarise_folds(rs) for n, rs in per.items()}
    pooled = {}
    for n in per:
        y_all = np.concatenate([np.array(f["y"]) for f in fold_records])
        p_all = np.concatenate([np.array(f["probs"][n]) for f in fold_records])
        pooled[n] = compute_metrics(y_all, p_all, labels)
    return {"labels": labels, "summary": summary, "pooled": pooled, "folds": fold_records,
            "train_seconds": {n: {"per_fold_mean": float(np.mean(t)), "total": float(np.sum(t))}
                              for n, t in times.items()}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-seed", type=int, default=None,
                    help="seed for initialisation and augmentation only (default: --seed); the folds stay "
                         "those of --seed, so runs that differ only here can be combined (benchmarks combine)")
    ap.add_argument("--save-models", type=Path, default=None,
                    help="save each fold's model to DIR/foldK (for benchmarks.adaptation --models)")
    ap.add_argument("--reuse-torch", type=Path, default=None,
                    help="keep the torch members of fold models saved in DIR and fit only the smile member anew")
    a = ap.parse_args(argv)
    _quiet()
    over = {"train": {"seed": a.seed if a.train_seed is None else a.train_seed}, "split": {"seed": a.seed}}
    if a.epochs:
        over["train"]["epochs"] = a.epochs
    cfg = load_config(a.config, **over)
    if not a.data.exists():
        raise SystemExit(f"benchmarks.emodb: data not found: {a.data}")
    t0 = time.perf_counter()
    res = run(a.corpus, a.data, cfg, a.folds, save_models=a.save_models, reuse_torch=a.reuse_torch)
    wall = time.perf_counter() - t0
    name = f"{a.corpus}" + (f"_{a.tag}" if a.tag else "")
    cmd = "python -m benchmarks.emodb" + (f" --config {a.config}" if a.config else "") + \
        (f" --epochs {a.epochs}" if a.epochs else "") + (f" --tag {a.tag}" if a.tag else "") + \
        (f" --train-seed {a.train_seed}" if a.train_seed is not None else "") + \
        (f" --reuse-torch {a.reuse_torch}" if a.reuse_torch else "")
    data = {"benchmark": "speaker-independent k-fold", "corpus": a.corpus, "k_folds": a.folds, "command": cmd,
            "config": cfg.to_dict(), "wall_seconds": wall, "machine": machine_info(), **res}
    md = [f"## {a.corpus}: speaker-independent {a.folds}-fold cross-validation", "",
          f"Command: `{cmd}` ({wall / 60:.1f} min on this machine). Folds grouped by speaker "
          f"(no speaker in both train and test), seed {a.seed}"
          + (f", training seed {a.train_seed}" if a.train_seed is not None else "") + f"; normalisation: {cfg.features.normalisation}"
          + (f" (enrolment: statistics from each speaker's {cfg.features.enrolment} utterances)" if cfg.features.enrolment else "") + ". "
          "Mean ± std over folds (%).", "",
          markdown_table(res["summary"]), "",
          "Per-class recall, pooled over folds (%):", "", per_class_table(res["pooled"], res["labels"]), "",
          "Training time per fold (s): " + ", ".join(f"{n} {v['per_fold_mean']:.0f}"
                                                    for n, v in res["train_seconds"].items())]
    write_results(name, data, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
