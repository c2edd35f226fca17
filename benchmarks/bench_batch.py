"""Scoring an archive: the local process pool against Ray and Dask in local mode, side by side.

    python -m benchmarks batch --model RUN [--files 300] [--jobs 1,2] [--engines local,dask,ray]
                               [--cache-config FILE] [--kill]

The archive is ``--files`` clips, half EmoDB and half ASED (every k-th file, read in place), plus 5%
unreadable files (written to a temporary folder). For each engine and number of workers it maps the
batch predictor (``persemo.batch.predictor``: the model loaded once per worker) over the archive and
records: the start-up (engine up, workers' model loaded: until the first row), the steady throughput
(rows after the first / time after the first), the whole wall time, each worker's peak RSS, and how far
the probabilities are from the first configuration's (they must be equal). Also: each engine's install
size (its distributions' files, and those it added beside persemo's own dependencies), the feature cache
filled by 1 and 2 workers (time, identical bytes), and with ``--kill`` a ``persemo predict --out`` killed
with SIGKILL after its second chunk, then rerun (every file exactly once, no partial row).
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from .common import SHARED, command_line, machine_info, write_results

ASED = SHARED / "data" / "ased"
EMODB = SHARED / "data" / "emodb" / "wav"
# what `pip install` added here for each engine (pip's dry run beside persemo's dependencies), and its core
ENGINE_DISTS = {"ray": (["ray"], ["ray", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py"]),
                "dask": (["dask", "distributed"], ["dask", "distributed", "importlib_metadata", "lazy-importer",
                                                   "locket", "partd", "psutil", "tblib", "toolz", "tornado",
                                                   "zict", "zipp"])}


def dist_mb(names: list[str]) -> float | None:
    total = 0
    for n in names:
        try:
            files = metadata.distribution(n).files or []
        except metadata.PackageNotFoundError:
            return None
        total += sum(f.size or 0 for f in files)
    return round(total / 1e6, 1)


def archive_files(n: int, folder: Path) -> list[str]:
    """n // 2 EmoDB and n - n // 2 ASED clips (evenly spaced), then 5% unreadable files in ``folder``."""
    emo = sorted(str(p) for p in EMODB.glob("*.wav"))
    with (ASED / "manifest.csv").open(newline="") as fh:
        ased = [str(ASED / r["path"]) for r in csv.DictReader(fh)]
    pick = lambda xs, k: [xs[int(i)] for i in np.linspace(0, len(xs) - 1, k)] if k else []  # noqa: E731
    files = pick(emo, n // 2) + pick(ased, n - n // 2)
    for i in range(max(1, round(0.05 * n))):
        bad = folder / f"unreadable{i:03d}.wav"
        bad.write_bytes(b"RIFF" + os.urandom(200))
        files.append(str(bad))
    return files


def measured(model: str):
    """The batch predictor, each row tagged with the worker's pid and its peak RSS so far (MiB)."""
    from persemo.batch import predictor

    fn = predictor(model)

    def run(batch):
        per_file = fn(batch)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        return [[{**r, "_pid": os.getpid(), "_rss": rss} for r in rows] for rows in per_file]

    return run


def engine_startup(engine: str, jobs: int) -> float:
    """Seconds until ``jobs`` workers of ``engine`` answered a trivial batch (no model)."""
    from persemo.parallel import MapSettings, map_items

    t0 = time.perf_counter()
    list(map_items(_noop_factory, list(range(jobs)), MapSettings(jobs=jobs, engine=engine, batch_size=1)))
    return time.perf_counter() - t0


def _noop(batch):
    return batch


def _noop_factory():
    return _noop


def run_map(model: str, files: list[str], engine: str, jobs: int, batch_size: int) -> dict:
    from persemo.archive import file_key
    from persemo.parallel import MapSettings, map_items

    items = [(file_key(f), f) for f in files]
    t0 = time.perf_counter()
    stamps, rows = [], {}
    settings = MapSettings(jobs, engine, batch_size=batch_size)
    for i, file_rows in map_items(functools.partial(measured, model), items, settings):
        stamps.append(time.perf_counter() - t0)
        rows[i] = file_rows[0]
    first, wall = stamps[0], stamps[-1]
    rss: dict[int, float] = {}
    for r in rows.values():
        rss[r["_pid"]] = max(rss.get(r["_pid"], 0.0), r["_rss"])
    return {"engine": engine, "jobs": jobs, "first_row_s": first, "wall_s": wall,
            "steady_files_per_s": (len(rows) - 1) / max(1e-9, wall - first), "files_per_s": len(rows) / wall,
            "errors": sum(r["status"] != "ok" for r in rows.values()),
            "audio_hours": sum(r["duration"] or 0 for r in rows.values()) / 3600,
            "peak_rss_mib_per_worker": sorted(round(v) for v in rss.values()),
            "rows": [rows[i] for i in range(len(files))]}


def compare(a: list[dict], b: list[dict]) -> dict:
    pa = np.array([[v for k, v in r.items() if k.startswith("p_")] for r in a if r["status"] == "ok"], float)
    pb = np.array([[v for k, v in r.items() if k.startswith("p_")] for r in b if r["status"] == "ok"], float)
    same_status = [r["status"] for r in a] == [r["status"] for r in b]
    return {"max_abs_prob_diff": float(np.abs(pa - pb).max()) if pa.shape == pb.shape and pa.size else None,
            "same_status": same_status}


def tree_digest(root: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return len(files), h.hexdigest()[:16]


def cache_fill(files: list[str], config: Path, tmp: Path, jobs_list: list[int]) -> list[dict]:
    from persemo.cachefill import fill_cache
    from persemo.config import load_config
    from persemo.corpora.base import Utterance
    from persemo.parallel import MapSettings

    cfg = load_config(config)
    utts = [Utterance(id=str(i), path=f, emotion="x", speaker="x") for i, f in enumerate(files)]
    out = []
    for jobs in jobs_list:
        root = tmp / f"cache{jobs}"
        t0 = time.perf_counter()
        fill_cache(utts, cfg, root, MapSettings(jobs, batch_size=8), log=lambda m: None)
        n, digest = tree_digest(root)
        out.append({"jobs": jobs, "seconds": time.perf_counter() - t0, "entries": n, "digest": digest})
    return out


def kill_and_resume(model: str, files: list[str], tmp: Path) -> dict:
    manifest = tmp / "kill.csv"
    manifest.write_text("path\n" + "\n".join(files) + "\n")
    out = tmp / "kill-results.csv"
    cmd = [sys.executable, "-m", "persemo", "predict", "--model", model, str(manifest), "--out", str(out),
           "--jobs", "2", "--chunk", "8", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = out.with_name(out.name + ".parts")
    while proc.poll() is None and len(list(parts.glob("*.jsonl")) if parts.is_dir() else []) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its pool workers: its own session, started here
    proc.wait()
    kept = sum(len(p.read_text().splitlines()) for p in parts.glob("*.jsonl"))
    res = subprocess.run(cmd, capture_output=True, text=True)
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {"rows_before_kill": kept, "rerun": res.stdout.strip(), "rows": len(rows),
            "distinct_files": len({r["file"] for r in rows}), "inputs": len(set(files)),
            "partial_rows": sum(1 for r in rows if r["model"] in (None, "") or r["status"] in (None, ""))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a trained run directory")
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--jobs", default="1,2")
    ap.add_argument("--engines", default="local,dask,ray")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--cache-config", type=Path, default=None, help="also fill the cache for this config")
    ap.add_argument("--kill", action="store_true", help="also the kill -9 / rerun check")
    ap.add_argument("--name", default="batch")
    a = ap.parse_args(argv)
    jobs_list = [int(j) for j in a.jobs.split(",")]
    engines = a.engines.split(",")
    data: dict = {"command": command_line("python -m benchmarks batch", argv or sys.argv[1:]),
                  "machine": machine_info(), "load_average_start": os.getloadavg(), "model": a.model}
    data["install_mb"] = {e: {"core": dist_mb(c), "added": dist_mb(added)} for e, (c, added) in ENGINE_DISTS.items()}
    with tempfile.TemporaryDirectory(prefix="persemo-batch-") as t:
        tmp = Path(t)
        files = archive_files(a.files, tmp)
        data["archive"] = {"files": len(files), "unreadable": sum("unreadable" in f for f in files)}
        data["startup_s"] = {f"{e} x{j}": round(engine_startup(e, j), 2) for e in engines for j in jobs_list}
        print("start-up", data["startup_s"], flush=True)
        runs = []
        for e in engines:
            for j in jobs_list:
                r = run_map(a.model, files, e, j, a.batch_size)
                print(e, j, {k: v for k, v in r.items() if k != "rows"}, flush=True)
                runs.append(r)
        for r in runs:
            r.update(compare(runs[0]["rows"], r["rows"]))
        data["runs"] = [{k: v for k, v in r.items() if k != "rows"} for r in runs]
        if a.cache_config:
            data["cache_fill"] = cache_fill(files, a.cache_config, tmp, jobs_list)
            print("cache", data["cache_fill"], flush=True)
        if a.kill:
            data["kill"] = kill_and_resume(a.model, files, tmp)
            print("kill", data["kill"], flush=True)
    data["load_average_end"] = os.getloadavg()
    write_results(a.name, data, markdown(data))


def markdown(d: dict) -> str:
    lines = [f"# Scoring an archive ({d['archive']['files']} files, {d['archive']['unreadable']} unreadable)", "",
             f"`{d['command']}`; load average {d['load_average_start'][0]:.1f} at the start, "
             f"{d['load_average_end'][0]:.1f} at the end (2 cores shared).", "",
             "| engine | workers | until first row (s) | steady files/s | wall (s) | files/s | peak RSS per worker "
             "(MiB) | max prob diff | errors |", "|---|---|---|---|---|---|---|---|---|"]
    for r in d["runs"]:
        lines.append(f"| {r['engine']} | {r['jobs']} | {r['first_row_s']:.1f} | {r['steady_files_per_s']:.2f} | "
                     f"{r['wall_s']:.1f} | {r['files_per_s']:.2f} | "
                     f"{', '.join(map(str, r['peak_rss_mib_per_worker']))} "
                     f"| {r['max_abs_prob_diff']} | {r['errors']} |")
    lines += ["", "Start-up, trivial batch (s): " + ", ".join(f"{k} {v}" for k, v in d["startup_s"].items()),
              "", "Install size (MB of files): " + ", ".join(
                  f"{e} {v['core']} (with what it added: {v['added']})" for e, v in d["install_mb"].items())]
    if "cache_fill" in d:
        lines += ["", "Cache fill: " + ", ".join(f"{c['jobs']} worker(s) {c['seconds']:.1f} s, {c['entries']} "
                                                 f"entries, digest {c['digest']}" for c in d["cache_fill"])]
    if "kill" in d:
        k = d["kill"]
        lines += ["", f"kill -9 after the second chunk: {k['rows_before_kill']} rows kept; rerun: {k['rerun']}; "
                      f"{k['rows']} rows, {k['distinct_files']} distinct of {k['inputs']} inputs, "
                      f"{k['partial_rows']} partial"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
