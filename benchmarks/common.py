"""Helpers shared by the benchmark scripts: where and when a run happened, and writing its results.

    data = {..., "machine": machine_info()}
    write_results("prepare", data, markdown)   # -> results/prepare.json and results/prepare.md

Both files are written atomically (a temporary file renamed into place), so an interrupted run
never leaves half a result beside the previous one.

Per-fold test probabilities (a fold record's ``"probs"`` in ``benchmarks.emodb`` files, the peers'
``"predictions"``) do not go into the JSON: they go beside it into ``<name>.probs.npz``
(``np.savez_compressed``, integers in units of 1e-5, the five decimals they always had; no pickles), and the
JSON names that file under ``"probs_file"``. ``read_results`` puts them back where they were, and reads
older files that hold them inline the same way; ``compact_results`` converts such files.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SHARED = (ROOT / ".." / "shared").resolve()
EMODB = SHARED / "data" / "emodb" / "wav"  # the benchmarks' default corpus, read in place
PACKAGES = ("persemo", "torch", "librosa", "numpy", "soxr", "soundfile", "scipy", "scikit-learn",
            "lightning", "onnxruntime", "opensmile")


def command_line(prefix: str, argv) -> str:
    """The command a result file records: ``prefix`` and the arguments, each quoted for a shell where it needs
    it (an empty ``--members ''`` stays copyable)."""
    return " ".join([prefix, *(shlex.quote(str(x)) for x in argv)])


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit(root: Path = ROOT) -> str | None:
    """``git rev-parse --short HEAD``, with ``-dirty`` when tracked or untracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if status else "")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions, read from package metadata (nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity on Linux, else all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """Date, commit, CPU model, cores, memory, load average, Python and package versions."""
    usable = usable_cores()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": _memory_gb(),
        "load_average_1_5_15min": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": package_versions(),
    }
    import sys

    if "torch" in sys.modules:  # only when the benchmark uses it: never import torch just for this
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def stamp_line(machine: dict[str, Any]) -> str:
    """One Markdown line saying when, where and with what a result was produced."""
    v = machine.get("versions", {})
    pkgs = ", ".join(f"{k} {v[k]}" for k in ("torch", "librosa", "numpy", "soxr", "soundfile") if v.get(k))
    load = machine.get("load_average_1_5_15min")
    load_txt = f", load average {load[0]:.2f}" if load else ""
    return (f"_Run {machine.get('date')} on {machine.get('cpu_model')} ({machine.get('cores')} cores"
            f"{load_txt}), Python {machine.get('python')}, {pkgs}; commit {machine.get('commit')}._")


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def _atomic_write(path: Path, text: str) -> None:
    from persemo.atomic import atomic_write_text

    atomic_write_text(path, text)


PROBS_SUFFIX = ".probs.npz"
PROBS_UNIT = 1e-5  # stored probabilities are integers in these units (results always rounded to 5 decimals)
_SEP = "|"  # npz keys: "folds|<index>" (rows, N, C) with "folds|<index>|rows"; "predictions|<protocol>|<model>|<index>"


def _encode(a) -> "np.ndarray":
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    if a.size and np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1:
        return np.rint(a / PROBS_UNIT).astype(np.int32)
    return a  # not probabilities: kept as they are


def _decode(a) -> "np.ndarray":
    import numpy as np

    return a.astype(np.float64) * PROBS_UNIT if np.issubdtype(a.dtype, np.integer) else a.astype(np.float64)


def split_probs(data: dict) -> tuple[dict, dict]:
    """(``data`` without its per-fold probabilities, {npz key: array}); ``data`` itself is left as it was."""
    import numpy as np

    data, arrays = dict(data), {}
    folds = data.get("folds")
    if isinstance(folds, list) and any(isinstance(f, dict) and isinstance(f.get("probs"), dict) for f in folds):
        data["folds"] = []
        for i, f in enumerate(folds):
            if isinstance(f, dict) and isinstance(f.get("probs"), dict) and f["probs"]:
                f = dict(f)
                rows = f.pop("probs")
                if any(_SEP in r for r in rows):
                    raise ValueError(f"row names may not contain {_SEP!r}: {list(rows)}")
                arrays[f"folds{_SEP}{i}"] = np.stack([_encode(p) for p in rows.values()])
                arrays[f"folds{_SEP}{i}{_SEP}rows"] = np.array(list(rows), dtype=str)
            data["folds"].append(f)
    preds = data.get("predictions")
    if isinstance(preds, dict):
        data["predictions"] = {}
        for protocol, models in preds.items():
            data["predictions"][protocol] = {}
            for model, entry in models.items():
                entry = dict(entry)
                if _SEP in protocol + model:
                    raise ValueError(f"names may not contain {_SEP!r}: {protocol}, {model}")
                new = []
                for i, f in enumerate(entry.get("folds", [])):
                    f = dict(f)
                    if isinstance(f.get("probs"), dict):
                        by_id = f.pop("probs")
                        key = _SEP.join(("predictions", protocol, model, str(i)))
                        arrays[key] = _encode(np.stack([np.asarray(p) for p in by_id.values()]))
                        arrays[key + _SEP + "ids"] = np.array(list(by_id), dtype=str)
                    new.append(f)
                entry["folds"] = new
                data["predictions"][protocol][model] = entry
    return data, arrays


def join_probs(data: dict, arrays) -> dict:
    """``data`` with the per-fold probabilities in ``arrays`` (an npz written by ``write_results``) put back:
    each fold record's "probs" as {row: (N, C) array}, each peer prediction's as {utterance id: (C,) array}."""
    data = dict(data)
    for key in arrays.files if hasattr(arrays, "files") else list(arrays):
        parts = key.split(_SEP)
        if parts[0] == "folds" and len(parts) == 2:
            i = int(parts[1])
            rows = [str(r) for r in arrays[f"{key}{_SEP}rows"]]
            probs = _decode(arrays[key])
            data["folds"] = list(data["folds"])
            data["folds"][i] = {**data["folds"][i], "probs": dict(zip(rows, probs))}
        elif parts[0] == "predictions" and len(parts) == 4:
            _, protocol, model, i = parts
            ids = [str(u) for u in arrays[f"{key}{_SEP}ids"]]
            entry = data["predictions"][protocol][model]
            folds = list(entry["folds"])
            folds[int(i)] = {**folds[int(i)], "probs": dict(zip(ids, _decode(arrays[key])))}
            data["predictions"] = {**data["predictions"],
                                   protocol: {**data["predictions"][protocol], model: {**entry, "folds": folds}}}
    return data


def read_results(path: str | Path) -> dict:
    """A results JSON with its per-fold probabilities in place (from ``<name>.probs.npz`` beside it, or inline
    in files written before they moved there); arrays where the npz held them."""
    import numpy as np

    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    ref = data.pop("probs_file", None)
    if ref is None:
        return data
    npz = path.parent / ref
    if not npz.is_file():
        raise SystemExit(f"{path}: its probabilities file {npz} is missing")
    with np.load(npz, allow_pickle=False) as arrays:
        return join_probs(data, arrays)


def _rounded(o: Any, digits: int = 8) -> Any:
    if isinstance(o, float):
        return float(f"{o:.{digits}g}")
    if isinstance(o, dict):
        return {k: _rounded(v, digits) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_rounded(v, digits) for v in o]
    return o


def dumps(o: Any, indent: int = 2, width: int = 120, _level: int = 0) -> str:
    """JSON text that stays readable and small: a value that fits on one line of ``width`` stays there, and
    so does a list of plain values (test ids, labels, per-fold figures); the rest is indented."""
    flat = json.dumps(o, ensure_ascii=False)
    nested = isinstance(o, dict) or (isinstance(o, list) and any(isinstance(x, (dict, list)) for x in o))
    if not nested or len(flat) + indent * _level <= width:
        return flat
    pad, end = " " * (indent * (_level + 1)), " " * (indent * _level)
    if isinstance(o, dict):
        body = [f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {dumps(v, indent, width, _level + 1)}"
                for k, v in o.items()]
        return "{\n" + ",\n".join(body) + "\n" + end + "}"
    return "[\n" + ",\n".join(pad + dumps(v, indent, width, _level + 1) for v in o) + "\n" + end + "]"


def write_json(path: Path, data: dict, compact: bool = False) -> dict:
    """``data`` as ``path`` (its per-fold probabilities to ``<name>.probs.npz`` beside it; floats to 8
    significant digits), atomically; returns what went into the JSON."""
    import numpy as np

    from persemo.atomic import atomic_write

    path = Path(path)
    plain = json.loads(json.dumps(data, default=_jsonable))  # numpy and paths to JSON values first
    plain, arrays = split_probs(plain)
    npz = path.parent / (path.name[:-len(".json")] + PROBS_SUFFIX)
    if arrays:
        def save(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)

        atomic_write(npz, save)
        plain["probs_file"] = npz.name
    else:
        npz.unlink(missing_ok=True)
    plain = _rounded(plain)
    _atomic_write(path, (json.dumps(plain, ensure_ascii=False, separators=(",", ":")) if compact else dumps(plain))
                  + "\n")
    return plain


def compact_results(results: str | Path = RESULTS, log=print) -> list[Path]:
    """Rewrite every results JSON in ``results`` that still holds its probabilities inline (or in a longer
    form) in the compact form ``write_results`` writes now; returns the files rewritten."""
    done = []
    for path in sorted(Path(results).glob("*.json")):
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text)
        if not split_probs(raw)[1] and len(text) <= len(dumps(_rounded(raw)) + "\n"):
            continue  # already compact (or smaller still, as the confound benchmark writes it)
        data = read_results(path)
        before = path.stat().st_size
        write_json(path, data)
        npz = path.parent / (path.name[:-len(".json")] + PROBS_SUFFIX)
        after = path.stat().st_size + (npz.stat().st_size if npz.is_file() else 0)
        if after != before:
            log(f"compacted {path.name}: {before / 1024:.0f} KB -> {after / 1024:.0f} KB")
            done.append(path)
    return done


def drop_probs(path: str | Path, why: str) -> int:
    """Delete the per-fold probabilities file of the results JSON ``path`` (its figures stay), recording
    ``why`` in the JSON under ``"probs_dropped"``; returns the bytes freed (0 when it had none). For runs whose
    predictions no table, combination or later benchmark reads: ``results/`` stays small."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    ref = data.pop("probs_file", None)
    if ref is None:
        return 0
    npz = path.parent / ref
    freed = npz.stat().st_size if npz.is_file() else 0
    data["probs_dropped"] = why
    _atomic_write(path, dumps(data) + "\n")
    npz.unlink(missing_ok=True)
    return freed


def write_results(name: str, data: dict, markdown: str, results_dir: str | Path | None = None, compact: bool = False
                  ) -> tuple[Path, Path]:
    """Write ``<name>.json`` (``data``, with ``machine`` added when missing; its per-fold probabilities in
    ``<name>.probs.npz``) and ``<name>.md`` (``markdown`` followed by the stamp line) under
    benchmarks/results/, atomically.

    Returns the two paths.
    """
    out_dir = Path(results_dir) if results_dir is not None else RESULTS
    data = dict(data)
    machine = data.setdefault("machine", machine_info())
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    write_json(json_path, data, compact)
    _atomic_write(md_path, markdown.rstrip("\n") + "\n\n" + stamp_line(machine) + "\n")
    return json_path, md_path


FOLD_META = "benchmark_fold"  # model.json field of a fold model saved by a benchmark: which fold it is


def save_fold_model(models: Path, fold, folds: int) -> Path:
    """``fold`` (a ``persemo.crossval.Fold``)'s model to ``models/foldK``, with the fold's test utterances
    (so that ``fold_model`` can check it) and its training facts (so that a reuse knows them)."""
    from persemo.artifact import save_model

    sp = fold.split
    return save_model(models / f"fold{sp.fold}", fold.model, extra_meta={
        FOLD_META: {"fold": sp.fold, "folds": folds, "seed": sp.seed, "test_ids": [it.utt.id for it in fold.test]},
        "training": {k: v for k, v in fold.info.items() if k != "history"}})


def fold_model(models: Path, split, labels: list[str], log=print):
    """The fold model saved in ``models/foldK`` (``benchmarks.emodb --save-models``): (model, info), checked to
    be this ``split``'s (tested on the same utterances) and for these labels."""
    from persemo.artifact import load_model, read_meta

    d = Path(models) / f"fold{split.fold}"
    try:
        _, meta = read_meta(d)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    saved = (meta.get(FOLD_META) or {}).get("test_ids")
    if saved is None or sorted(saved) != sorted(split.test):
        raise SystemExit(f"{d}: not trained for this fold (its test utterances differ); re-run benchmarks.emodb "
                         "--save-models with the same corpus, folds and seed")
    model = load_model(d)[0]
    if model.labels != list(labels):
        raise SystemExit(f"{d}: labels {model.labels} differ from the corpus's {labels}")
    log(f"  loaded {d} ({'+'.join(model.kinds)}, {model.cfg.features.normalisation} normalisation)")
    info = dict(meta.get("training") or {})
    info["members"] = {k: {**(info.get("members") or {}).get(k, {}), "loaded": True} for k in model.kinds}
    info.setdefault("validation", bool(split.val))
    info["ensemble_weights"] = model.weights.tolist()
    return model, info


def saved_config(models: Path, fold: int = 0):
    """The config the fold models in ``models`` were trained with (that of ``models/foldK``)."""
    from persemo.artifact import read_meta
    from persemo.config import Config

    try:
        return Config.from_dict(read_meta(Path(models) / f"fold{fold}")[1]["config"])
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def load_fit(models: Path, log=print):
    """A ``cross_validate`` ``fit`` that loads each fold's saved model instead of training one."""

    def fit(cfg, labels, train, val, split):
        return fold_model(models, split, labels, log)

    return fit


def remembering(fit, memo: dict, log=print):
    """``fit`` (a ``cross_validate`` fit, or None for its default training) whose model remembers each
    window's per-clip vectors in ``memo`` (``Ensemble.memo``), so that the fold's test windows are computed
    once for ``cross_validate``'s predictions and a benchmark's further passes over them."""
    from persemo.selection import fit_selected

    def run(cfg, labels, train, val, split):
        model, info = (fit(cfg, labels, train, val, split) if fit is not None else
                       fit_selected(cfg, labels, train, val, None, progress=False, log=log))
        model.memo = memo
        return model, info

    return run


def _shared(cfg) -> dict:
    """The settings every member's fit reads: the front end and the training section (threads aside)."""
    d = cfg.to_dict()
    return {"features": d["features"], "train": {k: v for k, v in d["train"].items() if k != "num_threads"}}


def reusable(saved, cfg) -> tuple[dict, list[str]]:
    """The members of the ``saved`` model that ``cfg`` would fit the same way: ({kind: member}, reasons the
    others are refitted). A member is kept when its own config section and the shared settings (features,
    train) are unchanged."""
    old, new = _shared(saved.cfg), _shared(cfg)
    if old != new:
        diff = sorted(f"{sec}.{k}" for sec in new for k in set(new[sec]) | set(old[sec])
                      if new[sec].get(k) != old[sec].get(k))
        return {}, [f"shared settings differ ({', '.join(diff)})"]
    keep, why = {}, []
    for kind in cfg.model.members:
        if kind not in saved.kinds:
            why.append(f"{kind}: not in the saved model")
        elif saved.cfg.model.section(kind) != cfg.model.section(kind):
            why.append(f"{kind}: its settings changed")
        else:
            keep[kind] = saved.members[saved.kinds.index(kind)]
    return keep, why


def reuse_fit(models: Path, cache_dir=None, log=print):
    """A ``cross_validate`` ``fit`` that keeps the members of each fold's saved model whose settings are
    unchanged (``reusable``) and fits the others; the vote is chosen anew (``train_ensemble(keep=...)``).
    Members train independently (each reseeded), so this is the run with only the changed members changed."""
    from persemo.training import train_ensemble

    def fit(cfg, labels, train, val, split):
        saved, _ = fold_model(models, split, labels, log)
        keep, why = reusable(saved, cfg)
        log(f"  keeping {', '.join(keep) or 'no member'}" + (f"; refitting: {'; '.join(why)}" if why else ""))
        return train_ensemble(cfg, labels, train, val, None, progress=False, log=log, cache_dir=cache_dir, keep=keep)

    return fit


class Rows:
    """Named result rows over k folds: each fold's metrics and out-of-fold predictions, summarised as the mean
    ± std over folds with the metrics pooled over all out-of-fold predictions beside them."""

    def __init__(self, labels: list[str]):
        self.labels = list(labels)
        self.per: dict[str, list[dict]] = {}
        self.oof: dict[str, tuple[list, list]] = {}
        self.groups: dict[str, dict] = {}  # averaged rows: name -> group -> (ys, ps)

    def add(self, name: str, y, probs) -> dict:
        """One fold's predictions (N, C) of row ``name``; returns their metrics."""
        from persemo.evaluation import compute_metrics

        m = compute_metrics(y, probs, self.labels)
        self.per.setdefault(name, []).append(m)
        ys, ps = self.oof.setdefault(name, ([], []))
        ys.append(y)
        ps.append(probs)
        return m

    def add_mean(self, name: str, groups: dict) -> dict:
        """One fold's figure as the mean over ``groups`` ({group: (y, probs)}, e.g. one per emotion); pooled:
        each group's predictions pooled over folds, then the mean over groups."""
        import numpy as np

        from persemo.evaluation import METRICS, compute_metrics

        ms = [compute_metrics(y, p, self.labels) for y, p in groups.values()]
        m = {k: float(np.mean([x[k] for x in ms])) for k in METRICS}
        self.per.setdefault(name, []).append(m)
        for g, (y, p) in groups.items():
            ys, ps = self.groups.setdefault(name, {}).setdefault(g, ([], []))
            ys.append(y)
            ps.append(p)
        return m

    def pooled(self) -> dict[str, dict]:
        import numpy as np

        from persemo.crossval import pool
        from persemo.evaluation import METRICS

        out = {n: pool(ys, ps, self.labels) for n, (ys, ps) in self.oof.items()}
        for n, gs in self.groups.items():
            ms = [pool(ys, ps, self.labels) for ys, ps in gs.values()]
            out[n] = {k: float(np.mean([x[k] for x in ms])) for k in METRICS}
        return out

    def summary(self) -> dict[str, dict]:
        """{row: summarise_folds(...) with "pooled"}, rows in the order first added."""
        from persemo.crossval import summarise

        return summarise(self.per, self.pooled())


POOLED_NOTE = ("Mean ± std over folds (%), and \"pooled\": the same metric over all folds' out-of-fold "
               "predictions taken together.")


def add_run_args(ap, epochs: bool = True) -> None:
    """The arguments every cross-validation benchmark takes: corpus, data, config, folds, epochs, tag, results."""
    ap.add_argument("--corpus", default="emodb")
    ap.add_argument("--data", type=Path, default=EMODB)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--folds", type=int, default=5)
    if epochs:
        ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--tag", default="")
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="where the result files go (default: benchmarks/results)")
