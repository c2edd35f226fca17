"""Inference speed, torch against onnxruntime: real-time factor of one clip, and batch throughput.

    python -m benchmarks.bench_rtf [--model DIR] [--reps 30] [--batch-reps 5]

- single clip: ``predict_wave`` on a 4-s clip (one model window) with ONE CPU thread for each
  backend (``torch.set_num_threads(1)``; onnxruntime ``intra_op_num_threads=1``); the real-time
  factor is processing time / audio duration (target: under 0.01);
- batch: ``probabilities`` on 32 such clips at once with 2 threads each; clips per second.

The model is ``--model`` (a run directory), or by default an untrained model of the default config
built in a temporary folder (speed does not depend on the weights). It is exported to a temporary
.onnx with ``persemo.export.export_onnx`` (checked against torch). Repetitions alternate between the
backends so that a change in the machine's load hits both; medians are reported, with the CPU
seconds used. Writes benchmarks/results/rtf.json and rtf.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .common import machine_info, write_results

CLIP_S = 4.0
BATCH = 32
TARGET_RTF = 0.01


class _Clock:
    """Wall and process CPU seconds (all threads, user + system; ``process_time``, not ``os.times``
    whose 10-ms ticks are coarser than one clip) of a block."""

    def __enter__(self):
        self._t, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.cpu = time.process_time() - self._c
        self.wall = time.perf_counter() - self._t


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _timed(fns: dict, reps: int, warmup: int = 3) -> dict[str, dict[str, list[float]]]:
    """Run each fn ``warmup`` times, then ``reps`` rounds in which each runs once, in turn."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {k: {"wall": [], "cpu": []} for k in fns}
    for r in range(reps):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))  # neither always goes first
        for k in order:
            with _Clock() as c:
                fns[k]()
            out[k]["wall"].append(c.wall)
            out[k]["cpu"].append(c.cpu)
    return out


def run(model: Path | None = None, reps: int = 30, batch_reps: int = 5, log=print) -> dict:
    import numpy as np
    import torch

    from persemo.export import export_onnx, load_recogniser, synthetic_clip

    tmp = tempfile.TemporaryDirectory(prefix="bench_rtf.")
    if model is None:
        from persemo.artifact import save_model
        from persemo.config import load_config
        from persemo.ensemble import Ensemble

        torch.manual_seed(0)
        model = save_model(Path(tmp.name) / "model",
                           Ensemble(load_config(), ["anger", "neutral", "sadness", "happiness", "surprise", "fear"]))
        source = "untrained model, default config"
    else:
        source = str(model)
    from persemo.artifact import read_meta

    members = read_meta(model)[1]["members"]
    log(f"exporting {source} ...")
    rep = export_onnx(model, Path(tmp.name) / "model.onnx")
    log(f"  max |onnx - torch| on the check clips: {rep.max_diff:.2e}")

    sr = 16000
    wave = synthetic_clip(int(CLIP_S * sr), seed=1)
    batch = [synthetic_clip(int(CLIP_S * sr), seed=2 + i) for i in range(BATCH)]

    # single clip, one thread each
    torch.set_num_threads(1)
    rt = load_recogniser(model, "torch")
    ro = load_recogniser(rep.path, "onnx", threads=1)
    agree = float(np.abs(rt.probabilities([wave]) - ro.probabilities([wave])).max())
    log(f"single {CLIP_S:g}-s clip, 1 thread, {reps} alternating repetitions ...")
    single = _timed({"torch": lambda: rt.predict_wave(wave), "onnxruntime": lambda: ro.predict_wave(wave)}, reps)

    # batch of 32, two threads each
    torch.set_num_threads(2)
    ro2 = load_recogniser(rep.path, "onnx", threads=2)
    diff = float(np.abs(rt.probabilities(batch) - ro2.probabilities(batch)).max())
    log(f"batch of {BATCH}, 2 threads, {batch_reps} alternating repetitions ...")
    many = _timed({"torch": lambda: rt.probabilities(batch), "onnxruntime": lambda: ro2.probabilities(batch)},
                  batch_reps, warmup=1)
    tmp.cleanup()

    res: dict = {"model": source, "members": members, "clip_seconds": CLIP_S, "batch": BATCH, "target_rtf": TARGET_RTF,
                 "export": {"opset": rep.opset, "seconds": round(rep.seconds, 2), "size_mb": round(rep.size_bytes / 1e6, 2),
                            "check_max_abs_diff": rep.max_diff},
                 "agreement": {"single_clip_max_abs_diff": agree, "batch_max_abs_diff": diff},
                 "method": {"single_reps": reps, "batch_reps": batch_reps, "warmup": 3,
                            "single_threads": 1, "batch_threads": 2, "interleaved": True},
                 "single": {}, "batch_results": {}}
    for k, v in single.items():
        res["single"][k] = {"median_ms": 1e3 * _median(v["wall"]), "min_ms": 1e3 * min(v["wall"]),
                            "median_cpu_ms": 1e3 * _median(v["cpu"]), "rtf": _median(v["wall"]) / CLIP_S,
                            "rtf_cpu": _median(v["cpu"]) / CLIP_S, "rtf_best": min(v["wall"]) / CLIP_S}
    for k, v in many.items():
        res["batch_results"][k] = {"median_s": _median(v["wall"]), "median_cpu_s": _median(v["cpu"]),
                                   "clips_per_s": BATCH / _median(v["wall"]),
                                   "clips_per_cpu_s": BATCH / _median(v["cpu"])}
    s = res["single"]
    res["speedup_single"] = s["torch"]["median_ms"] / s["onnxruntime"]["median_ms"]
    res["speedup_batch"] = (res["batch_results"]["onnxruntime"]["clips_per_s"]
                            / res["batch_results"]["torch"]["clips_per_s"])
    res["target_met"] = {k: s[k]["rtf"] < TARGET_RTF for k in s}
    res["machine"] = machine_info()
    return res


def markdown(res: dict) -> str:
    s, b = res["single"], res["batch_results"]
    ok = {True: "met", False: "**missed**"}
    lines = [
        "## Inference speed: torch vs onnxruntime",
        "",
        f"Model: {res['model']} ({' + '.join(res.get('members', []))} ensemble, features included), exported to ONNX opset "
        f"{res['export']['opset']} ({res['export']['size_mb']} MB). Repetitions alternate between the backends; "
        "medians.",
        "",
        f"### One {res['clip_seconds']:g}-s clip, one CPU thread (`predict_wave`, {res['method']['single_reps']} "
        "repetitions)",
        "",
        "| backend | median ms | best ms | median CPU ms | real-time factor | RTF (CPU time) | target < 0.01 |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for k in ("torch", "onnxruntime"):
        r = s[k]
        lines.append(f"| {k} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['median_cpu_ms']:.1f} | "
                     f"{r['rtf']:.4f} | {r['rtf_cpu']:.4f} | {ok[res['target_met'][k]]} |")
    lines += [
        "",
        f"### Batch of {res['batch']} clips of {res['clip_seconds']:g} s, two threads (`probabilities`, "
        f"{res['method']['batch_reps']} repetitions)",
        "",
        "| backend | median s | median CPU s | clips / s | clips / CPU s |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in ("torch", "onnxruntime"):
        r = b[k]
        lines.append(f"| {k} | {r['median_s']:.3f} | {r['median_cpu_s']:.3f} | {r['clips_per_s']:.1f} | "
                     f"{r['clips_per_cpu_s']:.1f} |")
    ag = res["agreement"]
    lines += [
        "",
        f"- onnxruntime is {res['speedup_single']:.2f}x torch's speed on one clip and {res['speedup_batch']:.2f}x "
        "on the batch (ratio of medians).",
        f"- Same answers: max |probability difference| {ag['single_clip_max_abs_diff']:.1e} (clip), "
        f"{ag['batch_max_abs_diff']:.1e} (batch); export check {res['export']['check_max_abs_diff']:.1e}.",
        "- The machine is shared with other workers: wall times depend on their load (see the load average "
        "below); CPU times are the steadier measure of the work done.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_rtf", description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="run directory (default: an untrained model)")
    ap.add_argument("--reps", type=int, default=30, help="single-clip repetitions per backend")
    ap.add_argument("--batch-reps", type=int, default=5, help="batch repetitions per backend")
    ap.add_argument("--no-write", action="store_true", help="print only; leave results/ untouched")
    a = ap.parse_args(argv)
    if a.model is not None and not a.model.exists():
        print(f"bench_rtf: model not found: {a.model}", file=sys.stderr)
        return 2
    res = run(a.model, max(1, a.reps), max(1, a.batch_reps), log=lambda m: print(m, file=sys.stderr))
    md = markdown(res)
    print(md)
    if not a.no_write:
        paths = write_results("rtf", res, md)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
