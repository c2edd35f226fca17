"""Speaker adaptation in the service: running feature statistics per speaker, never their audio.

A speaker-normalised model (``Recogniser.adaptable``) standardises its features by the speaker's own
mean and standard deviation. The service learns them from the speaker's speech as it arrives:

- ``SpeakerMoments``: cumulative first and second moments (count, sum, sum of squares, float64) of the
  un-normalised log-mel and MFCC frames, computed with the model's own front end, plus, for each member
  with speaker statistics of its own (``Member.stat_keys``), the moments of its per-clip vectors (one
  per utterance or stream window). Statistics are mean and population std of what was added, as
  ``adaptation.compute_speaker_stats`` computes them from the audio itself.
- ``SpeakerAdapter``: measures audio into moments and turns moments into the statistics
  ``Recogniser.predict_wave(speaker_stats=...)`` takes, shrunk toward the model's global statistics with
  the model's ``adaptation.shrink_k`` (by n / (n + k), n the utterances heard).
- ``SpeakerStore``: the per-process store behind ``POST /v1/predict?speaker=ID``: LRU-bounded, entries
  expire ``ttl`` seconds after their last use, thread-safe. Each entry holds only moments and counts.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from ..adaptation import global_stats
from ..audio import SAMPLE_RATE
from ..statistics import shrink

SPEAKER_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
STD_EPS = 1e-5  # added to frame stds, as adaptation.stats_from_features does
VECTOR_STD_FLOOR = 1e-8  # vector stds at most this are replaced by 1, as statistics.vector_stats does
FRAME_PARTS = ("logmel", "mfcc")  # the front end's frames; every other part is a member's vectors


class Moments:
    """Count, sum and sum of squares of D-dimensional observations (float64)."""

    __slots__ = ("n", "s1", "s2")

    def __init__(self, dim: int):
        self.n = 0
        self.s1 = np.zeros(dim, np.float64)
        self.s2 = np.zeros(dim, np.float64)

    @classmethod
    def of(cls, rows: np.ndarray) -> "Moments":
        """(N, D) observations -> their moments."""
        x = np.asarray(rows, np.float64)
        m = cls(x.shape[1])
        m.n, m.s1, m.s2 = x.shape[0], x.sum(0), np.square(x).sum(0)
        return m

    def add(self, other: "Moments") -> None:
        self.n += other.n
        self.s1 += other.s1
        self.s2 += other.s2

    def copy(self) -> "Moments":
        m = Moments(len(self.s1))
        m.n, m.s1, m.s2 = self.n, self.s1.copy(), self.s2.copy()
        return m

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.s1 / max(self.n, 1)
        var = np.maximum(self.s2 / max(self.n, 1) - np.square(mean), 0.0)
        return mean, np.sqrt(var)


@dataclass
class SpeakerMoments:
    """One speaker's accumulated statistics: moments per feature kind, utterances and seconds heard."""

    parts: dict[str, Moments] = field(default_factory=dict)  # logmel, mfcc, then members' by stat key prefix
    utterances: int = 0
    seconds: float = 0.0

    def add(self, other: "SpeakerMoments") -> None:
        for k, m in other.parts.items():
            if k in self.parts:
                self.parts[k].add(m)
            else:
                self.parts[k] = m.copy()
        self.utterances += other.utterances
        self.seconds += other.seconds

    def copy(self) -> "SpeakerMoments":
        return SpeakerMoments({k: m.copy() for k, m in self.parts.items()}, self.utterances, self.seconds)

    def arrays(self) -> list[np.ndarray]:
        """Every array held (for checks that nothing but feature-sized vectors is kept)."""
        return [a for m in self.parts.values() for a in (m.s1, m.s2)]

    def stats(self) -> dict[str, np.ndarray]:
        """Mean and std per feature, the front end's ``STAT_KEYS`` and each member's, float32."""
        out = {}
        for part, m in self.parts.items():
            if part not in FRAME_PARTS and not m.n:
                continue
            mean, std = m.mean_std()
            out[f"{part}_mean"] = mean.astype(np.float32)
            out[f"{part}_std"] = ((std + STD_EPS) if part in FRAME_PARTS else
                                  np.where(std > VECTOR_STD_FLOOR, std, 1.0)).astype(np.float32)
        return out


def service_adaptable(rec) -> bool:
    """A torch ``Recogniser`` of a speaker-normalised model (the ONNX graph takes no speaker statistics)."""
    return bool(getattr(rec, "adaptable", False)) and getattr(rec, "model", None) is not None


class SpeakerAdapter:
    """Audio -> ``SpeakerMoments`` with the model's own front end; moments -> speaker statistics."""

    def __init__(self, rec):
        if not service_adaptable(rec):
            raise ValueError("the model was not trained with speaker normalisation")
        self.rec = rec
        self.prior = global_stats(rec.model)
        self.shrink_k = float(rec.meta.get("adaptation", {}).get("shrink_k", 0.0) or 0.0)
        self.vector_members = list(rec.vector_members)

    def measure(self, wave: np.ndarray, clip_wave: np.ndarray | None = None, utterances: int = 1,
                seconds: float | None = None) -> SpeakerMoments:
        """The moments of ``wave``'s log-mel and MFCC frames (and of ``clip_wave``'s vectors, by default
        ``wave``'s, for each member with statistics of its own). The audio itself is not kept."""
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        with torch.inference_mode():
            logmel, mfcc, _ = self.rec.model.front.spectra(torch.from_numpy(wave))
        parts = {"logmel": Moments.of(logmel[0].numpy().T), "mfcc": Moments.of(mfcc[0].numpy().T)}
        cw = wave if clip_wave is None else np.ascontiguousarray(clip_wave, dtype=np.float32)
        for member in self.vector_members:
            parts[member.stat_keys[0].removesuffix("_mean")] = Moments.of(member.clip_vectors([cw]))
        return SpeakerMoments(parts, utterances, len(wave) / SAMPLE_RATE if seconds is None else seconds)

    def stats(self, moments: SpeakerMoments, n: float | None = None) -> dict[str, np.ndarray]:
        """The speaker's statistics, shrunk toward the global ones by n / (n + shrink_k); ``n`` defaults
        to the utterances heard."""
        return shrink(moments.stats(), self.prior, moments.utterances if n is None else n, self.shrink_k)


class SpeakerStore:
    """Per-process speaker statistics: at most ``max_speakers`` (least recently used dropped first),
    each forgotten ``ttl`` seconds after its last use. Thread-safe; ``clock`` is injectable for tests."""

    def __init__(self, max_speakers: int = 1000, ttl: float = 3600.0, clock=time.monotonic):
        if max_speakers < 1 or not ttl > 0:
            raise ValueError("max_speakers must be at least 1 and ttl positive")
        self.max_speakers = max_speakers
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, SpeakerMoments]] = OrderedDict()  # id -> (last use, moments)

    def _expire(self, now: float) -> None:
        while self._entries:
            sid, (last, _) = next(iter(self._entries.items()))
            if now - last < self.ttl:
                break
            del self._entries[sid]

    def add(self, speaker: str, moments: SpeakerMoments) -> SpeakerMoments:
        """Add ``moments`` to the speaker's (a new entry if unknown or expired); return a copy of the total."""
        with self._lock:
            now = self.clock()
            self._expire(now)
            entry = self._entries.pop(speaker, None)
            total = entry[1] if entry is not None else SpeakerMoments()
            total.add(moments)
            self._entries[speaker] = (now, total)
            while len(self._entries) > self.max_speakers:
                self._entries.popitem(last=False)
            return total.copy()

    def get(self, speaker: str) -> SpeakerMoments | None:
        """A copy of the speaker's moments, or None (unknown or expired). Does not refresh its age."""
        with self._lock:
            self._expire(self.clock())
            entry = self._entries.get(speaker)
            return None if entry is None else entry[1].copy()

    def forget(self, speaker: str) -> bool:
        """Drop the speaker; True if they were known."""
        with self._lock:
            self._expire(self.clock())
            return self._entries.pop(speaker, None) is not None

    def __len__(self) -> int:
        with self._lock:
            self._expire(self.clock())
            return len(self._entries)

    def __contains__(self, speaker: str) -> bool:
        return self.get(speaker) is not None

    def ids(self) -> list[str]:
        """Known speakers, least recently used first."""
        with self._lock:
            self._expire(self.clock())
            return list(self._entries)
