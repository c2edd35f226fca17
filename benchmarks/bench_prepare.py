"""Feature preparation speed on all of EmoDB: the project's pipeline against plain per-file librosa.

    python -m benchmarks.bench_prepare [--reps 3] [--data ../shared/data/emodb/wav]

Both pipelines turn every EmoDB file into a 16 kHz waveform, a 64-band log-mel spectrogram and 40
MFCCs with the same parameters (n_fft 1024, hop 512, 0-8 kHz, constant padding; MFCC over 128 mel
bands, top_db 80):

- project: ``persemo.prepare.prepare`` with a fresh, empty cache folder (decode, soxr HQ resampling,
  batched torch features, cache writes), then once more on the filled cache;
- librosa: for each file ``librosa.load(sr=16000)`` (soxr HQ as well), ``melspectrogram`` +
  ``power_to_db`` and ``mfcc``.

Repetitions alternate between the two so that a change in the machine's load hits both; medians
are reported, with the CPU seconds each used (on a shared machine wall time depends on the other
tenants, CPU time much less). librosa's numba and scipy imports are warmed up before timing, and so
are the project's. Writes benchmarks/results/prepare.json and prepare.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import EMODB, machine_info, write_results

SR, N_FFT, HOP, N_MELS, N_MFCC, MFCC_N_MELS, FMIN, FMAX = 16000, 1024, 512, 64, 40, 128, 0.0, 8000.0
TARGETS = {"speedup_min": 2.0, "cold_max_s": 5.0, "cached_max_s": 1.0}


def librosa_features(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plain pipeline: (wave (S,), log-mel (64, T), MFCC (40, T)) for one file."""
    import librosa

    y, _ = librosa.load(path, sr=SR)
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, fmin=FMIN,
                                         fmax=FMAX, pad_mode="constant")
    logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    mfcc = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=N_MFCC, n_fft=N_FFT, hop_length=HOP, n_mels=MFCC_N_MELS,
                                fmin=FMIN, fmax=FMAX, pad_mode="constant")
    return y, logmel, mfcc


class _Clock:
    """Wall and CPU (all threads, user + system) seconds of a block."""

    def __enter__(self):
        self._t, self._c = time.perf_counter(), os.times()
        return self

    def __exit__(self, *exc):
        c = os.times()
        self.wall = time.perf_counter() - self._t
        self.cpu = (c.user - self._c.user) + (c.system - self._c.system)


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def run(data: Path = EMODB, reps: int = 3, log=print) -> dict:
    """Time both pipelines ``reps`` times each on every WAV in ``data``; return the results dict."""
    t0 = time.perf_counter()
    import librosa  # noqa: F401 - timed as part of the set-up, not of the pipelines
    import torch

    from persemo.config import FeatureConfig
    from persemo.corpora import scan_corpus
    from persemo.prepare import prepare

    import_s = time.perf_counter() - t0
    scan = scan_corpus("emodb", data, durations=True)
    if scan.problems:
        raise SystemExit(f"bench_prepare: {len(scan.problems)} problem(s) in {data}: {scan.problems[0]}")
    utts = scan.utterances
    audio_s = float(sum(u.duration for u in utts))
    cfg = FeatureConfig()
    log(f"{len(utts)} files, {audio_s / 60:.1f} min of audio; torch threads {torch.get_num_threads()}")

    # warm-up: numba JIT and lazy imports in librosa, torch's first-call set-up in the project
    librosa_features(utts[0].path)
    prepare(utts[:4], cfg, cache_dir=None)

    times: dict[str, list[float]] = {"project_cold": [], "project_cached": [], "project_nocache": [],
                                     "librosa": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    cache_hits: list[int] = []
    project_out = librosa_out = cached_out = None
    for r in range(reps):
        cache_dir = Path(tempfile.mkdtemp(prefix="persemo-bench-cache-"))
        try:
            with _Clock() as c:
                cold = prepare(utts, cfg, cache_dir=cache_dir)
            times["project_cold"].append(c.wall)
            cpu["project_cold"].append(c.cpu)
            with _Clock() as c:
                cached = prepare(utts, cfg, cache_dir=cache_dir)
            times["project_cached"].append(c.wall)
            cpu["project_cached"].append(c.cpu)
            cache_hits.append(cached.cache_hits)
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
        with _Clock() as c:
            nocache = prepare(utts, cfg, cache_dir=None)
        times["project_nocache"].append(c.wall)
        cpu["project_nocache"].append(c.cpu)
        with _Clock() as c:
            lib = [librosa_features(u.path) for u in utts]
        times["librosa"].append(c.wall)
        cpu["librosa"].append(c.cpu)
        log(f"rep {r + 1}/{reps}: project {times['project_cold'][-1]:.2f} s (cached "
            f"{times['project_cached'][-1]:.2f} s, no cache {times['project_nocache'][-1]:.2f} s), "
            f"librosa {times['librosa'][-1]:.2f} s; load average {os.getloadavg()[0]:.1f}")
        project_out, librosa_out, cached_out = cold, lib, cached
        del nocache

    # equal output: the project's items against librosa's, file by file
    assert project_out is not None and librosa_out is not None and cached_out is not None
    if len(project_out.items) != len(utts) or project_out.problems:
        raise SystemExit(f"bench_prepare: project prepared {len(project_out.items)} of {len(utts)} files")
    diff = {"wave": 0.0, "logmel_db": 0.0, "mfcc": 0.0}
    cached_equal = True
    for it, (y, lm, mf), hit in zip(project_out.items, librosa_out, cached_out.items):
        if it.wave.shape != y.shape or it.logmel.shape != lm.shape or it.mfcc.shape != mf.shape:
            raise SystemExit(f"bench_prepare: shapes differ for {it.utt.id}")
        diff["wave"] = max(diff["wave"], float(np.abs(it.wave - y).max()))
        diff["logmel_db"] = max(diff["logmel_db"], float(np.abs(it.logmel - lm).max()))
        diff["mfcc"] = max(diff["mfcc"], float(np.abs(it.mfcc - mf).max()))
        cached_equal &= bool(np.array_equal(it.logmel, hit.logmel) and np.array_equal(it.mfcc, hit.mfcc)
                             and np.array_equal(it.wave, hit.wave))

    med = {k: _median(v) for k, v in times.items()}
    med_cpu = {k: _median(v) for k, v in cpu.items()}
    speedup = med["librosa"] / med["project_cold"]
    result = {
        "benchmark": "prepare",
        "corpus": {"name": "emodb", "path": str(data), "files": len(utts), "audio_s": round(audio_s, 2)},
        "method": {
            "repetitions": reps,
            "statistic": "median",
            "project": "persemo.prepare.prepare(utterances, FeatureConfig(), cache_dir=<fresh temp folder>), "
                       "threads=2; then again on the filled cache",
            "librosa": "per file: librosa.load(sr=16000) + melspectrogram(n_mels=64) + power_to_db(ref=1, "
                       "amin=1e-10, top_db=None) + mfcc(n_mfcc=40, n_mels=128); n_fft 1024, hop 512, "
                       "0-8 kHz, pad_mode constant",
            "warm_up": "one librosa file and a 4-file prepare() before timing",
            "import_s": round(import_s, 2),
        },
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "cpu_seconds": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "median_cpu_s": {k: round(v, 3) for k, v in med_cpu.items()},
        "speedup_vs_librosa": round(speedup, 2),
        "cpu_ratio_librosa_over_project": round(med_cpu["librosa"] / max(1e-9, med_cpu["project_cold"]), 2),
        "real_time_factor": {k: round(v / audio_s, 5) for k, v in med.items()},
        "times_real_time": {k: round(audio_s / v, 1) for k, v in med.items()},
        "max_abs_diff_vs_librosa": {k: float(f"{v:.3g}") for k, v in diff.items()},
        "cached_run": {"cache_hits": cache_hits, "identical_to_cold_run": cached_equal},
        "targets": {
            **TARGETS,
            "speedup_met": speedup >= TARGETS["speedup_min"],
            "cold_met": med["project_cold"] < TARGETS["cold_max_s"],
            "cached_met": med["project_cached"] < TARGETS["cached_max_s"],
        },
        "machine": machine_info(),
    }
    return result


def markdown(res: dict) -> str:
    m, c, rtf, xrt = res["median_s"], res["median_cpu_s"], res["real_time_factor"], res["times_real_time"]
    t, d, corpus = res["targets"], res["max_abs_diff_vs_librosa"], res["corpus"]
    ok = {True: "met", False: "**missed**"}
    rows = [
        ("project, fresh cache", "project_cold"),
        ("project, cached (2nd run)", "project_cached"),
        ("project, cache off", "project_nocache"),
        ("librosa per file", "librosa"),
    ]
    lines = [
        "## Feature preparation: all of EmoDB, project pipeline vs plain librosa",
        "",
        f"{corpus['files']} files, {corpus['audio_s'] / 60:.1f} min of audio -> 16 kHz waveform, 64-band log-mel "
        "and 40 MFCCs (n_fft 1024, hop 512, 0-8 kHz). "
        f"Median of {res['method']['repetitions']} repetitions, the two pipelines alternating.",
        "",
        "| pipeline | wall s (median) | CPU s (median) | real-time factor | x real time |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, k in rows:
        lines.append(f"| {label} | {m[k]:.2f} | {c[k]:.2f} | {rtf[k]:.4f} | {xrt[k]:.0f} |")
    lines += [
        "",
        f"- Speed-up over librosa: **{res['speedup_vs_librosa']:.1f}x** wall time "
        f"({res['cpu_ratio_librosa_over_project']:.1f}x less CPU time).",
        f"- Equal output: max abs difference wave {d['wave']:.3g}, log-mel {d['logmel_db']:.3g} dB, "
        f"MFCC {d['mfcc']:.3g}; the cached run returned identical arrays: "
        f"{res['cached_run']['identical_to_cold_run']} (cache hits {res['cached_run']['cache_hits']}).",
        f"- Targets: >= {t['speedup_min']:.0f}x faster than librosa: {ok[t['speedup_met']]}; "
        f"all of EmoDB in < {t['cold_max_s']:.0f} s: {ok[t['cold_met']]}; "
        f"cached run < {t['cached_max_s']:.0f} s: {ok[t['cached_met']]}.",
        f"- All runs (s): project {res['seconds']['project_cold']}, cached {res['seconds']['project_cached']}, "
        f"librosa {res['seconds']['librosa']}.",
        "- The machine is shared with other workers: wall times depend on their load (see the load average "
        "below); CPU seconds are the steadier measure of the work done.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_prepare", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=EMODB, help="EmoDB wav folder (default ../shared/...)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each pipeline (median reported)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave results/ untouched")
    a = ap.parse_args(argv)
    if not a.data.is_dir():
        print(f"bench_prepare: EmoDB not found at {a.data} (it lives in ../shared); nothing run", file=sys.stderr)
        return 2
    res = run(a.data, max(1, a.reps))
    md = markdown(res)
    print(md)
    if not a.no_write:
        paths = write_results("prepare", res, md)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
