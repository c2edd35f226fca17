"""The EmoDB suite: peers, members and ensembles on the same speaker-independent folds, clean and noisy.

    python -m benchmarks.suite [--corpus emodb --data PATH] [--folds 5] [--config FILE] [--epochs N]
                               [--members cnn,lstm,smile] [--snrs 20,10,5,0] [--noises white,babble]
                               [--jobs N] [--models DIR] [--tag NAME] [--results DIR]

Per fold of ``persemo.crossval.cross_validate`` (folds from ``persemo.splits.make_folds(kind="speaker",
seed)``, the same folds as every other benchmark here), on the fold's training speakers:
  (a) openSMILE ComParE_2016 functionals + standardisation + RBF SVM (class-balanced, C and gamma by
      inner cross-validation grouped by speaker), (b) the same with eGeMAPSv02,
  (c) the model of ``--members`` (by default the CNN, the BiLSTM and the openSMILE ``smile`` member),
      trained here or loaded from ``--models`` (fold models saved by ``benchmarks.emodb --save-models``):
      each member, every team of two or more with equal votes, and the validation-weighted vote.
Every model is then evaluated on the fold's test speakers clean and with white or babble noise (made of
other test utterances) at each SNR; the noisy waveforms are made once and given to every model.
A speaker-normalised model (``features.normalisation: speaker``) is swept in the speaker-adapted protocol:
each test speaker's statistics from all their test windows as heard in that condition (noisy audio gives
noisy statistics; no labels), and the peers speaker-normalised too (``PROTOCOLS``).
Writes results/suite_<corpus>.json and .md, and results/robustness_<corpus>.png (UAR against SNR); every
figure as the mean ± std over folds with the metric pooled over all out-of-fold predictions beside it.
The folds run in separate processes, ``--jobs`` at a time, one thread each (the figures do not depend on it).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from persemo.audio import noisy_versions
from persemo.cache import default_cache_dir
from persemo.config import load_config
from persemo.crossval import cross_validate
from persemo.evaluation import by_subset, compute_metrics, markdown_table, per_class_table, save_figure, subset_table
from persemo.features import crop_wave, window_samples
from persemo.pipeline import SELECTED_ROW, labels_of, load_items
from persemo.smile import normalise_by_group, normalise_by_reference
from persemo.splits import make_folds
from persemo.statistics import heard_items, speaker_statistics
from persemo.training import predict_items

from .common import (POOLED_NOTE, Rows, add_run_args, command_line, load_fit, machine_info, remembering, saved_config,
                     usable_cores, write_results)
from .emodb import _quiet
from .peers import PEERS, peer_svm

CLEAN = "clean"
PROTOCOLS = {"single utterance": "single utterance (each clip on its own)",
             "speaker-adapted": "speaker-adapted (models and peers speaker-normalised; each test speaker's statistics "
                                "from all their test windows as heard in that condition, noise included, without "
                                "labels: transductive over the speaker's unlabelled audio)",
             "speaker-adapted, quiet statistics": "speaker-adapted, statistics from quiet audio (models and peers "
                                "speaker-normalised; each test speaker's statistics from all their clean test "
                                "windows in every condition, as if enrolled in quiet and heard in noise; no labels)"}


def noisy_waves(waves: list[np.ndarray], snr: float, kind: str, seed: int) -> list[np.ndarray]:
    """The test waves with ``kind`` noise at ``snr`` dB, the same for every model (seeded)."""
    return noisy_versions(waves, snr, kind, np.random.default_rng(seed))


def _prepare(corpus: str, data: Path, cfg, folds: int, log=print):
    """(items, labels, splits, each peer's functionals by utterance id); features cached on the way."""
    from persemo.smile import extract_functionals

    items, _ = load_items(corpus, data, cfg, default_cache_dir(), log)
    utts = [it.utt for it in items]
    splits = make_folds(utts, folds, "speaker", cfg.split.val_fraction, cfg.split.seed)
    whole = {}
    for name, fs in PEERS.items():
        X, _, problems = extract_functionals(utts, fs, default_cache_dir(), threads=2)
        if problems:
            raise SystemExit(f"openSMILE failed on {len(problems)} files, e.g. {problems[0]}")
        whole[name] = dict(zip([u.id for u in utts], X))
    return items, labels_of(items), splits, whole


def model_rows(model, probs: np.ndarray, validation: bool) -> dict[str, np.ndarray]:
    """Each member's row, every team of two or more members' equal vote, and the model's own vote when it was
    chosen on validation (or pairs it with a companion)."""
    kinds = model.kinds
    rows = {m: probs[i] for i, m in enumerate(model.member_names)}
    for r in range(2, len(kinds) + 1):
        for team in itertools.combinations(range(len(kinds)), r):
            rows[f"ensemble {'+'.join(kinds[i] for i in team)} (equal)"] = probs[list(team)].mean(0)
    inner = model.cfg.model.calibration == "inner"  # the vote chosen on the members' inner CV
    if len(kinds) > 1 and (validation or inner) or model.companion is not None:
        how = "weighted on val" if validation else "weighted on inner CV" if inner else "vote"
        rows[f"ensemble {'+'.join(kinds)} ({how})"] = probs[-1]
    return rows


def sweep(fold, labels, whole, conditions, log=print, threads: int = 2, quiet_stats: bool = False) -> dict:
    """One fold of ``cross_validate``: fit the peers on its training speakers, then evaluate the fold's model
    and the peers in every condition on its test speakers.

    ``quiet_stats``: a speaker-normalised model's test speakers get their statistics from their clean
    windows in every condition (enrolled in quiet, heard in noise), the peers' from their clean functionals.
    Returns {"fold", "y", "rows": {condition: {row: (N, C)}}, "seconds": {row: training s}, "protocol"}.
    """
    from persemo.smile import functionals_from_waves

    index = {l: i for i, l in enumerate(labels)}
    model, test, cfg = fold.model, fold.test, fold.model.cfg
    fit_items = fold.train + fold.val
    fit_ids = [it.utt.id for it in fit_items]
    y_fit = np.array([index[it.utt.emotion] for it in fit_items])
    g_fit = np.array([it.utt.speaker for it in fit_items])
    seconds = {m: v["seconds"] for m, v in fold.info.get("members", {}).items() if "seconds" in v}
    if fold.info.get("selection"):
        seconds["selection (every candidate)"] = fold.info["selection"]["seconds"]
    # speaker-normalised models: the speaker-adapted protocol, the peers too (every speaker, train or test, by
    # their own statistics; a test speaker's from all their test audio as heard in each condition; no labels)
    adapted = model.adaptable
    speakers = [it.utt.speaker for it in test]
    peers = {}
    for name in PEERS:
        t = time.perf_counter()
        X = np.stack([whole[name][i] for i in fit_ids])
        peers[name], _ = peer_svm(normalise_by_group(X, g_fit) if adapted else X, y_fit, g_fit)
        seconds[name] = time.perf_counter() - t
    n = window_samples(cfg)
    clean = [crop_wave(it.wave, n, cfg.features.crop) for it in test]
    memo = model.memo if model.memo is not None else {}  # each window's per-clip vectors, computed once for
    model.memo = memo  # the members and the peers
    quiet = quiet_peers = None
    if adapted and quiet_stats:
        quiet = speaker_statistics(heard_items(test, clean, cfg.features), model)
        quiet_peers = {name: np.stack([whole[name][it.utt.id] for it in test]) for name in PEERS}
    out: dict[str, dict[str, np.ndarray]] = {}
    for cond, snr in conditions:
        if snr is None:
            waves = clean
        else:
            waves = noisy_waves(clean, snr, cond.split()[0], seed=1000 * fold.split.fold + int(snr))
        noisy_items = [replace(it, wave=w) for it, w in zip(test, waves)]
        stats = None
        if adapted:
            stats = quiet or speaker_statistics(heard_items(test, waves, cfg.features), model)
        probs = predict_items(model, noisy_items, cfg, stats)
        rows = model_rows(model, probs, bool(fold.val))
        if model.selected is not None:  # the nested selection's answer, whichever candidate won the fold
            rows[SELECTED_ROW] = probs[-1]
        for name, fs in PEERS.items():
            X = np.stack([whole[name][it.utt.id] for it in test]) if snr is None else \
                functionals_from_waves(waves, fs, threads=threads, memo=memo)
            if adapted:
                X = normalise_by_reference(X, speakers, quiet_peers[name] if quiet_peers else X)
            rows[name] = np.eye(len(labels))[peers[name].predict(X)]  # the SVM's own decisions, one-hot
        out[cond] = rows
    model.memo = None
    log(f"  fold {fold.split.fold + 1} clean: " + ", ".join(
        f"{m} {100 * compute_metrics(fold.y, p, labels)['uar']:.1f}" for m, p in out[CLEAN].items()))
    protocol = "single utterance" if not adapted else "speaker-adapted, quiet statistics" if quiet else "speaker-adapted"
    return {"fold": fold.split.fold, "y": fold.y, "rows": out, "seconds": seconds, "protocol": protocol,
            "ids": [it.utt.id for it in test], "meta": [dict(it.utt.meta) for it in test]}


def run_folds(items, labels, splits, whole, cfg, conditions, models: Path | None = None, log=print,
              threads: int = 2, quiet_stats: bool = False) -> list[dict]:
    """``sweep`` each fold of ``cross_validate`` (its model trained, or loaded from ``models``)."""
    memo: dict = {}  # the fold's windows' per-clip vectors: computed once for its model's passes and the peers
    fit = remembering(load_fit(models, log) if models is not None else None, memo, log)
    out = []
    for fold in cross_validate(cfg, items, splits, labels, fit=fit, cache_dir=default_cache_dir(), log=log,
                               both_protocols=False):
        out.append(sweep(fold, labels, whole, conditions, log, threads, quiet_stats))
        memo.clear()
    return out


def _worker_init() -> None:
    """A fold worker: one thread for each numeric library, and (Linux) terminated when the suite's process
    dies, however it dies, rather than training on as an orphan."""
    import ctypes
    import signal

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    _quiet()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: an interrupted suite leaves its workers to finish
        pass


def _fold_job(corpus, data, cfg, folds, fold, conditions, models, quiet_stats):
    """A worker process's fold: reads the (already cached) items and functionals, then ``run_folds`` on one."""
    items, labels, splits, whole = _prepare(corpus, data, cfg, folds, log=lambda *a: None)
    return run_folds(items, labels, [splits[fold]], whole, cfg, conditions, models, threads=1,
                     log=lambda m: print(m, flush=True), quiet_stats=quiet_stats)[0]


def auto_jobs(folds: int, cores: int | None = None) -> int:
    """Folds to run at once: one more than the usable cores (so that an odd fold out does not leave a core
    idle for a whole fold-time), at most ``folds``; 1 on a single core."""
    cores = usable_cores() if cores is None else cores
    return 1 if cores <= 1 else max(1, min(folds, cores + 1))


def run(corpus: str, data: Path, cfg, folds: int, conditions: list[tuple[str, float | None]], log=print,
        models: Path | None = None, jobs: int = 1, quiet_stats: bool = False, by: list[str] = ()) -> dict:
    """Every fold (``jobs`` at a time, each in its own process with one thread), then the summary: per
    condition and row, the mean ± std over folds with the metrics pooled over all folds beside them; and for
    each metadata column in ``by``, per condition and row the pooled metrics per value of it
    (``evaluation.by_subset``)."""
    t0 = time.perf_counter()
    if models is not None:  # the saved models' own config (features, crop, folds' seed)
        cfg = saved_config(models)
    items, labels, splits, whole = _prepare(corpus, data, cfg, folds, log)
    log(f"features and openSMILE functionals ready ({time.perf_counter() - t0:.0f} s)")
    if jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        one = cfg.replace(train={"num_threads": 1})
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_init) as pool:
            done = list(pool.map(_fold_job, *zip(*[(corpus, data, one, folds, sp.fold, conditions, models,
                                                    quiet_stats)
                                                   for sp in splits])))
    else:
        done = run_folds(items, labels, splits, whole, cfg, conditions, models, log, quiet_stats=quiet_stats)
    protocols = {d["protocol"] for d in done}
    if len(protocols) > 1:
        raise SystemExit(f"the fold models mix protocols: {sorted(protocols)}")
    tables = {cond: Rows(labels) for cond, _ in conditions}
    seconds: dict[str, list[float]] = {}
    for d in sorted(done, key=lambda d: d["fold"]):
        for cond, rows in d["rows"].items():
            for m, p in rows.items():
                tables[cond].add(m, d["y"], p)
        for m, v in d["seconds"].items():
            seconds.setdefault(m, []).append(v)
    summary = {c: t.summary() for c, t in tables.items()}
    done = sorted(done, key=lambda d: d["fold"])
    subsets = {col: subset_rows(done, col, labels) for col in by}
    return {"labels": labels, "protocol": protocols.pop(), "summary": summary, "by": subsets,
            "test_ids": [d["ids"] for d in done],
            "pooled_clean": {m: s["pooled"] for m, s in summary[CLEAN].items()},
            "train_seconds": {m: {"per_fold_mean": float(np.mean(v)), "total": float(np.sum(v))}
                              for m, v in seconds.items()}}


def subset_rows(done: list[dict], column: str, labels: list[str]) -> dict[str, dict[str, dict]]:
    """{condition: {row: {"all": pooled metrics, value: pooled metrics of the clips with that value of the
    metadata ``column``}}} over the folds ``done`` (a clip without the column counts as "(none)")."""
    y = np.concatenate([d["y"] for d in done])
    values = [m.get(column) for d in done for m in d["meta"]]
    if all(v in (None, "") for v in values):
        raise SystemExit(f"--by {column}: no test clip has that metadata column")
    out: dict[str, dict[str, dict]] = {}
    for cond in done[0]["rows"]:
        out[cond] = {}
        for row in done[0]["rows"][cond]:
            p = np.concatenate([d["rows"][cond][row] for d in done])
            out[cond][row] = {"all": compute_metrics(y, p, labels), **by_subset(y, p, values, labels)}
    return out


def plot(summary: dict, conditions, path: Path, protocol: str = "single utterance") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({c.split()[0] for c, s in conditions if s is not None})
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4), squeeze=False)
    models = list(summary[CLEAN])
    for ax, kind in zip(axes[0], kinds):
        snrs = sorted({s for c, s in conditions if s is not None and c.startswith(kind)}, reverse=True)
        xs = ["clean"] + [f"{s:g}" for s in snrs]
        for m in models:
            ys = [summary[CLEAN][m]["uar"]["mean"]] + [summary[f"{kind} {s:g} dB"][m]["uar"]["mean"] for s in snrs]
            ax.plot(xs, [100 * v for v in ys], marker="o", label=m)
        ax.set_title(f"{kind} noise, {protocol}")
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel("UAR (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument("--snrs", default="20,10,5,0")
    ap.add_argument("--noises", default="white,babble")
    ap.add_argument("--jobs", type=int, default=0,
                    help="folds run at once, each in its own process with one thread; 0 (default): one more "
                         "than the usable cores, at most the folds (3 on 2 cores: 5 folds take 2.5 fold-times "
                         "instead of 3), 1 on a single core")
    ap.add_argument("--models", type=Path, default=None,
                    help="evaluate the fold models saved by benchmarks.emodb --save-models instead of training")
    ap.add_argument("--members", default="cnn,lstm,smile",
                    help="comma-separated member kinds of the model trained here, in vote order (default: "
                         "%(default)s; empty: the config's own); with --models, the saved models' members")
    ap.add_argument("--quiet-stats", action="store_true",
                    help="speaker-normalised models: each test speaker's statistics from their clean audio in "
                         "every condition (enrolled in quiet, heard in noise) instead of the audio heard there")
    ap.add_argument("--by", default="",
                    help="comma-separated metadata columns (e.g. shared_text for ASED): pooled UAR and macro-F1 per "
                         "value of each, for every row and condition")
    a = ap.parse_args(argv)
    _quiet()
    by = [c.strip() for c in a.by.split(",") if c.strip()]
    members = [m.strip() for m in a.members.split(",") if m.strip()]
    # --members names the model trained here: no nested selection
    over = {"model": {"members": members}, "selection": {"candidates": []}} if members else {}
    if a.config is None:  # the measured-best configuration (no validation split), with --members
        a.config = Path(__file__).resolve().parents[1] / "configs" / "recommended.yaml"
    if a.epochs:
        over["train"] = {"epochs": a.epochs}
    cfg = load_config(a.config, **over)
    snrs = [float(s) for s in a.snrs.split(",") if s.strip()]
    conditions = [(CLEAN, None)] + [(f"{k} {s:g} dB", s) for k in a.noises.split(",") if k for s in snrs]
    t0 = time.perf_counter()
    if a.jobs < 0:
        raise SystemExit("--jobs must be 0 (automatic) or more")
    a.jobs = a.jobs or auto_jobs(a.folds)
    res = run(a.corpus, a.data, cfg, a.folds, conditions, models=a.models, jobs=a.jobs, quiet_stats=a.quiet_stats,
              by=by)
    wall = time.perf_counter() - t0
    name = f"suite_{a.corpus}" + (f"_{a.tag}" if a.tag else "")
    png = f"robustness_{a.corpus}" + (f"_{a.tag}" if a.tag else "") + ".png"
    plot(res["summary"], conditions, a.results / png, res["protocol"])
    cmd = command_line("python -m benchmarks suite", sys.argv[1:] if argv is None else argv)
    md = [f"## {a.corpus}: peers, members and ensembles, speaker-independent {a.folds}-fold", "",
          f"Command: `{cmd}` ({wall / 60:.1f} min on this machine with {a.jobs} fold worker(s), training, openSMILE "
          "extraction and the noise sweep included). Protocol: " + PROTOCOLS[res["protocol"]] + ". " + POOLED_NOTE
          + " The peers' SVM gives hard decisions.", "",
          markdown_table(res["summary"][CLEAN], "clean"), "",
          "Per-class recall, pooled over folds (%):", "", per_class_table(res["pooled_clean"], res["labels"]), ""]
    for col, per_cond in res["by"].items():
        md += [f"By `{col}` (pooled over folds, clean):", "", subset_table(per_cond[CLEAN], col), ""]
    for cond in res["summary"]:
        if cond != CLEAN:
            md += [markdown_table(res["summary"][cond], cond), ""]
            for col, per_cond in res["by"].items():
                md += [f"By `{col}` ({cond}):", "", subset_table(per_cond[cond], col), ""]
    md += [f"![UAR against SNR]({png})", "",
           "Training time per fold (s): " + ", ".join(f"{m} {v['per_fold_mean']:.0f}"
                                                     for m, v in res["train_seconds"].items())]
    write_results(name, {"command": cmd, "k_folds": a.folds, "jobs": a.jobs, "config": cfg.to_dict(),
                         "wall_seconds": wall, "machine": machine_info(), **res}, "\n".join(md) + "\n", a.results)
    print("\n".join(md))


if __name__ == "__main__":
    main()
