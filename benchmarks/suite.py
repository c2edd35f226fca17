"""The EmoDB suite: peers, members and ensembles on the same speaker-independent folds, clean and noisy.

    python -m benchmarks.suite [--corpus emodb --data PATH] [--folds 5] [--config FILE] [--epochs N]
                               [--snrs 20,10,5,0] [--noises white,babble] [--jobs N] [--models DIR] [--tag NAME]

Per fold (``persemo.splits.make_folds(kind="speaker", seed)``, the same folds as every other
benchmark here), on the fold's training speakers:
  (a) openSMILE ComParE_2016 functionals + standardisation + RBF SVM (class-balanced, C and gamma by
      inner cross-validation grouped by speaker), (b) the same with eGeMAPSv02,
  (c) the CNN, (d) the BiLSTM, (e) their soft-voting ensemble, and (f) the ensemble with the openSMILE
      member (``smile``) as a third member, equal and validation-chosen weights.
Every model is then evaluated on the fold's test speakers clean and with white or babble noise (made of
other test utterances) at each SNR; the noisy waveforms are made once and given to every model.
A speaker-normalised model (``features.normalisation: speaker``) is swept in the speaker-adapted protocol:
each test speaker's statistics from all their test windows as heard in that condition (noisy audio gives
noisy statistics; no labels), and the peers speaker-normalised too (``PROTOCOLS``).
Writes results/suite_<corpus>.json and .md, and results/robustness_<corpus>.png (UAR against SNR).
The folds run in separate processes, ``--jobs`` at a time, one thread each (the figures do not depend on it).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from persemo.audio import noisy_versions
from persemo.cache import default_cache_dir
from persemo.config import load_config
from persemo.evaluation import compute_metrics, markdown_table, per_class_table, save_figure, summarise_folds
from persemo.pipeline import labels_of, load_items
from persemo.splits import check_speaker_independent, make_folds
from persemo.smile import normalise_by_group, normalise_by_reference
from persemo.training import (crop_wave, heard_items, predict_items, speaker_statistics, train_ensemble,
                               window_samples)

from .common import RESULTS, add_run_args, fold_model, machine_info, usable_cores, write_results
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


def run_fold(items, labels, sp, whole, cfg, conditions, models: Path | None = None, log=print, threads: int = 2,
             quiet_stats: bool = False):
    """One fold: fit the peers, train (or load) the model, evaluate every model in every condition.

    ``quiet_stats``: a speaker-normalised model's test speakers get their statistics from their clean
    windows in every condition (enrolled in quiet, heard in noise), the peers' from their clean functionals.
    Returns ({condition: {model: metrics}}, {model: training seconds}, protocol: PROTOCOLS' key).
    """
    from persemo.smile import functionals_from_waves

    index = {l: i for i, l in enumerate(labels)}
    utts = [it.utt for it in items]
    by_id = {it.utt.id: it for it in items}
    check_speaker_independent(sp, utts)
    train, val, test = ([by_id[i] for i in sp.train], [by_id[i] for i in sp.val], [by_id[i] for i in sp.test])
    y = np.array([index[it.utt.emotion] for it in test])
    log(f"fold {sp.fold + 1}: test speakers {sorted({it.utt.speaker for it in test})}")
    fit_ids = [it.utt.id for it in train + val]
    y_fit = np.array([index[by_id[i].utt.emotion] for i in fit_ids])
    g_fit = np.array([by_id[i].utt.speaker for i in fit_ids])
    seconds = {}
    if models is None:
        model, info = train_ensemble(cfg, labels, train, val, None, progress=False, log=log)
        seconds.update({m: v["seconds"] for m, v in info["members"].items()})
    else:  # the fold's model saved by benchmarks.emodb --save-models (same folds, checked)
        model = fold_model(models, sp.fold, [it.utt.id for it in test], train, val, cfg, labels, log)
        cfg = model.cfg
    # speaker-normalised models: the speaker-adapted protocol, the peers too (every speaker, train or test, by
    # their own statistics; a test speaker's from all their test audio as heard in each condition; no labels)
    adapted = cfg.features.normalisation == "speaker"
    speakers = [it.utt.speaker for it in test]
    peers = {}
    for name in PEERS:
        t = time.perf_counter()
        X = np.stack([whole[name][i] for i in fit_ids])
        peers[name], _ = peer_svm(normalise_by_group(X, g_fit) if adapted else X, y_fit, g_fit)
        seconds[name] = time.perf_counter() - t
    n = window_samples(cfg)
    clean = [crop_wave(it.wave, n, cfg.features.crop) for it in test]
    memo: dict = {}  # each noisy window's functionals, computed once for the smile member and the peers
    quiet = quiet_peers = None
    if adapted and quiet_stats:
        quiet = speaker_statistics(heard_items(test, clean, cfg.features), model)
        quiet_peers = {name: np.stack([whole[name][it.utt.id] for it in test]) for name in PEERS}
    model.functional_memo = memo
    per: dict[str, dict[str, dict]] = {}
    for cond, snr in conditions:
        if snr is None:
            waves = clean
        else:
            waves = noisy_waves(clean, snr, cond.split()[0], seed=1000 * sp.fold + int(snr))
        noisy_items = [replace(it, wave=w) for it, w in zip(test, waves)]
        stats = None
        if adapted:
            stats = quiet or speaker_statistics(heard_items(test, waves, cfg.features), model)
        probs = predict_items(model, noisy_items, cfg, stats)
        rows = {m: probs[i] for i, m in enumerate(model.member_names)}
        torch_members = [i for i, m in enumerate(model.member_names) if m in ("cnn", "lstm")]
        if len(torch_members) == 2:
            rows["ensemble cnn+lstm (equal)"] = probs[torch_members].mean(0)
        if "cnn" in model.member_names and "smile" in model.member_names:
            rows["ensemble cnn+smile (equal)"] = probs[[model.member_names.index("cnn"),
                                                        model.member_names.index("smile")]].mean(0)
        if len(model.member_names) > 1:
            rows[f"ensemble {'+'.join(model.member_names)} (equal)"] = probs[:-1].mean(0)
            if sp.val:
                rows[f"ensemble {'+'.join(model.member_names)} (weighted on val)"] = probs[-1]
        for name, fs in PEERS.items():
            X = np.stack([whole[name][it.utt.id] for it in test]) if snr is None else \
                functionals_from_waves(waves, fs, threads=threads, memo=memo)
            if adapted:
                X = normalise_by_reference(X, speakers, quiet_peers[name] if quiet_peers else X)
            pred = peers[name].predict(X)
            rows[name] = np.eye(len(labels))[pred]
        per[cond] = {m: compute_metrics(y, p, labels) for m, p in rows.items()}
    log(f"  fold {sp.fold + 1} clean: " + ", ".join(f"{m} {100 * r['uar']:.1f}" for m, r in per[CLEAN].items()))
    protocol = "single utterance" if not adapted else "speaker-adapted, quiet statistics" if quiet else "speaker-adapted"
    return per, seconds, protocol


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
    """A worker process's fold: reads the (already cached) items and functionals."""
    items, labels, splits, whole = _prepare(corpus, data, cfg, folds, log=lambda *a: None)
    return run_fold(items, labels, splits[fold], whole, cfg, conditions, models, threads=1,
                    log=lambda m: print(m, flush=True), quiet_stats=quiet_stats)


def auto_jobs(folds: int, cores: int | None = None) -> int:
    """Folds to run at once: one more than the usable cores (so that an odd fold out does not leave a core
    idle for a whole fold-time), at most ``folds``; 1 on a single core."""
    cores = usable_cores() if cores is None else cores
    return 1 if cores <= 1 else max(1, min(folds, cores + 1))


def run(corpus: str, data: Path, cfg, folds: int, conditions: list[tuple[str, float | None]], log=print,
        models: Path | None = None, jobs: int = 1, quiet_stats: bool = False) -> dict:
    """Every fold (``jobs`` at a time, each in its own process with one thread), then the summary."""
    t0 = time.perf_counter()
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
        done = [run_fold(items, labels, sp, whole, cfg, conditions, models, log, quiet_stats=quiet_stats)
                for sp in splits]
    per: dict[str, dict[str, list[dict]]] = {}
    seconds: dict[str, list[float]] = {}
    protocols = {d[2] for d in done}
    if len(protocols) > 1:
        raise SystemExit(f"the fold models mix protocols: {sorted(protocols)}")
    for fold_per, fold_seconds, _ in done:
        for cond, rows in fold_per.items():
            for m, r in rows.items():
                per.setdefault(cond, {}).setdefault(m, []).append(r)
        for m, v in fold_seconds.items():
            seconds.setdefault(m, []).append(v)
    summary = {c: {m: summarise_folds(rs) for m, rs in d.items()} for c, d in per.items()}
    pooled_clean = {}
    for m, rs in per[CLEAN].items():
        cm = np.sum([np.array(r["confusion"]) for r in rs], axis=0)
        rec = np.diag(cm) / np.clip(cm.sum(1), 1, None)
        pooled_clean[m] = {"per_class": {l: {"recall": float(rec[i])} for i, l in enumerate(labels)}}
    return {"labels": labels, "protocol": protocols.pop(), "summary": summary, "pooled_clean": pooled_clean,
            "train_seconds": {m: {"per_fold_mean": float(np.mean(v)), "total": float(np.sum(v))}
                              for m, v in seconds.items()}}


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
    ap.add_argument("--quiet-stats", action="store_true",
                    help="speaker-normalised models: each test speaker's statistics from their clean audio in "
                         "every condition (enrolled in quiet, heard in noise) instead of the audio heard there")
    a = ap.parse_args(argv)
    _quiet()
    over = {"model": {"members": ["cnn", "lstm", "smile"]}}
    if a.config is None:  # the measured-best configuration (no validation split, three members)
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
    res = run(a.corpus, a.data, cfg, a.folds, conditions, models=a.models, jobs=a.jobs, quiet_stats=a.quiet_stats)
    wall = time.perf_counter() - t0
    name = f"suite_{a.corpus}" + (f"_{a.tag}" if a.tag else "")
    png = f"robustness_{a.corpus}" + (f"_{a.tag}" if a.tag else "") + ".png"
    plot(res["summary"], conditions, RESULTS / png, res["protocol"])
    cmd = "python -m benchmarks suite" + "".join(f" {x}" for x in (argv or []))
    md = [f"## {a.corpus}: peers, members and ensembles, speaker-independent {a.folds}-fold", "",
          f"Command: `{cmd}` ({wall / 60:.1f} min on this machine with {a.jobs} fold worker(s), training, openSMILE "
          "extraction and the noise sweep included). Protocol: " + PROTOCOLS[res["protocol"]] + ". Mean ± std "
          "over folds (%); the peers' SVM gives hard decisions.", "",
          markdown_table(res["summary"][CLEAN], "clean"), "",
          "Per-class recall, pooled over folds (%):", "", per_class_table(res["pooled_clean"], res["labels"]), ""]
    for cond in res["summary"]:
        if cond != CLEAN:
            md += [markdown_table(res["summary"][cond], cond), ""]
    md += [f"![UAR against SNR]({png})", "",
           "Training time per fold (s): " + ", ".join(f"{m} {v['per_fold_mean']:.0f}"
                                                     for m, v in res["train_seconds"].items())]
    write_results(name, {"command": cmd, "k_folds": a.folds, "jobs": a.jobs, "config": cfg.to_dict(),
                         "wall_seconds": wall, "machine": machine_info(), **res}, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
