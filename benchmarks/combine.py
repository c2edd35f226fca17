"""Does the openSMILE member help the CNN + BiLSTM ensemble? Measured from saved per-fold predictions.

    python -m benchmarks.combine [--ensemble results/emodb_TAG.json] [--peers results/peers_emodb.json]

Both files hold test-set probabilities per utterance for the same speaker-independent folds
(``make_folds(kind="speaker", seed=0)``; checked here by the test ids). The script soft-votes the
members with equal weights, with and without the SmileMember, and writes results/combine_emodb.json
and .md. No model is trained: this isolates the effect of combining from the training noise.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from persemo.evaluation import compute_metrics, markdown_table, summarise_folds

from .common import RESULTS, machine_info, write_results

SMILE = "ComParE_2016 + SmileMember (logreg)"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ensemble", type=Path, default=RESULTS / "emodb_described.json")
    ap.add_argument("--peers", type=Path, default=RESULTS / "peers_emodb.json")
    ap.add_argument("--smile", default=SMILE)
    a = ap.parse_args(argv)
    ens = json.loads(a.ensemble.read_text())
    peers = json.loads(a.peers.read_text())
    labels = ens["labels"]
    if peers["labels"] != labels:
        raise SystemExit("label orders differ between the two files")
    smile = peers["predictions"]["standard"][a.smile]
    per: dict[str, list[dict]] = {}
    for f in ens["folds"]:
        pf = next(x for x in smile["folds"] if x["fold"] == f["fold"])
        ids = f["test_ids"]
        if set(ids) != set(pf["probs"]):
            raise SystemExit(f"fold {f['fold']}: the two files' test utterances differ (splits changed?)")
        y = np.array(f["y"])
        members = {"cnn": np.array(f["probs"]["cnn"]), "lstm": np.array(f["probs"]["lstm"]),
                   "smile": np.array([pf["probs"][i] for i in ids])}
        for r in range(1, 4):
            for combo in itertools.combinations(members, r):
                name = " + ".join(combo) + (" (equal weights)" if r > 1 else "")
                p = np.mean([members[m] for m in combo], axis=0)
                per.setdefault(name, []).append(compute_metrics(y, p, labels))
    summary = {k: summarise_folds(v) for k, v in per.items()}
    md = ["## Combining the openSMILE member with the CNN and the BiLSTM (EmoDB, speaker-independent 5-fold)", "",
          f"From saved test probabilities: `{a.ensemble.name}` (CNN, BiLSTM) and `{a.peers.name}` ({a.smile}), "
          "same folds. Command: `python -m benchmarks combine`. Mean ± std over folds (%).", "",
          markdown_table(summary)]
    write_results("combine_emodb", {"ensemble_file": a.ensemble.name, "peers_file": a.peers.name, "smile": a.smile,
                                    "labels": labels, "summary": summary, "machine": machine_info()},
                  "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
