"""The training-side speed-ups, each measured side by side with what it replaced, in one run.

    python -m benchmarks fit [--repeats 7]

1. The CNN's training step (forward, backward, AdamW; batch 32 of 64 x 126 log-mel, time pooling) with
   the weights and input in PyTorch's default (NCHW) layout and in channels-last (NHWC), as
   ``persemo.members.cnn.CNN`` now runs it. One torch thread.
2. The ``smile`` member's logistic regression over its C grid on EmoDB's ComParE functionals (535
   clips, 6,373 features, 7 classes; ``../shared``): fitted on the features as they are, and in the span
   of their rows (``persemo.smile.row_basis``), with how far the two models' probabilities differ.
3. The peer SVM's grid search (ComParE-sized, 430 clips, 12 C x gamma points, 4 grouped inner folds):
   sklearn's ``GridSearchCV`` and ``benchmarks.peers.peer_svm`` on per-fold precomputed kernels, with
   whether they choose the same point.

The variants alternate within each repeat (A, B, A, B, ...), so a busy machine slows both alike; the
table gives medians and their ratio. Writes results/fit_speed.json and .md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from .common import EMODB, command_line, machine_info, write_results


def _median_pair(a, b, repeats: int) -> tuple[float, float]:
    ta, tb = [], []
    for _ in range(repeats):
        for f, out in ((a, ta), (b, tb)):
            t = time.perf_counter()
            f()
            out.append(time.perf_counter() - t)
    return float(np.median(ta)), float(np.median(tb))


def cnn_step(repeats: int) -> dict:
    import torch

    from persemo.members.cnn import CNN

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = torch.randn(32, 64, 126), torch.randint(0, 7, (32,))

    def stepper(channels_last: bool):
        m = CNN(7, pooling="time")
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        m.body.to(memory_format=fmt)
        opt = torch.optim.AdamW(m.parameters())

        def step():
            h = m.body(x.unsqueeze(1).contiguous(memory_format=fmt))
            logits = m.head(h.flatten(1, 2).mean(-1))
            torch.nn.functional.cross_entropy(logits, y).backward()
            opt.step()
            opt.zero_grad()
        step()  # warm-up
        return step

    nchw, nhwc = _median_pair(stepper(False), stepper(True), repeats)
    return {"what": "CNN training step, batch 32, one thread", "before": "NCHW (default layout)",
            "after": "channels-last (NHWC)", "before_s": nchw, "after_s": nhwc}


def logreg_fit(repeats: int) -> dict:
    """The member's own workload: its C grid, warm-started, on EmoDB's ComParE functionals (standardised)."""
    from sklearn.linear_model import LogisticRegression

    from persemo.cache import default_cache_dir
    from persemo.corpora import scan_corpus
    from persemo.smile import LOGREG_C, extract_functionals, row_basis

    scan = scan_corpus("emodb", EMODB, durations=False)
    X, _, _ = extract_functionals(scan.utterances, "ComParE_2016", default_cache_dir(), threads=2)
    y = np.array([scan.labels.index(u.emotion) for u in scan.utterances])
    Z = (X - X.mean(0)) / np.where(X.std(0) > 1e-12, X.std(0), 1.0)
    out = {}

    def grid(name: str, in_rows: bool):
        A = Z @ row_basis(Z) if in_rows else Z
        clf = LogisticRegression(class_weight="balanced", max_iter=2000, warm_start=True)
        out[name] = [clf.set_params(C=C).fit(A, y).predict_proba(A) for C in LOGREG_C]

    before, after = _median_pair(lambda: grid("full", False), lambda: grid("rows", True), max(1, repeats // 3))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(out["full"], out["rows"]))
    agree = min(float(np.mean(a.argmax(1) == b.argmax(1))) for a, b in zip(out["full"], out["rows"]))
    return {"what": f"logistic regression over the C grid {list(LOGREG_C)}, EmoDB ComParE ({len(y)} x {Z.shape[1]})",
            "before": "on the features", "after": "in the span of the rows (exact)", "before_s": before,
            "after_s": after, "max_probability_difference": diff, "decision_agreement": agree}


def peer_grid(repeats: int) -> dict:
    from .peers import peer_svm, peer_svm_reference

    rng = np.random.default_rng(1)
    n, d = 430, 6373
    y = rng.integers(0, 7, n)
    groups = np.repeat(np.arange(8), n // 8 + 1)[:n]
    X = rng.normal(size=(n, d)) + 0.3 * rng.normal(size=(7, d))[y]
    got = {}

    def sklearn_grid():
        _, C, gx, _ = peer_svm_reference(X, y, groups)
        got["sklearn"] = (C, round(gx, 6))

    def ours():
        _, info = peer_svm(X, y, groups)
        got["ours"] = (info["C"], round(info["gamma_x_dim"], 6))

    before, after = _median_pair(sklearn_grid, ours, max(1, repeats // 3))
    return {"what": "peer SVM grid search, 430 x 6373, 12 points x 4 inner folds", "before": "GridSearchCV",
            "after": "precomputed kernels per inner fold", "before_s": before, "after_s": after,
            "same_choice": got["sklearn"] == got["ours"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args(argv)
    rows = [cnn_step(a.repeats), logreg_fit(a.repeats), peer_grid(a.repeats)]
    cmd = command_line("python -m benchmarks fit", argv or [])
    md = ["## Training-side speed-ups, side by side", "",
          f"Command: `{cmd}`. Medians over alternating repeats; ratio = before / after.", "",
          "| what | before | after | before (s) | after (s) | ratio | check |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        check = ""
        if "max_probability_difference" in r:
            check = (f"probabilities within {r['max_probability_difference']:.1e} (solver tolerance), "
                     f"{100 * r['decision_agreement']:.1f}% same decisions")
        if "same_choice" in r:
            check = "same C and gamma chosen" if r["same_choice"] else "**different choice**"
        md.append(f"| {r['what']} | {r['before']} | {r['after']} | {r['before_s']:.3f} | {r['after_s']:.3f} | "
                  f"{r['before_s'] / r['after_s']:.1f}x | {check} |")
    write_results("fit_speed", {"command": cmd, "rows": rows, "machine": machine_info()}, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
