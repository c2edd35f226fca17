"""Cross-corpus and joint training: EmoDB (German, 7 emotions) and ASED (Amharic, 5), every row beside the peers.

    python -m benchmarks cross-corpus [--emodb PATH] [--ased PATH] [--config FILE] [--folds 5] [--seed 0]
                                      [--by shared_text] [--quick] [--tag NAME] [--results DIR]

Rows:
  cross-corpus: train on EmoDB (all speakers) -> test on ASED (all), and ASED -> EmoDB, both on the five
      emotions they share (anger, fear, happiness, neutral, sadness): the training corpus is restricted to
      them too (EmoDB's boredom and disgust clips are left out of training), so chance is 20 % UAR.
  joint: EmoDB + ASED with speaker-grouped k-fold within each corpus (``persemo.joint.union_folds``: fold f
      of the union is fold f of each corpus), one model on both corpora's training speakers, tested on each
      corpus's held-out speakers with its probabilities restricted to that corpus's emotions
      (``evaluation.restrict_probs``); beside it each corpus trained alone on the same folds.
Every model row sits beside the peers trained on the same data: openSMILE eGeMAPSv02 and ComParE_2016
functionals + RBF SVM (``benchmarks.peers.peer_svm``; its decision restricted to the corpus's emotions), and
a logistic regression on eGeMAPSv02 (C by inner cross-validation grouped by speaker).
The model is ``--config`` (default benchmarks/configs/selected.yaml: the recommended nested selection with the
local Whisper weights), in the single-utterance protocol. ``--by shared_text`` breaks ASED's figures down by
whether the sentence was spoken in every emotion (the words do not give the emotion away) or not.
``--quick``: 6 speakers per corpus, 3 clips per speaker and emotion, 2 folds, a smile member on eGeMAPSv02
and the eGeMAPS peers only: a plumbing check (tests/benchmarks/test_cross_corpus.py), not a result.
Writes results/cross_corpus[_TAG].json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from persemo.cache import default_cache_dir
from persemo.config import Config, load_config
from persemo.corpora import scan_corpus
from persemo.corpora.union import combine, corpus_labels, ordered_labels
from persemo.evaluation import by_subset, compute_metrics, markdown_table, restrict_probs, subset_table
from persemo.joint import union_folds, widen
from persemo.prepare import prepare
from persemo.selection import fit_selected
from persemo.training import predict_items

from .common import EMODB, POOLED_NOTE, RESULTS, SHARED, Rows, command_line, machine_info, write_results
from .peers import PEERS, peer_svm

ASED = SHARED / "data" / "ased"
SELECTED = Path(__file__).resolve().parent / "configs" / "selected.yaml"
SHARED_FIVE = ["anger", "fear", "happiness", "neutral", "sadness"]
MODEL_ROW = "model"
LOGREG = "eGeMAPSv02 + logistic regression"
LOGREG_C = (0.01, 0.1, 1.0)
QUICK = {"speakers": 6, "per_cell": 3, "folds": 2}
QUICK_CONFIG = {"model": {"members": ["smile"], "smile": {"feature_set": "eGeMAPSv02", "noise_copies": 0}},
                "selection": {"candidates": []}, "split": {"val_fraction": 0}, "train": {"num_threads": 1}}


def subset(utts, speakers: int, per_cell: int):
    """The first ``speakers`` speakers of each corpus (sorted ids), at most ``per_cell`` clips per speaker and emotion."""
    keep_spk = {}
    for u in utts:
        keep_spk.setdefault(u.corpus, set()).add(u.speaker)
    keep_spk = {c: set(sorted(s)[:speakers]) for c, s in keep_spk.items()}
    seen, out = Counter(), []
    for u in utts:
        if u.speaker in keep_spk[u.corpus] and seen[u.speaker, u.emotion] < per_cell:
            seen[u.speaker, u.emotion] += 1
            out.append(u)
    return out


def load(emodb: Path, ased: Path, cfg: Config, quick: bool, log=print):
    """Both corpora's prepared items (ids and speakers prefixed ``emodb:``/``ased:``), problems skipped."""
    scan = combine([(c, scan_corpus(c, p, durations=False)) for c, p in (("emodb", emodb), ("ased", ased))])
    utts = subset(scan.utterances, QUICK["speakers"], QUICK["per_cell"]) if quick else scan.utterances
    prep = prepare(utts, cfg.features, default_cache_dir())
    for p in (scan.problems + prep.problems)[:10]:
        log(f"skipped {p.path}: {p.reason}")
    log(f"prepared {len(prep.items)} clips: " + ", ".join(
        f"{c} {sum(it.utt.corpus == c for it in prep.items)}" for c in ("emodb", "ased")))
    return prep.items


def functionals(items, feature_sets, log=print) -> dict[str, dict[str, np.ndarray]]:
    """Feature set -> utterance id -> functionals (cached on disk)."""
    from persemo.smile import extract_functionals

    out = {}
    for fs in feature_sets:
        t = time.perf_counter()
        X, _, problems = extract_functionals([it.utt for it in items], fs, default_cache_dir(), threads=2)
        if problems:
            raise SystemExit(f"openSMILE failed on {len(problems)} files, e.g. {problems[0]}")
        out[fs] = dict(zip([it.utt.id for it in items], X))
        log(f"{fs}: {X.shape} in {time.perf_counter() - t:.0f} s")
    return out


def peer_logreg(X: np.ndarray, y: np.ndarray, groups: np.ndarray):
    """StandardScaler + multinomial logistic regression (class-balanced), C by inner GroupKFold (UAR)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
    search = GridSearchCV(pipe, {"logisticregression__C": list(LOGREG_C)}, scoring="balanced_accuracy",
                          cv=GroupKFold(n_splits=min(4, len(np.unique(groups)))))
    return search.fit(X, y, groups=groups).best_estimator_


def peer_probs(clf, X: np.ndarray, labels: list[str], keep: list[str]) -> np.ndarray:
    """(N, len(keep)): the peer's answer among the emotions ``keep`` only. The SVM's own decision (one-hot) is the
    best-scoring of them; the logistic regression's probabilities are restricted to them and renormalised."""
    classes = [labels[c] for c in clf.classes_]
    if hasattr(clf, "predict_proba"):  # an SVC without probability=True has none
        return restrict_probs(widen(clf.predict_proba(X), classes, labels), labels, keep)
    d = clf.decision_function(X)
    scores = np.full((len(X), len(labels)), -np.inf)
    scores[:, [labels.index(c) for c in classes]] = np.stack([-d, d], 1) if d.ndim == 1 else d
    cols = [labels.index(k) for k in keep]
    return np.eye(len(keep))[scores[:, cols].argmax(1)]


def fit_peers(train, labels, feats, peers) -> dict:
    y = np.array([labels.index(it.utt.emotion) for it in train])
    g = np.array([it.utt.speaker for it in train])
    out = {}
    for name, fs in peers.items():
        X = np.stack([feats[fs][it.utt.id] for it in train])
        out[name] = peer_logreg(X, y, g) if name == LOGREG else peer_svm(X, y, g)[0]
    return out


def fit_model(cfg, labels, train, val, log=print):
    model, info = fit_selected(cfg, labels, train, val, None, progress=False, log=log, cache_dir=default_cache_dir())
    return model, info


def predict_rows(model, peers, test, labels, keep, feats, peer_sets, cfg) -> dict[str, np.ndarray]:
    """Row -> (N, len(keep)) on ``test``: the model's vote restricted to ``keep``, and each peer's answer among them."""
    rows = {MODEL_ROW: restrict_probs(predict_items(model, test, cfg)[-1], labels, keep)}
    for name, clf in peers.items():
        X = np.stack([feats[peer_sets[name]][it.utt.id] for it in test])
        rows[name] = peer_probs(clf, X, labels, keep)
    return rows


def cross(items, cfg, feats, peer_sets, by: list[str], log=print) -> dict:
    """Train on one corpus, test on the other, both restricted to the five shared emotions."""
    out = {}
    for src, dst in (("emodb", "ased"), ("ased", "emodb")):
        train = [it for it in items if it.utt.corpus == src and it.utt.emotion in SHARED_FIVE]
        test = [it for it in items if it.utt.corpus == dst and it.utt.emotion in SHARED_FIVE]
        labels = ordered_labels({it.utt.emotion for it in train})
        t = time.perf_counter()
        model, info = fit_model(cfg, labels, train, [], log)
        peers = fit_peers(train, labels, feats, peer_sets)
        rows = predict_rows(model, peers, test, labels, labels, feats, peer_sets, cfg)
        y = np.array([labels.index(it.utt.emotion) for it in test])
        res = {name: compute_metrics(y, p, labels) for name, p in rows.items()}
        sub = {col: {name: {"all": res[name], **by_subset(y, p, [it.utt.meta.get(col) for it in test], labels)}
                     for name, p in rows.items()} for col in by if any(it.utt.meta.get(col) for it in test)}
        out[f"{src} -> {dst}"] = {"labels": labels, "n_train": len(train), "n_test": len(test),
                                  "winner": (info.get("selection") or {}).get("winner"), "results": res, "by": sub,
                                  "seconds": time.perf_counter() - t}
        log(f"{src} -> {dst}: " + ", ".join(f"{n} {100 * r['uar']:.1f}" for n, r in res.items()))
    return out


def joint(items, cfg, feats, peer_sets, folds: int, seed: int, by: list[str], log=print) -> dict:
    """EmoDB + ASED k-fold within each corpus: the joint model and peers beside each corpus trained alone."""
    own = corpus_labels([it.utt for it in items])
    union = ordered_labels({it.utt.emotion for it in items})
    splits = union_folds([it.utt for it in items], folds, "speaker", cfg.split.val_fraction, seed)
    by_id = {it.utt.id: it for it in items}
    tables = {c: Rows(own[c]) for c in own}
    kept: dict[str, dict[str, list]] = {c: {} for c in own}  # corpus -> row -> [(y, probs, meta)]
    for sp in splits:
        train, val, test = ([by_id[i] for i in getattr(sp, part)] for part in ("train", "val", "test"))
        model, _ = fit_model(cfg, union, train, val, log)
        peers = fit_peers(train + val, union, feats, peer_sets)
        for c in own:
            tr_c, va_c = [it for it in train if it.utt.corpus == c], [it for it in val if it.utt.corpus == c]
            te_c = [it for it in test if it.utt.corpus == c]
            y = np.array([own[c].index(it.utt.emotion) for it in te_c])
            rows = {f"joint: {n}": p for n, p in predict_rows(model, peers, te_c, union, own[c], feats, peer_sets,
                                                              cfg).items()}
            alone, _ = fit_model(cfg, own[c], tr_c, va_c, log)
            alone_peers = fit_peers(tr_c + va_c, own[c], feats, peer_sets)
            rows.update({f"alone: {n}": p for n, p in predict_rows(alone, alone_peers, te_c, own[c], own[c], feats,
                                                                    peer_sets, cfg).items()})
            line = []
            for name, p in rows.items():
                line.append(f"{name} {100 * tables[c].add(name, y, p)['uar']:.1f}")
                kept[c].setdefault(name, []).append((y, p, [dict(it.utt.meta) for it in te_c]))
            log(f"fold {sp.fold + 1}/{folds} {c} ({len(te_c)} test clips): " + ", ".join(line))
    out = {}
    for c in own:
        sub = {}
        for col in by:
            rows = {}
            for name, parts in kept[c].items():
                y = np.concatenate([p[0] for p in parts])
                p = np.concatenate([p[1] for p in parts])
                vals = [m.get(col) for part in parts for m in part[2]]
                if any(vals):
                    rows[name] = {"all": compute_metrics(y, p, own[c]), **by_subset(y, p, vals, own[c])}
            if rows:
                sub[col] = rows
        out[c] = {"labels": own[c], "summary": tables[c].summary(), "by": sub}
    return {"folds": folds, "union": union, "corpora": out,
            "test_speakers": [sorted({by_id[i].utt.speaker for i in sp.test}) for sp in splits]}


def targets(res: dict) -> list[str]:
    """The issue's targets, checked on pooled UAR: joint at or above alone (within 1 point), cross-corpus above
    the peers trained on the same data."""
    lines = []
    for c, r in (res["joint"] or {}).get("corpora", {}).items():
        s = r["summary"]
        j, a = s[f"joint: {MODEL_ROW}"]["pooled"]["uar"], s[f"alone: {MODEL_ROW}"]["pooled"]["uar"]
        lines.append(f"joint on {c}'s held-out speakers: {100 * j:.1f} against {100 * a:.1f} alone "
                     f"({100 * (j - a):+.1f}): {'met' if j >= a - 0.01 else 'NOT met'} (at or above alone, within 1 point)")
    for d, r in res["cross"].items():
        m = r["results"][MODEL_ROW]["uar"]
        best = max((v["uar"], n) for n, v in r["results"].items() if n != MODEL_ROW)
        lines.append(f"{d}: model {100 * m:.1f} against the best peer {best[1]} {100 * best[0]:.1f}: "
                     f"{'met' if m > best[0] else 'NOT met'} (above the peers)")
    return lines


def render(res: dict, cmd: str) -> str:
    md = [f"## Cross-corpus and joint training: EmoDB and ASED{' (--quick: a plumbing check, not a result)' if res['quick'] else ''}",
          "", f"Command: `{cmd}` ({res['wall_seconds'] / 60:.1f} min on this machine). Model: {res['model']}; "
          "single-utterance protocol. Peers trained on the same data as each model row. The SVM peers give hard "
          "decisions (restricted to the test corpus's emotions).", "", "Targets:", ""]
    md += [f"- {line}" for line in targets(res)] + ["", "### Cross-corpus, on the five shared emotions", "",
           "The training corpus restricted to the five shared emotions too (EmoDB's boredom and disgust left out); "
           "all speakers of the training corpus, all of the test corpus; chance: 20 % UAR.", ""]
    for d, r in res["cross"].items():
        md += [markdown_table(r["results"], f"{d} (train {r['n_train']} clips, test {r['n_test']})"
                              + (f"; selected: {r['winner']}" if r["winner"] else "")), ""]
        for col, rows in r["by"].items():
            md += [f"By `{col}`:", "", subset_table(rows, col), ""]
    j = res["joint"]
    if not j:
        return "\n".join(md + ["Joint rows not run (`--parts cross`)."]) + "\n"
    md += [f"### Joint: EmoDB + ASED, speaker-grouped {j['folds']}-fold within each corpus", "",
           "'joint': one model on both corpora's training speakers of the fold, its probabilities on a corpus's "
           "held-out speakers restricted to that corpus's emotions and renormalised; 'alone': trained on that "
           "corpus's training speakers only (the same folds). " + POOLED_NOTE, ""]
    for c, r in j["corpora"].items():
        md += [markdown_table(r["summary"], f"{c} held-out speakers ({', '.join(r['labels'])})"), ""]
        for col, rows in r["by"].items():
            md += [f"By `{col}` (pooled over folds):", "", subset_table(rows, col), ""]
    return "\n".join(md) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emodb", type=Path, default=EMODB)
    ap.add_argument("--ased", type=Path, default=ASED)
    ap.add_argument("--config", type=Path, default=None, help="the model (default: benchmarks/configs/selected.yaml)")
    ap.add_argument("--folds", type=int, default=None, help="joint rows: k-fold within each corpus (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--by", default="shared_text", help="comma-separated metadata columns to break figures down by")
    ap.add_argument("--quick", action="store_true", help="a few speakers, a small fixed model: a plumbing check")
    ap.add_argument("--parts", default="cross,joint",
                    help="which rows: cross (each corpus -> the other), joint (k-fold, joint beside alone), or both")
    ap.add_argument("--tag", default="")
    ap.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    parts = {x.strip() for x in a.parts.split(",") if x.strip()}
    if not parts or parts - {"cross", "joint"}:
        raise SystemExit(f"benchmarks.cross_corpus: --parts takes cross and/or joint, not {a.parts!r}")
    for name, p in (("--emodb", a.emodb), ("--ased", a.ased)):
        if not Path(p).exists():
            raise SystemExit(f"benchmarks.cross_corpus: {name} {p} not found")
    from threadpoolctl import threadpool_limits

    from .emodb import _quiet

    _quiet()
    folds = a.folds or (QUICK["folds"] if a.quick else 5)
    by = [c.strip() for c in a.by.split(",") if c.strip()]
    if a.quick and a.config is None:
        cfg, model_desc = Config().replace(**QUICK_CONFIG), "smile member on eGeMAPSv02 (--quick)"
    else:
        cfg = load_config(a.config or SELECTED)
        model_desc = f"{a.config or SELECTED.relative_to(SELECTED.parents[2])} ({', '.join(cfg.model.members)}" + (
            f"; nested selection among {len(cfg.selection.candidates)} candidates)" if cfg.selection.candidates else ")")
    peer_sets = {"eGeMAPSv02 + SVM": "eGeMAPSv02", LOGREG: "eGeMAPSv02"} if a.quick else {**PEERS, LOGREG: "eGeMAPSv02"}
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        items = load(a.emodb, a.ased, cfg, a.quick)
        feats = functionals(items, sorted(set(peer_sets.values())))
        res = {"cross": cross(items, cfg, feats, peer_sets, by) if "cross" in parts else {},
               "joint": joint(items, cfg, feats, peer_sets, folds, a.seed, by) if "joint" in parts else None}
    cmd = command_line("python -m benchmarks cross-corpus", sys.argv[1:] if argv is None else argv)
    res = {"benchmark": "cross-corpus and joint training, EmoDB and ASED", "command": cmd, "quick": a.quick,
           "model": model_desc, "config": cfg.to_dict(), "peers": peer_sets, "seed": a.seed, "by": by,
           "wall_seconds": time.perf_counter() - t0, "machine": machine_info(), **res}
    res["targets"] = targets(res)
    md = render(res, cmd)
    write_results("cross_corpus" + ("_quick" if a.quick else "") + (f"_{a.tag}" if a.tag else ""), res, md, a.results)
    print(md)


if __name__ == "__main__":
    main()
