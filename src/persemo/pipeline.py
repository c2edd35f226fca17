"""End-to-end jobs on top of the library: train (one split or k folds) and evaluate a saved model.

The CLI, ``make demo`` and the benchmarks call these functions. A run directory is written as one unit:
it is built in a hidden folder beside ``--out`` and swapped into place when everything is written, so a
run that fails or is killed leaves the previous run directory as it was (and never a new split beside
an old model). The model records the digest of the split it was trained on; ``evaluate`` refuses a
``splits.json`` that is not that split.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np

from .artifact import load_model, read_meta, save_model
from .atomic import atomic_write_text
from .calibration import cross_fold_calibration
from .config import Config
from .corpora import describe_mapping, scan_corpus
from .corpora.base import EMOTIONS, EXTRA_EMOTIONS, CorpusError, check_columns
from .corpora.union import combine, corpus_labels, prefixed, sources
from .crossval import SINGLE_TAG, SPEAKER_TAG, cross_validate, fold_items, summarise, held_out_statistics
from .ensemble import COMPANION_PREFIX, Ensemble, at_unit_temperature
from .evaluation import compute_metrics, plot_curves, restrict_probs, write_report
from .joint import corpora_note, corpus_metrics, corpus_rows, only_labels, shared_labels, union_folds, union_split
from .prepare import Item, prepare
from .rows import (SELECTED_ROW, Pool, column_values, fold_key, headline, model_row, protocol_rows, result_rows,
                   same_as, subsets)
from .splits import KINDS, Split, load_splits, save_splits
from .statistics import speaker_statistics
from .selection import fit_selected
from .training import choose_pair_weight, predict_items, write_history

PROTOCOL_SINGLE = SINGLE_TAG
RUN_MARKERS = ("model.json", "config.json", "splits.json", "splits_all.json")  # what makes a folder a run


def load_items(corpus, data: str | Path | None, cfg: Config, cache_dir=None, log=print,
               label_map: dict | None = None, strict_labels: bool = True, by=()) -> tuple[list[Item], list]:
    """Scan and prepare a corpus, or several (``corpus`` a list of sources, ``corpora.union.sources``; each
    utterance's id and speaker then prefixed by its corpus's name), labels mapped by ``label_map`` (default:
    ``cfg.data.labels``; see ``corpora.map_labels`` for ``strict_labels``, which holds for one corpus only: of
    several, each need not have every label mapped) and the mapping logged; problems are reported and skipped.
    Raises if nothing is usable, or (before preparing anything) if a metadata column of ``by`` is not there."""
    scans, srcs = [], sources(corpus, data)
    mapping = cfg.data.labels if label_map is None else label_map
    for src in srcs:
        scan = scan_corpus(src.corpus, src.data, durations=False, labels=mapping,
                           strict_labels=strict_labels and len(srcs) == 1)
        mapped = describe_mapping(scan.labels_mapped)
        if mapped:
            log(mapped if len(srcs) == 1 else f"{src.name}: {mapped}")
        if not scan.utterances:
            raise CorpusError(f"{src.corpus}: no usable utterances found under {src.data}"
                              + (f" ({len(scan.problems)} problem(s), e.g. {scan.problems[0].path}: "
                                 f"{scan.problems[0].reason})" if scan.problems else ""))
        scans.append((src.name, scan))
    scan = combine(scans)
    corpus, data = (scan.corpus, scan.root) if len(srcs) > 1 else (srcs[0].corpus, srcs[0].data)
    check_columns(scan.utterances, by, corpus)
    t0 = time.perf_counter()
    prep = prepare(scan.utterances, cfg.features, cache_dir)
    problems = scan.problems + prep.problems
    for p in problems[:20]:
        log(f"skipped {p.path}: {p.reason}")
    if len(problems) > 20:
        log(f"... and {len(problems) - 20} more skipped")
    if not prep.items:
        raise CorpusError(f"{corpus}: none of the {len(scan.utterances)} files under {data} could be read")
    log(f"prepared {len(prep.items)} utterances in {time.perf_counter() - t0:.1f} s "
        f"({prep.cache_hits} from cache)")
    if len(srcs) > 1:
        log("corpora: " + "; ".join(f"{c} {sum(it.utt.corpus == c for it in prep.items)} utterances ({', '.join(l)})"
                                    for c, l in corpus_labels([it.utt for it in prep.items]).items()))
    return prep.items, problems


def labels_of(items: list[Item]) -> list[str]:
    present = {it.utt.emotion for it in items}
    order = [e for e in EMOTIONS + EXTRA_EMOTIONS if e in present]
    return order + sorted(present - set(order))


def fit_model(cfg: Config, labels: list[str], train: list[Item], val: list[Item], out: Path | None = None,
              progress: bool = True, log=print, cache_dir=None) -> tuple[Ensemble, dict]:
    """``train_ensemble`` (or the nested selection, ``selection.fit_selected``), and for a speaker-normalised
    model with ``adaptation.single_companion`` the single-utterance companion trained (or selected) on the
    same data: (model, info with the history of both)."""
    model, info = fit_selected(cfg, labels, train, val, out, progress, log, cache_dir=cache_dir)
    if model.adaptable and cfg.adaptation.single_companion:
        log("training the single-utterance companion (adaptation.single_companion)")
        cfg_u = cfg.replace(features={"normalisation": "utterance", "enrolment": None})
        single, info_u = fit_selected(cfg_u, labels, train, val, out / "single_training" if out else None,
                                      progress, log, cache_dir=cache_dir)
        pair = pair_with_companion(model, single, train, labels, log)
        info_u = {**info_u, "pair_weight": model.pair_weight, "pair_choice": pair}
        info = {**info, "companion": {k: v for k, v in info_u.items() if k != "history"},
                "history": {**info["history"], **{COMPANION_PREFIX + k: v for k, v in info_u["history"].items()}}}
    return model, info


def pair_with_companion(model: Ensemble, single: Ensemble, train: list[Item], labels: list[str],
                        log=print) -> dict | None:
    """Give the speaker-normalised ``model`` its single-utterance companion ``single``, the adapted vote's share
    chosen on both models' inner-CV predictions for ``train`` (``training.choose_pair_weight``; 0.5 when they
    have none). Returns that choice."""
    index = {l: i for i, l in enumerate(labels)}
    pair = choose_pair_weight(model, single, np.array([index[it.utt.emotion] for it in train]), labels)
    model.set_companion(single, pair["weight"] if pair else None)
    log(f"paired vote: the speaker-adapted vote's share {model.pair_weight:.1f}"
        + ((f" ({pair['why']})" if "why" in pair else " (chosen on both models' inner-CV predictions for "
            "the training speakers)") if pair else " (no inner CV to choose it on)"))
    return pair


def _metrics(rows: dict[str, np.ndarray], y: np.ndarray, labels: list[str]) -> dict[str, dict]:
    return {name: compute_metrics(y, p, labels) for name, p in rows.items()}


def selection_note(info: dict, fold: int | None = None) -> str | None:
    """One line on what the nested selection chose (and its companion's, in speaker mode), or None."""
    parts = []
    for who, sel in (("", info.get("selection")), ("companion: ", (info.get("companion") or {}).get("selection"))):
        if not sel:
            continue
        scored = sorted((c for c in sel["candidates"] if c.get("inner_uar") is not None),
                        key=lambda c: -c["inner_uar"])
        win = next(c for c in scored if c["name"] == sel["winner"])
        others = [c for c in scored if c is not win]
        line = f"{who}{sel['winner']} (inner-CV UAR {100 * win['inner_uar']:.1f}"
        if others:
            line += f"; next {others[0]['name']} {100 * others[0]['inner_uar']:.1f}"
        skipped = [c["name"] for c in sel["candidates"] if c.get("skipped")]
        parts.append(line + ")" + (f", skipped {', '.join(skipped)}" if skipped else ""))
    if not parts:
        return None
    return ("selected" + (f" in fold {fold}" if fold is not None else "") + " among the candidates on the training "
            "speakers' inner CV: " + "; ".join(parts))


def _model_notes(cfg: Config) -> list[str]:
    """What the report's first rows are, and the labels the user mapped."""
    speaker_mode = cfg.features.normalisation == "speaker"
    rows = (f"'{model_row(SPEAKER_TAG)}' and '{model_row(SINGLE_TAG)}' are" if speaker_mode else
            f"'{model_row(SINGLE_TAG)}' is")
    notes = [f"{rows} the saved model's answer" + (" (the selected configuration's)" if cfg.selection.candidates
                                                   else "") + "; its members and votes below"]
    if cfg.data.labels:
        notes.append("labels mapped (data.labels): " + ", ".join(f"{a} -> {b}" for a, b in cfg.data.labels.items()))
    return notes


def _notes(cfg: Config, split: Split, test: list[Item]) -> tuple[list[str], str]:
    speaker_mode = cfg.features.normalisation == "speaker"
    protocol = "both, side by side: speaker-adapted (all of the speaker's test utterances, no labels) and " \
        "single utterance" if speaker_mode else PROTOCOL_SINGLE
    notes = [f"split: {split.description}, seed {split.seed}; test: {len(test)} utterances of "
             f"{len({it.utt.speaker for it in test})} speakers", f"protocol: {protocol}"]
    notes += _model_notes(cfg)
    if speaker_mode:
        n_min = min(sum(it.utt.speaker == s for it in test) for s in {it.utt.speaker for it in test})
        enrol = cfg.features.enrolment
        source = (f"their own test utterances (at least {n_min} per speaker), no labels" if enrol is None else
                  f"their own {enrol} test utterances only (enrolment; all of theirs where they have none)")
        notes.append(f"[{SPEAKER_TAG}]: each test speaker's statistics from {source}, shrunk toward the "
                     f"training statistics by n/(n+{cfg.adaptation.shrink:g}); transductive over the "
                     f"speaker's audio. [{SINGLE_TAG}]: the same model and utterances with its training statistics")
        if cfg.adaptation.single_companion:
            notes.append("paired model (adaptation.single_companion): 'single/' rows are the single-utterance "
                         f"companion; 'ensemble (paired)' is the mean of both models' votes in [{SPEAKER_TAG}] and "
                         f"the companion's vote alone in [{SINGLE_TAG}]")
    return notes, protocol


def save_run(out: Path, model: Ensemble, info: dict, split: Split, fold_results: dict, corpus: str, data: str,
             train: list[Item], val: list[Item], test: list[Item], same: dict[str, str] | None = None,
             by: dict | None = None, corpora: list[dict] | None = None) -> None:
    """One trained split's files: the model (with the split's digest), splits.json, history, curves, report
    (rows identical to another in ``same``, per-subset figures in ``by``; see ``evaluation.write_report``).
    ``corpora``: a run on several corpora, each {name, corpus, data, labels, n} (``_corpora_meta``)."""
    cfg = model.cfg
    where = ({"corpus": corpus, "data": [c["data"] for c in corpora], "corpora": corpora} if corpora else
             {"corpus": corpus, "data": str(Path(data).resolve())})
    meta = {"trained_on": {**where, "split": split.kind,
                           "split_description": split.description, "split_sha256": split.digest(),
                           "n_train": len(train), "n_val": len(val), "n_test": len(test)},
            "training": {k: v for k, v in info.items() if k != "history"}}
    save_model(out, model, extra_meta=meta)
    save_splits(split, out / "splits.json")
    write_history(info["history"], out / "history.csv")
    plot_curves(info["history"], out / "curves.png")
    notes, protocol = _notes(cfg, split, test)
    chosen = selection_note(info)
    notes += [chosen] if chosen else []
    if corpora:
        notes.append(corpora_note({c["name"]: c["labels"] for c in corpora}, {c["name"]: c["n"] for c in corpora}))
    write_report(out / "report", fold_results, model.labels, f"{corpus} test set", notes=notes,
                 extra={"split": split.kind, "protocol": protocol}, headline=headline(fold_results),
                 same_as=same, by=by)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CorpusError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not any((out / m).exists() for m in RUN_MARKERS):
        raise CorpusError(f"--out {out}: a folder with other files in it, not a persemo run directory; "
                          "choose a new or empty folder")


def _swap_in(stage: Path, out: Path) -> None:
    """Put the finished run directory ``stage`` at ``out``, replacing an earlier run there."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, out)


def run_train(corpus, data: str | Path | None, out: str | Path, cfg: Config, folds: int = 0,
              cache_dir=None, progress: bool = True, log=print, by=()) -> dict:
    """``persemo train``: one split (folds 0) or speaker-grouped k-fold cross-validation (folds >= 2), on a
    corpus or on several (``corpus`` a list of sources, ``data`` None: ``corpora.union.sources``); the report
    also per value of each metadata column of ``by``. Returns the report's ``results`` (and its ``headline``,
    ``same_as`` and ``by``, as ``evaluation.report_markdown`` takes them)."""
    if folds is None or folds == 1 or folds < 0:
        raise CorpusError(f"--folds must be 0 (one split) or at least 2, not {folds}")
    out = Path(out)
    _check_out(out)
    corpus = sources(corpus, data)
    items, _ = load_items(corpus, None, cfg, cache_dir, log, by=by)  # an unknown column: before any training
    by = list(by or ())
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        res = _train_into(stage, corpus, data, cfg, folds, items, cache_dir, progress, log, by)
        _swap_in(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if folds:
        log(f"{folds}-fold report: {out / 'report' / 'report.md'}")
    else:
        log(f"model: {out} (model.safetensors + model.json)")
        log(f"test report: {out / 'report' / 'report.md'} (JSON beside it, confusion matrices "
            f"{out / 'report' / 'confusion_*.png'})")
        log(f"training curves: {out / 'curves.png'}, per-epoch log: {out / 'history.csv'}")
    return {**res, "out": str(out)}


def _corpora_meta(srcs, items: list[Item]) -> tuple[dict[str, list[str]], list[dict] | None]:
    """(corpus name -> its emotions, the model's record of every corpus), both empty/None for one corpus."""
    if len(srcs) < 2:
        return {}, None
    own = corpus_labels([it.utt for it in items])
    return own, [{"name": s.name, "corpus": s.corpus, "data": str(Path(s.data).resolve()), "labels": own[s.name],
                  "n": sum(it.utt.corpus == s.name for it in items)} for s in srcs]


def _train_into(out: Path, corpus, data, cfg: Config, folds: int, items: list[Item], cache_dir, progress,
                log, by: list[str]) -> dict:
    srcs = sources(corpus, data)
    own, corpora = _corpora_meta(srcs, items)
    corpus, data = ("+".join(s.name for s in srcs), None) if corpora else (srcs[0].corpus, srcs[0].data)
    utts = [it.utt for it in items]
    s = cfg.split
    splits = (union_folds(utts, folds, s.kind, s.val_fraction, s.seed, s.text_column) if folds else
              [union_split(utts, s.kind, s.val_fraction, s.test_fraction, s.seed, s.text_column)])
    save_splits(splits, out / "splits_all.json" if folds else out / "splits.json")
    atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=1))
    labels = labels_of(items)
    for sp in splits:
        train, val, test = fold_items(items, sp)
        if not train or not test or (not val and cfg.split.val_fraction > 0):
            raise CorpusError(f"split leaves an empty part (train {len(train)}, val {len(val)}, test {len(test)}); "
                              "the corpus is too small for it")
    dropped = [sp.meta["dropped"] for sp in splits if "dropped" in sp.meta]
    if dropped:
        log(f"{KINDS[splits[0].kind]} split by {splits[0].meta['text_column']}: utterances left out "
            f"(their speaker or text on both sides): {', '.join(map(str, dropped))}" + (" per fold" if folds else ""))
    speaker_mode = cfg.features.normalisation == "speaker"
    run_dir = (lambda sp: out / f"fold{sp.fold}") if folds else (lambda sp: out)

    def fit(cfg_, labels_, train, val, sp):
        return fit_model(cfg_, labels_, train, val, run_dir(sp), progress, log, cache_dir)

    per_fold: dict[str, list[dict]] = {}
    pooled = Pool()
    oof: dict[str, list] = {}
    fold_values: list[dict] = []
    last: dict = {}
    winners: list[str | None] = []
    row_corpus: dict[str, str] = {}  # a joint run's per-corpus rows (pooled keys) -> their corpus
    for fold in cross_validate(cfg, items, splits, labels, fit=fit, cache_dir=cache_dir,
                               shrink_k=cfg.adaptation.shrink if speaker_mode else 0.0, log=log):
        values = column_values(fold.test, by)
        fold_values.append(values)
        rows = protocol_rows(fold.model, fold.probs, speaker_mode)
        results = _metrics(rows, fold.y, labels)
        for name, p in rows.items():
            pooled.add(fold_key(name), fold.y, p, values)
        # a joint run: the model's rows on each corpus's test clips, scored on that corpus's own emotions
        clip_corpus = np.array([it.utt.corpus for it in fold.test])
        for name, (c, y_c, p_c) in corpus_rows({n: rows[n] for n in headline(rows)}, fold.y, clip_corpus, labels,
                                               own).items():
            results[name] = corpus_metrics(y_c, p_c, labels, own[c])
            pooled.add(name, y_c, p_c, {col: [v for v, m in zip(vs, clip_corpus == c) if m] for col, vs in values.items()})
            row_corpus[name] = c
        if fold.model.companion is None and fold.model.selected is None:  # across folds: members at T = 1
            for tag, probs in fold.probs.items():
                oof.setdefault(tag, []).append((fold.y, at_unit_temperature(probs[:-1], fold.model.temperatures)))
        last = {"results": results, "headline": headline(results), "same_as": same_as(rows),
                "by": subsets(fold.y, rows, values, labels)}
        save_run(run_dir(fold.split), fold.model, fold.info, fold.split, results, corpus, str(data),
                 fold.train, fold.val, fold.test, last["same_as"], last["by"], corpora=corpora)
        for name, r in results.items():
            per_fold.setdefault(fold_key(name), []).append(r)
        winners.append(selection_note(fold.info, (fold.split.fold or 0) + 1 if folds else None))
    if not folds:
        return last
    notes = [f"split: {KINDS[splits[0].kind]}, seed {s.seed}; mean ± std over folds, and pooled over all out-of-fold "
             "predictions" + (f"; utterances left out per fold (speaker or text on both sides): "
                              f"{', '.join(map(str, dropped))}" if dropped else "")] + [w for w in winners if w]
    notes += _model_notes(cfg)
    if corpora:
        notes.append(corpora_note(own, {c["name"]: c["n"] for c in corpora}))
    extra: dict = {"folds": len(splits)}
    if oof:
        tag = SPEAKER_TAG if SPEAKER_TAG in oof else SINGLE_TAG
        calibration = cross_fold_calibration(oof, cfg.model.members, labels, tag)
        for t, c in calibration["protocols"].items():
            for name, rs in c["per_fold"].items():
                key = f"{name} [{t}]" if speaker_mode else name
                per_fold[key] = rs
                for y, p, values in zip(c["y"], c["probs"][name], fold_values):
                    pooled.add(key, y, p, values)
        temps = calibration["protocols"][tag]["temperatures"]
        weights = calibration["protocols"][tag]["weights"]
        notes.append("calibrated: each member's softmax temperature fitted (least log-loss) on the other folds' "
                     "test predictions, never on the fold it is applied to (cross-fitted). On all folds' predictions"
                     + (f" ({tag})" if len(calibration["protocols"]) > 1 else "") + ": "
                     + ", ".join(f"{n} {t:.2f}" for n, t in zip(cfg.model.members, temps))
                     + f"; calibration.json; to use them: model.temperatures: [{', '.join(f'{t:.2f}' for t in temps)}]"
                     + (f", and the weights chosen on them (max UAR): model.weights: "
                        f"[{', '.join(f'{w:.2f}' for w in weights)}]" if len(weights) > 1 else ""))
        atomic_write_text(out / "calibration.json", json.dumps(
            {"members": calibration["members"], "temperatures": temps, "weights": weights, "fitted_on": tag,
             "how": calibration["how"] + "; then the vote weights that maximise UAR on them (grid step 0.1)",
             "per_protocol": {t: {"temperatures": c["temperatures"], "weights": c["weights"]}
                              for t, c in calibration["protocols"].items()}}, indent=1))
        extra["calibration"] = {"temperatures": temps, "weights": weights}
        log(f"member temperatures ({', '.join(cfg.model.members)}) fitted on the out-of-fold predictions: "
            f"{', '.join(f'{t:.2f}' for t in temps)}; vote weights on them: {', '.join(f'{w:.2f}' for w in weights)} "
            f"({out / 'calibration.json'})")
    metrics = pooled.metrics(labels)
    metrics.update({k: only_labels(metrics[k], own[c]) for k, c in row_corpus.items()})
    summary = summarise(per_fold, metrics)
    res = {"results": summary, "headline": headline(summary), "same_as": same_as(pooled.probs()),
           "by": pooled.subsets(by, labels)}
    write_report(out / "report", summary, labels, f"{corpus}: {len(splits)}-fold cross-validation",
                 notes=notes, extra=extra, headline=res["headline"], same_as=res["same_as"], by=res["by"])
    return res


def run_evaluate(model_dir: str | Path, corpus: str, data: str | Path, out: str | Path | None = None,
                 noise_snr: float | None = None, noise: str = "white", part: str = "auto", cache_dir=None,
                 log=print, by=(), label_map: dict[str, str] | None = None) -> dict:
    """``persemo evaluate``: a saved model on a corpus (its held-out test part when it was trained on it, or on it
    among others), in the protocols its training report has (a speaker-normalised model: speaker-adapted and
    single utterance), also per value of each metadata column of ``by``. Scored on the emotions the model and the
    corpus share: clips of the corpus's other emotions are skipped, and when the model knows emotions the corpus
    lacks its probabilities are restricted to the shared ones and renormalised; the log and the report name what
    was left out on each side. The corpus's labels are mapped by ``label_map`` when given (each must be in the
    corpus), else by the mapping the model was trained with, where it applies."""
    model, meta, _ = load_model(model_dir)
    cfg = model.cfg
    p, _ = read_meta(model_dir)
    trained = meta.get("trained_on", {}) if isinstance(meta.get("trained_on"), dict) else {}
    joint = [c for c in trained.get("corpora") or [] if isinstance(c, dict)]
    member = next((c for c in joint if c.get("corpus") == corpus and c.get("data") == str(Path(data).resolve())),
                  None)  # this corpus, one of the several the model was trained on
    same = trained.get("corpus") == corpus and trained.get("data") == str(Path(data).resolve()) or member is not None
    if part == "auto":
        part = "test" if same else "all"
    split = None
    if part == "test":
        split_file = p / "splits.json"
        if not split_file.is_file():
            raise CorpusError(f"{p}: no splits.json, so the held-out test part is unknown; use --part all")
        split = load_splits(split_file)[0]
        want = trained.get("split_sha256")
        if want is None:
            log("warning: this model does not record the split it was trained on (saved before persemo "
                "recorded it); the test part is taken from splits.json unchecked")
        elif split.digest() != want:
            raise CorpusError(f"{split_file}: not the split this model was trained on (its digest differs); "
                              "the run directory mixes two runs: retrain, or use --part all")
    items, _ = load_items(corpus, data, cfg, cache_dir, log, label_map, strict_labels=label_map is not None, by=by)
    by = list(by or ())
    if member is not None and len(joint) > 1:  # its ids as the model's split names them
        items = [replace(it, utt=prefixed(it.utt, member["name"])) for it in items]
    own = labels_of(items)  # the corpus's emotions (all of it: a test part may lack one)
    if split is not None:
        keep = set(split.test)
        items = [it for it in items if it.utt.id in keep]
        if not items:
            raise CorpusError("none of the model's test utterances are in this corpus")
    elif same:
        log("warning: evaluating on all of the training corpus: training utterances are included, so these "
            "figures are NOT held-out results")
    labels = list(meta["labels"])  # from here on: the model's
    shared, model_only, unknown = shared_labels(labels, own)
    n_skipped = sum(it.utt.emotion in unknown for it in items)
    if unknown:
        log(f"skipping {n_skipped} utterances with emotions the model does not know: {', '.join(unknown)}")
        items = [it for it in items if it.utt.emotion in labels]
    if not items:
        raise CorpusError("no utterances left to evaluate")
    if model_only:
        log(f"leaving out the model's emotions {corpus} does not have: {', '.join(model_only)}; scoring the "
            f"{len(shared)} shared ({', '.join(shared)}), the model's probabilities restricted to them and renormalised")
    shrink_k = float(meta.get("adaptation", {}).get("shrink_k", 0.0) or 0.0)  # as predict does
    stats = held_out_statistics(cfg, model, items, cache_dir, shrink_k) if model.adaptable else None
    index = {l: i for i, l in enumerate(shared)}
    y = np.array([index[it.utt.emotion] for it in items])
    probs = {SINGLE_TAG: predict_items(model, items, cfg, None, noise_snr=noise_snr, noise=noise)}
    if stats is not None:
        probs[SPEAKER_TAG] = predict_items(model, items, cfg, stats, noise_snr=noise_snr, noise=noise)
    rows = protocol_rows(model, probs, model.adaptable)
    if model_only:
        rows = {name: restrict_probs(p, labels, shared) for name, p in rows.items()}
    results = _metrics(rows, y, shared)
    res = {"results": results, "headline": headline(results), "same_as": same_as(rows),
           "by": subsets(y, rows, column_values(items, by), shared)}
    cond = "clean" if noise_snr is None else f"{noise} noise at {noise_snr:g} dB SNR"
    title = f"{corpus} ({part} part, {cond}" + (f"; the {len(shared)} shared emotions)" if model_only else ")")
    left_out = {"model_labels": model_only, "corpus_labels": unknown, "skipped_utterances": n_skipped}
    notes = [f"the model's emotions {corpus} does not have, left out (its probabilities restricted to the shared "
             f"ones and renormalised): {', '.join(model_only)}"] if model_only else []
    notes += [f"{corpus}'s emotions the model does not know, their {n_skipped} utterances skipped: "
              f"{', '.join(unknown)}"] if unknown else []
    if out is not None:
        write_report(out, results, shared, title, notes=_model_notes(cfg) + notes, headline=res["headline"],
                     same_as=res["same_as"], by=res["by"],
                     extra={"part": part, "noise_snr": noise_snr, "noise": noise, "left_out": left_out})
    return {"title": title, **res, "labels": shared, "left_out": left_out}


__all__ = ["SELECTED_ROW", "fit_model", "labels_of", "load_items", "pair_with_companion", "result_rows",
           "run_evaluate", "run_train", "save_run", "speaker_statistics"]
