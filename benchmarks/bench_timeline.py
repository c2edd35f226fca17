"""A long recording scored as a timeline against window by window: real-time factor per worker, and its PNG.

    python -m benchmarks timeline --model RUN [--minutes 10] [--vad auto]

The recording is made here and never saved: EmoDB utterances (``../shared``) in a shuffled order, each
followed by a pause of 0.4-1.6 s of faint noise (-60 dBFS), until ``--minutes`` are filled. One thread
(``torch.set_num_threads(1)``, one worker). Timed once each, in this order:

- before: ``Recogniser.predict_wave``, the 4-s windows with 50% overlap, every member on each window;
- after: ``timeline.Timeline.score``: voice activity, then each voiced segment (cut to at most one window)
  scored once, no silence; the VAD's time is included (loading it is not).

Real-time factor = process CPU seconds / audio seconds (the machine is shared: wall seconds are recorded
too). The rows are also checked against the utterances they cover: a row lying inside one utterance is
right when its emotion is that utterance's (the model was trained on most of these utterances: the figure
describes the segmentation, not the model's accuracy; the run's test utterances, from splits.json, are
shown apart). Writes benchmarks/results/timeline.json, .md and timeline.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .common import EMODB, RESULTS, command_line, machine_info, write_results

TARGET_RTF = 0.05
SR = 16000


def joined_recording(seconds: float, seed: int = 0, data: Path = EMODB):
    """(wave (S,) float32, [(start, end, utterance)] in samples): utterances and pauses of faint noise."""
    import numpy as np

    from persemo.audio import load_audio
    from persemo.corpora import scan_corpus

    rng = np.random.default_rng(seed)
    utts = scan_corpus("emodb", data, durations=False).utterances
    order = rng.permutation(len(utts))
    parts, spans, n, k = [], [], 0, 0
    while n < seconds * SR:
        u = utts[order[k % len(order)]]
        k += 1
        w = load_audio(u.path, SR)
        spans.append((n, n + len(w), u))
        pause = (10 ** (-60 / 20) * rng.standard_normal(int(rng.uniform(0.4, 1.6) * SR))).astype(np.float32)
        parts += [w, pause]
        n += len(w) + len(pause)
    wave = np.concatenate(parts)[: int(seconds * SR)]
    return wave, [(a, min(b, len(wave)), u) for a, b, u in spans if a < len(wave)]


class _Clock:
    def __enter__(self):
        self.t, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.t, time.process_time() - self.c


def _agreement(rows: list[dict], spans: list, held_out: set[str]) -> dict:
    """Rows inside one utterance: how many, and the share whose emotion is the utterance's (all, and the
    utterances whose ids are in ``held_out``)."""
    inside = {"all": [0, 0], "held_out": [0, 0]}
    for r in rows:
        a, b = r["start"] * SR, r["end"] * SR
        best = max(spans, key=lambda s: min(b, s[1]) - max(a, s[0]))
        if min(b, best[1]) - max(a, best[0]) < 0.8 * (b - a):
            continue  # mostly outside any one utterance (padding, or two utterances merged)
        hit = r["emotion"] == best[2].emotion
        for key in ("all",) + (("held_out",) if best[2].id in held_out else ()):
            inside[key][0] += 1
            inside[key][1] += hit
    return {k: {"rows": n, "right": h, "share": (h / n if n else None)} for k, (n, h) in inside.items()}


def run(model: Path, minutes: float, vad: str, plots: Path = RESULTS, log=print) -> dict:
    import torch

    from persemo.inference import Recogniser
    from persemo.timeline import Timeline, TimelineSettings, plot_result

    torch.set_num_threads(1)
    rec = Recogniser.load(model)
    tl = Timeline(rec, TimelineSettings(vad=vad))
    torch.set_num_threads(1)
    wave, spans = joined_recording(60 * minutes)
    dur = len(wave) / SR
    splits = model / "splits.json"
    held_out = set()  # the run's test utterances (its training never saw their speakers)
    if splits.is_file():
        held_out = {i for sp in json.loads(splits.read_text()).get("splits", []) for i in sp.get("test", [])}
    log(f"{dur:.0f} s recording of {len(spans)} utterances; model {rec.members}; VAD {tl.vad.name}")
    rec.probabilities([wave[: rec.window]])  # warm up both paths
    log("after: timeline ...")
    with _Clock() as after:
        res = tl.score(wave, source="joined")
    log(f"  {after.cpu:.1f} s CPU, {len(res['segments'])} rows; before: window by window ...")
    with _Clock() as before:
        old = rec.predict_wave(wave, source="joined")
    log(f"  {before.cpu:.1f} s CPU, {len(old['windows'])} windows")
    png = plot_result({**res, "file": f"{minutes:g}-min recording of joined EmoDB utterances"}, plots, "timeline")
    voiced = sum(r["end"] - r["start"] for r in res["segments"])
    return {"model": str(model), "members": rec.members, "seconds": dur, "utterances": len(spans),
            "vad": res["vad"], "threads": 1, "target_rtf": TARGET_RTF,
            "before": {"windows": len(old["windows"]), "cpu_s": before.cpu, "wall_s": before.wall,
                       "rtf_cpu": before.cpu / dur, "emotion": old["emotion"]},
            "after": {"rows": len(res["segments"]), "segments": len({r["segment"] for r in res["segments"]}),
                      "voiced_s": voiced, "cpu_s": after.cpu, "wall_s": after.wall, "rtf_cpu": after.cpu / dur,
                      "emotion": res["emotion"], "combined": res["combined"]},
            "speedup_cpu": before.cpu / after.cpu, "target_met": after.cpu / dur <= TARGET_RTF,
            "rows_inside_one_utterance": _agreement(res["segments"], spans, held_out),
            "held_out_utterances": len(held_out), "png": png.name, "png_bytes": png.stat().st_size,
            "command": command_line("python -m benchmarks timeline", sys.argv[2:] if sys.argv[1:2] == ["timeline"]
                                    else sys.argv[1:]), "machine": machine_info()}


def markdown(res: dict) -> str:
    b, a = res["before"], res["after"]
    ag = res["rows_inside_one_utterance"]

    def share(k):
        x = ag[k]
        return f"{x['right']} of {x['rows']}" + (f" ({100 * x['share']:.0f}%)" if x["share"] is not None else "")

    lines = [
        "## A long recording as a timeline, one worker (one thread)",
        "",
        f"{res['seconds'] / 60:.1f} minutes made of {res['utterances']} EmoDB utterances joined with 0.4-1.6 s pauses "
        f"of faint noise; model `{res['model']}` (members {', '.join(res['members'])}); VAD {res['vad']['name']}.",
        "",
        "| path | rows scored | CPU s | wall s | RTF (CPU) | target <= 0.05 |",
        "|---|---:|---:|---:|---:|---|",
        f"| before: windows of 4 s, 50% overlap (`predict_wave`) | {b['windows']} | {b['cpu_s']:.1f} | "
        f"{b['wall_s']:.1f} | {b['rtf_cpu']:.3f} | {'met' if b['rtf_cpu'] <= res['target_rtf'] else 'missed'} |",
        f"| after: voiced segments, each once (`Timeline.score`) | {a['rows']} | {a['cpu_s']:.1f} | {a['wall_s']:.1f} | "
        f"{a['rtf_cpu']:.3f} | {'met' if res['target_met'] else '**missed**'} |",
        "",
        f"- {res['speedup_cpu']:.1f}x less CPU. The timeline scored {a['voiced_s']:.0f} s of voiced audio "
        f"({a['segments']} segments) where the windows covered {4 * b['windows']:.0f} s; VAD time included.",
        f"- Summary row: {a['emotion']}, {a['combined']}.",
        f"- Rows lying inside one utterance whose emotion is that utterance's: {share('all')}; inside one of the "
        f"run's test utterances (speakers its training never heard): {share('held_out')}.",
        f"- Plot: [{res['png']}]({res['png']}) ({res['png_bytes'] / 1024:.0f} KB, palette PNG).",
        "",
        f"Command: `{res['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks timeline", description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="run directory of a trained model")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the joined recording")
    ap.add_argument("--vad", default="auto", help="auto, silero or energy")
    ap.add_argument("--no-write", action="store_true", help="print only; leave results/ untouched")
    a = ap.parse_args(argv)
    if not a.model.exists():
        print(f"bench_timeline: model not found: {a.model}", file=sys.stderr)
        return 2
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # --no-write: the PNG goes nowhere either
        res = run(a.model, a.minutes, a.vad, Path(tmp) if a.no_write else RESULTS,
                  log=lambda m: print(m, file=sys.stderr))
    md = markdown(res)
    print(md)
    if not a.no_write:
        print("wrote " + ", ".join(str(p) for p in write_results("timeline", res, md)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
