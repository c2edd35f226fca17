"""Voice activity detection for the live stream: silero-vad when it loads, else frame energy.

Both detectors score fixed 32 ms frames (512 samples at 16 kHz) as audio arrives, one ``VADStream``
per connection, so each hop costs only its new frames (about 31 per second) rather than re-scanning
the whole 4 s window. A window counts as speech when at least ``min_speech`` seconds of its frames are
speech, with silero's hysteresis (enter at ``threshold``, leave below ``threshold - 0.15``).

silero's model is loaded from the files its package ships (ONNX first: one shared session, a small
state per stream; else the TorchScript model, one copy per stream), never from the network, and its
``read_audio`` (which needs torchaudio) is never used: audio arrives here as float32 arrays.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from ..audio import SAMPLE_RATE

FRAME = 512  # samples: silero's frame at 16 kHz (32 ms)
FRAME_SECONDS = FRAME / SAMPLE_RATE
ENERGY_DB = -45.0  # dBFS: a frame louder than this counts as speech for the energy detector
ENERGY_HYSTERESIS_DB = 6.0  # dB: once in speech, stay until the level drops this far below ENERGY_DB
SILERO_THRESHOLD = 0.5  # silero's own default speech probability threshold
SILERO_HYSTERESIS = 0.15  # silero's default gap between entering and leaving speech
MIN_SPEECH = 0.25  # s: less speech than this in a window is reported as silence (silero's default)

log = logging.getLogger("persemo.serve")


@dataclass(frozen=True)
class Decision:
    """The detector's verdict on one analysis window."""

    speech: bool
    speech_seconds: float
    max_score: float  # silero: highest frame probability; energy: loudest frame in dBFS


class VADStream:
    """Per-connection state: unscored remainder, and frame scores covering the last window."""

    def __init__(self, scorer, threshold: float, hysteresis: float, min_speech: float, max_frames: int):
        self._score = scorer
        self.threshold = threshold
        self.neg_threshold = threshold - hysteresis
        self.min_speech = min_speech
        self._rest = np.zeros(0, np.float32)
        self.scores: deque[float] = deque(maxlen=max_frames)

    def push(self, samples: np.ndarray) -> None:
        """Score every complete frame of ``samples`` (float32, 16 kHz); keep the remainder for later."""
        x = np.concatenate([self._rest, np.asarray(samples, np.float32)])
        n = len(x) // FRAME * FRAME
        for i in range(0, n, FRAME):
            self.scores.append(float(self._score(x[i: i + FRAME])))
        self._rest = x[n:]

    def decide(self, seconds: float) -> Decision:
        """Speech or silence over the frames of the last ``seconds``."""
        k = max(1, int(round(seconds / FRAME_SECONDS)))
        recent = list(self.scores)[-k:]
        if not recent:
            return Decision(False, 0.0, float("-inf"))
        in_speech, frames = False, 0
        for s in recent:
            in_speech = s >= self.threshold or (in_speech and s >= self.neg_threshold)
            frames += in_speech
        secs = frames * FRAME_SECONDS
        return Decision(secs >= self.min_speech, round(secs, 3), round(max(recent), 4))


class EnergyVAD:
    """Fallback detector: a frame is speech when its RMS level exceeds ``threshold_db`` dBFS."""

    name = "energy"

    def __init__(self, threshold_db: float = ENERGY_DB, min_speech: float = MIN_SPEECH, reason: str | None = None):
        self.threshold_db = threshold_db
        self.min_speech = min_speech
        self.reason = reason  # why silero is not used, when it was wanted

    @staticmethod
    def _level(frame: np.ndarray) -> float:
        rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64))))
        return 20.0 * np.log10(max(rms, 1e-10))

    def stream(self, max_seconds: float) -> VADStream:
        return VADStream(self._level, self.threshold_db, ENERGY_HYSTERESIS_DB, self.min_speech,
                         int(np.ceil(max_seconds / FRAME_SECONDS)))

    def describe(self) -> dict:
        return {"name": self.name, "threshold_db": self.threshold_db, "min_speech_seconds": self.min_speech,
                "fallback_reason": self.reason}


class SileroVAD:
    """silero-vad's bundled model; ``kind`` is "onnx" (shared session) or "jit" (a model per stream)."""

    def __init__(self, kind: str, threshold: float = SILERO_THRESHOLD, min_speech: float = MIN_SPEECH):
        from silero_vad import load_silero_vad

        self.kind = kind
        self.name = f"silero-{kind}"
        self.threshold = threshold
        self.min_speech = min_speech
        def load():
            with warnings.catch_warnings():  # its importlib.resources call is deprecated; harmless
                warnings.simplefilter("ignore", DeprecationWarning)
                return load_silero_vad(onnx=(kind == "onnx"))

        self._load = load
        self._model = self._load()
        try:
            from importlib.metadata import version

            self.version = version("silero-vad")
        except Exception:  # noqa: BLE001 - the version is informative only
            self.version = None
        # prove it works before a stream depends on it
        self.stream(1.0).push(np.zeros(FRAME, np.float32))

    def _fresh_model(self):
        if self.kind == "onnx":
            # the wrapper keeps its recurrent state in Python attributes and the session is
            # thread-safe: a shallow copy with reset state shares the session, not the state
            m = copy.copy(self._model)
            m.reset_states()
            return m
        return self._load()

    def stream(self, max_seconds: float) -> VADStream:
        model = self._fresh_model()

        def score(frame: np.ndarray) -> float:
            with torch.inference_mode():
                return float(model(torch.from_numpy(frame), SAMPLE_RATE).item())

        return VADStream(score, self.threshold, SILERO_HYSTERESIS, self.min_speech,
                         int(np.ceil(max_seconds / FRAME_SECONDS)))

    def describe(self) -> dict:
        return {"name": self.name, "threshold": self.threshold, "min_speech_seconds": self.min_speech,
                "silero_version": self.version, "fallback_reason": None}


def load_vad(kind: str = "auto", energy_db: float = ENERGY_DB, min_speech: float = MIN_SPEECH):
    """``auto``: silero (ONNX, else TorchScript), else the energy detector; ``silero``: silero or raise;
    ``energy``: the energy detector.

    Importing silero_vad sets torch's thread count to 1 for the whole process; the caller sets the
    count it wants afterwards."""
    if kind not in ("auto", "silero", "energy"):
        raise ValueError(f"vad must be auto, silero or energy, not {kind!r}")
    if kind == "energy":
        return EnergyVAD(energy_db, min_speech)
    errors = []
    for variant in ("onnx", "jit"):
        try:
            return SileroVAD(variant, min_speech=min_speech)
        except Exception as exc:  # noqa: BLE001 - missing package, missing onnxruntime, broken file
            errors.append(f"{variant}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    reason = "silero-vad unavailable (" + "; ".join(errors) + ")"
    if kind == "silero":
        raise RuntimeError(reason)
    log.warning("%s; using the energy detector", reason)
    return EnergyVAD(energy_db, min_speech, reason=reason)
