"""Metrics, reports and plots: per member and ensemble side by side, as JSON, Markdown and PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from .atomic import atomic_write_bytes, atomic_write_text

METRICS = ("accuracy", "macro_f1", "weighted_f1", "uar")


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1, weighted-F1, UAR (mean per-class recall), per-class P/R/F1 and the confusion
    matrix, from true class indices (N,) and probabilities (N, C). Classes absent from ``y_true`` are
    left out of UAR and macro-F1 (they would count as zero recall otherwise)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(probs).argmax(1)
    all_idx = list(range(len(labels)))
    present = sorted(set(y_true.tolist()))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=all_idx, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=all_idx)
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)),
        "uar": float(np.mean([r[i] for i in present])) if present else 0.0,
        "per_class": {labels[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                  "support": int(s[i])} for i in all_idx},
        "confusion": cm.tolist(),
    }


def restrict_probs(probs: np.ndarray, labels: list[str], keep: list[str]) -> np.ndarray:
    """Probabilities (N, C) over ``labels`` restricted to the labels ``keep`` (in ``keep``'s order) and
    renormalised to sum to 1: (N, len(keep)). A row with no mass on ``keep`` becomes uniform over it.

    >>> restrict_probs(np.array([[0.5, 0.3, 0.2]]), ["a", "b", "c"], ["c", "a"]).round(3).tolist()
    [[0.286, 0.714]]
    """
    missing = [k for k in keep if k not in labels]
    if missing or not keep:
        raise ValueError(f"cannot restrict to {keep}: not among the labels {labels}")
    sub = np.asarray(probs, dtype=np.float64)[:, [labels.index(k) for k in keep]]
    total = sub.sum(axis=1, keepdims=True)
    return np.where(total > 0, sub / np.where(total > 0, total, 1.0), 1.0 / len(keep))


def by_subset(y_true: np.ndarray, probs: np.ndarray, values, labels: list[str]) -> dict[str, dict]:
    """``compute_metrics`` of the rows with each value of ``values`` (N,) (a metadata column such as ASED's
    ``shared_text``), values in sorted order; rows with no value (None or "") go under ``"(none)"``."""
    vals = np.array(["(none)" if v in (None, "") else str(v) for v in values])
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    return {v: compute_metrics(y_true[vals == v], probs[vals == v], labels) for v in sorted(set(vals.tolist()))}


def subset_table(rows: dict[str, dict[str, dict]], column: str) -> str:
    """A Markdown table of pooled UAR and macro-F1 per value of ``column``: ``rows`` maps a row name to
    {"all": metrics, value: metrics, ...}. With exactly two values, the last column is the UAR gap between
    them (second minus first, in sorted order): with ``shared_text`` (no, yes) the points the clips whose
    words give the emotion away score above those that measure the voice alone."""
    values = sorted({v for r in rows.values() for v in r if v != "all"})
    head = ["all"] + [f"{column}={v}" for v in values]
    gap = len(values) == 2
    lines = ["| model | " + " | ".join(f"{h} UAR | {h} macro-F1" for h in head) + (
        f" | gap ({column}={values[0]} - {values[1]}) |" if gap else " |"),
             "|---|" + "---|---|" * len(head) + ("---|" if gap else "")]
    for name, r in rows.items():
        cells = []
        for v in ["all"] + values:
            m = r.get(v)
            cells += [f"{100 * m['uar']:.1f} (n {m['n']})", f"{100 * m['macro_f1']:.1f}"] if m else ["–", "–"]
        if gap:
            a, b = r.get(values[0]), r.get(values[1])
            cells.append(f"{100 * (a['uar'] - b['uar']):+.1f}" if a and b else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def duplicate_rows(rows: dict[str, np.ndarray], order: list[str] | None = None, atol: float = 1e-6) -> dict[str, str]:
    """{row: the row it repeats} for each row whose probabilities (N, C) equal another's, the one kept being
    the first in ``order`` (default: the rows' own order). A report lists the kept rows and names the others."""
    kept: list[str] = []
    same: dict[str, str] = {}
    for name in order or list(rows):
        p = np.asarray(rows[name])
        twin = next((k for k in kept if np.shape(rows[k]) == p.shape and np.allclose(rows[k], p, rtol=0, atol=atol)),
                    None)
        if twin is None:
            kept.append(name)
        else:
            same[name] = twin
    return same


def summarise_folds(per_fold: list[dict]) -> dict:
    """Mean and std over folds of each headline metric: {metric: {"mean", "std", "folds": [...]}}."""
    out = {}
    for m in METRICS:
        vals = [f[m] for f in per_fold]
        out[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "folds": vals}
    return out


def markdown_table(results: dict[str, dict], title: str = "") -> str:
    """``results``: name -> metrics dict (single run) or summarise_folds output (k-fold); k-fold rows with
    ``pooled`` metrics (all out-of-fold predictions together) get those beside the mean ± std over folds."""
    lines = [f"### {title}", ""] if title else []
    pooled = any(isinstance(r.get("pooled"), dict) for r in results.values())
    head = "| model | accuracy | macro-F1 | weighted-F1 | UAR |" + (" UAR pooled | macro-F1 pooled |" if pooled else "")
    lines += [head, "|---|---|---|---|---|" + ("---|---|" if pooled else "")]
    for name, r in results.items():
        cells = []
        for m in METRICS:
            v = r[m]
            cells.append(f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}" if isinstance(v, dict) else f"{100 * v:.1f}")
        if pooled:
            pr = r.get("pooled") or {}
            cells += [f"{100 * pr[m]:.1f}" if m in pr else "–" for m in ("uar", "macro_f1")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_class_table(results: dict[str, dict], labels: list[str]) -> str:
    lines = ["| model | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name, r in results.items():
        pc = r.get("per_class") or (r.get("pooled") or {}).get("per_class", {})
        lines.append(f"| {name} recall | " + " | ".join(f"{100 * pc[l]['recall']:.1f}" if l in pc else "-"
                                                     for l in labels) + " |")
    return "\n".join(lines) + "\n"


def plot_confusion(cm: list[list[int]], labels: list[str], path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm_arr = np.asarray(cm, dtype=float)
    norm = cm_arr / np.clip(cm_arr.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.8 * len(labels)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(cm_arr[i, j])}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised colour, counts)")
    save_figure(fig, path)


def save_figure(fig, path: str | Path) -> None:
    """Lay out ``fig``, write it to ``path`` as PNG atomically, and close it."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_curves(history: dict[str, list[dict]], path: str | Path) -> None:
    """Training curves: ``history`` member -> list of per-epoch dicts (train_loss, val_loss, val_uar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, rows in history.items():
        ep = [r["epoch"] for r in rows]
        axes[0].plot(ep, [r.get("train_loss") for r in rows], label=f"{name} train")
        axes[0].plot(ep, [r.get("val_loss") for r in rows], "--", label=f"{name} val")
        axes[1].plot(ep, [r.get("val_uar") for r in rows], label=f"{name} val UAR")
        axes[1].plot(ep, [r.get("val_macro_f1") for r in rows], ":", label=f"{name} val macro-F1")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("validation score")
    for a in axes:
        a.legend(fontsize=7)
        a.grid(alpha=0.3)
    save_figure(fig, path)


def report_markdown(results: dict[str, dict], headline: list[str] | None = None,
                    same_as: dict[str, str] | None = None, by: dict[str, dict] | None = None, title: str = "") -> str:
    """The report's tables, what was asked first: the ``headline`` rows (the model's answer, one per protocol),
    their pooled UAR and macro-F1 per value of each column of ``by`` ({column: {row: {"all": metrics, value:
    metrics}}}), then the other rows under a heading, leaving out those of ``same_as`` (identical to a row
    shown, named below the table). Without a headline every row is a headline row."""
    same_as = same_as or {}
    head = [n for n in headline or () if n in results] or [n for n in results if n not in same_as]
    rest = {n: r for n, r in results.items() if n not in head and n not in same_as}
    md = [f"### {title}", ""] if title else []
    md.append(markdown_table({n: results[n] for n in head}))
    for column, rows in (by or {}).items():
        md += ["", f"#### by {column} (pooled UAR and macro-F1 per value)", "",
               subset_table({n: rows[n] for n in head if n in rows}, column)]
    if rest:
        md += ["", "#### members and votes" + (" (each value of " + ", ".join(by) + " in report.json)" if by else ""),
               "", markdown_table(rest)]
    if same_as:
        md += ["", "Identical to a row above, so not shown (all are in report.json): "
               + "; ".join(f"{a} = {b}" for a, b in same_as.items()) + "."]
    return "\n".join(md) + "\n"


def write_report(out: str | Path, results: dict[str, dict], labels: list[str], title: str,
                 extra: dict | None = None, notes: list[str] | None = None, headline: list[str] | None = None,
                 same_as: dict[str, str] | None = None, by: dict[str, dict] | None = None) -> dict:
    """Write ``report.json``, ``report.md`` (``report_markdown``) and a confusion PNG per row shown into ``out``.
    The JSON holds every row, ``headline``, ``same_as`` and ``by``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", ""]
    for n in notes or []:
        md.append(f"- {n}")
    if notes:
        md.append("")
    md.append(report_markdown(results, headline, same_as, by))
    shown = {n: r for n, r in results.items() if n not in (same_as or {})}
    has_pc = all("per_class" in r or "per_class" in (r.get("pooled") or {}) for r in shown.values())
    if has_pc:
        md += ["", "Per-class recall (%):", "", per_class_table(shown, labels)]
    for name, r in shown.items():
        if "confusion" in r:
            png = f"confusion_{name.replace(' ', '_').replace('/', '_')}.png"
            plot_confusion(r["confusion"], labels, out / png, f"{title}: {name}")
            md.append(f"![{name}]({png})")
    data = {"title": title, "labels": labels, "results": results, "notes": notes or [],
            **({"headline": list(headline)} if headline else {}), **({"same_as": same_as} if same_as else {}),
            **({"by": by} if by else {}), **(extra or {})}
    atomic_write_text(out / "report.json", json.dumps(data, indent=1, ensure_ascii=False))
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    return data
