"""Soft votes of members trained in different runs, from their saved test probabilities on the same folds.

    python -m benchmarks combine [--member NAME=FILE:KEY ...] [--tag NAME]

A NAME given more than once is one member whose probabilities are the mean of its sources' (a bag of
separately trained runs, e.g. several CNNs).

FILE is a result in results/ (name without .json): an ``emodb_*`` file (KEY: a row of its folds'
"probs", e.g. ``cnn``) or ``peers_emodb`` (KEY: ``protocol/model``, e.g. ``standard/ComParE_2016 +
SmileMember (logreg)``). Every file must hold the same speaker-independent folds
(``make_folds(kind="speaker", seed=0)``; checked here by the test ids). Every team of the members is
soft-voted with equal weights (``--calibrate``: also with cross-fitted member temperatures);
results/combine_emodb[_TAG].json and .md. No model is trained. Members
train independently (each reseeded before its training), so this is the ensemble of those members; a
joint run would draw a member's initial weights at another position of the seeded generator (the same
distribution, not the same numbers).

Without ``--member``: the CNN and BiLSTM of ``emodb_described`` and the peers' SmileMember (the
session-1 measurement in combine_emodb.md).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from persemo.calibration import fit_vote
from persemo.ensemble import soften
from persemo.evaluation import markdown_table

from .common import POOLED_NOTE, RESULTS, Rows, machine_info, read_results, write_results

SMILE = "ComParE_2016 + SmileMember (logreg)"
DEFAULT = [("cnn", "emodb_described", "cnn"), ("lstm", "emodb_described", "lstm"),
           ("smile", "peers_emodb", f"standard/{SMILE}")]


def parse_member(spec: str) -> tuple[str, str, str]:
    """'NAME=FILE:KEY' -> (NAME, FILE, KEY)."""
    name, sep, rest = spec.partition("=")
    file, sep2, key = rest.partition(":")
    if not (sep and sep2 and name and file and key):
        raise SystemExit(f"--member {spec!r}: expected NAME=FILE:KEY, e.g. cnn=emodb_time:cnn")
    return name, file, key


def fold_probs(data: dict, key: str) -> dict[int, dict[str, np.ndarray]]:
    """fold -> {utterance id: probabilities} of one model in a results file."""
    if "/" in key and "predictions" in data:  # peers file
        protocol, model = key.split("/", 1)
        folds = data["predictions"][protocol][model]["folds"]
        return {f["fold"]: {i: np.array(p) for i, p in f["probs"].items()} for f in folds}
    out = {}
    for f in data["folds"]:
        if key not in f["probs"]:
            raise SystemExit(f"no row {key!r} in the file's folds (rows: {', '.join(f['probs'])})")
        out[f["fold"]] = {i: np.array(p) for i, p in zip(f["test_ids"], f["probs"][key])}
    return out


def _mean_of(name: str, runs: list[dict[int, dict[str, np.ndarray]]]) -> dict[int, dict[str, np.ndarray]]:
    """The mean of several runs' probabilities, fold by fold and utterance by utterance (same ids checked)."""
    out = {}
    for fold, first in runs[0].items():
        same = [r.get(fold, {}) for r in runs]
        if any(set(r) != set(first) for r in same):
            raise SystemExit(f"fold {fold}: the runs averaged into {name!r} have different test utterances")
        out[fold] = {i: np.mean([r[i] for r in same], axis=0) for i in first}
    return out


def combine(members: list[tuple[str, str, str]], results=RESULTS, calibrate: bool = False) -> tuple[list[str], dict]:
    """(labels, {team: per-fold metrics summary, with "pooled" over all folds}) for every team of ``members``.

    ``calibrate``: also every team of two or more with each member's softmax temperature fitted (least
    log-loss, ``persemo.calibration.fit_temperature``) on the *other* folds' test predictions, never on the
    fold it is applied to: "(calibrated)" rows, equal votes, and "(calibrated, weighted)" rows, the vote
    weights chosen on those other folds too (max UAR, ``choose_weights``): the cross-fitted votes
    ``persemo train --folds`` reports.
    """

    files = {f: read_results(results / f"{f}.json") for _, f, _ in members}
    labels = next(iter(files.values()))["labels"]
    if any(d["labels"] != labels for d in files.values()):
        raise SystemExit("label orders differ between the files")
    # the reference folds (ids and labels) come from the first emodb-style file
    ref = next((d for d in files.values() if "folds" in d), None)
    if ref is None:
        raise SystemExit("at least one member must come from an emodb_* result file")
    sources: dict[str, list[dict[int, dict[str, np.ndarray]]]] = {}
    for name, f, key in members:  # a name given more than once: the mean of its sources (a bag of runs)
        sources.setdefault(name, []).append(fold_probs(files[f], key))
    probs = {name: _mean_of(name, runs) for name, runs in sources.items()}
    names = list(sources)
    folds = []  # (y, {member: (N, C)}) per fold
    for f in ref["folds"]:
        ids, y = f["test_ids"], np.array(f["y"])
        got = {}
        for n in names:
            p = probs[n].get(f["fold"])
            if p is None or set(p) != set(ids):
                raise SystemExit(f"fold {f['fold']}: {n}'s test utterances differ (splits changed?)")
            got[n] = np.stack([p[i] for i in ids])
        folds.append((y, got))
    table = Rows(labels)
    for k, (y, got) in enumerate(folds):
        rest = [f for j, f in enumerate(folds) if j != k]
        for r in range(1, len(names) + 1):
            for team in itertools.combinations(names, r):
                name = " + ".join(team) + (" (equal weights)" if r > 1 else "")
                table.add(name, y, np.mean([got[m] for m in team], 0))
                if calibrate and r > 1:  # temperatures and weights from the other folds only
                    temps, w = fit_vote(np.stack([np.concatenate([f[1][m] for f in rest]) for m in team]),
                                        np.concatenate([f[0] for f in rest]), labels)
                    cal = np.stack([soften(got[m], t) for m, t in zip(team, temps)])
                    table.add(" + ".join(team) + " (calibrated)", y, cal.mean(0))
                    table.add(" + ".join(team) + " (calibrated, weighted)", y, np.tensordot(np.array(w), cal, axes=1))
    return labels, table.summary()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--member", action="append", default=None, metavar="NAME=FILE:KEY")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="where the result files are read and written (default: benchmarks/results)")
    ap.add_argument("--calibrate", action="store_true",
                    help="also each team with cross-fitted member temperatures: '(calibrated)' rows")
    a = ap.parse_args(argv)
    members = [parse_member(s) for s in a.member] if a.member else DEFAULT
    labels, summary = combine(members, a.results, calibrate=a.calibrate)
    cmd = "python -m benchmarks combine" + "".join(f" --member '{n}={f}:{k}'" for n, f, k in members
                                                  if a.member) + (" --calibrate" if a.calibrate else "") \
        + (f" --tag {a.tag}" if a.tag else "")
    md = ["## Soft votes of separately trained members (EmoDB, speaker-independent 5-fold)", "",
          "From saved test probabilities, same folds: " + ", ".join(f"{n} = `{f}.json` {k!r}" for n, f, k in members)
          + f". Command: `{cmd}`. " + POOLED_NOTE
          + (" '(calibrated)': each member's softmax temperature fitted (least log-loss) on the other four folds' "
             "test predictions, then the equal vote; '(calibrated, weighted)': the vote weights chosen on those "
             "folds too (max UAR, grid step 0.1); no fold's labels calibrate or weigh its own predictions."
             if a.calibrate else ""), "", markdown_table(summary)]
    name = "combine_emodb" + (f"_{a.tag}" if a.tag else "")
    write_results(name, {"command": cmd, "members": [list(m) for m in members], "labels": labels,
                         "summary": summary, "machine": machine_info()}, "\n".join(md) + "\n", a.results)
    print("\n".join(md))


if __name__ == "__main__":
    main()
