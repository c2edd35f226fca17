"""Long recordings as timelines: voiced segments, each scored once, a summary row, and a plot.

    tl = Timeline(recogniser)                       # the VAD loads once (silero, else frame energy)
    result = tl.score(wave, source="talk.wav")      # predict_wave's shape, "segments" for "windows"
    plot_result(result, "plots/")                   # plots/talk.png: emotions over time

``Recogniser.predict_wave`` cuts audio longer than one window (4 s) into windows with 50% overlap and runs
every member on each, so every second of a recording is encoded twice, silence included: a 10-minute file
cost 94 s of CPU with the whisper + functionals model. A timeline scores what is spoken, once:

1. voice activity (``serve.vad``: silero-vad when it loads, else frame energy) marks 32-ms frames as
   speech, with silero's hysteresis; voiced runs closer than ``merge_gap`` join, runs shorter than
   ``min_speech`` are dropped, and each keeps ``pad`` seconds of context on both sides;
2. a voiced segment longer than ``max_seconds`` (default: the model's window) is cut into equal pieces;
3. every piece is one row, scored by the model as a clip of its own (``Recogniser.probabilities``, in
   batches): each member, the whisper encoder included, sees each sample once and no silence;
4. the summary row is the duration-weighted mean of the rows' distributions (``combined`` says so).

Why each segment on its own, not the recording in 30-s chunks pooled per window: the members were fitted
on clips encoded alone (the whisper member's encoder attends over the clip's own frames only), so a row
scored alone is exactly what the model was trained to judge; frames of a 30-s chunk would carry their
neighbours' context (other utterances, other emotions) into each window. Non-overlapping rows are also
what makes encoding once possible at all: the states of overlapping windows encoded alone differ from
each other, and pooling one chunk's states per window only approximates them. The cost is the context:
a row never sees beyond its segment, and no frame is shared between rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, check_signal
from .errors import ConfigError
from .inference import Recogniser

VAD_FRAME = 512  # samples per VAD frame (32 ms), serve.vad's FRAME


@dataclass(frozen=True)
class TimelineSettings:
    vad: str = field(default="auto", metadata={"help": "voice activity detector: auto (silero, else frame "
                                                       "energy), silero or energy"})
    min_speech: float = field(default=0.25, metadata={"help": "seconds: a voiced run shorter than this is dropped"})
    merge_gap: float = field(default=0.3, metadata={"help": "seconds: a pause shorter than this joins two runs"})
    pad: float = field(default=0.1, metadata={"help": "seconds of context kept on each side of a voiced run"})
    max_seconds: float | None = field(default=None, metadata={
        "help": "longest row in seconds (a longer segment is cut into equal pieces); null: the model's window"})
    batch: int = field(default=16, metadata={"help": "rows scored together (memory against call overhead)"})

    def __post_init__(self) -> None:
        if self.vad not in ("auto", "silero", "energy"):
            raise ConfigError(f"timeline.vad must be auto, silero or energy, not {self.vad!r}")
        for name in ("min_speech", "merge_gap", "pad"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= 60):
                raise ConfigError(f"timeline.{name} must be a number of seconds from 0 to 60, not {v!r}")
        if self.max_seconds is not None and not (isinstance(self.max_seconds, (int, float))
                                                 and 0.5 <= self.max_seconds <= 30):
            raise ConfigError(f"timeline.max_seconds must be null or 0.5 to 30 seconds, not {self.max_seconds!r}")
        if not (isinstance(self.batch, int) and self.batch >= 1):
            raise ConfigError(f"timeline.batch must be a positive integer, not {self.batch!r}")


def speech_frames(scores, threshold: float, neg_threshold: float) -> np.ndarray:
    """Frame scores -> (n,) bool speech flags with hysteresis: speech from a score >= ``threshold`` until
    one falls below ``neg_threshold`` (as ``serve.vad.VADStream.decide`` counts them)."""
    flags = np.zeros(len(scores), bool)
    on = False
    for i, s in enumerate(scores):
        on = s >= threshold or (on and s >= neg_threshold)
        flags[i] = on
    return flags


def voiced_spans(flags: np.ndarray, n: int, settings: TimelineSettings, frame: int = VAD_FRAME,
                 sr: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Speech flags of consecutive frames -> [(start, end)] sample ranges of voiced segments in ``n``
    samples: runs joined across short pauses, short runs dropped, each padded, overlaps merged."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    runs = [(int(a) * frame, min(n, int(b) * frame)) for a, b in zip(edges[::2], edges[1::2])]
    joined: list[list[int]] = []
    for a, b in runs:
        if joined and a - joined[-1][1] < settings.merge_gap * sr:
            joined[-1][1] = b
        else:
            joined.append([a, b])
    pad = int(round(settings.pad * sr))
    out: list[list[int]] = []
    for a, b in joined:
        if b - a < settings.min_speech * sr:
            continue
        a, b = max(0, a - pad), min(n, b + pad)
        if out and a <= out[-1][1]:
            out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def pieces(span: tuple[int, int], longest: int) -> list[tuple[int, int]]:
    """A segment cut into the fewest equal pieces of at most ``longest`` samples.

    >>> pieces((0, 10), 4)
    [(0, 3), (3, 7), (7, 10)]
    """
    a, b = span
    k = max(1, math.ceil((b - a) / longest))
    cuts = [a + round(i * (b - a) / k) for i in range(k + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


class Timeline:
    """Scores recordings as voiced segments with one model (see the module docstring)."""

    def __init__(self, rec: Recogniser, settings: TimelineSettings | None = None, vad=None):
        self.rec = rec
        self.settings = settings or TimelineSettings()
        if vad is None:
            import torch

            from .serve.vad import load_vad  # the serve extra's detector (silero-vad, else energy)

            threads = torch.get_num_threads()
            vad = load_vad(self.settings.vad)
            torch.set_num_threads(threads)  # importing silero_vad sets one thread for the process
        self.vad = vad
        self.longest = int(round(self.settings.max_seconds * SAMPLE_RATE)) if self.settings.max_seconds else rec.window

    def segments(self, wave: np.ndarray) -> list[tuple[int, int]]:
        """The voiced segments of ``wave`` (16 kHz float32) as (start, end) samples."""
        stream = self.vad.stream(len(wave) / SAMPLE_RATE + 1.0)
        stream.push(wave)
        flags = speech_frames(stream.scores, stream.threshold, stream.neg_threshold)
        return voiced_spans(flags, len(wave), self.settings)

    def score(self, wave: np.ndarray, lang: str = "en", speaker_stats: dict | None = None,
              source: str = "<audio>") -> dict:
        """One recording -> ``predict_wave``'s answer, whose top level is the summary row, with ``segments``
        (one row per scored piece: start, end, its segment's index, emotion, probabilities, members),
        ``combined`` (how the summary was made) and ``vad``. Audio of at most one window is scored whole,
        as ``predict_wave`` does; a recording with no voiced segment too (``combined`` says so)."""
        wave = check_signal(np.asarray(wave, dtype=np.float32), source)
        rec, n = self.rec, len(wave)
        if n <= rec.window:
            return {**rec.predict_wave(wave, lang, speaker_stats, source), "combined": "one window: the whole clip"}
        spans = self.segments(wave)
        if not spans:
            return {**rec.predict_wave(wave, lang, speaker_stats, source), "vad": self.vad.describe(),
                    "combined": "no voiced segment found: the whole recording in overlapping windows"}
        rows = [(i, p) for i, s in enumerate(spans) for p in pieces(s, self.longest)]
        parts = [rec.probabilities([wave[a:b] for _, (a, b) in rows[k: k + self.settings.batch]], speaker_stats)
                 for k in range(0, len(rows), self.settings.batch)]
        probs = np.concatenate(parts, axis=1)  # (members + 1, rows, C)
        seconds = np.array([(b - a) / SAMPLE_RATE for _, (a, b) in rows])
        summary = np.tensordot(probs, seconds / seconds.sum(), axes=([1], [0]))
        voiced = float(seconds.sum())
        return {"duration": round(n / SAMPLE_RATE, 4), **rec.answer(summary, lang),
                "model_version": rec.version, "adapted": speaker_stats is not None,
                "combined": (f"duration-weighted mean of {len(rows)} rows' probabilities ({len(spans)} voiced "
                             f"segments, {voiced:.1f} s of {n / SAMPLE_RATE:.1f} s)"),
                "vad": self.vad.describe(),
                "segments": [{"start": round(a / SAMPLE_RATE, 3), "end": round(b / SAMPLE_RATE, 3), "segment": i,
                              **rec.answer(probs[:, r], lang)} for r, (i, (a, b)) in enumerate(rows)]}


# -------------------------------------------------------------------------------------------------- plot

def plot_result(result: dict, folder: str | Path, name: str | None = None) -> Path:
    """Draw one file's answer over time into ``folder/<name>.png`` (name: the file's stem) and return the
    path: per row (segment, else window, else the whole clip) the ensemble's probabilities stacked, one
    colour per emotion, the voiced segments as a band beneath; a palette PNG (a few tens of KB)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from .atomic import atomic_write_bytes

    rows = result.get("segments") or result.get("windows") or [
        {"start": 0.0, "end": result["duration"], "probabilities": result["probabilities"]}]
    labels = list(result["probabilities"])
    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(12, 3.4))
    if "segments" in result:  # the voiced segments: a dark band under the rows
        spans: dict[int, list[float]] = {}
        for r in rows:
            s = spans.setdefault(r["segment"], [r["start"], r["end"]])
            s[0], s[1] = min(s[0], r["start"]), max(s[1], r["end"])
        ax.broken_barh([(a, b - a) for a, b in spans.values()], (-0.07, 0.045), color="0.35", lw=0)
        ax.text(0.0, -0.045, " voiced", fontsize=7, va="center", ha="right", transform=ax.get_yaxis_transform())
    if "windows" in result:  # overlapping windows: draw each over its own hop so they tile
        ends = [w["start"] for w in rows[1:]] + [rows[-1]["end"]]
        rows = [{**w, "end": e} for w, e in zip(rows, ends)]
    starts = np.array([r["start"] for r in rows])
    widths = np.array([r["end"] - r["start"] for r in rows])
    bottom = np.zeros(len(rows))
    for k, label in enumerate(labels):
        h = np.array([r["probabilities"][label] for r in rows])
        ax.bar(starts, h, widths, bottom=bottom, align="edge", color=colours[k % 10], label=label, lw=0, zorder=2)
        bottom += h
    ax.set_xlim(0, result["duration"])
    ax.set_ylim(-0.08 if "segments" in result else 0.0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    title = f"{result.get('file', name or '')}: {result['emotion']} ({100 * result['confidence']:.0f}%)"
    if "combined" in result:
        title += f"; {result['combined']}"
    ax.set_title(title, fontsize=9, loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    buf.seek(0)
    out = io.BytesIO()
    Image.open(buf).convert("RGB").quantize(colors=32).save(out, format="PNG", optimize=True)
    path = Path(folder) / f"{name or Path(str(result.get('file', 'audio'))).stem}.png"
    atomic_write_bytes(path, out.getvalue())
    return path


__all__ = ["Timeline", "TimelineSettings", "pieces", "plot_result", "speech_frames", "voiced_spans"]
