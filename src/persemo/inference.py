"""Inference on a saved model: one clip, many files, long audio in windows, optional speaker statistics.

``Recogniser`` is what ``persemo predict``, the web service and the benchmarks call. Audio longer
than the model's window (4 s) is analysed in windows with 50% overlap; the answer gives each window
and their aggregate (the mean of the windows' distributions, weighted by each window's length).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import torch

from .adaptation import StatsError, compute_speaker_stats
from .artifact import load_model
from .audio import SAMPLE_RATE, check_signal, load_audio
from .corpora.base import PERSIAN_NAMES
from .ensemble import Ensemble
from .features import pad_batch, window_samples


def label_name(label: str, lang: str = "en") -> str:
    return PERSIAN_NAMES.get(label, label) if lang == "fa" else label


class Recogniser:
    """A loaded model ready for inference (the torch backend: every member, in its own way)."""

    def __init__(self, model: Ensemble, meta: dict, extra: dict | None = None):
        self.model = model.eval()  # every member in config order, and their soft vote
        self.meta = meta
        self.extra = extra or {}
        self.cfg = model.cfg
        self.labels: list[str] = list(meta["labels"])
        self.members: list[str] = list(self.model.member_names)  # with a companion: also single/<kind>
        self.version: str = str(meta.get("persemo_version"))
        self.window = window_samples(self.cfg)
        self.hop = self.window // 2

    @classmethod
    def load(cls, path: str | Path) -> "Recogniser":
        model, meta, extra = load_model(path)
        return cls(model, meta, extra)

    def info(self) -> dict:
        return {"labels": self.labels, "labels_fa": [label_name(l, "fa") for l in self.labels],
                "members": self.members, "ensemble_weights": self.meta.get("ensemble_weights"),
                "feature_config": self.meta["config"]["features"], "version": self.version,
                "normalisation": self.meta.get("normalisation"), "supported_modes": self.meta.get("supported_modes"),
                "single_companion": "companion" in self.meta,
                "window_seconds": self.window / SAMPLE_RATE, "sample_rate": SAMPLE_RATE}

    def windows(self, n: int) -> list[tuple[int, int]]:
        """(start, end) sample ranges covering ``n`` samples: one window if it fits, else 50% overlap."""
        if n <= self.window:
            return [(0, n)]
        starts = list(range(0, n - self.window + 1, self.hop))
        if starts[-1] + self.window < n:
            starts.append(n - self.window)
        return [(s, s + self.window) for s in starts]

    @property
    def adaptable(self) -> bool:
        """True when the model was trained on speaker-normalised features and accepts speaker statistics."""
        return self.meta.get("normalisation") == "speaker"

    def check_stats(self, speaker_stats: dict | None) -> None:
        if speaker_stats is not None and not self.adaptable:
            raise StatsError("this model was trained with per-utterance or global normalisation and does not use "
                             "speaker statistics; train with --normalisation speaker for speaker adaptation")

    def speaker_stats(self, waves: list[np.ndarray], shrink_k: float | None = None) -> dict:
        """A speaker's statistics from their unlabelled waveforms, for ``predict_wave(speaker_stats=...)``."""
        self.check_stats({})
        k = self.meta.get("adaptation", {}).get("shrink_k", 0.0) if shrink_k is None else shrink_k
        return compute_speaker_stats(self.model, waves, k)

    @property
    def vector_members(self) -> list:
        """The members with speaker statistics of their own (per-clip vectors), in speaker mode."""
        return [m for m in self.model.members if m.stat_keys] if self.model is not None else []

    @property
    def stats_signatures(self) -> dict[str, str]:
        """What each such member's statistics describe (``Member.stats_signature``), by kind."""
        return {m.kind: m.stats_signature for m in self.vector_members}

    @property
    def stats_requirements(self) -> dict[str, tuple[tuple[str, ...], str]]:
        """What a statistics file must hold for this model beyond the front end's: kind -> (keys, signature)."""
        return {m.kind: (m.stat_keys, m.stats_signature) for m in self.vector_members}

    def probabilities(self, waves: list[np.ndarray], speaker_stats: dict | None = None) -> np.ndarray:
        """Raw model output for clips of at most one window each: (members + 1, B, C)."""
        self.check_stats(speaker_stats)
        batch, lengths = pad_batch([np.ascontiguousarray(w, dtype=np.float32) for w in waves])
        st = None
        if speaker_stats is not None:
            st = {k: torch.from_numpy(np.asarray(v, np.float32)).reshape(1, -1).expand(len(waves), -1)
                  for k, v in speaker_stats.items()}
        return self.model.predict(batch, lengths, st)

    def _dist(self, probs: np.ndarray, lang: str) -> dict[str, float]:
        return {label_name(l, lang): round(float(p), 6) for l, p in zip(self.labels, probs)}

    def answer(self, probs: np.ndarray, lang: str) -> dict:
        """probs (members + 1, C) -> the JSON shape shared by windows and aggregates."""
        ens = probs[-1]
        return {"emotion": label_name(self.labels[int(ens.argmax())], lang),
                "confidence": round(float(ens.max()), 6),
                "probabilities": self._dist(ens, lang),
                "members": {m: self._dist(probs[i], lang) for i, m in enumerate(self.members)}}

    def predict_wave(self, wave: np.ndarray, lang: str = "en", speaker_stats: dict | None = None,
                     source: str = "<audio>") -> dict:
        """One 16 kHz mono clip of any length -> top emotion, distributions per member and ensemble,
        and per-window results for audio longer than one window."""
        wave = check_signal(np.asarray(wave, dtype=np.float32), source)
        spans = self.windows(len(wave))
        probs = self.probabilities([wave[s:e] for s, e in spans], speaker_stats)  # (M+1, W, C)
        lengths = np.array([e - s for s, e in spans], dtype=np.float64)
        agg = np.tensordot(probs, lengths / lengths.sum(), axes=([1], [0]))  # (M+1, C)
        out = {"duration": round(len(wave) / SAMPLE_RATE, 4), **self.answer(agg, lang),
               "model_version": self.version, "adapted": speaker_stats is not None}
        if len(spans) > 1:
            out["windows"] = [{"start": round(s / SAMPLE_RATE, 3), "end": round(e / SAMPLE_RATE, 3),
                               **self.answer(probs[:, i], lang)} for i, (s, e) in enumerate(spans)]
        return out

    def predict_file(self, path: str | Path | bytes, lang: str = "en", speaker_stats: dict | None = None,
                     name: str | None = None) -> dict:
        label = name or str(path)
        wave = load_audio(path, SAMPLE_RATE, name=label)
        return {"file": label, **self.predict_wave(wave, lang, speaker_stats, label)}
