"""Peak resident memory and wall time of training and of ``predict``, each in its own process.

    python -m benchmarks memory [--config benchmarks/configs/ensemble.yaml] [--epochs 2]

Runs ``persemo train`` (EmoDB, one speaker-independent split, ``--epochs`` epochs) and then ``persemo
predict`` on ten of its files, each as a child process, and reads the child's peak resident set size
(``ru_maxrss`` from ``os.wait4``). Training memory does not grow with the number of epochs (the data
is held once, in memory, as 16 kHz waveforms), so a short run measures it. Per-epoch training time
of the full runs is in the emodb results (member seconds / epochs).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import EMODB, command_line, machine_info, write_results

ROOT = Path(__file__).resolve().parents[1]
# the benchmark ensemble (three members, no validation split): its file since the bench configs moved, else
# where it was before
DEFAULT_CONFIG = next((p for p in (ROOT / "benchmarks" / "configs" / "ensemble.yaml",
                                   ROOT / "configs" / "bench-ensemble.yaml") if p.is_file()),
                      ROOT / "benchmarks" / "configs" / "ensemble.yaml")


def _run(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process; raises if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({code}): {err.strip().splitlines()[-1:]}")
    return wall, usage.ru_maxrss / 1024.0  # Linux: KiB


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=EMODB)
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args(argv)
    if not a.data.exists():
        raise SystemExit(f"benchmarks.memory: data not found: {a.data}")
    exe = [sys.executable, "-m", "persemo"]
    files = sorted(str(p) for p in a.data.glob("*.wav"))[:10]
    with tempfile.TemporaryDirectory(prefix="persemo-mem-") as tmp:
        out = Path(tmp) / "run"
        train = exe + ["train", "--corpus", "emodb", "--data", str(a.data), "--out", str(out), "--config",
                       str(a.config), "--epochs", str(a.epochs)]
        t_wall, t_rss = _run(train)
        p_wall, p_rss = _run(exe + ["predict", "--model", str(out), *files, "--json"])
        p1_wall, p1_rss = _run(exe + ["predict", "--model", str(out), files[0], "--json"])
    rows = [("train (EmoDB split, %d epochs)" % a.epochs, t_wall, t_rss),
            ("predict, 10 files", p_wall, p_rss), ("predict, 1 file", p1_wall, p1_rss)]
    cmd = command_line("python -m benchmarks memory", argv or [])
    md = ["## Peak resident memory (one process each)", "",
          f"Command: `{cmd}`; config `{a.config.relative_to(ROOT) if a.config.is_relative_to(ROOT) else a.config}`. "
          "Wall time includes start-up (imports, model loading; for train, also the feature cache and the "
          "openSMILE member's fit).", "",
          "| process | wall s | peak RSS MiB |", "|---|---:|---:|"]
    md += [f"| {n} | {w:.1f} | {r:.0f} |" for n, w, r in rows]
    write_results("memory", {"command": cmd, "config": str(a.config), "epochs": a.epochs, "machine": machine_info(),
                             "rows": [{"process": n, "wall_seconds": w, "peak_rss_mib": r} for n, w, r in rows]},
                  "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
