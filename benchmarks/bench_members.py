"""Speed of each member of a saved model, and of the whole model, on one 4-s clip with ONE CPU thread.

    python -m benchmarks members --model DIR [--reps 20] [--name members_rtf]

For every member: the wall and CPU seconds of ``Member.probabilities`` on a batch of one 4-s window
(the front end's features computed inside the timed block for the members that read them); for the
whole model: ``Recogniser.predict_wave`` on the same clip. Repetitions alternate between the members so
that a change in the machine's load hits all of them; medians are reported with the real-time factor
(seconds / 4 s). Also the cold start of ``persemo predict`` on one file (a child process: imports, model
load, one clip), median of ``--cold`` runs, wall and CPU, alternating with another version's code on its
own model when ``--baseline-model`` and ``--baseline-code`` are given. Writes benchmarks/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf
import torch

from persemo.export import synthetic_clip
from persemo.features import pad_batch
from persemo.inference import Recogniser
from persemo.members.base import Batch

from .common import machine_info, write_results

CLIP_S = 4.0


def _clock(fn) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def _predict_once(model: Path, clip: Path, env: dict | None = None) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "persemo", "predict", "--model", str(model), str(clip)],
                   check=True, capture_output=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cold_start(models: dict[str, tuple[Path, dict | None]], clip: Path, runs: int) -> dict:
    """``persemo predict --model MODEL CLIP`` as a child process, for each of ``models`` (name -> (run
    directory, environment or None)), alternating: median wall and CPU seconds per name."""
    got = {k: ([], []) for k in models}
    for r in range(runs):
        for k in (list(models) if r % 2 == 0 else list(reversed(models))):
            w, c = _predict_once(models[k][0], clip, models[k][1])
            got[k][0].append(w)
            got[k][1].append(c)
    return {k: {"wall_median": statistics.median(w), "cpu_median": statistics.median(c), "runs": runs,
                "walls": w, "cpus": c, "model": str(models[k][0])} for k, (w, c) in got.items()}


def run(model: Path, reps: int = 20, cold: int = 5, log=print, baseline: tuple[Path, str] | None = None) -> dict:
    torch.set_num_threads(1)
    rec = Recogniser.load(model)
    m = rec.model
    wave = synthetic_clip(int(CLIP_S * 16000), 0)
    batch_wave, lengths = pad_batch([wave])

    def member_fn(member):
        def fn():
            with torch.inference_mode():
                member.probabilities(Batch(batch_wave, lengths, m.front))
        return fn

    fns = {mem.kind: member_fn(mem) for mem in m.members}
    fns["whole model (predict_wave)"] = lambda: rec.predict_wave(wave)
    for fn in fns.values():  # warm-up: first calls build openSMILE objects, mel banks, ...
        fn()
        fn()
    times = {k: {"wall": [], "cpu": []} for k in fns}
    for r in range(reps):
        for k in (list(fns) if r % 2 == 0 else list(reversed(fns))):
            w, c = _clock(fns[k])
            times[k]["wall"].append(w)
            times[k]["cpu"].append(c)
    rows = {k: {"wall_median": statistics.median(v["wall"]), "cpu_median": statistics.median(v["cpu"]),
                "rtf": statistics.median(v["wall"]) / CLIP_S} for k, v in times.items()}
    for k, r in rows.items():
        log(f"{k}: {1000 * r['wall_median']:.0f} ms wall, RTF {r['rtf']:.4f}")
    out = {"model": str(model), "members": rec.members, "clip_seconds": CLIP_S, "reps": reps, "threads": 1,
           "rows": rows, "loadavg_start": os.getloadavg()}
    if cold:
        models = {"this version": (model, None)}
        if baseline is not None:  # another version's code (PYTHONPATH) on its own saved model
            models["baseline"] = (baseline[0], {**os.environ, "PYTHONPATH": baseline[1]})
        with tempfile.TemporaryDirectory() as d:
            clip = Path(d) / "clip.wav"
            sf.write(clip, wave, 16000)
            out["cold_start"] = cold_start(models, clip, cold)
        for k, c in out["cold_start"].items():
            log(f"persemo predict cold start ({k}): {c['wall_median']:.2f} s wall, {c['cpu_median']:.2f} s CPU "
                f"(median of {cold})")
    out["loadavg_end"] = os.getloadavg()
    return out


def markdown(res: dict) -> str:
    lines = [f"## Member speed: one 4-s clip, one CPU thread", "",
             f"Model: `{res['model']}` (members {', '.join(res['members'])}); median of {res['reps']} alternating "
             f"repetitions. Load average {res['loadavg_start'][0]:.1f} at the start, {res['loadavg_end'][0]:.1f} at "
             "the end (other jobs share the machine: wall includes waiting for a core).", "",
             "| part | wall ms | CPU ms | real-time factor |", "|---|---|---|---|"]
    for k, r in res["rows"].items():
        lines.append(f"| {k} | {1000 * r['wall_median']:.0f} | {1000 * r['cpu_median']:.0f} | {r['rtf']:.4f} |")
    if "cold_start" in res:
        lines += ["", "`persemo predict` on one file, cold (a new process: imports, model load, one clip), runs "
                      "alternating:", "", "| code | model | wall s (median) | CPU s (median) |", "|---|---|---|---|"]
        for k, c in res["cold_start"].items():
            lines.append(f"| {k} | `{c['model']}` | {c['wall_median']:.2f} | {c['cpu_median']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="run directory of a trained model")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--cold", type=int, default=5, help="cold-start runs of persemo predict (0: none)")
    ap.add_argument("--baseline-model", type=Path, default=None, help="a model saved by another version")
    ap.add_argument("--baseline-code", default=None, help="that version's src folder (put first on PYTHONPATH), "
                                                          "e.g. a git worktree's src")
    ap.add_argument("--name", default="members_rtf")
    a = ap.parse_args(argv)
    base = (a.baseline_model, a.baseline_code) if a.baseline_model and a.baseline_code else None
    res = run(a.model, a.reps, a.cold, baseline=base)
    res["command"] = ("python -m benchmarks members --model " + str(a.model) + f" --reps {a.reps} --cold {a.cold}"
                      + (f" --baseline-model {a.baseline_model} --baseline-code {a.baseline_code}" if base else ""))
    res["machine"] = machine_info()
    write_results(a.name, res, markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
