"""openSMILE peers: functionals + RBF SVM (ComParE_2016, eGeMAPSv02) and SmileMember, speaker-independent k-fold.

    python -m benchmarks.peers [--corpus emodb|shemo|csv --data PATH] [--folds 5] [--seed 0]
                               [--members logreg,svm,mlp] [--cache DIR] [--results DIR]

The folds are ``persemo.splits.make_folds(utterances, k, kind="speaker", seed)``, the same as
``benchmarks.emodb``'s: each fold's ``test`` part is the test set, ``train`` + ``val`` the training set.
Every hyperparameter is chosen by an inner cross-validation grouped by speaker on the training part only.

Two protocols:
- standard: features standardised with the training folds' statistics;
- speaker-adapted (all utterances of the speaker, no labels): every speaker, train or test, is first
  standardised by the mean and std of their own utterances (``persemo.smile.normalise_by_group``).

Writes benchmarks/results/peers_<corpus>.json and .md: accuracy, macro-F1 and UAR (mean ± std over
folds, and pooled over all folds' out-of-fold predictions), per-class recall, log-loss for the calibrated members, wall times, and each SmileMember's per-fold
test probabilities per utterance id (to combine with the CNN/BiLSTM later without retraining).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from persemo.cache import FeatureCache, default_cache_dir
from persemo.corpora import scan_corpus
from persemo.evaluation import markdown_table, per_class_table
from persemo.smile import (DEFAULT_KIND, MEMBER_KINDS, SmileMember, cache_key, extract_functionals,
                           normalise_by_group, usable)
from persemo.splits import check_speaker_independent, make_folds

from .common import EMODB, POOLED_NOTE, RESULTS, Rows, machine_info, read_results, write_results

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = {"standard": "standard (features standardised on the training folds)",
             "speaker-adapted": "speaker-adapted (all utterances of the speaker, no labels)"}
# The peer SVM's grid (inner GroupKFold over training speakers, scored by UAR).
PEER_C = (1.0, 10.0, 100.0)
PEER_GAMMA_X_DIM = (0.1, 0.3, 1.0, 3.0)  # gamma = value / n_features
PEERS = {"eGeMAPSv02 + SVM": "eGeMAPSv02", "ComParE_2016 + SVM": "ComParE_2016"}


def peer_svm(X: np.ndarray, y: np.ndarray, groups: np.ndarray):
    """StandardScaler + RBF SVC (class_weight='balanced'); C and gamma by grouped inner CV (UAR).

    The grid search is sklearn's ``GridSearchCV`` over the same pipeline, done by hand so that each inner
    fold's squared distances are computed once for the whole grid (a precomputed kernel per gamma): the
    same scaler per inner fold, the same SVMs, the same choice (ties to the first of C, then gamma), in a
    fraction of the time.
    """
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from persemo.smile import sq_distances

    d = X.shape[1]
    cv = GroupKFold(n_splits=min(4, len(np.unique(groups))))
    scores = np.zeros((len(PEER_C), len(PEER_GAMMA_X_DIM)))
    splits = list(cv.split(X, y, groups))
    for tr, te in splits:
        scaler = StandardScaler().fit(X[tr])
        a, b = scaler.transform(X[tr]), scaler.transform(X[te])
        d_tr, d_te = sq_distances(a, a), sq_distances(b, a)
        for j, gx in enumerate(PEER_GAMMA_X_DIM):
            k_tr, k_te = np.exp(-(gx / d) * d_tr), np.exp(-(gx / d) * d_te)
            for i, C in enumerate(PEER_C):
                clf = SVC(C=C, kernel="precomputed", class_weight="balanced").fit(k_tr, y[tr])
                scores[i, j] += balanced_accuracy_score(y[te], clf.predict(k_te)) / len(splits)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    C, gamma = PEER_C[i], PEER_GAMMA_X_DIM[j] / d
    model = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=C, gamma=gamma, class_weight="balanced")).fit(X, y)
    return model, {"C": C, "gamma_x_dim": gamma * d, "inner_uar": float(scores[i, j])}


def peer_svm_reference(X: np.ndarray, y: np.ndarray, groups: np.ndarray):
    """The same search with sklearn's ``GridSearchCV`` (the earlier implementation): the reference
    ``peer_svm`` is tested and benchmarked against. Returns (model, C, gamma x n_features, inner UAR)."""
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    d = X.shape[1]
    grid = {"svc__C": list(PEER_C), "svc__gamma": [g / d for g in PEER_GAMMA_X_DIM]}
    search = GridSearchCV(make_pipeline(StandardScaler(), SVC(kernel="rbf", class_weight="balanced")), grid,
                          scoring="balanced_accuracy", cv=GroupKFold(n_splits=min(4, len(np.unique(groups)))))
    search.fit(X, y, groups=groups)
    p = search.best_params_
    return search.best_estimator_, p["svc__C"], p["svc__gamma"] * d, float(search.best_score_)


def calibration(y: np.ndarray, probs: np.ndarray) -> dict:
    """Log-loss and top-label expected calibration error (10 bins) of probabilities (N, C)."""
    p_true = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)
    conf, correct = probs.max(1), probs.argmax(1) == y
    bins = np.minimum((conf * 10).astype(int), 9)
    ece = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * np.mean(bins == b)
              for b in range(10) if np.any(bins == b))
    return {"log_loss": float(-np.mean(np.log(p_true))), "ece": float(ece)}


def run(corpus: str, data: Path, folds: int, seed: int, members: list[str], cache_dir: Path, log=print) -> dict:
    scan = scan_corpus(corpus, data, durations=False)
    utts = scan.utterances
    extraction, feats, problems = {}, {}, []
    for fs in sorted({*PEERS.values(), "ComParE_2016"}):
        cold = not (Path(cache_dir) / FeatureCache(cache_dir, cache_key(fs)).digest).is_dir()
        t = time.perf_counter()
        X, names, probs = extract_functionals(utts, fs, cache_dir=cache_dir, threads=2)
        extraction[fs] = {"seconds": time.perf_counter() - t, "dim": len(names), "problems": len(probs),
                           "cold_cache": cold}
        log(f"{fs}: {X.shape} in {extraction[fs]['seconds']:.1f} s, {len(probs)} problems")
        problems += [p for p in probs if p.path not in {q.path for q in problems}]
        feats[fs] = {u.id: x for u, x in zip(usable(utts, probs), X)}
    utts = usable(utts, problems)  # the same utterances for every feature set
    labels = scan.labels
    y = np.array([labels.index(u.emotion) for u in utts])
    spk = np.array([u.speaker for u in utts])
    pos = {u.id: i for i, u in enumerate(utts)}
    splits = make_folds(utts, folds, "speaker", seed=seed)
    models = {**{n: f"{fs} functionals, standardised, RBF SVM (C, gamma by inner grouped CV)"
                 for n, fs in PEERS.items()},
              **{f"ComParE_2016 + SmileMember ({k})": f"persemo.smile.SmileMember('{k}')" for k in members}}
    tables = {p: Rows(labels) for p in PROTOCOLS}
    extra = {p: {m: {"seconds": [], "selected": [], "calibration": []} for m in models} for p in PROTOCOLS}
    preds = {p: {m: [] for m in models if "SmileMember" in m} for p in PROTOCOLS}
    fold_records = []
    for protocol in PROTOCOLS:
        for sp in splits:
            check_speaker_independent(sp, utts)
            te = np.array([pos[i] for i in sp.test])
            tr = np.array([pos[i] for i in sp.train + sp.val])
            if protocol == "standard":
                fold_records.append({"fold": sp.fold, "test_speakers": sorted(set(spk[te].tolist())),
                                     "test_ids": [utts[i].id for i in te], "y": y[te].tolist()})
            line = []
            for name in models:
                fs = PEERS.get(name, "ComParE_2016")
                X = np.stack([feats[fs][u.id] for u in utts])
                if protocol == "speaker-adapted":
                    X = normalise_by_group(X, spk)  # each speaker by their own statistics, labels unused
                t = time.perf_counter()
                if name in PEERS:
                    clf, sel = peer_svm(X[tr], y[tr], spk[tr])
                    probs = np.eye(len(labels))[clf.predict(X[te])]  # the SVM's own decisions, one-hot
                else:
                    kind = name.split("(")[1].rstrip(")")
                    m = SmileMember(kind, feature_set=fs).fit(X[tr], y[tr], len(labels), groups=spk[tr], seed=seed)
                    probs = m.predict_proba(X[te])
                    sel = dict(m.chosen)
                    sel["inner_uar"] = m.meta["inner_cv"]["uar"]
                    extra[protocol][name]["calibration"].append(calibration(y[te], probs))
                    preds[protocol][name].append({"fold": sp.fold, "probs": {utts[i].id: np.round(p, 5).tolist()
                                                                             for i, p in zip(te, probs)}})
                extra[protocol][name]["seconds"].append(time.perf_counter() - t)
                extra[protocol][name]["selected"].append(sel)
                line.append(f"{name} {100 * tables[protocol].add(name, y[te], probs)['uar']:.1f}")
            log(f"{protocol} fold {sp.fold + 1}/{folds} (test speakers {sorted(set(spk[te].tolist()))}): UAR "
                + ", ".join(line))
    results = {}
    for protocol in PROTOCOLS:
        results[protocol] = {}
        summary = tables[protocol].summary()
        for name in models:
            rs = tables[protocol].per[name]
            cm = np.sum([r["confusion"] for r in rs], axis=0)
            e = extra[protocol][name]
            results[protocol][name] = {
                "summary": summary[name],
                "pooled_recall": {l: float(cm[i, i] / max(1, cm[i].sum())) for i, l in enumerate(labels)},
                "pooled_confusion": cm.tolist(),
                "per_fold": [{k: r[k] for k in ("n", "accuracy", "macro_f1", "weighted_f1", "uar")} for r in rs],
                "selected": e["selected"],
                "seconds_per_fold": e["seconds"],
                **({"calibration": {k: {"mean": float(np.mean([c[k] for c in e["calibration"]])),
                                        "std": float(np.std([c[k] for c in e["calibration"]])),
                                        "folds": [c[k] for c in e["calibration"]]}
                                    for k in ("log_loss", "ece")}} if e["calibration"] else {}),
            }
    return {"labels": labels, "models": models, "extraction": extraction,
            "problems": [{"path": p.path, "reason": p.reason} for p in problems],
            "n_utterances": len(utts), "n_speakers": len(set(spk.tolist())), "results": results,
            "folds": fold_records,
            "predictions": {p: {m: {"labels": labels, "folds": f} for m, f in d.items()} for p, d in preds.items()}}


def choice_note(res: dict) -> str:
    """The rule behind SmileMember's default kind, checked against these results."""
    kinds: dict[str, dict[str, list[float]]] = {}
    for key in PROTOCOLS:
        for n, r in res["results"][key].items():
            if "calibration" in r:
                k = kinds.setdefault(n.split("(")[1].rstrip(")"), {"uar": [], "ll": []})
                k["uar"].append(r["summary"]["uar"]["mean"])
                k["ll"].append(r["calibration"]["log_loss"]["mean"])
                k.setdefault("std", []).append(r["summary"]["uar"]["std"])
    if len(kinds) < 2:
        return f"Default SmileMember kind: `{res['default_kind']}` (only that kind was run here)."
    best_uar = max(np.mean(v["uar"]) for v in kinds.values())
    near = {k: v for k, v in kinds.items() if np.mean(v["uar"]) >= best_uar - 0.02}
    pick = min(near, key=lambda k: np.mean(near[k]["ll"]))
    txt = ", ".join(f"{k} UAR {100 * np.mean(v['uar']):.1f}, log-loss {np.mean(v['ll']):.3f}" for k, v in kinds.items())
    return (f"Rule for the default kind: among kinds within 2 UAR points of the best (mean over both protocols), "
            f"the lowest mean log-loss. Here: {txt} -> `{pick}`; the default in persemo.smile is "
            f"`{res['default_kind']}`" + ("." if pick == res["default_kind"] else " (they differ: revisit).")
            + f" For scale: the std of UAR over folds is {100 * min(min(v['std']) for v in kinds.values()):.0f}-"
            f"{100 * max(max(v['std']) for v in kinds.values()):.0f} points.")


def render(res: dict, cmd: str, wall: float) -> str:
    labels = res["labels"]
    md = [f"## {res['corpus']}: openSMILE peers, speaker-independent {res['k_folds']}-fold cross-validation", "",
          f"Command: `{cmd}` ({wall / 60:.1f} min on this machine). {res['n_utterances']} utterances, "
          f"{res['n_speakers']} speakers; folds from `make_folds(kind=\"speaker\", seed={res['seed']})` (test = the "
          "fold's test part, training = its train + val parts; no speaker in both). C and gamma (or the "
          "member's hyperparameters) chosen by inner GroupKFold over the training speakers, scored by UAR. "
          + POOLED_NOTE, ""]
    for key, desc in PROTOCOLS.items():
        summ = {n: r["summary"] for n, r in res["results"][key].items()}
        md += [markdown_table(summ, f"Protocol: {desc}"), ""]
    md += ["### Per-class recall, pooled over folds (%)", ""]
    for key, desc in PROTOCOLS.items():
        pooled = {n: {"per_class": {l: {"recall": r["pooled_recall"][l]} for l in labels}}
                  for n, r in res["results"][key].items()}
        md += [f"{desc}:", "", per_class_table(pooled, labels), ""]
    md += ["### SmileMember: calibration of the probabilities (lower is better)", "",
           "| protocol | member | UAR | log-loss | ECE (10 bins) | fit s/fold |", "|---|---|---|---|---|---|"]
    for key in PROTOCOLS:
        for n, r in res["results"][key].items():
            if "calibration" in r:
                c, u = r["calibration"], r["summary"]["uar"]
                md.append(f"| {key} | {n.split('+ ')[1]} | {100 * u['mean']:.1f} ± {100 * u['std']:.1f} | "
                          f"{c['log_loss']['mean']:.3f} ± {c['log_loss']['std']:.3f} | "
                          f"{c['ece']['mean']:.3f} ± {c['ece']['std']:.3f} | "
                          f"{np.mean(r['seconds_per_fold']):.1f} |")
    md += ["", choice_note(res), "", "### Wall times", "",
           "Feature extraction (2 threads): " + ", ".join(
               f"{fs} {e['seconds']:.1f} s ({'cold' if e['cold_cache'] else 'warm'} cache)"
               for fs, e in res["extraction"].items()) + ".", "",
           "| protocol | model | fit + predict s/fold (mean) | total s |", "|---|---|---|---|"]
    for key in PROTOCOLS:
        for n, r in res["results"][key].items():
            s = r["seconds_per_fold"]
            md.append(f"| {key} | {n} | {np.mean(s):.1f} | {np.sum(s):.0f} |")
    md += ["", "BLAS and torch run one thread each: on two cores shared with other jobs, multi-threaded "
           "OpenBLAS was 6-20x slower (its threads spin while waiting for a core).", ""]
    return "\n".join(md) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="emodb", choices=("emodb", "shemo", "csv"))
    ap.add_argument("--data", type=Path, default=None, help="corpus folder or manifest (default: ../shared EmoDB)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--members", default=DEFAULT_KIND,
                    help=f"comma-separated SmileMember kinds to run ({', '.join(MEMBER_KINDS)})")
    ap.add_argument("--cache", type=Path, default=None, help="feature cache folder (default: persemo's)")
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="where the result files go (default: benchmarks/results)")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the Markdown from the existing results JSON (no computation)")
    a = ap.parse_args(argv)
    if a.render:
        path = a.results / f"peers_{a.corpus}.json"
        if not path.is_file():
            raise SystemExit(f"benchmarks.peers: no results to render at {path}")
        res = read_results(path)
        res.setdefault("k_folds", len(res["folds"]))
        md = render(res, res["command"], res["wall_seconds"])
        write_results(f"peers_{a.corpus}", res, md, a.results)
        print(md)
        return
    data = a.data or (EMODB if a.corpus == "emodb" else None)
    if data is None or not Path(data).exists():
        raise SystemExit(f"benchmarks.peers: data not found: {data} (give --data)")
    members = [k.strip() for k in a.members.split(",") if k.strip()]
    bad = [k for k in members if k not in MEMBER_KINDS]
    if bad:
        raise SystemExit(f"benchmarks.peers: unknown member kind(s) {bad}; choose from {', '.join(MEMBER_KINDS)}")
    warnings.filterwarnings("ignore")
    from threadpoolctl import threadpool_limits

    if "mlp" in members:
        import torch

        torch.set_num_threads(1)
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        res = run(a.corpus, Path(data), a.folds, a.seed, members, a.cache or default_cache_dir())
    wall = time.perf_counter() - t0
    cmd = "python -m benchmarks.peers" + (f" --corpus {a.corpus}" if a.corpus != "emodb" else "") + \
        (f" --data {a.data}" if a.data else "") + (f" --folds {a.folds}" if a.folds != 5 else "") + \
        (f" --seed {a.seed}" if a.seed else "") + (f" --members {a.members}" if a.members != DEFAULT_KIND else "")
    # "folds" holds the fold records (test ids, labels), as in benchmarks.emodb; "k_folds" their number
    res = {"benchmark": "openSMILE peers, speaker-independent k-fold", "corpus": a.corpus, "k_folds": a.folds,
           "seed": a.seed, "command": cmd, "default_kind": DEFAULT_KIND, "protocols": PROTOCOLS,
           "peer_grid": {"C": PEER_C, "gamma_x_dim": PEER_GAMMA_X_DIM}, "wall_seconds": wall,
           "machine": machine_info(), **res}
    md = render(res, cmd, wall)
    write_results(f"peers_{a.corpus}", res, md, a.results)
    print(md)


if __name__ == "__main__":
    main()
