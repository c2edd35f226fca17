"""Helpers shared by the benchmark scripts: where and when a run happened, and writing its results.

    data = {..., "machine": machine_info()}
    write_results("prepare", data, markdown)   # -> results/prepare.json and results/prepare.md

Both files are written atomically (a temporary file renamed into place), so an interrupted run
never leaves half a result beside the previous one.
"""

from __future__ import annotations

import json
import os
import platform
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
    from persemo.corpora.base import atomic_write_text

    atomic_write_text(path, text)


def write_results(name: str, data: dict, markdown: str, results_dir: str | Path | None = None
                  ) -> tuple[Path, Path]:
    """Write ``<name>.json`` (``data``, with ``machine`` added when missing) and ``<name>.md``
    (``markdown`` followed by the stamp line) under benchmarks/results/, atomically.

    Returns the two paths.
    """
    out_dir = Path(results_dir) if results_dir is not None else RESULTS
    data = dict(data)
    machine = data.setdefault("machine", machine_info())
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    _atomic_write(json_path, json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable) + "\n")
    _atomic_write(md_path, markdown.rstrip("\n") + "\n\n" + stamp_line(machine) + "\n")
    return json_path, md_path


def fold_model(models: Path | None, fold: int, test_ids: list[str], train, val, cfg, labels, log):
    """A fold's model: loaded from ``models/foldK`` (saved by ``benchmarks.emodb --save-models``), checked to
    have been tested on the same utterances, else trained here."""
    if models is None:
        from persemo.training import train_ensemble

        return train_ensemble(cfg, labels, train, val, None, progress=False, log=log)[0]
    from persemo.artifact import load_model, read_meta

    d = models / f"fold{fold}"
    _, meta = read_meta(d)
    saved = meta.get("benchmark_fold", {}).get("test_ids")
    if saved is None or sorted(saved) != sorted(test_ids):
        raise SystemExit(f"{d}: not trained for this fold (its test utterances differ); re-run benchmarks.emodb")
    model = load_model(d)[0]
    if model.labels != labels:
        raise SystemExit(f"{d}: labels {model.labels} differ from the corpus's {labels}")
    log(f"  loaded {d} ({model.cfg.features.normalisation} normalisation)")
    return model


def add_run_args(ap, epochs: bool = True) -> None:
    """The arguments every cross-validation benchmark takes: corpus, data, config, folds, epochs, tag."""
    ap.add_argument("--corpus", default="emodb")
    ap.add_argument("--data", type=Path, default=EMODB)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--folds", type=int, default=5)
    if epochs:
        ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--tag", default="")
