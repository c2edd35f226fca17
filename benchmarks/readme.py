"""README's results table, generated from benchmarks/results/*.json: ``python -m benchmarks readme``.

Rewrites the block between ``<!-- results:start -->`` and ``<!-- results:end -->`` in README.md with
one row per model: UAR in the single-utterance protocol and in the speaker-adapted protocol (all of
the test speaker's unlabelled utterances), macro-F1, and the result file each figure comes from. Each
figure is the mean ± std over folds, followed in brackets by the same metric pooled over all folds'
out-of-fold predictions where the result file has it. A
row whose file is missing is left out and said; nothing else in README changes. ``--check`` only
reports whether README is up to date (exit 1 if not).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import RESULTS

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"

# (row label, (file, key) single-utterance, (file, key) speaker-adapted or None); key: a model in an
# emodb-style file's "summary", or "protocol/model" in peers_emodb.json's "results"
ENS, ENS_S = "emodb_time", "emodb_time_speaker"  # the ensemble as recommended: CNN pooled over time
GAP, GAP_S = "emodb_noval3n", "emodb_noval3n_speaker"  # the same with the described global average pooling
ROWS = [
    ("CNN on log-mel, early stopping on one validation speaker (the earlier default run)",
     ("emodb_default", "cnn"), None),
    ("CNN on log-mel, global average pooling (as described)", (GAP, "cnn"), (GAP_S, "cnn")),
    ("CNN on log-mel, pooled over time only (`model.cnn_pooling: time`)", (ENS, "cnn"), (ENS_S, "cnn")),
    ("CNN on log-mel, mean and standard deviation over time (`model.cnn_pooling: timestats`)",
     ("emodb_cnn_timestats", "cnn"), ("emodb_cnn_timestats_speaker", "cnn")),
    ("**CNN with `timestats`, its noisy training clips by their heard speaker statistics** (`train.noise_stats: "
     "heard`, the default in speaker mode; single utterance: the same CNN, the setting is ignored there)",
     ("emodb_cnn_smile_quantiles", "cnn"), ("emodb_cnn_smile_quantiles_heard_speaker", "cnn")),
    ("CNN with `timestats` pooling and mixup (`train.mixup: 0.4`)", ("emodb_cnn_timestats_mixup", "cnn"),
     ("emodb_cnn_timestats_mixup_speaker", "cnn")),
    ("CNN with `timestats`, mixup and speed perturbation (`train.speeds: [0.9, 1.1]`)",
     ("emodb_cnn_speed", "cnn"), None),
    ("BiLSTM on MFCC", (ENS, "lstm"), (ENS_S, "lstm")),
    ("BiLSTM on MFCC, only the level removed (`features.mfcc_utterance_scope: level`)",
     ("emodb_lstm_level", "lstm"), None),
    ("`smile` member (ComParE functionals + calibrated logistic regression)", (ENS, "smile"), (ENS_S, "smile")),
    ("`smile` member with an RBF SVM (`model.smile_kind: svm`)", ("emodb_smile_svm", "smile"), None),
    ("`smile` member with a one-hidden-layer MLP (`model.smile_kind: mlp`)", ("emodb_smile_mlp", "smile"), None),
    ("`smile` member also trained on speed-perturbed copies (`model.smile_speeds: [0.9, 1.1]`)",
     ("emodb_smile_speed", "smile"), ("emodb_smile_speed_speaker", "smile")),
    ("`smile` member, its inner CV scoring original clips only (measured, not kept)",
     ("emodb_smile_origin", "smile"), None),
    ("`smile` member trained on clean clips only (`model.smile_noise_copies: 0`)",
     ("emodb_noval3", "smile"), ("emodb_noval3_speaker", "smile")),
    ("`smile` member, each functional Gaussianised through 20 training quantiles (`model.smile_quantiles: 20`)",
     ("emodb_smile_quantiles", "smile"), ("emodb_smile_quantiles_speaker", "smile")),
    ("**`smile` member with quantiles, clean clips only** (`smile_quantiles: 20`, `smile_noise_copies: 0`)",
     ("emodb_smile_quantiles_nocopies", "smile"), ("emodb_smile_quantiles_nocopies_speaker", "smile")),
    ("`smile` member with quantiles and speed copies (0.9, 1.1), no noisy copy (measured, not kept)",
     ("emodb_smile_quantiles_speed", "smile"), ("emodb_smile_quantiles_speed_speaker", "smile")),
    ("`smile` member as shrinkage LDA, quantiles, clean clips only (measured, not kept)",
     ("emodb_smile_lda", "smile"), ("emodb_smile_lda_speaker", "smile")),
    ("CNN + BiLSTM, soft vote (the described system: global average pooling)",
     (GAP, "cnn + lstm (equal)"), (GAP_S, "cnn + lstm (equal)")),
    ("CNN (time pooling) + BiLSTM, soft vote", (ENS, "cnn + lstm (equal)"), (ENS_S, "cnn + lstm (equal)")),
    ("CNN + `smile`, soft vote, global average pooling", (GAP, "cnn + smile (equal)"), (GAP_S, "cnn + smile (equal)")),
    ("**CNN (time pooling) + `smile`, soft vote** (`configs/recommended.yaml`)",
     (ENS, "cnn + smile (equal)"), (ENS_S, "cnn + smile (equal)")),
    ("CNN (time pooling) + `smile`, soft vote (`configs/recommended.yaml`), trained now: speaker mode with heard "
     "noise statistics (`train.noise_stats: heard`; single utterance: the run above)",
     (ENS, "cnn + smile (equal)"), ("emodb_recommended_heard_speaker", "ensemble (equal)")),
    ("CNN + BiLSTM + `smile`, soft vote, global average pooling", (GAP, "ensemble (equal)"), (GAP_S, "ensemble (equal)")),
    ("CNN (time pooling) + BiLSTM + `smile`, soft vote",
     (ENS, "ensemble (equal)"), (ENS_S, "ensemble (equal)")),
    ("CNN (time pooling) + `smile`, calibrated and weighted (temperatures and vote weights cross-fitted on "
     "the other folds)", ("combine_emodb_time_calibrated", "cnn + smile (calibrated, weighted)"),
     ("combine_emodb_time_speaker_calibrated", "cnn + smile (calibrated, weighted)")),
    ("CNN (time pooling) + BiLSTM + `smile`, soft vote, calibrated (member temperatures cross-fitted on the "
     "other folds)", ("combine_emodb_time_calibrated", "cnn + smile + lstm (calibrated)"),
     ("combine_emodb_time_speaker_calibrated", "cnn + smile + lstm (calibrated)")),
    ("**CNN (time pooling) + BiLSTM + `smile`, calibrated and weighted** (cross-fitted, as `persemo train "
     "--folds` reports it)", ("combine_emodb_time_calibrated", "cnn + smile + lstm (calibrated, weighted)"),
     ("combine_emodb_time_speaker_calibrated", "cnn + smile + lstm (calibrated, weighted)")),
    ("CNN (`timestats`, mixup) + BiLSTM + `smile`, calibrated and weighted (members of two runs)",
     ("combine_emodb_mixup", "cnn + smile + lstm (calibrated, weighted)"),
     ("combine_emodb_mixup_speaker", "cnn + smile + lstm (calibrated, weighted)")),
    ("CNN (`timestats`, mixup) + BiLSTM + `smile` (speed copies), calibrated and weighted (members of three runs)",
     ("combine_emodb_speed", "cnn + smile + lstm (calibrated, weighted)"),
     ("combine_emodb_speed_speaker", "cnn + smile + lstm (calibrated, weighted)")),
    ("Bag of CNNs: the mean of every time-pooled CNN run (6 single-utterance runs, 3 speaker-adapted)",
     ("combine_emodb_cnn_bag", "cnn"), ("combine_emodb_cnn_bag_speaker", "cnn")),
    ("Bag of CNNs + `smile`, soft vote", ("combine_emodb_cnn_bag", "cnn + smile (equal weights)"),
     ("combine_emodb_cnn_bag_speaker", "cnn + smile (equal weights)")),
    ("Bag of CNNs + BiLSTM + `smile`, calibrated and weighted",
     ("combine_emodb_cnn_bag", "cnn + lstm + smile (calibrated, weighted)"),
     ("combine_emodb_cnn_bag_speaker", "cnn + lstm + smile (calibrated, weighted)")),
    ("Bag of CNNs + `smile` (speed copies), soft vote", ("combine_emodb_cnn_bag_speed", "cnn + smile (equal weights)"),
     ("combine_emodb_cnn_bag_speed_speaker", "cnn + smile (equal weights)")),
    ("Bag of CNNs + `smile` (quantiles, clean clips only), soft vote",
     ("combine_emodb_quantiles", "cnn + smile (equal weights)"),
     ("combine_emodb_quantiles_speaker", "cnn + smile (equal weights)")),
    ("CNN (`timestats`) + `smile` (quantiles, clean clips only), soft vote, one model per protocol (trap measured)",
     ("emodb_cnn_smile_quantiles", "ensemble (equal)"), ("emodb_cnn_smile_quantiles_speaker", "ensemble (equal)")),
    ("**CNN (`timestats`, heard statistics) + `smile` (quantiles, clean clips only), soft vote, one model per "
     "protocol** (trap measured)",
     ("emodb_cnn_smile_quantiles", "ensemble (equal)"), ("emodb_cnn_smile_quantiles_heard_speaker", "ensemble (equal)")),
    ("Bag of CNNs + BiLSTM + `smile` (quantiles, clean clips only), calibrated and weighted",
     ("combine_emodb_quantiles", "cnn + lstm + smile (calibrated, weighted)"),
     ("combine_emodb_quantiles_speaker", "cnn + lstm + smile (calibrated, weighted)")),
    ("CNN (time pooling) + BiLSTM (level) + `smile`, soft vote of members from two runs",
     ("combine_emodb_time_level", "cnn + lstm + smile (equal weights)"), None),
    ("peer: openSMILE eGeMAPSv02 + SVM", ("peers_emodb", "standard/eGeMAPSv02 + SVM"),
     ("peers_emodb", "speaker-adapted/eGeMAPSv02 + SVM")),
    ("peer: openSMILE ComParE_2016 + SVM", ("peers_emodb", "standard/ComParE_2016 + SVM"),
     ("peers_emodb", "speaker-adapted/ComParE_2016 + SVM")),
]


def _summary(results: Path, file: str, key: str) -> dict | None:
    p = results / f"{file}.json"
    if not p.is_file():
        return None
    data = json.loads(p.read_text(encoding="utf-8"))
    if "/" in key and "results" in data:
        protocol, model = key.split("/", 1)
        return data["results"].get(protocol, {}).get(model, {}).get("summary")
    s = data.get("summary", {}).get(key)
    if s is not None and "pooled" not in s and isinstance(data.get("pooled"), dict):  # files before crossval
        s = {**s, "pooled": data["pooled"].get(key)}
    return s


def _cell(s: dict | None, metric: str = "uar") -> str:
    if s is None:
        return "–"
    pooled = (s.get("pooled") or {}).get(metric)
    return f"{100 * s[metric]['mean']:.1f} ± {100 * s[metric]['std']:.1f}" + (
        f" ({100 * pooled:.1f})" if pooled is not None else "")


def table(results: Path = RESULTS) -> tuple[str, list[str]]:
    """The Markdown table and the names of files that were missing."""
    lines = ["| model | UAR %, single utterance | UAR %, speaker-adapted | macro-F1 %, single utterance | "
             "source (`benchmarks/results/`) |", "|---|---|---|---|---|"]
    # each cell: mean ± std over folds, then (in brackets, where the file has them) pooled over all folds'
    # out-of-fold predictions
    missing = []
    for label, (f1, k1), second in ROWS:
        f2, k2 = second or (f1, None)
        s1 = _summary(results, f1, k1)
        s2 = _summary(results, f2, k2) if k2 else None
        for f, s, wanted in ((f1, s1, True), (f2, s2, bool(k2))):
            if wanted and s is None and f not in missing and not (results / f"{f}.json").is_file():
                missing.append(f)
        if s1 is None and s2 is None:
            continue
        src = f"`{f1}.md`" + (f", `{f2}.md`" if f2 != f1 else "")
        lines.append(f"| {label} | {_cell(s1)} | {_cell(s2)} | {_cell(s1, 'macro_f1')} | {src} |")
    return "\n".join(lines), missing


def render(readme: str, body: str) -> str:
    if START not in readme or END not in readme or readme.index(START) > readme.index(END):
        raise SystemExit(f"README.md has no {START} ... {END} block")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}\n{END}{tail}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--check", action="store_true", help="only say whether README is up to date")
    a = ap.parse_args(argv)
    body, missing = table(a.results)
    old = a.readme.read_text(encoding="utf-8")
    new = render(old, body)
    for f in missing:
        print(f"benchmarks.readme: {f}.json not found; its figures are left out", file=sys.stderr)
    if a.check:
        print("README results are up to date" if new == old else "README results are out of date")
        raise SystemExit(0 if new == old else 1)
    if new != old:
        from persemo.corpora.base import atomic_write_text

        atomic_write_text(a.readme, new)
    print(body)


if __name__ == "__main__":
    main()
