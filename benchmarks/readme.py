"""README's results table and benchmarks/RESULTS.md's, generated from benchmarks/results/*.json:
``python -m benchmarks readme``.

Rewrites the block between ``<!-- results:start -->`` and ``<!-- results:end -->`` in README.md (at most ten
rows: both protocols, the ComParE + SVM peer, the recommended ensemble, its trap and noise figures, each row
with the command and the minutes that reproduce it) and the same block in benchmarks/RESULTS.md (every row
measured, with its source files; the dated experiment log below that block is written by hand). UAR is given
pooled over all folds' out-of-fold predictions, with the mean ± std over folds beside it where the file has
both. A row whose file is missing is left out and said on stderr; nothing outside the blocks changes. Result
files that still hold their per-fold probabilities inline are first compacted (``common.compact_results``).
``--check`` only reports whether both files are up to date (exit 1 if not).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .common import RESULTS, compact_results

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
LOG = Path(__file__).resolve().parent / "RESULTS.md"

ENS, ENS_S = "emodb_time", "emodb_time_speaker"  # CNN pooled over time + smile (+ BiLSTM): the earlier recommended
GAP, GAP_S = "emodb_noval3n", "emodb_noval3n_speaker"  # the same with the described global average pooling
WS, WS_S = "emodb_whisper_smile", "emodb_whisper_smile_speaker"  # whisper + smile, fixed
XF, XF_S = "combine_emodb_whisper_teams", "combine_emodb_whisper_teams_speaker"  # members of the runs above
SEL, SEL_S = "emodb_selected", "emodb_selected_speaker"  # the nested selection (configs/recommended.yaml)
SELECTED = "selected configuration"
VOTE = "ensemble (weighted on inner CV)"  # the vote benchmarks.emodb records for model.calibration: inner
SUITE_VOTE = "ensemble whisper+smile (weighted on inner CV)"
TRAP = "speaker-adapted: one-emotion trap [shrunk, averaged with the single-utterance model]"
SINGLE = "single utterance (per-utterance normalisation)"


def _suite(condition: str, row: str) -> list[tuple[str, tuple[str, str]]]:
    return [(f, (condition, row)) for f in ("suite_emodb_whisper_smile", "suite_emodb_whisper_smile_babble")]


def _suite_s(condition: str, row: str) -> list[tuple[str, tuple[str, str]]]:
    return [(f, (condition, row)) for f in ("suite_emodb_whisper_smile_speaker",
                                            "suite_emodb_whisper_smile_speaker_babble")]


# README's table: at most ten rows
SS, SS_S = "suite_emodb_selected", "suite_emodb_selected_speaker"  # the selection, clean and in noise
BC = "suite_emodb_whisper_smile_babblecopies"  # whisper + smile with white and babble copies (issue 21 lever)
CS = "suite_emodb_whisper_clean_smile_speaker"
SN, SN_S = "suite_emodb_selected_se_whisper", "suite_emodb_selected_se_whisper_speaker"  # the selection now
AS, AS_S = "suite_ased_whisper", "suite_ased_whisper_speaker"  # ASED: the whisper candidate, fixed  # speaker mode, the whisper member without noisy copies
FRONT_ROWS = [
    ("peer: ComParE_2016 functionals + SVM", ("peers_emodb", "standard/ComParE_2016 + SVM"),
     ("peers_emodb", "speaker-adapted/ComParE_2016 + SVM")),
    ("`whisper` alone (Whisper base's frozen encoder, logistic regression)", (WS, "whisper"),
     (WS_S, "whisper")),
    ("**the selected configuration** (`configs/recommended.yaml`: 10 candidates, rule se, `whisper` the default; "
     "before: 89.3 / 91.6)", (SN, ("clean", SELECTED)), (SN_S, ("clean", SELECTED))),
    ("**ASED** (Amharic, 65 speakers): `whisper`, the selection's default, fixed", (AS, ("clean", "whisper")),
     (AS_S, ("clean", "whisper"))),
    ("**ASED**: peer eGeMAPSv02 + SVM", (AS, ("clean", "eGeMAPSv02 + SVM")), (AS_S, ("clean", "eGeMAPSv02 + SVM"))),
    ("`whisper` + `smile`, the trap (a speaker's statistics from one emotion), with the companion",
     ("adaptation_emodb_whisper_smile", SINGLE), ("adaptation_emodb_whisper_smile", TRAP)),
    ("the selected configuration at 10 dB white noise", (SN, ("white 10 dB", SELECTED)),
     (SN_S, ("white 10 dB", SELECTED))),
    ("the selected configuration at 10 dB babble", (SN, ("babble 10 dB", SELECTED)),
     (SN_S, ("babble 10 dB", SELECTED))),
    ("the peer at 10 dB white noise", (SN, ("white 10 dB", "ComParE_2016 + SVM")),
     (SN_S, ("white 10 dB", "ComParE_2016 + SVM"))),
]

# RESULTS.md's full table: (row label, single-utterance spec, speaker-adapted spec or None); a spec is (file, key)
# or a list of such alternatives, the first found wins; key: a row of the file's "summary", "protocol/model" in
# peers_emodb.json's "results", or (condition, row) in a suite file's "summary"
ENS, ENS_S = "emodb_time", "emodb_time_speaker"  # the ensemble as recommended: CNN pooled over time
GAP, GAP_S = "emodb_noval3n", "emodb_noval3n_speaker"  # the same with the described global average pooling
LOG_ROWS = [
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
    ("`whisper` member alone (Whisper base's frozen encoder, blocks chosen by inner CV, calibrated logistic regression)",
     (WS, "whisper"), (WS_S, "whisper")),
    ("`whisper` + `smile`, soft vote, equal weights", (WS, "ensemble (equal)"), (WS_S, "ensemble (equal)")),
    ("**`whisper` + `smile`, temperatures and vote weights chosen on the members' inner CV** (`model.calibration: "
     "inner`)", (WS, VOTE), (WS_S, VOTE)),
    ("**the selected configuration** (nested selection, `configs/recommended.yaml`)", (SEL, SELECTED),
     (SEL_S, SELECTED)),
    ("**the selected configuration, white and babble noisy copies** (`configs/recommended.yaml`)",
     (SS, ("clean", SELECTED)), (SS_S, ("clean", SELECTED))),
    ("the selected configuration at 10 dB white", (SS, ("white 10 dB", SELECTED)),
     (SS_S, ("white 10 dB", SELECTED))),
    ("the selected configuration at 10 dB babble", (SS, ("babble 10 dB", SELECTED)),
     (SS_S, ("babble 10 dB", SELECTED))),
    ("the selection with the SVM heads (10 candidates), rule se, whisper + eGeMAPS the default",
     ("suite_emodb_selected_se", ("clean", SELECTED)), None),
    ("**the selection now** (10 candidates, rule se, `whisper` the default)", (SN, ("clean", SELECTED)),
     (SN_S, ("clean", SELECTED))),
    ("the selection now at 10 dB white", (SN, ("white 10 dB", SELECTED)), (SN_S, ("white 10 dB", SELECTED))),
    ("the selection now at 10 dB babble", (SN, ("babble 10 dB", SELECTED)), (SN_S, ("babble 10 dB", SELECTED))),
    ("`whisper` + `smile` (fixed), white and babble noisy copies: clean", (BC, ("clean", SUITE_VOTE)), None),
    ("the same at 10 dB white", (BC, ("white 10 dB", SUITE_VOTE)), None),
    ("the same at 10 dB babble", (BC, ("babble 10 dB", SUITE_VOTE)), None),
    ("`whisper` + `smile` (fixed, white copies only) at 10 dB white", _suite("white 10 dB", SUITE_VOTE),
     _suite_s("white 10 dB", SUITE_VOTE)),
    ("`whisper` + `smile` (fixed, white copies only) at 10 dB babble", _suite("babble 10 dB", SUITE_VOTE),
     _suite_s("babble 10 dB", SUITE_VOTE)),
    ("`whisper` + `smile` speaker-adapted, the whisper member on clean clips only: clean",
     None, (CS, ("clean", SUITE_VOTE))),
    ("the same at 10 dB white", None, (CS, ("white 10 dB", SUITE_VOTE))),
    ("the same at 10 dB babble", None, (CS, ("babble 10 dB", SUITE_VOTE))),
    ("`whisper` + `smile` (quantiles, clean clips only), calibrated and weighted, cross-fitted",
     (XF, "whisper + smile (calibrated, weighted)"), (XF_S, "whisper + smile (calibrated, weighted)")),
    ("`whisper` + CNN (`timestats`), calibrated and weighted, cross-fitted",
     (XF, "whisper + cnn (calibrated, weighted)"), (XF_S, "whisper + cnn (calibrated, weighted)")),
    ("`whisper` + `smile` + CNN, equal weights", (XF, "whisper + smile + cnn (equal weights)"),
     (XF_S, "whisper + smile + cnn (equal weights)")),
    ("`whisper` + `smile` + CNN, calibrated and weighted, cross-fitted",
     (XF, "whisper + smile + cnn (calibrated, weighted)"), (XF_S, "whisper + smile + cnn (calibrated, weighted)")),
    ("`whisper` alone, heads with the full-matrix calibration (before the issue-22 fix; measured, replaced)",
     (WS + "_matrix", "whisper"), (WS_S + "_matrix", "whisper")),
    ("`whisper` + `smile`, vote on inner CV, full-matrix calibration (before the issue-22 fix; replaced)",
     (WS + "_matrix", VOTE), (WS_S + "_matrix", VOTE)),
    ("`whisper` + `smile`, full-matrix calibration, the trap with the companion (replaced)",
     ("adaptation_emodb_whisper_smile_matrix", SINGLE), ("adaptation_emodb_whisper_smile_matrix", TRAP)),
    ("`whisper` + `smile`, full-matrix calibration, calibrated and weighted, cross-fitted (replaced)",
     (XF + "_matrix", "whisper + smile (calibrated, weighted)"),
     (XF_S + "_matrix", "whisper + smile (calibrated, weighted)")),
    ("peer: openSMILE eGeMAPSv02 + SVM", ("peers_emodb", "standard/eGeMAPSv02 + SVM"),
     ("peers_emodb", "speaker-adapted/eGeMAPSv02 + SVM")),
    ("peer: openSMILE ComParE_2016 + SVM", ("peers_emodb", "standard/ComParE_2016 + SVM"),
     ("peers_emodb", "speaker-adapted/ComParE_2016 + SVM")),
    ("the selection with white noisy copies only (7 candidates; `selected-white[-speaker].yaml`)",
     (SEL, SELECTED), (SEL_S, SELECTED)),
    ("ASED: `whisper`, the selection's default fixed (white and babble copies)", (AS, ("clean", "whisper")),
     (AS_S, ("clean", "whisper"))),
    ("ASED: `whisper` at 10 dB white noise", (AS, ("white 10 dB", "whisper")), (AS_S, ("white 10 dB", "whisper"))),
    ("ASED: `whisper` at 10 dB babble", (AS, ("babble 10 dB", "whisper")), (AS_S, ("babble 10 dB", "whisper"))),
    ("ASED: peer eGeMAPSv02 + SVM", (AS, ("clean", "eGeMAPSv02 + SVM")), (AS_S, ("clean", "eGeMAPSv02 + SVM"))),
    ("ASED: peer ComParE_2016 + SVM", (AS, ("clean", "ComParE_2016 + SVM")), (AS_S, ("clean", "ComParE_2016 + SVM"))),
]




def _load(results: Path, file: str, cache: dict) -> dict | None:
    if file not in cache:
        p = results / f"{file}.json"
        cache[file] = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
    return cache[file]


def _lookup(data: dict, key) -> dict | None:
    if isinstance(key, tuple):  # (condition, row) in a suite file
        return ((data.get("summary") or {}).get(key[0]) or {}).get(key[1])
    if "/" in key and "results" in data:
        protocol, model = key.split("/", 1)
        r = data["results"].get(protocol, {}).get(model, {})
        s = r.get("summary")
        if s is not None and "pooled" not in s and r.get("pooled_confusion"):  # peers' files before pooling
            s = {**s, "pooled": _pooled(r["pooled_confusion"])}
        return s
    s = (data.get("summary") or {}).get(key)
    if s is not None and "pooled" not in s and isinstance(data.get("pooled"), dict):  # files before crossval
        s = {**s, "pooled": data["pooled"].get(key)}
    return s


def _pooled(confusion: list[list[int]]) -> dict:
    """UAR and macro-F1 of a confusion matrix summed over folds (rows: true class): the pooled figures."""
    recall, f1 = [], []
    for i, row in enumerate(confusion):
        tp, true, said = row[i], sum(row), sum(r[i] for r in confusion)
        recall.append(tp / true if true else 0.0)
        f1.append(2 * tp / (true + said) if true + said else 0.0)
    return {"uar": sum(recall) / len(recall), "macro_f1": sum(f1) / len(f1)}


def _find(results: Path, spec, cache: dict, missing: list[str]) -> tuple[str | None, dict | None]:
    """(file, summary) of the first alternative of ``spec`` present; an absent file goes to ``missing``."""
    if spec is None:
        return None, None
    for file, key in spec if isinstance(spec, list) else [spec]:
        data = _load(results, file, cache)
        if data is None:
            continue
        s = _lookup(data, key)
        if s is not None:
            return file, s
    names = [f for f, _ in (spec if isinstance(spec, list) else [spec])]
    if not any(_load(results, f, cache) is not None for f in names):
        missing.extend(f for f in names[:1] if f not in missing)
    return None, None


def _cell(s: dict | None, metric: str = "uar") -> str:
    """pooled (mean ± std over folds), in %; the mean ± std alone where the file has no pooled figure."""
    if s is None:
        return "–"
    pooled = (s.get("pooled") or {}).get(metric)
    spread = f"{100 * s[metric]['mean']:.1f} ± {100 * s[metric]['std']:.1f}"
    return f"{100 * pooled:.1f} ({spread})" if pooled is not None else spread


def command(data: dict) -> str:
    """The command a result file records, with config paths where they are now (benchmarks/configs/)."""
    cmd = data.get("command") or ""
    cmd = re.sub(r"\bconfigs/bench-([\w.-]+?)\.yaml", r"benchmarks/configs/\1.yaml", cmd)
    return re.sub(r"python -m benchmarks\.(\w+)", r"python -m benchmarks \1", cmd)


def _minutes(data: dict) -> str:
    w = data.get("wall_seconds")
    return f"{w / 60:.0f}" if isinstance(w, (int, float)) else "–"


def front_table(results: Path = RESULTS) -> tuple[str, list[str]]:
    """README's table (Markdown) and the names of files that were missing."""
    lines = ["| model | UAR %, single utterance | UAR %, speaker-adapted | `python -m benchmarks` ... | min |",
             "|---|---|---|---|---|"]
    cache: dict = {}
    missing: list[str] = []
    shown: set[str] = set()
    for label, single, speaker in FRONT_ROWS:
        (f1, s1), (f2, s2) = _find(results, single, cache, missing), _find(results, speaker, cache, missing)
        if s1 is None and s2 is None:
            continue
        files = [f for f in dict.fromkeys((f1, f2)) if f]
        if set(files) <= shown:  # runs a row above already gives
            cmds, mins = "runs above", ""
        else:
            cmds = "<br>".join(f"`{command(cache[f]).removeprefix('python -m benchmarks ')}`" for f in files)
            mins = " + ".join(_minutes(cache[f]) for f in files)
        shown.update(files)
        lines.append(f"| {label} | {_cell(s1)} | {_cell(s2)} | {cmds} | {mins} |")
    return "\n".join(lines), missing


def log_table(results: Path = RESULTS) -> tuple[str, list[str]]:
    """RESULTS.md's table of every row (Markdown) and the names of files that were missing."""
    lines = ["| model | UAR %, single utterance | UAR %, speaker-adapted | macro-F1 %, single utterance | "
             "source (`benchmarks/results/`) |", "|---|---|---|---|---|"]
    cache: dict = {}
    missing: list[str] = []
    for label, single, speaker in LOG_ROWS:
        (f1, s1), (f2, s2) = _find(results, single, cache, missing), _find(results, speaker, cache, missing)
        if s1 is None and s2 is None:
            continue
        src = ", ".join(f"`{f}.md`" for f in dict.fromkeys((f1, f2)) if f)
        lines.append(f"| {label} | {_cell(s1)} | {_cell(s2)} | {_cell(s1, 'macro_f1')} | {src} |")
    return "\n".join(lines), missing


def table(results: Path = RESULTS) -> tuple[str, list[str]]:
    """README's table and the files it missed (kept for callers of the earlier single-table generator)."""
    return front_table(results)


def render(text: str, body: str, name: str = "README.md") -> str:
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise SystemExit(f"{name} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}\n{END}{tail}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--log", type=Path, default=LOG, help="the full table and experiment log (benchmarks/RESULTS.md)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--check", action="store_true", help="only say whether README and RESULTS.md are up to date")
    a = ap.parse_args(argv)
    if not a.check:
        compact_results(a.results, log=lambda m: print(f"benchmarks.readme: {m}", file=sys.stderr))
    front, missing = front_table(a.results)
    full, missing_log = log_table(a.results)
    for f in dict.fromkeys(missing + missing_log):
        print(f"benchmarks.readme: {f}.json not found; its rows are left out", file=sys.stderr)
    stale = []
    for path, body in ((a.readme, front), (a.log, full)):
        old = path.read_text(encoding="utf-8")
        new = render(old, body, path.name)
        if new == old:
            continue
        stale.append(path.name)
        if not a.check:
            from persemo.atomic import atomic_write_text

            atomic_write_text(path, new)
    if a.check:
        print(f"out of date: {', '.join(stale)}" if stale else "README and RESULTS.md results are up to date")
        raise SystemExit(1 if stale else 0)
    print(front)


if __name__ == "__main__":
    main()
