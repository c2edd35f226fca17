"""The live-stream protocol behind ``WebSocket /v1/stream``, apart from the socket itself.

Client -> server: optionally first a JSON text message
``{"sample_rate": 16000, "format": "int16" | "float32", "hop_seconds": 1.0, "lang": "en" | "fa",
"adapt": false, "adapt_min_speech_seconds": 10.0}`` (any field may be left out), then binary messages of
mono little-endian PCM in that format.

``"adapt": true`` opts in to speaker adaptation (models trained with speaker normalisation only; for
others it is a fatal ``not_adaptable`` error, close 1003): the session accumulates its speaker's feature
statistics (moments of the un-normalised log-mel and MFCC frames of every hop the VAD marks as speech,
plus the per-clip vectors of the window for each member with statistics of its own), never the audio.
Until ``adapt_min_speech_seconds`` of such speech (default: the service's setting, 10 s) the model's
global statistics are used; after, the speaker's, shrunk toward the global ones with the model's
``shrink_k`` (n = seconds of speech / window length).

Server -> client, all JSON text:
- ``{"type": "ready", ...}``: the settings in force, the labels, the window and the VAD in use;
- ``{"type": "result", "time": t, "start": s, "end": t, "speech": bool, "silence": bool, ...}`` once
  per hop of audio received: the emotion distribution of the last window (4 s, or all the audio so
  far while there is less), per member and ensemble; on silence ``emotion``, ``probabilities`` and
  ``members`` are null, never a guess; ``adapted`` says whether the session's own speaker statistics
  are in use (always false without ``"adapt": true``), and ``adaptation`` is
  ``{"speech_seconds": x, "required_seconds": y}`` for an adapting session, else null;
- ``{"type": "error", "error": code, "detail": text, "fatal": bool}``; a fatal error is followed by a
  close with code 1003 (unsupported data), 1007 (invalid data), 1009 (message too big), 1008
  (``idle_timeout``: no message from the client for the service's ``stream_idle_timeout``, default
  30 s) or 1013 (try again later: ``too_many_streams``, the service's ``max_streams`` are open;
  ``overloaded``, no inference slot within its ``queue_timeout``).

Each hop is a separate job in the service's inference pool, so a large chunk (several hops) does not
hold a worker for all of them at once, and a waiting ``/v1/predict`` goes first.

``StreamSession`` is synchronous and CPU-bound (decode, resample, VAD, inference); the service runs
its ``feed`` off the event loop.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from ..audio import SAMPLE_RATE, AudioError
from .limits import Overloaded

FORMATS = {"int16": np.dtype("<i2"), "float32": np.dtype("<f4")}
MIN_HOP = 0.25  # s: shorter hops would spend more time on inference than on listening
MAX_HOP = 10.0  # s
MIN_RATE, MAX_RATE = 8000, 192000  # Hz accepted from a client; anything but 16 kHz is resampled
MAX_ADAPT_SECONDS = 3600.0  # s: the largest adapt_min_speech_seconds a client may ask for

CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID = 1007
CLOSE_POLICY = 1008  # idle_timeout
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013  # too_many_streams, overloaded


class ProtocolError(Exception):
    """A message the stream cannot use. ``close_code`` None: reported, and the stream goes on."""

    def __init__(self, error: str, detail: str, close_code: int | None = None):
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.close_code = close_code

    def message(self) -> dict:
        return {"type": "error", "error": self.error, "detail": self.detail, "fatal": self.close_code is not None}


@dataclass(frozen=True)
class StreamConfig:
    sample_rate: int = SAMPLE_RATE
    format: str = "int16"
    hop_seconds: float = 1.0
    lang: str = "en"
    adapt: bool = False
    adapt_min_speech_seconds: float | None = None  # None: the service's setting

    @classmethod
    def parse(cls, text: str) -> "StreamConfig":
        """The client's JSON config message -> StreamConfig; ProtocolError (fatal) for anything wrong."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, ValueError) as exc:
            raise ProtocolError("bad_json", f"config is not valid JSON ({exc})", CLOSE_INVALID) from None
        if not isinstance(data, dict):
            raise ProtocolError("bad_config", "config must be a JSON object", CLOSE_INVALID)
        data.pop("type", None)  # {"type": "config", ...} is accepted too
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProtocolError("bad_config", f"unknown config field(s) {unknown}; known: {sorted(known)}",
                                CLOSE_INVALID)
        sr = data.get("sample_rate", SAMPLE_RATE)
        # json.loads reads NaN, Infinity and 1e400 (= inf) as floats: refuse them before int() does
        if isinstance(sr, bool) or not isinstance(sr, (int, float)) or not math.isfinite(sr) or sr != int(sr):
            raise ProtocolError("bad_config", "sample_rate must be an integer (Hz)", CLOSE_INVALID)
        if not MIN_RATE <= sr <= MAX_RATE:
            raise ProtocolError("unsupported_sample_rate",
                                f"sample_rate {sr} not supported (use {MIN_RATE}..{MAX_RATE}; 16000 preferred)",
                                CLOSE_UNSUPPORTED)
        fmt = data.get("format", "int16")
        if not isinstance(fmt, str):
            raise ProtocolError("bad_config", f"format must be a string, one of {sorted(FORMATS)}", CLOSE_INVALID)
        if fmt not in FORMATS:
            raise ProtocolError("unsupported_format", f"format must be one of {sorted(FORMATS)}, not {fmt!r}",
                                CLOSE_UNSUPPORTED)
        hop = data.get("hop_seconds", 1.0)
        if isinstance(hop, bool) or not isinstance(hop, (int, float)) or not math.isfinite(hop) \
                or not MIN_HOP <= hop <= MAX_HOP:
            raise ProtocolError("bad_config", f"hop_seconds must be a number in [{MIN_HOP}, {MAX_HOP}]",
                                CLOSE_INVALID)
        lang = data.get("lang", "en")
        if lang not in ("en", "fa"):
            raise ProtocolError("bad_config", f"lang must be en or fa, not {lang!r}", CLOSE_INVALID)
        adapt = data.get("adapt", False)
        if not isinstance(adapt, bool):
            raise ProtocolError("bad_config", "adapt must be true or false", CLOSE_INVALID)
        need = data.get("adapt_min_speech_seconds")
        if need is not None and (isinstance(need, bool) or not isinstance(need, (int, float))
                                 or not math.isfinite(need) or not 0 <= need <= MAX_ADAPT_SECONDS):
            raise ProtocolError("bad_config", f"adapt_min_speech_seconds must be a number in [0, {MAX_ADAPT_SECONDS}]",
                                CLOSE_INVALID)
        return cls(int(sr), fmt, float(hop), lang, adapt, None if need is None else float(need))


class StreamSession:
    """One client's stream: decodes chunks, keeps the last window, asks the VAD, runs the model per hop.

    ``recogniser`` is a ``Recogniser`` (or the ONNX equivalent); ``vad`` has ``stream(seconds)``;
    ``adapter`` a ``speakers.SpeakerAdapter`` (None: the model cannot adapt), needed by ``config.adapt``;
    ``adapt_min_seconds`` the default of ``config.adapt_min_speech_seconds``.
    """

    def __init__(self, recogniser, vad, config: StreamConfig, max_chunk_seconds: float, adapter=None,
                 adapt_min_seconds: float = 10.0):
        if config.adapt and adapter is None:
            raise ProtocolError("not_adaptable", "adapt: true needs a model trained with speaker normalisation "
                                "on the torch backend; this one cannot use speaker statistics", CLOSE_UNSUPPORTED)
        self.rec = recogniser
        self.config = config
        self.dtype = FORMATS[config.format]
        self.max_chunk_bytes = int(max_chunk_seconds * config.sample_rate) * self.dtype.itemsize
        self.window = int(recogniser.window)
        self.hop = int(round(config.hop_seconds * SAMPLE_RATE))
        self.vad_stream = vad.stream(self.window / SAMPLE_RATE + 1.0)
        self._resampler = None
        if config.sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(config.sample_rate, SAMPLE_RATE, 1, dtype="float32")
        self.received = 0  # samples at 16 kHz so far
        self.next_hop = self.hop
        self._buf = np.zeros(0, np.float32)  # audio from absolute sample _buf_start on
        self._buf_start = 0
        self._vad_done = 0  # absolute sample up to which the VAD has been fed
        self.results = 0
        self.adapter = adapter if config.adapt else None
        self.required_seconds = adapt_min_seconds if config.adapt_min_speech_seconds is None \
            else config.adapt_min_speech_seconds
        self.speaker = None  # speakers.SpeakerMoments of this session's speech (adapting sessions only)

    def ready_message(self, vad_info: dict) -> dict:
        cfg = asdict(self.config)
        cfg["adapt_min_speech_seconds"] = self.required_seconds if self.config.adapt else None
        return {"type": "ready", **cfg, "window_seconds": round(self.window / SAMPLE_RATE, 4),
                "labels": list(self.rec.labels), "members": list(self.rec.members),
                "model_version": self.rec.version, "vad": vad_info["name"],
                "max_chunk_bytes": self.max_chunk_bytes}

    def decode(self, data: bytes) -> np.ndarray:
        """A binary message -> float32 samples at 16 kHz; fatal ProtocolError when malformed."""
        if len(data) > self.max_chunk_bytes:
            raise ProtocolError("chunk_too_large", f"chunk of {len(data)} bytes exceeds {self.max_chunk_bytes} "
                                "(send at most a few seconds per message)", CLOSE_TOO_BIG)
        if len(data) % self.dtype.itemsize:
            raise ProtocolError("bad_chunk", f"{len(data)} bytes is not a whole number of {self.config.format} "
                                "samples", CLOSE_INVALID)
        x = np.frombuffer(data, dtype=self.dtype)
        if self.config.format == "int16":
            x = x.astype(np.float32) / 32768.0
        else:
            if not np.all(np.isfinite(x)):
                raise ProtocolError("non_finite", "chunk contains NaN or infinite samples", CLOSE_INVALID)
            x = x.astype(np.float32)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        return x

    def feed(self, data: bytes) -> list[dict]:
        """Add one binary message; return a result message for each hop it completes (often none)."""
        out = self.step(data)
        while self.pending:
            out += self.step()
        return out

    @property
    def pending(self) -> bool:
        """Whether a complete hop waits to be analysed (``step()``)."""
        return self.received >= self.next_hop

    def step(self, data: bytes | None = None) -> list[dict]:
        """Add ``data`` (one binary message), if given, then analyse at most one complete hop: its
        result, or nothing. ``pending`` says whether more hops wait; ``feed`` does them all."""
        if data is not None:
            x = self.decode(data)
            self._buf = np.concatenate([self._buf, x]) if len(self._buf) else x
            self.received += len(x)
        out = []
        if self.pending:
            out.append(self._analyse(self.next_hop))
            self.next_hop += self.hop
        # keep only what the next window can still need
        keep_from = max(0, min(self._vad_done, self.next_hop - self.window))
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start:]
            self._buf_start = keep_from
        return out

    @property
    def speech_seconds(self) -> float:
        return self.speaker.seconds if self.speaker is not None else 0.0

    def _adapt(self, hop_start: int, end: int, wave: np.ndarray) -> dict | None:
        """Add the hop just heard to the speaker's statistics if the VAD hears speech in it; the
        statistics to use now (None: not enough speech yet)."""
        seconds = (end - hop_start) / SAMPLE_RATE
        if self.vad_stream.decide(seconds).speech:
            seg = self._buf[hop_start - self._buf_start: end - self._buf_start]
            if len(seg) >= 2 * self.rec.cfg.features.n_fft:  # a few frames at least
                part = self.adapter.measure(seg, clip_wave=wave, utterances=0, seconds=seconds)
                if self.speaker is None:
                    self.speaker = part
                else:
                    self.speaker.add(part)
        if self.speaker is None or self.speaker.seconds < self.required_seconds:
            return None
        return self.adapter.stats(self.speaker, n=self.speaker.seconds * SAMPLE_RATE / self.window)

    def _analyse(self, end: int) -> dict:
        start = max(0, end - self.window)
        hop_start = self._vad_done
        self.vad_stream.push(self._buf[self._vad_done - self._buf_start: end - self._buf_start])
        self._vad_done = end
        decision = self.vad_stream.decide((end - start) / SAMPLE_RATE)
        wave = self._buf[start - self._buf_start: end - self._buf_start]
        self.results += 1
        msg = {"type": "result", "seq": self.results, "time": round(end / SAMPLE_RATE, 3),
               "start": round(start / SAMPLE_RATE, 3), "end": round(end / SAMPLE_RATE, 3),
               "speech": decision.speech, "silence": not decision.speech,
               "speech_seconds": decision.speech_seconds, "adapted": False, "adaptation": None}
        stats = None
        if self.adapter is not None:
            stats = self._adapt(hop_start, end, wave)
            msg.update(adapted=stats is not None,
                       adaptation={"speech_seconds": round(self.speech_seconds, 3),
                                   "required_seconds": self.required_seconds})
        if decision.speech:
            try:
                res = self.rec.predict_wave(wave, self.config.lang, speaker_stats=stats, source="stream")
            except AudioError:  # the VAD heard speech in a signal the model calls silent: trust silence
                res = None
            if res is not None:
                return {**msg, "emotion": res["emotion"], "confidence": res["confidence"],
                        "probabilities": res["probabilities"], "members": res["members"],
                        "model_version": res["model_version"]}
            msg.update(speech=False, silence=True)
        return {**msg, "emotion": None, "confidence": None, "probabilities": None, "members": None,
                "model_version": self.rec.version}


async def serve_stream(ws, service) -> None:
    """Run one WebSocket connection: config, then chunks in, results out; errors as messages.

    ``service`` provides ``rec``, ``vad``, ``settings``, ``streams`` (a count of open streams) and
    ``run_stream(fn, *args)`` (off the event loop, in the shared inference pool; may raise
    ``limits.Overloaded``). A stream beyond ``settings.max_streams`` is refused (1013), one that sends
    nothing for ``settings.stream_idle_timeout`` seconds is closed (1008)."""
    import anyio
    from starlette.websockets import WebSocketDisconnect
    settings = service.settings
    await ws.accept()
    if service.streams >= settings.max_streams:
        await ws.send_json(ProtocolError("too_many_streams", f"the service holds its limit of "
                                         f"{settings.max_streams} streams; try again later", CLOSE_TRY_LATER).message())
        await ws.close(CLOSE_TRY_LATER, reason="too_many_streams")
        return
    service.streams += 1
    session: StreamSession | None = None

    async def start(config: StreamConfig) -> StreamSession:
        s = await anyio.to_thread.run_sync(StreamSession, service.rec, service.vad, config,
                                           settings.max_chunk_seconds, getattr(service, "adapter", None),
                                           settings.adapt_min_speech_seconds)
        await ws.send_json(s.ready_message(service.vad.describe()))
        return s

    async def analyse(data: bytes) -> None:
        """The chunk, then its hops one job at a time (each waits behind any waiting /v1/predict)."""
        try:
            results = await service.run_stream(session.step, data)
            while True:
                for result in results:
                    await ws.send_json(result)
                if not session.pending:
                    return
                results = await service.run_stream(session.step)
        except Overloaded as exc:
            raise ProtocolError("overloaded", exc.detail, CLOSE_TRY_LATER) from None

    idle = settings.stream_idle_timeout
    try:
        while True:
            msg = None
            with anyio.move_on_after(idle):
                msg = await ws.receive()
            if msg is None:
                raise ProtocolError("idle_timeout", f"no message for {idle:g} s; send audio at least that often",
                                    CLOSE_POLICY)
            if msg["type"] == "websocket.disconnect":
                return
            text, data = msg.get("text"), msg.get("bytes")
            try:
                if text is not None:
                    if session is not None:
                        raise ProtocolError("unexpected_text", "the config message must come first; text after "
                                            "audio is ignored")
                    session = await start(StreamConfig.parse(text))
                elif data is not None:
                    if session is None:
                        session = await start(StreamConfig())
                    await analyse(data)
            except ProtocolError as exc:
                if exc.close_code is None:
                    await ws.send_json(exc.message())
                else:
                    raise
    except ProtocolError as exc:  # fatal: say why, then close with its code
        try:
            await ws.send_json(exc.message())
            await ws.close(exc.close_code, reason=exc.error)
        except Exception:  # noqa: BLE001 - the client may already be gone
            pass
    except WebSocketDisconnect:
        return
    except Exception as exc:  # noqa: BLE001 - one connection's failure must not reach the server
        import logging

        logging.getLogger("persemo.serve").exception("stream failed")
        try:
            await ws.send_json({"type": "error", "error": "internal_error", "detail": type(exc).__name__,
                                "fatal": True})
            await ws.close(1011)
        except Exception:  # noqa: BLE001 - the client may already be gone
            pass
    finally:
        service.streams -= 1
