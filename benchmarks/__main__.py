"""One entry point for the benchmark suite: ``python -m benchmarks NAME [ARGS...]`` (``make bench``).

NAME is one of the scripts below, or ``all`` for the EmoDB suite in order. Each writes JSON and
Markdown into benchmarks/results/, stamped with the date, machine, package versions and commit.
"""

from __future__ import annotations

import importlib
import sys

SCRIPTS = {
    "prepare": "bench_prepare",      # feature preparation: project pipeline vs per-file librosa, cache
    "suite": "suite",                # accuracy (peers, members, ensembles), both protocols, noise sweep
    "adaptation": "adaptation",      # speaker adaptation: all / enrolment / trap / curve
    "peers": "peers",                # openSMILE ComParE and eGeMAPS + SVM alone
    "confound": "confound",          # speakers heard in k emotions only: smile member vs plain peers
    "emodb": "emodb",                # the ensemble alone, k-fold
    "combine": "combine",            # ensemble with / without the openSMILE member, from saved predictions
    "rtf": "bench_rtf",              # inference real-time factor, torch vs onnxruntime
    "onnx-whisper": "bench_onnx_whisper",  # the whisper member: onnxruntime vs torch, one thread
    "timeline": "bench_timeline",    # a 10-minute recording: voiced segments scored once vs windows
    "memory": "bench_memory",        # peak resident memory of train and predict
    "members": "bench_members",      # each member's speed on one clip, and predict's cold start
    "fit": "bench_fit",              # training-side speed-ups, side by side with what they replaced
    "copies": "bench_copies",        # white noisy copies seeded by the clip: computed once over k folds
    "selection-cost": "selection_cost",  # the nested selection against the fixed winner, side by side
    "cross-corpus": "cross_corpus",  # EmoDB <-> ASED on the shared emotions; joint training beside each alone
    "batch": "bench_batch",          # scoring an archive: local pool vs Ray vs Dask, resume after kill -9
    "service": "bench_service",      # HTTP load test on loopback
    "readme": "readme",              # README's results table from the files in results/
}
ALL = ("prepare", "suite", "adaptation", "rtf", "memory", "service")


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in (*SCRIPTS, "all"):
        print(__doc__)
        print("scripts: " + ", ".join(SCRIPTS) + ", all")
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    names = ALL if argv[0] == "all" else (argv[0],)
    for name in names:
        print(f"== benchmarks.{SCRIPTS[name]}", flush=True)
        mod = importlib.import_module(f"benchmarks.{SCRIPTS[name]}")
        mod.main(argv[1:] if len(names) == 1 else [])


if __name__ == "__main__":
    main(sys.argv[1:])
