"""End-to-end jobs on top of the library: train (one split or k folds) and evaluate a saved model.

The CLI, ``make demo`` and the benchmarks call these functions.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from .artifact import load_model, read_meta, save_model
from .config import Config
from .corpora import scan_corpus
from .corpora.base import CorpusError, atomic_write_text
from .evaluation import compute_metrics, plot_curves, summarise_folds, write_report
from .prepare import Item, prepare
from .splits import Split, check_speaker_independent, load_splits, make_folds, make_split, save_splits
from .training import fold_statistics, predict_items, speaker_statistics, train_ensemble, write_history

PROTOCOL_SINGLE = "single utterance"


def load_items(corpus: str, data: str | Path, cfg: Config, cache_dir=None, log=print) -> tuple[list[Item], list]:
    """Scan and prepare a corpus; problems are reported and skipped. Raises if nothing is usable."""
    scan = scan_corpus(corpus, data, durations=False)
    if not scan.utterances:
        raise CorpusError(f"{corpus}: no usable utterances found under {data}"
                          + (f" ({len(scan.problems)} problem(s), e.g. {scan.problems[0].path}: "
                             f"{scan.problems[0].reason})" if scan.problems else ""))
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
    return prep.items, problems


def labels_of(items: list[Item]) -> list[str]:
    from .corpora.base import EMOTIONS, EXTRA_EMOTIONS

    present = {it.utt.emotion for it in items}
    order = [e for e in EMOTIONS + EXTRA_EMOTIONS if e in present]
    return order + sorted(present - set(order))


SPEAKER_TAG = "speaker-adapted"
SINGLE_TAG = "single utterance"


def _evaluate(model, items: list[Item], cfg: Config, labels: list[str], noise_snr=None, noise="white",
              stats=None, keep: list | None = None) -> dict[str, dict]:
    """Metrics for each member, the equal-weight soft vote and the weighted soft vote (``model``: a
    ``FullEnsemble``, every member in config order, or a torch ``Ensemble``). ``keep``, a list, gets
    (labels, member probabilities (M, N, C) at temperature 1) appended, for calibration across folds."""
    from .models.ensemble import PairedEnsemble, as_full, at_unit_temperature

    model = as_full(model)
    index = {l: i for i, l in enumerate(labels)}
    y = np.array([index[it.utt.emotion] for it in items])
    probs = predict_items(model, items, cfg, stats, noise_snr=noise_snr, noise=noise)
    paired = isinstance(model, PairedEnsemble)
    if keep is not None and not paired:
        keep.append((y, at_unit_temperature(probs[:-1], model.temperatures)))
    out = {}
    for i, name in enumerate(model.member_names):
        out[name] = compute_metrics(y, probs[i], labels)
    if paired:  # each model's own vote, then the pair's (the companion's alone without speaker statistics)
        n_a = len(model.adapted.member_names)
        for tag, part, rows in (("speaker model", model.adapted, probs[:n_a]),
                                ("single-utterance model", model.single, probs[n_a:-1])):
            w = part.weights.numpy().astype(np.float64)
            out[f"ensemble ({tag})"] = compute_metrics(y, np.tensordot(w / w.sum(), rows, axes=1), labels)
        out["ensemble (paired)"] = compute_metrics(y, probs[-1], labels)
        return out
    if len(model.member_names) > 1:
        out["ensemble (equal)"] = compute_metrics(y, probs[:-1].mean(0), labels)
        w = model.weights.numpy()
        out["ensemble (weighted " + "/".join(f"{x:.1f}" for x in w) + ")"] = compute_metrics(y, probs[-1], labels)
    return out


def cross_fold_calibration(oof: dict[str, list], members, labels: list[str]) -> dict:
    """Member temperatures from k folds' test predictions (``train_once``'s ``oof``: protocol -> [(y, (M, N, C)
    probabilities at T = 1)] per fold).

    Per protocol: the temperatures fitted on every fold's predictions pooled, then the vote weights that
    maximise UAR on the calibrated pooled predictions (for a final model's ``model.temperatures`` and
    ``model.weights``), and per fold the metrics of the equal and the weighted vote with temperatures
    and weights fitted on the *other* folds only ("cross-fitted": no fold's labels calibrate or weigh
    its own predictions). ``fitted_on`` names the protocol the model is meant for (speaker-adapted when present).
    """
    from .models.ensemble import soften
    from .training import fit_vote

    members = list(members)
    out: dict = {"members": members, "protocols": {},
                 "fitted_on": SPEAKER_TAG if SPEAKER_TAG in oof else SINGLE_TAG,
                 "how": "least log-loss softmax temperature per member on out-of-fold test predictions"}
    def fit(folds):  # temperatures, then vote weights on the calibrated probabilities (max UAR)
        return fit_vote(np.concatenate([f[1] for f in folds], axis=1), np.concatenate([f[0] for f in folds]), labels)

    for tag, folds in oof.items():
        temps, weights = fit(folds)
        per_fold: dict[str, list] = {}
        if len(folds) > 1 and len(members) > 1:
            for k, (y, probs) in enumerate(folds):
                ts, ws = fit([f for j, f in enumerate(folds) if j != k])
                cal = np.stack([soften(probs[m], t) for m, t in enumerate(ts)])
                per_fold.setdefault("ensemble (equal, calibrated)", []).append(compute_metrics(y, cal.mean(0), labels))
                per_fold.setdefault("ensemble (weighted, calibrated)", []).append(
                    compute_metrics(y, np.tensordot(np.array(ws), cal, axes=1), labels))
        out["protocols"][tag] = {"temperatures": temps, "weights": weights, "per_fold": per_fold}
    return out


def _by_ids(items: list[Item], ids: list[str]) -> list[Item]:
    keep = set(ids)
    return [it for it in items if it.utt.id in keep]


def train_once(cfg: Config, items: list[Item], split: Split, out: Path, corpus: str, data: str,
               progress: bool = True, log=print, cache_dir=None, oof: dict | None = None) -> dict:
    """Train on one split, save the model into ``out`` and its test report into ``out/report``.
    ``oof`` (a dict) collects the test labels and member probabilities per protocol (``_evaluate``'s keep)."""
    labels = labels_of(items)
    train, val, test = (_by_ids(items, split.train), _by_ids(items, split.val), _by_ids(items, split.test))
    if not train or not test or (not val and cfg.split.val_fraction > 0):
        raise CorpusError(f"split leaves an empty part (train {len(train)}, val {len(val)}, test {len(test)}); "
                          "the corpus is too small for it")
    out.mkdir(parents=True, exist_ok=True)
    model, info = train_ensemble(cfg, labels, train, val, out, progress, log, cache_dir=cache_dir)
    history = dict(info["history"])
    if cfg.features.normalisation == "speaker" and cfg.features.single_companion:
        from .models.ensemble import SINGLE_PREFIX, PairedEnsemble

        log("training the single-utterance companion (features.single_companion)")
        cfg_u = cfg.replace(features={"normalisation": "utterance", "enrolment": None})
        single, info_u = train_ensemble(cfg_u, labels, train, val, out / "single_training", progress, log,
                                        cache_dir=cache_dir)
        model = PairedEnsemble(model, single)
        info = {**info, "companion": {k: v for k, v in info_u.items() if k != "history"}}
        history.update({SINGLE_PREFIX + k: v for k, v in info_u["history"].items()})
    stats = None
    if cfg.features.normalisation == "speaker":
        # test speakers' own (smile too, if any), shrunk as predict does
        stats = fold_statistics(cfg, train, val, test, model, cache_dir, cfg.features.speaker_shrink)
    from .models.ensemble import PairedEnsemble

    collect = oof is not None and not isinstance(model, PairedEnsemble)  # paired models are not calibrated
    keep = (lambda tag: oof.setdefault(tag, [])) if collect else (lambda tag: None)
    results = _evaluate(model, test, cfg, labels, stats=stats, keep=keep(SPEAKER_TAG if stats is not None else
                                                                          SINGLE_TAG))
    if stats is not None:  # both protocols, the same test utterances, side by side
        single = _evaluate(model, test, cfg, labels, keep=keep(SINGLE_TAG))  # the model's training statistics
        results = {**{f"{k} [{SPEAKER_TAG}]": v for k, v in results.items()},
                   **{f"{k} [{SINGLE_TAG}]": v for k, v in single.items()}}
    meta = {"trained_on": {"corpus": corpus, "data": str(Path(data).resolve()), "split": split.kind,
                           "split_description": split.description, "n_train": len(train), "n_val": len(val),
                           "n_test": len(test)},
            "training": {k: v for k, v in info.items() if k != "history"}}
    save_model(out, model, extra_meta=meta)
    save_splits(split, out / "splits.json")
    write_history(history, out / "history.csv")
    plot_curves(history, out / "curves.png")
    protocol = "both, side by side: speaker-adapted (all of the speaker's test utterances, no labels) and " \
        "single utterance" if cfg.features.normalisation == "speaker" else PROTOCOL_SINGLE
    notes = [f"split: {split.description}, seed {split.seed}; test: {len(test)} utterances of "
             f"{len({it.utt.speaker for it in test})} speakers", f"protocol: {protocol}"]
    if cfg.features.normalisation == "speaker":
        n_min = min(sum(it.utt.speaker == s for it in test) for s in {it.utt.speaker for it in test})
        enrol = cfg.features.enrolment
        source = (f"their own test utterances (at least {n_min} per speaker), no labels" if enrol is None else
                  f"their own {enrol} test utterances only (enrolment; all of theirs where they have none)")
        notes.append(f"[{SPEAKER_TAG}]: each test speaker's statistics from {source}, shrunk toward the "
                     f"training statistics by n/(n+{cfg.features.speaker_shrink:g}); transductive over the "
                     f"speaker's audio. [{SINGLE_TAG}]: the same model and utterances with its training statistics")
        if cfg.features.single_companion:
            notes.append("paired model (features.single_companion): 'single/' rows are the single-utterance "
                         f"companion; 'ensemble (paired)' is the mean of both models' votes in [{SPEAKER_TAG}] and "
                         f"the companion's vote alone in [{SINGLE_TAG}]")
    write_report(out / "report", results, labels, f"{corpus} test set", notes=notes,
                 extra={"split": split.kind, "protocol": protocol})
    return results


def run_train(corpus: str, data: str | Path, out: str | Path, cfg: Config, folds: int = 0,
              cache_dir=None, progress: bool = True, log=print) -> dict:
    """``persemo train``: one split (folds 0) or speaker-grouped k-fold cross-validation."""
    out = Path(out)
    items, _ = load_items(corpus, data, cfg, cache_dir, log)
    utts = [it.utt for it in items]
    s = cfg.split
    if folds and folds > 1:
        splits = make_folds(utts, folds, s.kind, s.val_fraction, s.seed)
    else:
        splits = [make_split(utts, s.kind, s.val_fraction, s.test_fraction, s.seed)]
    for sp in splits:
        check_speaker_independent(sp, utts)
    out.mkdir(parents=True, exist_ok=True)
    save_splits(splits, out / "splits_all.json" if len(splits) > 1 else out / "splits.json")
    atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=1))
    if len(splits) == 1:
        res = train_once(cfg, items, splits[0], out, corpus, str(data), progress, log, cache_dir)
        log(f"model: {out} (model.safetensors + model.json)")
        log(f"test report: {out / 'report' / 'report.md'} (JSON beside it, confusion matrices "
            f"{out / 'report' / 'confusion_*.png'})")
        log(f"training curves: {out / 'curves.png'}, per-epoch log: {out / 'history.csv'}")
        return {"results": res, "out": str(out)}
    per_fold: dict[str, list[dict]] = {}
    oof: dict[str, list] = {}
    for sp in splits:
        log(f"fold {sp.fold + 1}/{len(splits)}")
        res = train_once(cfg, items, sp, out / f"fold{sp.fold}", corpus, str(data), progress, log, cache_dir, oof)
        for name, r in res.items():
            key = re.sub(r"^ensemble \(weighted [^)]*\)", "ensemble (weighted)", name)
            per_fold.setdefault(key, []).append(r)
    labels = labels_of(items)
    notes = [f"split: {splits[0].description}, seed {s.seed}; mean ± std over folds"]
    if not oof:  # paired models (a speaker model with its companion): not calibrated across folds
        summary = {name: summarise_folds(rs) for name, rs in per_fold.items()}
        write_report(out / "report", summary, labels, f"{corpus}: {len(splits)}-fold cross-validation",
                     notes=notes, extra={"folds": len(splits)})
        log(f"{len(splits)}-fold report: {out / 'report' / 'report.md'}")
        return {"results": summary, "out": str(out)}
    calibration = cross_fold_calibration(oof, cfg.model.members, labels)
    for tag, c in calibration["protocols"].items():
        suffix = f" [{tag}]" if len(calibration["protocols"]) > 1 else ""
        for name, rs in c["per_fold"].items():
            per_fold[name + suffix] = rs
    summary = {name: summarise_folds(rs) for name, rs in per_fold.items()}
    tag = calibration["fitted_on"]
    temps = calibration["protocols"][tag]["temperatures"]
    weights = calibration["protocols"][tag]["weights"]
    notes.append("calibrated: each member's softmax temperature fitted (least log-loss) on the other folds' test "
                 "predictions, never on the fold it is applied to (cross-fitted). On all folds' predictions"
                 + (f" ({tag})" if len(calibration["protocols"]) > 1 else "") + ": "
                 + ", ".join(f"{n} {t:.2f}" for n, t in zip(cfg.model.members, temps))
                 + f"; calibration.json; to use them: model.temperatures: [{', '.join(f'{t:.2f}' for t in temps)}]"
                 + (f", and the weights chosen on them (max UAR): model.weights: [{', '.join(f'{w:.2f}' for w in weights)}]"
                    if len(weights) > 1 else ""))
    atomic_write_text(out / "calibration.json", json.dumps(
        {"members": calibration["members"], "temperatures": temps, "weights": weights, "fitted_on": tag,
         "how": calibration["how"] + "; then the vote weights that maximise UAR on them (grid step 0.1)",
         "per_protocol": {t: {"temperatures": c["temperatures"], "weights": c["weights"]}
                          for t, c in calibration["protocols"].items()}}, indent=1))
    write_report(out / "report", summary, labels, f"{corpus}: {len(splits)}-fold cross-validation",
                 notes=notes, extra={"folds": len(splits), "calibration": {"temperatures": temps, "weights": weights}})
    log(f"{len(splits)}-fold report: {out / 'report' / 'report.md'}")
    log(f"member temperatures ({', '.join(cfg.model.members)}) fitted on the out-of-fold predictions: "
        f"{', '.join(f'{t:.2f}' for t in temps)}; vote weights on them: {', '.join(f'{w:.2f}' for w in weights)} "
        f"({out / 'calibration.json'})")
    return {"results": summary, "out": str(out)}


def run_evaluate(model_dir: str | Path, corpus: str, data: str | Path, out: str | Path | None = None,
                 noise_snr: float | None = None, noise: str = "white", part: str = "auto", cache_dir=None,
                 log=print) -> dict:
    """``persemo evaluate``: a saved model on a corpus (its held-out test part when it was trained on it)."""
    model, meta, _ = load_model(model_dir)
    cfg = model.cfg
    items, _ = load_items(corpus, data, cfg, cache_dir, log)
    p, _ = read_meta(model_dir)
    trained = meta.get("trained_on", {})
    same = trained.get("corpus") == corpus and trained.get("data") == str(Path(data).resolve())
    if part == "auto":
        part = "test" if same else "all"
    if part == "test":
        split_file = p / "splits.json"
        if not split_file.is_file():
            raise CorpusError(f"{p}: no splits.json, so the held-out test part is unknown; use --part all")
        items = _by_ids(items, load_splits(split_file)[0].test)
        if not items:
            raise CorpusError("none of the model's test utterances are in this corpus")
    elif same:
        log("warning: evaluating on all of the training corpus: training utterances are included, so these "
            "figures are NOT held-out results")
    labels = list(meta["labels"])
    unknown = sorted({it.utt.emotion for it in items} - set(labels))
    if unknown:
        log(f"skipping utterances with emotions the model does not know: {', '.join(unknown)}")
        items = [it for it in items if it.utt.emotion in labels]
    if not items:
        raise CorpusError("no utterances left to evaluate")
    shrink_k = float(meta.get("adaptation", {}).get("shrink_k", 0.0) or 0.0)  # as predict does
    stats = (speaker_statistics(items, model, cache_dir, shrink_k, cfg.features.enrolment)
             if cfg.features.normalisation == "speaker" else None)
    results = _evaluate(model, items, cfg, labels, noise_snr, noise, stats)
    cond = "clean" if noise_snr is None else f"{noise} noise at {noise_snr:g} dB SNR"
    title = f"{corpus} ({part} part, {cond})"
    if out is not None:
        write_report(out, results, labels, title, extra={"part": part, "noise_snr": noise_snr, "noise": noise})
    return {"title": title, "results": results, "labels": labels}
