"""What the nested selection costs against the fixed configuration it picks, measured side by side in one run.

    python -m benchmarks selection-cost [--config benchmarks/configs/selected.yaml] [--folds 5] [--tag T]

For each speaker fold of EmoDB (the same folds as every benchmark), the fold's training speakers are
trained on twice, in one process, one after the other:

- **selection**: ``persemo.pipeline.fit_model`` with the config's ``selection.candidates`` (what ``persemo
  train`` does by default: every candidate member fitted once, scored on inner CV, the winner kept; in speaker
  mode the single-utterance companion is selected too);
- **fixed**: ``fit_model`` with that fold's winner as a fixed configuration (what a user who knew the answer
  would have trained: the same members and settings, its own noisy copies, its companion in speaker mode).

The order alternates from fold to fold (selection first in even folds), so that a busy machine slows both
alike. The corpus's clean features are computed once before timing (the disk cache both runs read); the
noisy copies are computed inside each run, as a real run does: babble copies in every run, white copies once
per clip (seeded by the clip, cached on disk: the first run that trains on a clip pays for its copy). The table gives per-fold seconds and ratios,
their median and the ratio of the totals. Writes results/selection_cost_emodb[_TAG].json and .md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .common import EMODB, RESULTS, command_line, machine_info, write_results

ROOT = Path(__file__).resolve().parents[1]


def warm_cache(cfg, items, labels, cache_dir, log=print) -> float:
    """Every candidate member's clean features of every item into the disk cache; returns the seconds."""
    from persemo.members import get

    t0 = time.perf_counter()
    seen = set()
    for name, cand in cfg.candidates():
        if isinstance(cand, Exception):
            continue
        for kind in cand.model.members:
            member = get(kind)(cand, labels)
            key = (kind, getattr(member, "stats_signature", None))
            if key in seen or not hasattr(member, "item_vectors"):
                continue
            seen.add(key)
            member.item_vectors(items, cache_dir)
    log(f"clean features of {len(items)} clips cached in {time.perf_counter() - t0:.0f} s")
    return time.perf_counter() - t0


def run(cfg, folds: int, data: Path, log=print, cache_dir: Path | None = None, on_fold=None) -> dict:
    """Both runs on every fold (module docstring); ``on_fold(partial result)`` after each fold."""
    from persemo.cache import default_cache_dir
    from persemo.pipeline import fit_model, labels_of, load_items
    from persemo.splits import make_folds

    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    items, _ = load_items("emodb", data, cfg, cache_dir, log)
    labels = labels_of(items)
    warm = warm_cache(cfg, items, labels, cache_dir, log)
    candidates = dict(cfg.candidates())
    by_id = {it.utt.id: it for it in items}
    rows = []
    quiet = lambda m: None  # noqa: E731
    for split in make_folds([it.utt for it in items], folds, "speaker", cfg.split.val_fraction, cfg.split.seed):
        train = [by_id[i] for i in split.train]
        val = [by_id[i] for i in split.val]

        def selection():
            t = time.perf_counter()
            _, info = fit_model(cfg, labels, train, val, None, False, quiet, cache_dir)
            winners = [info["selection"]["winner"]]
            if "companion" in info:
                winners.append(info["companion"]["selection"]["winner"])
            return time.perf_counter() - t, winners

        def fixed(winner: str) -> float:
            t = time.perf_counter()
            fit_model(candidates[winner], labels, train, val, None, False, quiet, cache_dir)
            return time.perf_counter() - t

        order = "selection first" if split.fold % 2 == 0 else "fixed first"
        if split.fold % 2 == 0:
            t_sel, winners = selection()
            t_fix = fixed(winners[0])
        else:  # fixed first: the winner is not known yet, so the fixed run takes the previous fold's winner
            guess = rows[-1]["winners"][0] if rows else next(n for n, c in candidates.items()
                                                             if not isinstance(c, Exception))
            t_fix = fixed(guess)
            t_sel, winners = selection()
            if winners[0] != guess:  # a wrong guess: the winner's own fixed run, after the selection
                t_fix, order = fixed(winners[0]), "selection first (the guess was another candidate)"
        rows.append({"fold": split.fold, "order": order, "winners": winners, "selection_s": t_sel,
                     "fixed_s": t_fix, "ratio": t_sel / t_fix})
        log(f"fold {split.fold}: selection {t_sel:.0f} s ({' / '.join(winners)}), fixed {t_fix:.0f} s, "
            f"ratio {t_sel / t_fix:.2f} ({order})")
        if on_fold is not None:
            on_fold(summary(rows, labels, cfg, warm, candidates, complete=False))
    return summary(rows, labels, cfg, warm, candidates, complete=True)


def summary(rows: list[dict], labels, cfg, warm: float, candidates: dict, complete: bool) -> dict:
    sel, fix = np.array([r["selection_s"] for r in rows]), np.array([r["fixed_s"] for r in rows])
    return {"labels": labels, "protocol": cfg.features.normalisation, "warm_seconds": warm, "folds": rows,
            "median_ratio": float(np.median(sel / fix)), "total_ratio": float(sel.sum() / fix.sum()),
            "candidates": list(candidates), "complete": complete}


def render(res: dict, cmd: str, wall: float) -> str:
    proto = "speaker-adapted (with the companion)" if res["protocol"] == "speaker" else "single utterance"
    md = ["## The nested selection's cost against the fixed configuration it picks (EmoDB, speakers held out)", "",
          f"Command: `{cmd}` ({wall / 60:.1f} min on this machine, one process). Protocol: {proto}. "
          f"Candidates: {', '.join(res['candidates'])}. Both runs per fold in one process, the order alternating; "
          f"clean features cached before timing ({res['warm_seconds']:.0f} s), noisy copies computed in each run.",
          *([] if res.get("complete", True) else ["", f"**Partial: {len(res['folds'])} folds so far.**"]),
          "", "| fold | winner | selection (s) | fixed winner (s) | ratio | order |", "|---|---|---|---|---|---|"]
    for r in res["folds"]:
        md.append(f"| {r['fold']} | {' / '.join(r['winners'])} | {r['selection_s']:.0f} | {r['fixed_s']:.0f} | "
                  f"{r['ratio']:.2f} | {r['order']} |")
    md += ["", f"Median of the per-fold ratios **{res['median_ratio']:.2f}x**; ratio of the totals "
           f"{res['total_ratio']:.2f}x (issue 22's target: at most 2x)."]
    return "\n".join(md) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks selection-cost", description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "benchmarks" / "configs" / "selected.yaml")
    ap.add_argument("--data", type=Path, default=EMODB)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--tag", default="")
    ap.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    import torch

    from persemo.config import load_config

    from .emodb import _quiet
    _quiet()
    torch.set_num_threads(1)
    cfg = load_config(a.config, train={"num_threads": 1})
    if not cfg.selection.candidates:
        raise SystemExit(f"{a.config}: no selection.candidates to measure")
    t0 = time.perf_counter()
    cmd = command_line("python -m benchmarks selection-cost", [] if argv is None else argv)
    name = "selection_cost_emodb" + (f"_{a.tag}" if a.tag else "")

    def save(res: dict) -> None:  # after every fold, so that a cut-off run keeps what it measured
        wall = time.perf_counter() - t0
        write_results(name, {"command": cmd, "wall_seconds": wall, "machine": machine_info(), **res},
                      render(res, cmd, wall), a.results)

    res = run(cfg, a.folds, a.data, on_fold=save)
    save(res)
    print(render(res, cmd, time.perf_counter() - t0))
