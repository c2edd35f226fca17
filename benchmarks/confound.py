"""The speaker-emotion confound benchmark (issue 22; EmoDB by default, ``--corpus ased --data PATH`` for ASED):
training speakers heard in k emotions only.

    python -m benchmarks confound [--data PATH] [--folds 5] [--seed 0] [--ks 1,2,3,all] [--quick]
                                  [--cache DIR] [--results DIR]

Folds: ``persemo.splits.make_folds(utterances, 5, "speaker", 0.0, seed)`` (speakers held out, no
validation part). In each fold's TRAINING speakers only k emotions per speaker are kept (``keep_emotions``:
a seeded draw, each speaker's emotions chosen so that every emotion stays present in the training part);
the test speakers keep all their emotions. With k = 1 the speaker is the easiest thing to learn: a
model that learns voices instead of emotions is punished on the held-out speakers.

Rows, per k, on the same folds and the same functionals (cached by file, ``persemo.smile.extract_functionals``):
- the ``smile`` member trained through ``persemo.training.train_ensemble`` on a config
  ``model: {members: [smile], smile: {...}}, split: {val_fraction: 0}`` (its defaults, and variants);
  single utterance, and speaker-adapted (``features.normalisation: speaker``, no companion);
- the peers: plain scikit-learn standardise + class-balanced logistic regression, C by inner GroupKFold over
  the training speakers (UAR), and standardise + class-balanced RBF SVM (``benchmarks.peers.peer_svm``);
- ``SmileMember`` fitted directly on the clean functionals (the member's classifier without noisy copies),
  and the ablations behind the diagnosis of issue 22 (``ABLATIONS``).

UAR and macro-F1 pooled over all out-of-fold predictions beside the mean ± std over folds; with a
ShEMO-like class distribution too (``--imbalance``: the training part subsampled, neutral and anger
common, fear rare).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .common import EMODB, POOLED_NOTE, RESULTS, Rows, machine_info, write_results

KS: tuple[int | None, ...] = (1, 2, 3, None)  # None: all emotions
PEER_LR_C = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
INNER = 4  # inner GroupKFold folds of the peers
# ShEMO's training distribution (share of clips), as EmoDB's labels: anger, neutral common, fear rare
SHEMO_SHARES = {"anger": 0.34, "neutral": 0.34, "sadness": 0.15, "happiness": 0.07, "boredom": 0.05,
                "disgust": 0.03, "fear": 0.01}


def k_name(k: int | None) -> str:
    return "all" if k is None else str(k)


def keep_emotions(speakers: Sequence[str], emotions: Sequence[str], k: int | None, seed: int) -> np.ndarray:
    """Boolean mask over the rows (speaker, emotion) of a training part: each speaker's rows of k of their
    emotions (all with ``k`` None). Speakers are taken in a seeded order; each first takes, at random, emotions
    no speaker before it took (while it has any), then any of its other emotions: every emotion present in
    the part stays present when speakers x k allows it."""
    speakers, emotions = np.asarray(speakers), np.asarray(emotions)
    if k is None:
        return np.ones(len(speakers), bool)
    rng = np.random.default_rng(seed)
    names = np.unique(speakers)
    covered: set[str] = set()
    keep = np.zeros(len(speakers), bool)
    for s in rng.permutation(names):
        own = sorted(set(emotions[speakers == s].tolist()))
        new = [e for e in own if e not in covered]
        old = [e for e in own if e in covered]
        chosen = (list(rng.permutation(new)) + list(rng.permutation(old)))[:k] if new or old else []
        covered |= set(chosen)
        keep |= (speakers == s) & np.isin(emotions, chosen)
    return keep


def shemo_like(y: np.ndarray, labels: Sequence[str], seed: int, shares: dict | None = None) -> np.ndarray:
    """Row indices of a subsample of ``y`` whose class shares follow ``shares`` (ShEMO's by default): the
    largest subsample with those shares, each class at least 2 clips where it has them."""
    shares = shares or SHEMO_SHARES
    rng = np.random.default_rng(seed)
    counts = {c: int(np.sum(y == i)) for i, c in enumerate(labels)}
    w = {c: shares.get(c, 0.0) for c in labels}
    total = min(counts[c] / w[c] for c in labels if w[c] > 0 and counts[c] > 0)
    rows = []
    for i, c in enumerate(labels):
        idx = np.flatnonzero(y == i)
        n = min(len(idx), max(2, int(round(total * w[c]))))
        rows += rng.permutation(idx)[:n].tolist()
    return np.sort(np.array(rows, np.int64))


# --------------------------------------------------------------------------------------------- peers

def peer_logreg(X: np.ndarray, y: np.ndarray, groups: np.ndarray, grid: Sequence[float] = PEER_LR_C):
    """StandardScaler + LogisticRegression(class_weight='balanced'); C by inner GroupKFold (UAR, the first of
    ties). Returns (fitted pipeline, {"C", "inner_uar"})."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from persemo.smile import row_basis

    splits = list(GroupKFold(n_splits=min(INNER, len(np.unique(groups)))).split(X, y, groups))
    scores = np.zeros(len(grid))
    for tr, te in splits:
        scaler = StandardScaler().fit(X[tr])
        a, b = scaler.transform(X[tr]), scaler.transform(X[te])
        basis = row_basis(a)  # D > N (ComParE): the same L2 model fitted in the rows' span, faster
        if basis is not None:
            a, b = a @ basis, b @ basis
        for i, C in enumerate(grid):
            clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000).fit(a, y[tr])
            scores[i] += balanced_accuracy_score(y[te], clf.predict(b)) / len(splits)
    i = int(np.argmax(scores))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=grid[i], class_weight="balanced", max_iter=2000))
    return model.fit(X, y), {"C": grid[i], "inner_uar": float(scores[i])}


def onehot(pred: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n)[np.asarray(pred, np.int64)]


def peer_rows(n_classes: int) -> dict[str, Callable]:
    """name -> fit_predict(Xtr, ytr, groups, Xte) -> (probs (N, C), selected) for the scikit-learn peers."""
    from .peers import peer_svm

    def lr(Xtr, ytr, g, Xte):
        m, sel = peer_logreg(Xtr, ytr, g)
        return onehot(m.predict(Xte), n_classes), sel

    def svm(Xtr, ytr, g, Xte):
        m, sel = peer_svm(Xtr, ytr, g)
        return onehot(m.predict(Xte), n_classes), sel

    return {"logreg": lr, "svm": svm}


def smile_direct(n_classes: int, **kw) -> Callable:
    """``SmileMember`` fitted on the clean functionals (no copies), its calibrated probabilities."""
    from persemo.smile import SmileMember

    def fit_predict(Xtr, ytr, g, Xte):
        m = SmileMember(kw.get("kind", "logreg"), quantiles=kw.get("quantiles", 0),
                        calibration=kw.get("calibration", "temperature")).fit(
            Xtr, ytr, n_classes, groups=g, seed=0)
        return m.predict_proba(Xte), {**m.chosen, "inner_uar": m.meta["inner_cv"]["uar"]}

    return fit_predict


# ------------------------------------------------------------------------------------------ the loop

def fold_parts(splits, pos: dict[str, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.array([pos[i] for i in sp.train + sp.val]), np.array([pos[i] for i in sp.test])) for sp in splits]


def training_rows(tr: np.ndarray, spk: np.ndarray, emo: np.ndarray, y: np.ndarray, labels, k, seed: int,
                  fold: int, imbalance: bool = False) -> np.ndarray:
    """The fold's training rows kept for k (and the ShEMO-like subsample with ``imbalance``)."""
    keep = tr[keep_emotions(spk[tr], emo[tr], k, seed + 1000 * fold)]
    if imbalance:
        keep = keep[shemo_like(y[keep], labels, seed + 1000 * fold)]
    return keep


def evaluate_vectors(feats: dict[str, np.ndarray], y: np.ndarray, spk: np.ndarray, labels: list[str],
                     parts: Sequence[tuple[np.ndarray, np.ndarray]], ks: Sequence[int | None],
                     rows: dict[str, tuple[str, Callable]], seed: int = 0, imbalance: bool = False,
                     log=print) -> dict:
    """Every row (name -> (feature set, fit_predict)) on every k and fold: {k: {"rows": Rows, "selected":
    {name: [...]}, "n_train": [...]}}. The benchmark's core on per-clip vectors (no audio needed)."""
    emo = np.array([labels[i] for i in y])
    out = {}
    for k in ks:
        table, selected, n_train = Rows(labels), {n: [] for n in rows}, []
        for f, (tr, te) in enumerate(parts):
            keep = training_rows(tr, spk, emo, y, labels, k, seed, f, imbalance)
            n_train.append(int(len(keep)))
            line = []
            for name, (fs, fit_predict) in rows.items():
                X = feats[fs]
                probs, sel = fit_predict(X[keep], y[keep], spk[keep], X[te])
                selected[name].append(sel)
                line.append(f"{name} {100 * table.add(name, y[te], probs)['uar']:.1f}")
            log(f"k={k_name(k)} fold {f + 1}/{len(parts)} (train {len(keep)}): UAR " + ", ".join(line))
        out[k_name(k)] = {"rows": table, "selected": selected, "n_train": n_train}
    return out


# ------------------------------------------------------------------- the smile member through training

MEMBER_ROWS = {  # row name -> (model.smile settings, speaker-adapted)
    "smile eGeMAPSv02": ({"feature_set": "eGeMAPSv02"}, False),
    "smile eGeMAPSv02, noise_copies 0": ({"feature_set": "eGeMAPSv02", "noise_copies": 0}, False),
    "smile ComParE_2016": ({"feature_set": "ComParE_2016"}, False),
    "smile ComParE_2016, quantiles 20, noise_copies 0": (
        {"feature_set": "ComParE_2016", "quantiles": 20, "noise_copies": 0}, False),
    "smile eGeMAPSv02, speaker-adapted": ({"feature_set": "eGeMAPSv02"}, True),
    "smile ComParE_2016, speaker-adapted": ({"feature_set": "ComParE_2016"}, True),
}
QUICK_MEMBER_ROWS = ("smile eGeMAPSv02", "smile ComParE_2016", "smile eGeMAPSv02, speaker-adapted")


def member_config(smile: dict, speaker: bool, seed: int = 0):
    from persemo.config import load_config

    sections = {"model": {"members": ["smile"], "smile": dict(smile)}, "split": {"val_fraction": 0},
                "train": {"num_threads": 1, "seed": seed}}
    if speaker:
        sections["features"] = {"normalisation": "speaker"}
        sections["adaptation"] = {"single_companion": False}
    return load_config(None, **sections)


def member_fit_predict(smile: dict, speaker: bool, labels: list[str], cache_dir, memo: dict, seed: int = 0):
    """fit_predict(train items, test items) -> (probs of the member (N, C), selected): ``train_ensemble`` on
    the training items, then ``predict_items`` on the test items (speaker-adapted: each test speaker's own
    statistics over all their test clips, no labels)."""
    from persemo.crossval import held_out_statistics
    from persemo.training import predict_items, train_ensemble

    cfg = member_config(smile, speaker, seed)

    def fit_predict(train, test):
        model, info = train_ensemble(cfg, labels, train, [], None, progress=False, log=lambda m: None,
                                     cache_dir=cache_dir)
        model.memo = memo  # a test window's functionals do not depend on the model
        stats = held_out_statistics(cfg, model, test, cache_dir) if speaker else None
        probs = predict_items(model, test, cfg, stats)[0]
        m = info["members"]["smile"]
        return probs, {**m.get("chosen", {}), "inner_uar": m.get("inner_cv_uar")}

    return fit_predict


# ------------------------------------------------------------------------------- the nested selection

SELECTED = "selected configuration"
SOFT = "soft vote over the candidates (weights on the inner held-out votes)"
ALTERNATIVE_RULES = ("margin", "se")



def selection_fit_predict(config: Path, labels: list[str], cache_dir, memo: dict, seed: int = 0,
                          speaker: bool = True):
    """fit_predict(train items, test items) -> ({row: probs (N, C)}, facts): the nested selection of
    ``config`` (``persemo.selection.fit_selected``) on the training items, every candidate and the selected
    configuration on the test speakers, single utterance; with ``speaker`` the same selection with speaker
    normalisation, tested speaker-adapted (each test speaker's statistics over all their test clips, no labels,
    shrunk by ``adaptation.shrink`` as ``persemo`` does) alone and paired with the single-utterance selection as
    its companion (what ``persemo train`` builds in speaker mode)."""
    from persemo.config import load_config
    from persemo.crossval import held_out_statistics
    from persemo.pipeline import pair_with_companion
    from persemo.selection import choose, fit_selected
    from persemo.training import predict_items

    over = {"split": {"val_fraction": 0}, "train": {"num_threads": 1, "seed": seed}}
    cfg_u = load_config(config, **over, features={"normalisation": "utterance"})
    cfg_s = load_config(config, **over, features={"normalisation": "speaker"})

    def fit_predict(train, test):
        rows, facts = {}, {}
        cands: dict = {}
        model_u, info_u = fit_selected(cfg_u, labels, train, [], None, progress=False, log=lambda m: None,
                                       cache_dir=cache_dir, candidates_out=cands)
        for name, m in cands.items():
            m.memo = memo  # a test window's vectors do not depend on the model
            rows[f"candidate {name}"] = predict_items(m, test, m.cfg)[-1]
        rows[SELECTED] = rows[f"candidate {model_u.selected}"]
        sel = info_u["selection"]
        for rule in ALTERNATIVE_RULES:  # the other rules' choices, from the same saved inner scores
            rows[f"{SELECTED} by rule {rule}"] = rows[f"candidate {choose(sel['candidates'], sel['margin'], rule)['name']}"]
        if sel.get("soft_weights"):
            w = sel["soft_weights"]
            rows[SOFT] = sum(w[n] * rows[f"candidate {n}"] for n in w) / sum(w.values())
        facts["single utterance"] = {c["name"]: c.get("inner_uar") for c in sel["candidates"]}
        facts["scores"], facts["soft_weights"], facts["rule"] = sel["candidates"], sel.get("soft_weights"), sel.get("rule")
        facts["winner"], facts["seconds"] = model_u.selected, sel["seconds"]
        if speaker:
            cands_s: dict = {}
            model_s, info_s = fit_selected(cfg_s, labels, train, [], None, progress=False, log=lambda m: None,
                                           cache_dir=cache_dir, candidates_out=cands_s)
            for name, m in cands_s.items():
                m.memo = memo
                stats = held_out_statistics(m.cfg, m, test, cache_dir, m.cfg.adaptation.shrink)
                rows[f"candidate {name}, speaker-adapted"] = predict_items(m, test, m.cfg, stats)[-1]
            rows[f"{SELECTED}, speaker-adapted alone"] = rows[f"candidate {model_s.selected}, speaker-adapted"]
            pair_with_companion(model_s, model_u, train, labels, log=lambda m: None)
            facts["pair_weight"] = model_s.pair_weight
            stats = held_out_statistics(model_s.cfg, model_s, test, cache_dir, model_s.cfg.adaptation.shrink)
            rows[f"{SELECTED}, speaker-adapted + companion (paired)"] = predict_items(
                model_s, test, model_s.cfg, stats)[-1]
            facts["speaker-adapted"] = {c["name"]: c.get("inner_uar") for c in info_s["selection"]["candidates"]}
            facts["winner_speaker"] = model_s.selected
            facts["seconds"] += info_s["selection"]["seconds"]
        return rows, facts

    return fit_predict


# ------------------------------------------------------------------------------------------------ run

def run(data: Path, folds: int, seed: int, ks: Sequence[int | None], cache_dir: Path, quick: bool = False,
        imbalance: bool = True, log=print, partial: Callable | None = None, selection: Path | None = None,
        variants: Sequence[str] = ("balanced", "ShEMO-like"), corpus: str = "emodb") -> dict:
    from persemo.config import load_config
    from persemo.corpora import scan_corpus
    from persemo.prepare import prepare
    from persemo.smile import extract_functionals, usable
    from persemo.splits import check_speaker_independent, make_folds

    scan = scan_corpus(corpus, data, durations=False)
    labels = scan.labels
    prepared = prepare(scan.utterances, load_config().features, cache_dir=cache_dir)
    utts = [it.utt for it in prepared.items]
    feats, t0 = {}, time.perf_counter()
    for fs in ("eGeMAPSv02", "ComParE_2016"):
        X, _, problems = extract_functionals(utts, fs, cache_dir, threads=2)
        if problems:
            raise SystemExit(f"benchmarks.confound: {len(problems)} clips without {fs} functionals")
        feats[fs] = np.asarray(X, np.float64)
    log(f"{len(utts)} clips, functionals in {time.perf_counter() - t0:.0f} s")
    y = np.array([labels.index(u.emotion) for u in utts])
    spk = np.array([u.speaker for u in utts])
    emo = np.array([u.emotion for u in utts])
    splits = make_folds(utts, folds, "speaker", 0.0, seed)
    for sp in splits:
        check_speaker_independent(sp, utts)
    parts = fold_parts(splits, {u.id: i for i, u in enumerate(utts)})
    C = len(labels)
    peers = peer_rows(C)
    vector_rows = {"peer: standardise + logreg, eGeMAPSv02": ("eGeMAPSv02", peers["logreg"]),
                   "peer: standardise + logreg, ComParE_2016": ("ComParE_2016", peers["logreg"]),
                   "peer: standardise + RBF SVM, eGeMAPSv02": ("eGeMAPSv02", peers["svm"]),
                   "peer: standardise + RBF SVM, ComParE_2016": ("ComParE_2016", peers["svm"]),
                   "SmileMember (clean functionals), eGeMAPSv02": ("eGeMAPSv02", smile_direct(C)),
                   "SmileMember (clean functionals), ComParE_2016": ("ComParE_2016", smile_direct(C)),
                   "SmileMember (clean), eGeMAPSv02, matrix calibration (before the fix)": (
                       "eGeMAPSv02", smile_direct(C, calibration="matrix")),
                   "SmileMember (clean), ComParE_2016, matrix calibration (before the fix)": (
                       "ComParE_2016", smile_direct(C, calibration="matrix"))}
    member_rows = {n: v for n, v in MEMBER_ROWS.items() if not quick or n in QUICK_MEMBER_ROWS}
    memo: dict = {}
    fitters = {n: member_fit_predict(s, sp_, labels, cache_dir, memo, seed) for n, (s, sp_) in member_rows.items()}

    def done(results: dict) -> dict:
        return {"labels": labels, "n_utterances": len(utts), "n_speakers": len(set(spk.tolist())),
                "folds": [{"fold": sp.fold, "test_speakers": sorted(set(spk[te].tolist()))}
                          for sp, (_, te) in zip(splits, parts)], "results": dict(results)}

    selector = selection_fit_predict(selection, labels, cache_dir, memo, seed) if selection is not None else None
    variants = [(v, v == "ShEMO-like") for v in variants if imbalance or v != "ShEMO-like"]
    out: dict = {}
    for variant, imb in variants:
        for k in ks if not imb else [k for k in ks if k in (2, None)]:
            key = f"{variant} k={k_name(k)}"
            table, selected, n_train, seconds, fold_uars = Rows(labels), {}, [], {}, []
            for f, (tr, te) in enumerate(parts):
                keep = training_rows(tr, spk, emo, y, labels, k, seed, f, imb)
                n_train.append(int(len(keep)))
                line = []
                for name, (fs, fp) in vector_rows.items():
                    t = time.perf_counter()
                    probs, sel = fp(feats[fs][keep], y[keep], spk[keep], feats[fs][te])
                    seconds.setdefault(name, []).append(time.perf_counter() - t)
                    selected.setdefault(name, []).append(sel)
                    line.append(f"{name} {100 * table.add(name, y[te], probs)['uar']:.1f}")
                for name, fp in fitters.items():
                    t = time.perf_counter()
                    probs, sel = fp([prepared.items[i] for i in keep], [prepared.items[i] for i in te])
                    seconds.setdefault(name, []).append(time.perf_counter() - t)
                    selected.setdefault(name, []).append(sel)
                    line.append(f"{name} {100 * table.add(name, y[te], probs)['uar']:.1f}")
                if selector is not None:
                    t = time.perf_counter()
                    rows, facts = selector([prepared.items[i] for i in keep], [prepared.items[i] for i in te])
                    test_uar = {}
                    for name, probs in rows.items():
                        seconds.setdefault(name, []).append(time.perf_counter() - t)
                        selected.setdefault(name, []).append(facts if name == SELECTED else {})
                        test_uar[name] = table.add(name, y[te], probs)["uar"]
                        line.append(f"{name} {100 * test_uar[name]:.1f}")
                    fold_uars.append({n: v for n, v in test_uar.items() if n.startswith("candidate ")
                                      and ", speaker-adapted" not in n or n.startswith(SELECTED) or n == SOFT})
                log(f"{key} fold {f + 1}/{len(parts)} (train {len(keep)} clips, "
                    f"{len(set(emo[keep].tolist()))} emotions): UAR " + "; ".join(line))
            summary = table.summary()
            log(f"{key} pooled UAR: " + "; ".join(f"{n} {100 * v['pooled']['uar']:.1f}" for n, v in summary.items()))
            out[key] = {"variant": variant, "k": k_name(k), "n_train": n_train,
                        "rows": {n: {"summary": summary[n], "selected": selected[n], "seconds_per_fold": seconds[n]}
                                 for n in summary}}
            if fold_uars:
                out[key]["regret"] = regrets(fold_uars, summary)
                log(f"{key} regret (best candidate on test - chosen), median over folds: " + "; ".join(
                    f"{n} {100 * r['median']:.1f}" for n, r in out[key]["regret"].items()))
            if partial is not None:
                partial(done(out))

    return done(out)


def regrets(fold_uars: list[dict[str, float]], summary: dict) -> dict:
    """Every choosing row's regret: the configured rule (``SELECTED``), the other rules and the soft vote;
    per fold against that fold's best candidate, and pooled (the best candidate's pooled UAR minus the row's)."""
    out = {}
    cands = [n for n in fold_uars[0] if n.startswith("candidate ")]
    best_pooled = max(summary[n]["pooled"]["uar"] for n in cands)
    for name in [SELECTED] + [f"{SELECTED} by rule {r}" for r in ALTERNATIVE_RULES] + [SOFT]:
        if not all(name in f for f in fold_uars):
            continue
        per = [max(f[c] for c in cands) - f[name] for f in fold_uars]
        out[name] = {"per_fold": per, "median": float(np.median(per)), "mean": float(np.mean(per)),
                     "pooled": best_pooled - summary[name]["pooled"]["uar"],
                     "candidates_per_fold": [{c[len("candidate "):]: f[c] for c in cands} for f in fold_uars],
                     "chosen_per_fold": [f[name] for f in fold_uars]}
    return out


def regret_table(res: dict) -> list[str]:
    """Regret per setting: each fold's test UAR of every candidate beside the chosen one's, and the regret."""
    lines = []
    for key, r in res["results"].items():
        reg = r.get("regret")
        if not reg:
            continue
        first = next(iter(reg.values()))
        cands = list(first["candidates_per_fold"][0])
        lines += [f"### Regret, {key} (single utterance; test UAR %, best candidate of the fold minus the chosen)",
                  "", "| fold | " + " | ".join(cands) + " | " + " | ".join(f"{n}: UAR / regret" for n in reg) + " |",
                  "|---|" + "---|" * (len(cands) + len(reg))]
        for f, uars in enumerate(first["candidates_per_fold"]):
            lines.append(f"| {f + 1} | " + " | ".join(f"{100 * uars[c]:.1f}" for c in cands) + " | " + " | ".join(
                f"{100 * g['chosen_per_fold'][f]:.1f} / {100 * g['per_fold'][f]:.1f}" for g in reg.values()) + " |")
        lines += ["| median regret | " + " | " * len(cands) + " | ".join(f"{100 * g['median']:.1f}" for g in reg.values())
                  + " |", "| pooled regret (best candidate pooled - chosen pooled) | " + " | " * len(cands)
                  + " | ".join(f"{100 * g['pooled']:.1f}" for g in reg.values()) + " |", ""]
    return lines


def _pct(s: dict, m: str) -> str:
    return f"{100 * s[m]['mean']:.1f} ± {100 * s[m]['std']:.1f}"


PEERS = ("peer: standardise + logreg, eGeMAPSv02", "peer: standardise + RBF SVM, ComParE_2016",
         "peer: standardise + RBF SVM, eGeMAPSv02", "peer: standardise + logreg, ComParE_2016")


def targets(res: dict) -> list[str]:
    """Issue 22's targets per k, from the pooled UARs: the selected configuration at or above the best peer
    (logistic regression or RBF SVM on eGeMAPS or ComParE functionals); speaker-adapted with the guards (the
    companion) within 3 points of single utterance; the smile member within 2 points of the plain logistic regression on the same features."""
    lines = ["### Targets (UAR pooled, %)", "",
             "| setting | selected | best peer | selected >= peer | speaker-adapted + companion | - single | "
             "within 3 | smile eGeMAPS / ComParE member - logreg peer | within 2 |", "|---|---|---|---|---|---|---|---|---|"]
    any_row = False
    for key, r in res["results"].items():
        rows = r["rows"]
        u = lambda n: 100 * rows[n]["summary"]["pooled"]["uar"] if n in rows else None  # noqa: E731
        sel, paired = u(SELECTED), u(f"{SELECTED}, speaker-adapted + companion (paired)")
        peer = max((u(p) for p in PEERS if u(p) is not None), default=None)
        gaps = [(u(m), u(p)) for m, p in (("smile eGeMAPSv02", PEERS[0]), ("smile ComParE_2016", PEERS[3]))]
        gaps = [a - b for a, b in gaps if a is not None and b is not None]
        if sel is None and not gaps:
            continue
        any_row = True
        f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        yes = lambda ok: "-" if ok is None else ("yes" if ok else "**no**")  # noqa: E731
        lines.append(f"| {key} | {f(sel)} | {f(peer)} | {yes(None if sel is None or peer is None else sel >= peer)} | "
                     f"{f(paired)} | {f(None if paired is None or sel is None else paired - sel)} | "
                     f"{yes(None if paired is None or sel is None else paired >= sel - 3)} | "
                     f"{' / '.join(f'{g:+.1f}' for g in gaps) or '-'} | {yes(all(g >= -2 for g in gaps) if gaps else None)} |")
    return lines + [""] if any_row else []


def without_class_detail(o):
    """``o`` without per-class figures and confusion matrices (no table here reads them; about half of a
    result file): what the JSON keeps."""
    if isinstance(o, dict):
        return {k: without_class_detail(v) for k, v in o.items() if k not in ("per_class", "confusion")}
    if isinstance(o, list):
        return [without_class_detail(v) for v in o]
    return o


def render(res: dict, cmd: str, wall: float) -> str:
    md = [f"## {res.get('corpus', 'emodb')}: the speaker-emotion confound benchmark (issue 22)", "",
          f"Command: `{cmd}` ({wall / 60:.1f} min on this machine). {res['n_utterances']} clips, "
          f"{res['n_speakers']} speakers, speaker-grouped {len(res['folds'])} folds "
          f"(`make_folds(utts, {len(res['folds'])}, \"speaker\", 0.0, {res['seed']})`). In each fold's training "
          "speakers only k emotions per speaker are kept (a seeded draw keeping every emotion present); the test "
          "speakers keep all. " + POOLED_NOTE + " The peers' probabilities are their one-hot decisions.", ""]
    if res.get("note"):
        md += [res["note"], ""]
    for key, r in res["results"].items():
        md += [f"### {key} (training clips per fold: {', '.join(map(str, r['n_train']))})", "",
               "| model | UAR pooled | UAR mean ± std | macro-F1 pooled | macro-F1 mean ± std |",
               "|---|---|---|---|---|"]
        for n, row in r["rows"].items():
            s = row["summary"]
            md.append(f"| {n} | {100 * s['pooled']['uar']:.1f} | {_pct(s, 'uar')} | "
                      f"{100 * s['pooled']['macro_f1']:.1f} | {_pct(s, 'macro_f1')} |")
        md.append("")
    md += targets(res)
    md += regret_table(res)
    md += ["### UAR pooled per k (%)", ""]
    keys = list(res["results"])
    names = list(res["results"][keys[0]]["rows"])
    md += ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for n in names:
        md.append(f"| {n} | " + " | ".join(
            f"{100 * res['results'][k]['rows'][n]['summary']['pooled']['uar']:.1f}" if n in res["results"][k]["rows"]
            else "-" for k in keys) + " |")
    md.append("")
    return "\n".join(md) + "\n"


def main(argv=None) -> None:
    from persemo.cache import default_cache_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="emodb", help="a corpus reader (emodb, ased, csv, ...); results are named by it")
    ap.add_argument("--data", type=Path, default=EMODB)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ks", default="1,2,3,all", help="emotions per training speaker, comma-separated")
    ap.add_argument("--quick", action="store_true", help="fewer smile-member rows")
    ap.add_argument("--no-imbalance", action="store_true", help="skip the ShEMO-like class distribution")
    ap.add_argument("--selection", type=Path, default=None, metavar="CONFIG",
                    help="also the nested selection of CONFIG (e.g. benchmarks/configs/selected.yaml): every "
                         "candidate, the selected configuration, and speaker-adapted with and without its companion")
    ap.add_argument("--variants", default="balanced,ShEMO-like",
                    help="which class distributions of the training part: balanced (EmoDB's), ShEMO-like, or both")
    ap.add_argument("--tag", default="", help="results/confound_CORPUS_TAG.{json,md}")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--rerender", action="store_true",
                    help="only rewrite results/confound_emodb[_TAG].md from its JSON (after a change to the tables)")
    a = ap.parse_args(argv)
    if a.rerender:
        import json

        name = f"confound_{a.corpus}" + (f"_{a.tag}" if a.tag else "")
        res = json.loads((a.results / f"{name}.json").read_text(encoding="utf-8"))
        write_results(name, res, render(res, res["command"], res["wall_seconds"]), a.results)
        return
    if not Path(a.data).exists():
        raise SystemExit(f"benchmarks.confound: data not found: {a.data}")
    ks = [None if s.strip() == "all" else int(s) for s in a.ks.split(",") if s.strip()]
    warnings.filterwarnings("ignore")
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cmd = "python -m benchmarks confound" + (f" --corpus {a.corpus} --data {a.data}" if a.corpus != "emodb" else "") + "".join(
        f" {flag}" for flag, on in (("--quick", a.quick), ("--no-imbalance", a.no_imbalance)) if on) + (
        f" --ks {a.ks}" if a.ks != "1,2,3,all" else "") + (f" --seed {a.seed}" if a.seed else "") + (
        f" --selection {a.selection}" if a.selection else "") + (
        f" --variants {a.variants}" if a.variants != "balanced,ShEMO-like" else "") + (f" --tag {a.tag}" if a.tag else "")

    def save(res: dict, final: bool = False) -> str:
        wall = time.perf_counter() - t0
        res = {"benchmark": f"speaker-emotion confound on {a.corpus}", "corpus": a.corpus, "command": cmd, "seed": a.seed,
               "wall_seconds": wall, "complete": final, "peer_logreg_C": PEER_LR_C, "shemo_shares": SHEMO_SHARES,
               "machine": machine_info(), **res}
        if not final:
            res["note"] = "Partial: the run was still going when this was written."
        md = render(res, cmd, wall)
        write_results(f"confound_{a.corpus}" + (f"_{a.tag}" if a.tag else ""), without_class_detail(res), md,
                      a.results, compact=True)  # one line: these files are large and read by code only
        return md

    with threadpool_limits(limits=1):
        res = run(Path(a.data), a.folds, a.seed, ks, a.cache or default_cache_dir(), a.quick, not a.no_imbalance,
                  partial=save, selection=a.selection, variants=[v.strip() for v in a.variants.split(",") if v.strip()],
                  corpus=a.corpus)
    print(save(res, final=True))


if __name__ == "__main__":
    main()
