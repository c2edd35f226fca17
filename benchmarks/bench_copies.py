"""What seeding a white-noise copy by the clip saves in a k-fold run: copy vectors per outer fold, before/after.

    python -m benchmarks.bench_copies [--member smile|whisper] [--folds 5] [--data PATH]

For each speaker fold of EmoDB (``make_folds(utts, K, "speaker", 0.0, 0)``), one white-noise copy of every
training clip is turned into the member's vectors two ways, timed:

- **before**: as persemo did before, the noise and SNR drawn from the fold's own generator
  (``train.seed + 7``), so every fold makes new copies and computes all their vectors;
- **after**: ``VectorMember.white_copy_vectors``: noise and SNR seeded by the clip, vectors cached on disk
  (a fresh temporary cache for this run), so each clip's copy is computed once, by the first fold that trains
  on it.

The clean vectors are not timed (both routes read them from the usual cache). Writes
results/copy_cache_emodb_<member>.json and .md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import EMODB, RESULTS, machine_info, write_results


def run(member_kind: str, data: Path, folds: int, log=print) -> dict:
    from persemo.cache import default_cache_dir
    from persemo.config import load_config
    from persemo.members import get
    from persemo.members.base import FitJob
    from persemo.pipeline import labels_of, load_items
    from persemo.splits import make_folds
    from persemo.statistics import Perturbation

    model = {"members": [member_kind], member_kind: {"noise_copies": 1, "noise_kinds": ["white"]}}
    if member_kind == "smile":
        model["smile"]["feature_set"] = "eGeMAPSv02"
    cfg = load_config(None, model=model, split={"val_fraction": 0}, train={"num_threads": 1})
    items, _ = load_items("emodb", data, cfg, default_cache_dir(), log=lambda m: None)
    labels = labels_of(items)
    utts = [it.utt for it in items]
    pos = {u.id: i for i, u in enumerate(utts)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sp in make_folds(utts, folds, "speaker", 0.0, 0):
            train = [items[pos[i]] for i in sp.train]
            member = get(member_kind)(cfg, labels)
            if member_kind == "whisper":
                member.view = (3,)  # any fixed view: the copies' cost is the encoder's
            rng = np.random.default_rng(cfg.train.seed + 7)
            lo, hi = cfg.train.noise_snr_db
            t0 = time.perf_counter()
            waves = [Perturbation(snr_db=float(rng.uniform(lo, hi))).apply(it.wave, rng) for it in train]
            member.remembered_vectors(waves, None)
            before = time.perf_counter() - t0
            t0 = time.perf_counter()
            member.white_copy_vectors(train, 0, FitJob(cfg, labels, train, cache_dir=Path(tmp), log=lambda m: None))
            after = time.perf_counter() - t0
            rows.append({"fold": sp.fold, "train_clips": len(train), "before_s": before, "after_s": after})
            log(f"fold {sp.fold}: {len(train)} clips, copy vectors {before:.1f} s before, {after:.1f} s after")
    return {"member": member_kind, "folds": rows, "before_s": sum(r["before_s"] for r in rows),
            "after_s": sum(r["after_s"] for r in rows), "clips": len(items)}


def render(res: dict, cmd: str) -> str:
    md = [f"## White-noise copies seeded by the clip: {res['member']} on EmoDB", "",
          f"Command: `{cmd}`. One white copy per training clip, {len(res['folds'])} speaker folds "
          f"({res['clips']} clips). Before: each fold draws new copies and computes their vectors. After: a clip's "
          "copy is seeded by its samples and its vectors cached on disk, so only clips no earlier fold trained on "
          "are computed.", "", "| fold | training clips | before (s) | after (s) |", "|---|---|---|---|"]
    md += [f"| {r['fold']} | {r['train_clips']} | {r['before_s']:.1f} | {r['after_s']:.1f} |" for r in res["folds"]]
    md += [f"| total | | {res['before_s']:.1f} | {res['after_s']:.1f} |", "",
           f"After / before: {res['after_s'] / max(res['before_s'], 1e-9):.2f}.", ""]
    return "\n".join(md) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_copies", description=__doc__.splitlines()[0])
    ap.add_argument("--member", choices=("smile", "whisper"), default="smile")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--data", type=Path, default=EMODB)
    ap.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    if not a.data.exists():
        raise SystemExit(f"benchmarks.bench_copies: data not found: {a.data}")
    import torch

    torch.set_num_threads(1)
    cmd = f"python -m benchmarks.bench_copies --member {a.member}" + (f" --folds {a.folds}" if a.folds != 5 else "")
    res = {**run(a.member, a.data, a.folds), "command": cmd, "machine": machine_info()}
    md = render(res, cmd)
    write_results(f"copy_cache_emodb_{a.member}", res, md, a.results)
    print(md)


if __name__ == "__main__":
    main()
