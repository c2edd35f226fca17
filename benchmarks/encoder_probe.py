"""The frozen Whisper encoder as a feature extractor on EmoDB: speed, agreement with 30-s padding, and a
linear probe with every choice made inside the training folds.

    python -m benchmarks.encoder_probe [--model ../shared/models/whisper-base] [--folds 5] [--no-head]

Writes benchmarks/results/encoder_probe_emodb.json and .md:

* speed: real-time factor of embedding a 4-s clip (two EmoDB clips of one speaker joined) on ONE torch
  thread, the clip's own frames (``persemo.encoders.whisper.embed``) vs transformers' 30-s padded path
  (``WhisperFeatureExtractor`` + its ``WhisperEncoder``, mean-pooled over the clip's frames); median of runs;
* agreement: cosine between the two ways' mean-pooled embeddings, per block, on 20 clips;
* probe: speaker-grouped 5-fold (``make_folds(utts, 5, "speaker", 0.0, 0)``, as benchmarks.emodb). Features
  are pooled blocks; the candidates (each block's mean, each block's mean+std, blocks 2-4's means joined, the
  mean over all blocks' means) are chosen per outer fold by an inner speaker-grouped CV on the training
  speakers only, for each head: ``SmileMember("logreg")`` (calibrated logistic regression, C by its own
  inner CV; a candidate's score is that inner UAR) and a plain standardise + class-balanced
  LogisticRegression (C = 1; scored by a 4-fold GroupKFold over the training speakers). Two protocols:
  single utterance, and speaker-adapted (each speaker's features standardised by that speaker's own mean and
  std over all their clips, no labels). UAR pooled over all out-of-fold predictions and mean ± std over folds.
  Every candidate's test UAR is also listed, as a diagnostic only (picking by it would be optimistic);
* head (unless --no-head): a small torch head on the frames (learned softmax weights over blocks, attentive
  pooling over frames, linear), fixed hyperparameters, same folds and protocols. Slow on a shared 2-core
  machine (several minutes a fold under load) and, on the one fold measured (fold 0, single utterance),
  far behind the linear probe (70.3 vs 89.2 UAR): not in the library, and not in the recorded results.

Embeddings are cached (``embed_cached``, the default persemo cache); a warm run takes a few minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .common import EMODB, SHARED, machine_info, write_results

MODEL = SHARED / "models" / "whisper-base"


def load_corpus(data: Path, log=print):
    from persemo.cache import default_cache_dir
    from persemo.config import load_config
    from persemo.corpora import scan_corpus
    from persemo.prepare import prepare

    scan = scan_corpus("emodb", data)
    prep = prepare(scan.utterances, load_config(None).features, default_cache_dir())
    if prep.problems:
        log(f"  {len(prep.problems)} unusable files left out")
    return [it.utt for it in prep.items], [it.wave for it in prep.items]


def corpus_arrays(data: Path):
    """(utterances, waves, labels, y, speakers, ids) of the corpus at ``data``: what the probe and the head use."""
    utts, waves = load_corpus(data)
    labels = sorted({u.emotion for u in utts})
    y = np.array([labels.index(u.emotion) for u in utts])
    return utts, waves, labels, y, np.array([u.speaker for u in utts]), [u.id for u in utts]


def _median_time(fn, runs: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), ts


def padded_means(enc, hf, fe, wave: np.ndarray) -> np.ndarray:
    """transformers' path: the 30-s padded log-mel, its encoder, each block mean-pooled over the clip's frames."""
    import torch

    from persemo.encoders.whisper import n_frames

    x = torch.from_numpy(fe(wave, sampling_rate=16000, return_tensors="np").input_features)
    with torch.inference_mode():
        hs = hf(x, output_hidden_states=True).hidden_states
    n = (n_frames(len(wave)) + 1) // 2
    return np.stack([h[0, :n].mean(0).numpy() for h in hs])


def speed(enc, hf, fe, wave: np.ndarray, runs_own: int = 9, runs_padded: int = 5) -> dict:
    import torch

    from persemo.encoders.whisper import embed

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        own, own_all = _median_time(lambda: embed(enc, [wave]), runs_own)
        pad, pad_all = _median_time(lambda: padded_means(enc, hf, fe, wave), runs_padded)
    finally:
        torch.set_num_threads(before)
    sec = len(wave) / 16000
    return {"clip_seconds": sec, "torch_threads": 1,
            "own_frames": {"median_s": own, "rtf": own / sec, "runs_s": own_all},
            "padded_30s_hf": {"median_s": pad, "rtf": pad / sec, "runs_s": pad_all},
            "speed_up": pad / own}


def agreement(enc, hf, fe, waves: list[np.ndarray]) -> dict:
    from persemo.encoders.whisper import embed

    own = embed(enc, waves, stats=False)
    cos = []
    for w, e in zip(waves, own):
        p = padded_means(enc, hf, fe, w)
        cos.append([float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(e, p)])
    c = np.array(cos)
    return {"n_clips": len(waves), "per_block": {str(b): {"min": float(c[:, b].min()), "mean": float(c[:, b].mean()),
                                                          "max": float(c[:, b].max())} for b in range(c.shape[1])},
            "cosines": c.round(5).tolist()}


# ------------------------------------------------------------------------------------------- probe

def candidates(L: int, D: int) -> dict[str, callable]:
    """name -> E (N, L + 1, 2D) -> X (N, d): the feature variants the inner CV chooses among."""
    c = {}
    for b in range(L + 1):
        c[f"block {b} mean"] = (lambda E, b=b: E[:, b, :D])
    for b in range(L + 1):
        c[f"block {b} mean+std"] = (lambda E, b=b: E[:, b, :])
    c["blocks 2-4 means joined"] = lambda E: E[:, 2:5, :D].reshape(len(E), -1)
    c["mean over all blocks' means"] = lambda E: E[:, :, :D].mean(1)
    return c


def _uar(y, pred) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def _plain(X, y, n):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)).fit(X, y)


def _plain_proba(model, X, n):
    p = np.zeros((len(X), n))
    p[:, model.classes_] = model.predict_proba(X)
    return p


def plain_inner_uar(X, y, groups, n) -> float:
    from sklearn.model_selection import GroupKFold

    pred = np.zeros(len(y), np.int64)
    for tr, te in GroupKFold(n_splits=min(4, len(np.unique(groups)))).split(X, y, groups):
        pred[te] = _plain_proba(_plain(X[tr], y[tr], n), X[te], n).argmax(1)
    return _uar(y, pred)


def probe(E, y, speakers, splits, ids, labels, adapted: bool, log=print) -> dict:
    from persemo.evaluation import compute_metrics, summarise_folds
    from persemo.smile import SmileMember, normalise_by_group

    n = len(labels)
    L, D = E.shape[1] - 1, E.shape[2] // 2
    cands = candidates(L, D)
    feats = {}
    for name, fn in cands.items():
        X = fn(E).astype(np.float64)
        feats[name] = normalise_by_group(X, speakers) if adapted else X
    index = {u: i for i, u in enumerate(ids)}
    heads = {"smile logreg (calibrated, C by inner CV)": "smile", "plain logreg (standardise, balanced, C=1)": "plain"}
    out = {h: {"folds": [], "oof": np.zeros((len(y), n)), "per_fold": []} for h in heads}
    for sp in splits:
        tr = np.array([index[i] for i in sp.train])
        te = np.array([index[i] for i in sp.test])
        g = speakers[tr]
        for h, kind in heads.items():
            rows = {}
            for name, X in feats.items():
                if kind == "smile":
                    m = SmileMember("logreg", None, 0).fit(X[tr], y[tr], n, groups=g, seed=0)
                    inner, p = m.meta["inner_cv"]["uar"], m.predict_proba(X[te])
                    extra = {"C": m.meta["C"]}
                else:
                    inner = plain_inner_uar(X[tr], y[tr], g, n)
                    p = _plain_proba(_plain(X[tr], y[tr], n), X[te], n)
                    extra = {}
                rows[name] = {"inner_uar": inner, "test_uar": _uar(y[te], p.argmax(1)), "p": p, **extra}
            win = max(rows, key=lambda k: rows[k]["inner_uar"])  # first best: the candidates' order breaks ties
            out[h]["oof"][te] = rows[win]["p"]
            met = compute_metrics(y[te], rows[win]["p"], labels)
            out[h]["per_fold"].append(met)
            out[h]["folds"].append({"fold": sp.fold, "test_speakers": sorted(set(speakers[te].tolist())),
                                    "winner": win, "winner_inner_uar": rows[win]["inner_uar"],
                                    "test_uar": met["uar"], **({"C": rows[win]["C"]} if "C" in rows[win] else {}),
                                    "candidates": {k: {"inner_uar": round(v["inner_uar"], 4),
                                                       "test_uar": round(v["test_uar"], 4)} for k, v in rows.items()}})
            log(f"    fold {sp.fold} {kind}: {win} (inner {100 * rows[win]['inner_uar']:.1f}) -> test UAR "
                f"{100 * met['uar']:.1f}")
    res = {}
    for h in heads:
        o = out[h]
        pooled = compute_metrics(y, o["oof"], labels)
        names = list(cands)
        diag = {k: float(np.mean([f["candidates"][k]["test_uar"] for f in o["folds"]])) for k in names}
        res[h] = {"pooled": pooled, "summary": summarise_folds(o["per_fold"]), "folds": o["folds"],
                  "n_candidates": len(names), "candidates": names,
                  "diagnostic_test_uar_mean_by_candidate": diag}
    return res


# ------------------------------------------------------------------------------------ torch head

def head_frames(enc, waves) -> tuple[np.ndarray, np.ndarray]:
    """(N, L + 1, T_max, D) float16 frames of every block (zero past each clip's end) and (N,) frame counts."""
    hs = enc.hidden_states  # one clip at a time
    first = hs([waves[0]])[0]
    T = max((len(w) + 319) // 320 for w in waves)
    F = np.zeros((len(waves), len(first), T, first[0].shape[1]), np.float16)
    lengths = np.zeros(len(waves), np.int64)
    for i, w in enumerate(waves):
        s = hs([w])[0]
        lengths[i] = s[0].shape[0]
        F[i, :, : lengths[i]] = np.stack([x.numpy() for x in s])
    return F, lengths


def _speaker_standardise(F, lengths, speakers):
    """Each speaker's frames standardised per block and dimension by that speaker's own frames (no labels)."""
    out = np.zeros(F.shape, np.float32)
    for s in np.unique(speakers):
        rows = np.flatnonzero(speakers == s)
        valid = np.concatenate([F[i, :, : lengths[i]].astype(np.float32) for i in rows], axis=1)  # (B, frames, D)
        mu, sd = valid.mean(1, keepdims=True), valid.std(1, keepdims=True) + 1e-5
        for i in rows:
            out[i, :, : lengths[i]] = (F[i, :, : lengths[i]] - mu) / sd
    return out


def train_head(F, lengths, y, n, seed=0, epochs=40, lr=2e-3, wd=1e-2):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    B, D = F.shape[1], F.shape[3]

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.block_logits = nn.Parameter(torch.zeros(B))
            self.norm = nn.LayerNorm(D)
            self.score = nn.Sequential(nn.Linear(D, 64), nn.Tanh(), nn.Linear(64, 1))
            self.drop = nn.Dropout(0.3)
            self.out = nn.Linear(2 * D, n)

        def forward(self, x, lens):  # x (b, B, T, D)
            h = self.norm((torch.softmax(self.block_logits, 0)[None, :, None, None] * x).sum(1))
            mask = torch.arange(h.shape[1])[None, :] < lens[:, None]
            a = torch.softmax(self.score(h).squeeze(-1).masked_fill(~mask, -torch.inf), 1)[..., None]
            mu = (a * h).sum(1)
            sd = ((a * (h - mu[:, None]) ** 2).sum(1) + 1e-5).sqrt()
            return self.out(self.drop(torch.cat([mu, sd], 1)))

    model = Head()
    X = torch.from_numpy(np.asarray(F, np.float32))
    lens = torch.from_numpy(lengths)
    yt = torch.from_numpy(y)
    counts = np.bincount(y, minlength=n).astype(np.float64)
    w = torch.tensor(np.where(counts > 0, len(y) / (n * np.maximum(counts, 1)), 0.0), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=g).split(32):
            loss = nn.functional.cross_entropy(model(X[idx], lens[idx]), yt[idx], weight=w)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


def head_probe(F, lengths, y, speakers, splits, ids, labels, adapted, log=print) -> dict:
    import torch

    from persemo.evaluation import compute_metrics, summarise_folds

    n = len(labels)
    X = _speaker_standardise(F, lengths, speakers) if adapted else F
    index = {u: i for i, u in enumerate(ids)}
    oof, per, weights = np.zeros((len(y), n)), [], []
    for sp in splits:
        tr = np.array([index[i] for i in sp.train])
        te = np.array([index[i] for i in sp.test])
        m = train_head(X[tr], lengths[tr], y[tr], n)
        with torch.inference_mode():
            p = torch.softmax(m(torch.from_numpy(np.asarray(X[te], np.float32)), torch.from_numpy(lengths[te])), 1).numpy()
        oof[te] = p
        per.append(compute_metrics(y[te], p, labels))
        weights.append(torch.softmax(m.block_logits, 0).detach().numpy().round(3).tolist())
        log(f"    fold {sp.fold} head: test UAR {100 * per[-1]['uar']:.1f}, block weights {weights[-1]}")
    return {"pooled": compute_metrics(y, oof, labels), "summary": summarise_folds(per), "block_weights": weights,
            "hyperparameters": {"epochs": 40, "lr": 2e-3, "weight_decay": 1e-2, "batch": 32, "dropout": 0.3,
                                "attention_hidden": 64, "chosen": "fixed beforehand, nothing tuned"}}


# -------------------------------------------------------------------------------------------- main

def _fmt(r) -> tuple[str, str]:
    s = r["summary"]["uar"]
    return f"{100 * r['pooled']['uar']:.1f}", f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"


def markdown(data) -> str:
    sp, ag = data["speed"], data["agreement"]
    md = ["## Whisper base encoder as a frozen feature extractor on EmoDB", "",
          f"Command: `{data['command']}` ({data['wall_seconds'] / 60:.1f} min on this machine, embeddings "
          f"{'from the cache' if data['embed_seconds'] < 10 else 'computed'}). Encoder `{data['encoder']['source']}`, "
          f"weights sha256 `{data['encoder']['sha256'][:16]}…`.", "",
          f"**Speed** (one torch thread, {sp['clip_seconds']:.0f}-s clip, median of runs): own frames "
          f"{1000 * sp['own_frames']['median_s']:.0f} ms (RTF {sp['own_frames']['rtf']:.3f}); transformers' 30-s "
          f"padded path {1000 * sp['padded_30s_hf']['median_s']:.0f} ms (RTF {sp['padded_30s_hf']['rtf']:.3f}): "
          f"{sp['speed_up']:.0f}x faster.", "",
          f"**Agreement** (cosine of mean-pooled blocks, own frames vs 30-s padded, {ag['n_clips']} clips): "
          + "; ".join(f"block {b} min {v['min']:.4f} mean {v['mean']:.4f}" for b, v in ag["per_block"].items()) + ".", "",
          "**Probe** (speakers held out, 5 folds; the feature variant chosen per fold by inner speaker-grouped CV "
          f"on the training speakers among {data['n_candidates']} candidates; UAR %):", "",
          "| head | protocol | UAR pooled | UAR mean ± std over folds | winners per fold |", "|---|---|---|---|---|"]
    for proto, res in data["probe"].items():
        for h, r in res.items():
            pooled, ms = _fmt(r)
            wins = "; ".join(f["winner"] for f in r["folds"])
            md.append(f"| {h} | {proto} | {pooled} | {ms} | {wins} |")
    for proto, r in data.get("head", {}).items():
        pooled, ms = _fmt(r)
        md.append(f"| torch head (block weights + attentive pooling, fixed hyperparameters) | {proto} | {pooled} | {ms} | - |")
    md += ["", "Diagnostic only (choosing by it would use the test folds): each candidate's test UAR, mean over folds, "
           "smile logreg head:", "", "| candidate | single utterance | speaker-adapted |", "|---|---|---|"]
    h0 = next(iter(data["probe"]["single utterance"]))
    d1 = data["probe"]["single utterance"][h0]["diagnostic_test_uar_mean_by_candidate"]
    d2 = data["probe"]["speaker-adapted"][h0]["diagnostic_test_uar_mean_by_candidate"]
    md += [f"| {k} | {100 * d1[k]:.1f} | {100 * d2[k]:.1f} |" for k in d1]
    return "\n".join(md) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(MODEL))
    ap.add_argument("--data", type=Path, default=EMODB)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--no-head", action="store_true", help="skip the torch head")
    ap.add_argument("--head-only", action="store_true",
                    help="only the torch head on every fold (no speed, agreement or linear probe): "
                         "results/encoder_probe_emodb_head[_TAG]")
    ap.add_argument("--protocols", default="single,speaker",
                    help="with --head-only: single, speaker or both (default: %(default)s)")
    ap.add_argument("--tag", default="")
    a = ap.parse_args(argv)
    if not Path(a.data).exists():
        raise SystemExit(f"benchmarks.encoder_probe: data not found: {a.data}")
    if a.head_only:
        return head_only(a)
    import torch
    import transformers
    from threadpoolctl import threadpool_limits

    from persemo.cache import default_cache_dir
    from persemo.encoders.whisper import embed_cached, load_encoder, wave_digest
    from persemo.splits import check_speaker_independent, make_folds

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    utts, waves, labels, y, speakers, ids = corpus_arrays(a.data)
    enc = load_encoder(a.model)
    print(f"{len(utts)} clips, {len(set(speakers))} speakers, labels {labels}; encoder {enc.weights_sha256[:16]}")
    hf = enc.to_hf()
    fe = transformers.WhisperFeatureExtractor.from_pretrained(a.model) if Path(a.model).is_dir() else \
        transformers.WhisperFeatureExtractor()
    # speed: two clips of the first speaker joined, 4 s
    same = [i for i in range(len(utts)) if speakers[i] == speakers[0]][:2]
    four = np.concatenate([waves[i] for i in same])
    sp = speed(enc, hf, fe, four)
    print(f"speed: own {sp['own_frames']['median_s']:.3f} s, padded {sp['padded_30s_hf']['median_s']:.3f} s")
    pick = np.linspace(0, len(waves) - 1, 20).round().astype(int)
    ag = agreement(enc, hf, fe, [waves[i] for i in pick])
    print("agreement:", {b: round(v["min"], 4) for b, v in ag["per_block"].items()})
    del hf
    te = time.perf_counter()
    E = embed_cached(enc, waves, [wave_digest(w) for w in waves], default_cache_dir())
    embed_s = time.perf_counter() - te
    print(f"embeddings {E.shape} in {embed_s:.0f} s")
    splits = make_folds(utts, a.folds, "speaker", 0.0, 0)
    for s in splits:
        check_speaker_independent(s, utts)
    probe_res = {}
    tp = time.perf_counter()
    # one BLAS thread: sklearn's small fits ran 50x slower with the default threads on this loaded 2-core
    # machine (430 x 512 logistic regression: 1.6 s vs 0.03 s)
    with threadpool_limits(limits=1, user_api="blas"):
        for proto, adapted in (("single utterance", False), ("speaker-adapted", True)):
            print(f"probe, {proto}:")
            probe_res[proto] = probe(E, y, speakers, splits, ids, labels, adapted)
    probe_s = time.perf_counter() - tp
    head_res = {}
    if not a.no_head:
        F, lengths = head_frames(enc, waves)
        for proto, adapted in (("single utterance", False), ("speaker-adapted", True)):
            print(f"torch head, {proto}:")
            head_res[proto] = head_probe(F, lengths, y, speakers, splits, ids, labels, adapted)
    wall = time.perf_counter() - t0
    cmd = "python -m benchmarks.encoder_probe" + ("" if a.model == str(MODEL) else f" --model {a.model}") + \
        (" --no-head" if a.no_head else "")
    data = {"benchmark": "Whisper encoder probe", "corpus": "emodb", "command": cmd, "k_folds": a.folds,
            "split": "make_folds(utts, 5, 'speaker', 0.0, 0)", "labels": labels, "encoder": enc.meta(),
            "wall_seconds": wall, "embed_seconds": embed_s, "probe_seconds": probe_s, "speed": sp, "agreement": ag,
            "n_candidates": len(candidates(enc.n_layers, enc.width)), "probe": probe_res, "head": head_res,
            "machine": machine_info()}
    md = markdown(data)
    write_results("encoder_probe_emodb", data, md)
    print(md)


def head_only(a) -> None:
    """The torch head (block weights + attentive pooling, fixed hyperparameters) on every fold, beside the
    linear probe's figures of ``encoder_probe_emodb.json`` where that file is there."""
    import torch

    from persemo.encoders.whisper import load_encoder
    from persemo.splits import make_folds

    from .common import RESULTS, command_line, read_results

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    utts, waves, labels, y, speakers, ids = corpus_arrays(a.data)
    enc = load_encoder(a.model)
    splits = make_folds(utts, a.folds, "speaker", 0.0, 0)
    F, lengths = head_frames(enc, waves)
    print(f"frames {F.shape} in {time.perf_counter() - t0:.0f} s")
    wanted = {p.strip() for p in a.protocols.split(",")}
    head_res, seconds = {}, {}
    for proto, adapted, key in (("single utterance", False, "single"), ("speaker-adapted", True, "speaker")):
        if key in wanted:
            print(f"torch head, {proto}:")
            th = time.perf_counter()
            head_res[proto] = head_probe(F, lengths, y, speakers, splits, ids, labels, adapted)
            seconds[proto] = time.perf_counter() - th
    linear = {}
    if (RESULTS / "encoder_probe_emodb.json").is_file():
        probe_res = read_results(RESULTS / "encoder_probe_emodb.json").get("probe", {})
        linear = {proto: next(iter(r.values())) for proto, r in probe_res.items()}
    wall = time.perf_counter() - t0
    argv = ["--head-only", "--protocols", a.protocols] + (["--tag", a.tag] if a.tag else [])
    cmd = command_line("python -m benchmarks.encoder_probe", argv)
    md = ["## Whisper base: the torch head against the linear probe, EmoDB, speakers held out", "",
          f"Command: `{cmd}` ({wall / 60:.1f} min on this machine, one torch thread). The head: softmax weights "
          "over the encoder's blocks, layer norm, attentive pooling over frames (mean and standard deviation), "
          "dropout 0.3, a linear layer; AdamW (lr 2e-3, weight decay 1e-2), 40 epochs, batch 32, class weights; "
          "hyperparameters fixed beforehand, nothing tuned. Speaker-adapted: each speaker's frames standardised "
          "by their own frames. The linear probe (`encoder_probe_emodb.md`): pooled block means, its variant "
          "chosen per fold by inner CV, the `smile` member's calibrated logistic regression.", "",
          "| head | protocol | UAR pooled | UAR mean ± std over folds | seconds |", "|---|---|---|---|---|"]
    for proto, r in head_res.items():
        pooled, ms = _fmt(r)
        md.append(f"| torch head | {proto} | {pooled} | {ms} | {seconds[proto]:.0f} |")
        if proto in linear:
            pooled, ms = _fmt(linear[proto])
            md.append(f"| linear probe (`encoder_probe_emodb.md`) | {proto} | {pooled} | {ms} | - |")
    md += ["", "Block weights learned (blocks 0-6), per fold: " + "; ".join(
        f"{proto}: " + " / ".join("[" + " ".join(f"{x:.2f}" for x in w) + "]" for w in r["block_weights"])
        for proto, r in head_res.items())]
    name = "encoder_probe_emodb_head" + (f"_{a.tag}" if a.tag else "")
    write_results(name, {"benchmark": "Whisper torch head", "command": cmd, "labels": labels,
                         "encoder": enc.meta(), "wall_seconds": wall, "seconds": seconds, "head": head_res,
                         "machine": machine_info()}, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
