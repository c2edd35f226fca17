"""The whisper member through onnxruntime against torch, on the same real 4-s clips, one thread.

    python -m benchmarks onnx-whisper --model RUN [--onnx FILE] [--clips 12] [--reps 5]

RUN is a trained model whose members include whisper (e.g. ``persemo train --corpus emodb --data
../shared/data/emodb/wav --out RUN --config benchmarks/configs/whisper.yaml``); it is exported to a
temporary .onnx (``persemo.export.export_onnx``, checked against torch) unless ``--onnx`` names an export
of it. Clips: 4 s (one model window) of real speech, EmoDB utterances of one speaker joined (``real_clips``).

Timed per clip, one at a time, one intra-op thread each (``torch.set_num_threads(1)``, onnxruntime
``intra_op_num_threads=1``), repetitions alternating the order of the variants:

- torch: the member as ``Recogniser`` runs it (``probabilities`` of the torch model: every member);
- torch, every block: the same member computing all encoder blocks, as it did before its encoder stopped
  after the last block it reads (what the change to ``embed`` saved, apart from onnxruntime's part);
- onnxruntime: ``OnnxRecogniser.probabilities`` on the exported graph (log-mel, encoder, pooling, head).

Medians of wall and process CPU time; the probabilities' largest difference over all clips. Writes
benchmarks/results/onnx_whisper.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .bench_rtf import _median, _timed
from .common import EMODB, command_line, machine_info, write_results

CLIP_S = 4.0
TARGET_SPEEDUP = 1.3
TARGET_DIFF = 1e-3


def real_clips(n: int, seconds: float = CLIP_S, data: Path = EMODB) -> list:
    """``n`` real clips of exactly ``seconds``: EmoDB utterances in id order, each joined to the next ones of
    the same speaker until long enough (the copy in ../shared holds 2-s clips), then cut."""
    import numpy as np

    from persemo.audio import load_audio
    from persemo.corpora import scan_corpus

    want = int(seconds * 16000)
    out, parts, ids, speaker = [], [], [], None
    for u in sorted(scan_corpus("emodb", data, durations=False).utterances, key=lambda u: u.id):
        if u.speaker != speaker:
            parts, ids, speaker = [], [], u.speaker
        parts.append(load_audio(u.path, 16000))
        ids.append(u.id)
        if sum(len(p) for p in parts) >= want:
            out.append(("+".join(ids), np.concatenate(parts)[:want]))
            parts, ids = [], []
        if len(out) == n:
            break
    return out


def run(model: Path, onnx: Path | None, n_clips: int, reps: int, log=print) -> dict:
    import numpy as np
    import torch

    from persemo.encoders.whisper import embed
    from persemo.export import export_onnx, load_recogniser

    tmp = tempfile.TemporaryDirectory(prefix="bench_onnx_whisper.")
    export = None
    if onnx is None:
        log(f"exporting {model} ...")
        rep = export_onnx(model, Path(tmp.name) / "model.onnx", log=log)
        onnx = rep.path
        export = {"seconds": round(rep.seconds, 1), "size_mb": round(rep.size_bytes / 1e6, 1),
                  "check_max_abs_diff": rep.max_diff, "members": rep.members, "omitted": rep.omitted}
    torch.set_num_threads(1)
    rt = load_recogniser(model, "torch")
    ro = load_recogniser(onnx, "onnx", threads=1)
    if "whisper" not in rt.members:
        raise SystemExit(f"bench_onnx_whisper: {model} has no whisper member ({rt.members})")
    row = rt.members.index("whisper")
    member = rt.model.members[row]
    clips = real_clips(n_clips)
    log(f"{len(clips)} clips of {CLIP_S:g} s; blocks {list(member.view)} of {member.encoder.n_layers}")

    def torch_all_blocks(w):
        X = member._pool(embed(member.encoder, [w], None, member.stats)).astype(np.float64)
        return member.head.predict_proba(X if member.norm is None else (X - member.norm[0]) / member.norm[1])

    diffs, per_clip = [], []
    for cid, w in clips:
        a = rt.probabilities([w])[row, 0]
        b = ro.probabilities([w])[ro.members.index("whisper"), 0]
        c = torch_all_blocks(w)[0]
        diffs.append(float(np.abs(a - b).max()))
        fns = {"torch": lambda: rt.probabilities([w]), "torch, every block": lambda: torch_all_blocks(w),
               "onnxruntime": lambda: ro.probabilities([w])}
        t = _timed(fns, reps, warmup=1)
        per_clip.append({"clip": cid, "max_abs_diff": diffs[-1], "every_block_diff": float(np.abs(a - c).max()),
                         **{k: {"wall_ms": 1e3 * _median(v["wall"]), "cpu_ms": 1e3 * _median(v["cpu"])}
                            for k, v in t.items()}})
        log(f"  {cid}: " + ", ".join(f"{k} {per_clip[-1][k]['cpu_ms']:.0f} ms CPU" for k in fns)
            + f"; |diff| {diffs[-1]:.1e}")
    tmp.cleanup()
    variants = ("torch", "torch, every block", "onnxruntime")
    summary = {k: {"wall_ms": _median([c[k]["wall_ms"] for c in per_clip]),
                   "cpu_ms": _median([c[k]["cpu_ms"] for c in per_clip])} for k in variants}
    for k in variants:
        summary[k]["rtf_cpu"] = summary[k]["cpu_ms"] / 1e3 / CLIP_S
    speed = {"cpu": summary["torch"]["cpu_ms"] / summary["onnxruntime"]["cpu_ms"],
             "wall": summary["torch"]["wall_ms"] / summary["onnxruntime"]["wall_ms"],
             "cpu_vs_every_block": summary["torch, every block"]["cpu_ms"] / summary["onnxruntime"]["cpu_ms"]}
    return {"model": str(model), "members": rt.members, "blocks": list(member.view), "clips": len(clips),
            "clip_seconds": CLIP_S, "reps": reps, "threads": 1, "export": export, "summary": summary,
            "speedup": speed, "max_abs_diff": max(diffs), "per_clip": per_clip,
            "targets": {"speedup": TARGET_SPEEDUP, "max_abs_diff": TARGET_DIFF,
                        "met": speed["cpu"] >= TARGET_SPEEDUP and max(diffs) <= TARGET_DIFF},
            "command": command_line("python -m benchmarks onnx-whisper", sys.argv[2:] if sys.argv[1:2] == [
                "onnx-whisper"] else sys.argv[1:]), "machine": machine_info()}


def markdown(res: dict) -> str:
    s = res["summary"]
    lines = [
        "## The whisper member: onnxruntime against torch, one thread",
        "",
        f"Model: `{res['model']}` (members {', '.join(res['members'])}; whisper reads blocks "
        f"{'+'.join(map(str, res['blocks']))}). {res['clips']} clips of {res['clip_seconds']:g} s (EmoDB utterances of one speaker joined), one "
        f"at a time, {res['reps']} repetitions each alternating the order; medians over repetitions, then over "
        "clips. `torch` is the torch model's `probabilities` (every member), `onnxruntime` the exported graph.",
        "",
        "| variant | median ms | median CPU ms | RTF (CPU) |",
        "|---|---:|---:|---:|",
    ]
    for k, v in s.items():
        lines.append(f"| {k} | {v['wall_ms']:.0f} | {v['cpu_ms']:.0f} | {v['rtf_cpu']:.4f} |")
    sp = res["speedup"]
    t = res["targets"]
    lines += [
        "",
        f"- onnxruntime is {sp['cpu']:.2f}x torch on CPU time ({sp['wall']:.2f}x wall), and {sp['cpu_vs_every_block']:.2f}x "
        f"the member as it ran before its encoder stopped at block {max(res['blocks'])} (target >= {t['speedup']:g}x: "
        f"{'met' if t['met'] else '**missed**'}).",
        f"- Largest |probability difference| onnxruntime - torch over the clips: {res['max_abs_diff']:.1e} "
        f"(target <= {t['max_abs_diff']:g}).",
        "- The machine is shared (see the load average below): CPU time is the steadier measure.",
        "",
        f"Command: `{res['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks onnx-whisper", description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="run directory of a model with a whisper member")
    ap.add_argument("--onnx", type=Path, default=None, help="its export (default: export to a temporary file)")
    ap.add_argument("--clips", type=int, default=12, help="4-s clips of joined EmoDB utterances")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per clip and variant")
    ap.add_argument("--no-write", action="store_true", help="print only; leave results/ untouched")
    a = ap.parse_args(argv)
    for p in (a.model, a.onnx):
        if p is not None and not p.exists():
            print(f"bench_onnx_whisper: not found: {p}", file=sys.stderr)
            return 2
    res = run(a.model, a.onnx, max(1, a.clips), max(1, a.reps), log=lambda m: print(m, file=sys.stderr))
    md = markdown(res)
    print(md)
    if not a.no_write:
        print("wrote " + ", ".join(str(p) for p in write_results("onnx_whisper", res, md)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
