"""The web service: ``create_app(recogniser_or_path, settings)`` builds the FastAPI app, ``run`` serves it.

Endpoints: ``POST /v1/predict`` (one audio file, multipart field ``file`` or a raw audio body),
``WebSocket /v1/stream`` (live PCM, see ``stream.py``), ``DELETE /v1/speakers/{id}``, ``GET /v1/model``,
``GET /health``, the page at ``/`` and FastAPI's ``/docs``. Every refusal is a 4xx with
``{"error": code, "detail": text}``.

Speaker adaptation (opt-in, speaker-normalised models only, see ``speakers.py``): ``/v1/predict?speaker=ID``
accumulates each speaker's feature statistics in a per-process store (never their audio) and uses them
once the speaker has ``adapt_min_speech_seconds`` of audio; a stream opts in with ``"adapt": true``.

Inference never runs on the event loop: decoding and the model run in a pool of worker threads, at
most ``max_concurrency`` at a time (default: the CPUs this process may use, shared among the workers),
each with ``threads`` intra-op threads (default 1: on a busy machine two threads per request are slower
than one, and requests in parallel already fill the cores). The pool is shared fairly (``limits.py``):
a waiting /v1/predict goes before a waiting stream hop, streams use at most ``stream_slots`` threads,
and a request that gets no thread within ``queue_timeout`` (or finds ``max_queue`` waiting) is answered
503 ``overloaded`` with Retry-After.

Slow and idle clients are shed: the request head is due within ``header_timeout``, the body within
``body_timeout`` (408), an idle keep-alive connection is closed after ``keep_alive_timeout``, a stream
that sends nothing for ``stream_idle_timeout`` is closed (1008 ``idle_timeout``), and at most
``max_connections`` connections (503 beyond) and ``max_streams`` streams (1013 beyond) are held.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
# decoration time, and the endpoints' types (Request, WebSocket) are imported inside create_app.
import io
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch

from .. import __version__
from ..audio import SAMPLE_RATE, AudioError, check_signal, load_audio, wav_truncation
from ..config import ConfigError
from ..artifact import read_meta
from ..export import find_onnx
from ..export import load_recogniser as load_exported
from ..inference import Recogniser
from .limits import PREDICT, STREAM, ConnectionLimits, GuardedH11Protocol, Overloaded, Scheduler
from .speakers import SPEAKER_ID_PATTERN, SpeakerAdapter, SpeakerStore, service_adaptable
from .stream import serve_stream
from .vad import load_vad

STATIC = Path(__file__).parent / "static"
SETTINGS_ENV = "PERSEMO_SERVE_SETTINGS"  # how ``run`` hands settings to uvicorn's worker processes
MULTIPART_SLACK = 64 * 1024  # bytes: multipart boundaries and headers around the file itself
RAW_TYPES = ("application/octet-stream",)  # besides audio/*

log = logging.getLogger("persemo.serve")


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    workers: int = field(default=1, metadata={"help": "processes, each holding its own copy of the model"})
    backend: str = field(default="torch", metadata={"help": "torch or onnx (needs persemo.export)"})
    max_seconds: float = field(default=60.0, metadata={"help": "longest audio accepted by /v1/predict (s)"})
    max_bytes: int = field(default=10_000_000, metadata={"help": "largest upload accepted by /v1/predict"})
    max_concurrency: int = field(default=0, metadata={"help": "inferences at once per process; 0: CPUs / workers"})
    threads: int = field(default=1, metadata={"help": "torch intra-op threads per inference"})
    vad: str = field(default="auto", metadata={"help": "auto (silero, else energy), silero or energy"})
    max_chunk_seconds: float = field(default=5.0, metadata={"help": "largest binary stream message (s of audio)"})
    warmup: bool = field(default=True, metadata={"help": "run one inference at start-up"})
    adapt_min_speech_seconds: float = field(default=10.0, metadata={
        "help": "speaker adaptation: audio (s) of a speaker before their own statistics are used"})
    max_speakers: int = field(default=1000, metadata={"help": "speakers whose statistics a process keeps (LRU)"})
    speaker_ttl_seconds: float = field(default=3600.0, metadata={
        "help": "a speaker's statistics are forgotten this long after their last request (s)"})
    header_timeout: float = field(default=10.0, metadata={
        "help": "a request's head (request line and headers) must arrive within this (s), else 408 and close"})
    body_timeout: float = field(default=30.0, metadata={
        "help": "a request's body must arrive within this (s) of its head, else 408 and close"})
    keep_alive_timeout: float = field(default=5.0, metadata={
        "help": "an idle keep-alive connection is closed after this (s)"})
    stream_idle_timeout: float = field(default=30.0, metadata={
        "help": "a stream that sends no message for this long (s) is closed with 1008 idle_timeout"})
    max_connections: int = field(default=500, metadata={
        "help": "open connections (HTTP and WebSocket) per process; beyond: 503 and close"})
    max_streams: int = field(default=64, metadata={
        "help": "live streams per process; beyond: error too_many_streams, close 1013"})
    queue_timeout: float = field(default=10.0, metadata={
        "help": "longest wait (s) for an inference slot; then 503 overloaded with Retry-After (a stream: 1013)"})
    max_queue: int = field(default=64, metadata={
        "help": "inference jobs waiting per process; beyond: 503 overloaded at once"})
    stream_slots: int = field(default=0, metadata={
        "help": "inference slots streams may hold at once; 0: all but one (at least one), so /v1/predict "
                "always has a slot of its own"})

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "onnx"):
            raise ConfigError(f"serve backend must be torch or onnx, not {self.backend!r}")
        if self.vad not in ("auto", "silero", "energy"):
            raise ConfigError(f"serve vad must be auto, silero or energy, not {self.vad!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"serve port must be in 0..65535, not {self.port}")
        for name in ("workers", "threads", "max_bytes", "max_speakers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"serve {name} must be at least 1")
        if self.max_concurrency < 0:
            raise ConfigError("serve max_concurrency must be 0 (automatic) or more")
        if not (self.max_seconds > 0 and self.max_chunk_seconds > 0):
            raise ConfigError("serve max_seconds and max_chunk_seconds must be positive")
        if not self.speaker_ttl_seconds > 0:
            raise ConfigError("serve speaker_ttl_seconds must be positive")
        if not 0 <= self.adapt_min_speech_seconds < float("inf"):
            raise ConfigError("serve adapt_min_speech_seconds must be 0 or more")
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout", "stream_idle_timeout", "queue_timeout"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ConfigError(f"serve {name} must be a positive number of seconds")
        for name in ("max_connections", "max_streams", "max_queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"serve {name} must be at least 1")
        if self.stream_slots < 0:
            raise ConfigError("serve stream_slots must be 0 (automatic) or more")

    @property
    def concurrency(self) -> int:
        return self.max_concurrency or max(1, usable_cpus() // self.workers)

    @property
    def stream_concurrency(self) -> int:
        """Inference slots the streams may hold at once."""
        return min(self.stream_slots, self.concurrency) if self.stream_slots else max(1, self.concurrency - 1)


class ApiError(Exception):
    """A refusal: HTTP ``status`` with body ``{"error": error, "detail": detail}``."""

    def __init__(self, status: int, error: str, detail: Any, headers: dict[str, str] | None = None):
        super().__init__(str(detail))
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def audio_error(exc: AudioError) -> ApiError:
    """Map the audio module's reasons to status codes (the reasons are its stable wording)."""
    reason = exc.reason
    # libsndfile names the in-memory file object ("Error opening <_io.BytesIO object at 0x...>: ...")
    text = re.sub(r"Error opening <[^>]*>: ", "", str(exc))
    if reason.startswith("empty"):
        return ApiError(400, "empty", text)
    if "NaN" in reason:
        return ApiError(422, "non_finite", text)
    if reason.startswith("not readable") or reason == "no such file":
        return ApiError(422, "not_audio", text)
    if reason.startswith("too short"):
        return ApiError(422, "too_short", text)
    if "silent" in reason:
        return ApiError(422, "silent", text)
    return ApiError(422, "invalid_audio", text)


def load_recogniser(path: str | Path, backend: str = "torch", threads: int = 1):
    """The model at ``path`` as a Recogniser (torch) or its ONNX Runtime equivalent (``model.onnx``
    written by ``persemo export``), with ``threads`` intra-op threads for onnxruntime."""
    if backend == "onnx":
        return load_exported(path, backend="onnx", threads=threads)
    return Recogniser.load(path)


class Service:
    """What the endpoints share: the model, the VAD, the settings and the inference limiter."""

    def __init__(self, recogniser, settings: Settings, vad):
        self.rec = recogniser
        self.settings = settings
        self.vad = vad
        self.scheduler = Scheduler(settings.concurrency, settings.stream_concurrency, settings.max_queue,
                                   settings.queue_timeout)
        self.streams = 0  # open WebSocket streams
        self.started = time.time()
        self.adapter = SpeakerAdapter(recogniser) if service_adaptable(recogniser) else None
        self.speakers = SpeakerStore(settings.max_speakers, settings.speaker_ttl_seconds)

    def require_adaptable(self) -> None:
        if self.adapter is None:
            why = ("the ONNX backend takes no speaker statistics" if getattr(self.rec, "adaptable", False)
                   else "the model was not trained with speaker normalisation (--normalisation speaker)")
            raise ApiError(400, "not_adaptable", f"speaker adaptation is not available: {why}")

    @property
    def in_flight(self) -> int:
        """Inference jobs running or waiting for a slot."""
        return self.scheduler.busy + self.scheduler.waiting

    async def run(self, fn, *args):
        """``fn(*args)`` for /v1/predict in a worker thread, once a slot is free (predict jobs go first);
        ApiError 503 ``overloaded`` with Retry-After when none is free within ``queue_timeout``."""
        try:
            return await self.scheduler.run(PREDICT, fn, *args)
        except Overloaded as exc:
            raise ApiError(503, "overloaded", exc.detail, {"Retry-After": str(exc.retry_after)}) from None

    async def run_stream(self, fn, *args):
        """``fn(*args)`` for a stream in a worker thread, after any waiting /v1/predict, on at most
        ``stream_slots`` threads; ``limits.Overloaded`` when no slot is free within ``queue_timeout``."""
        return await self.scheduler.run(STREAM, fn, *args)

    def predict_bytes(self, data: bytes, name: str, lang: str, speaker: str | None = None) -> dict:
        """Decode an upload and analyse it (runs in a worker thread). Raises ApiError.

        With ``speaker``: add the audio's statistics to the speaker's, then use them once the speaker
        has ``adapt_min_speech_seconds`` of audio."""
        if not data:
            raise ApiError(400, "empty", f"{name}: empty upload (0 bytes)")
        reason = wav_truncation(data)  # the loader refuses it too; said here before the length check
        if reason:
            raise ApiError(422, "truncated", f"{name}: {reason}")
        limit = self.settings.max_seconds
        try:  # refuse long audio from its header, before decoding it
            info = sf.info(io.BytesIO(data))
            if info.samplerate > 0 and info.frames / info.samplerate > limit:
                raise ApiError(413, "too_long", f"{name}: {info.frames / info.samplerate:.1f} s of audio exceeds "
                                                f"the limit of {limit:g} s")
        except ApiError:
            raise
        except Exception:  # noqa: BLE001 - unreadable: load_audio below says why
            pass
        try:
            wave = load_audio(data, SAMPLE_RATE, name=name)
            if len(wave) > limit * SAMPLE_RATE + 1:
                raise ApiError(413, "too_long", f"{name}: {len(wave) / SAMPLE_RATE:.1f} s of audio exceeds the limit "
                                                f"of {limit:g} s")
            if speaker is None:
                return {"file": name, **self.rec.predict_wave(wave, lang, source=name)}
            wave = check_signal(wave, name)  # refuse silent or short audio before it joins the statistics
            total = self.speakers.add(speaker, self.adapter.measure(wave))
            required = self.settings.adapt_min_speech_seconds
            stats = self.adapter.stats(total) if total.seconds >= required else None
            return {"file": name, **self.rec.predict_wave(wave, lang, speaker_stats=stats, source=name),
                    "speaker": {"id": speaker, "utterances": total.utterances, "seconds": round(total.seconds, 3),
                                "required_seconds": required}}
        except AudioError as exc:
            raise audio_error(exc) from None

    def limits(self) -> dict:
        """The timeouts and caps in force, as /v1/model reports them."""
        s = self.settings
        return {"header_timeout": s.header_timeout, "body_timeout": s.body_timeout,
                "keep_alive_timeout": s.keep_alive_timeout, "stream_idle_timeout": s.stream_idle_timeout,
                "max_connections": s.max_connections, "max_streams": s.max_streams,
                "queue_timeout": s.queue_timeout, "max_queue": s.max_queue,
                "inference_slots": s.concurrency, "stream_slots": s.stream_concurrency}

    def health(self) -> dict:
        return {"status": "ok", "persemo_version": __version__, "model_version": self.rec.version,
                "backend": self.settings.backend, "vad": self.vad.describe(),
                "max_concurrency": self.settings.concurrency, "in_flight": self.in_flight,
                "queued": self.scheduler.waiting, "streams": self.streams,
                "adaptable": self.adapter is not None, "speakers": len(self.speakers),
                "uptime_seconds": round(time.time() - self.started, 1)}


class ClientGone(Exception):
    """The client disconnected before its request was read: logged in one line, answered to nobody."""


async def read_body(request, limit: int, timeout: float | None = None) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes: from
    Content-Length before reading anything, and while reading for bodies without one; with 408
    (and the connection closed) when it is not complete within ``timeout`` seconds."""
    import anyio
    from starlette.requests import ClientDisconnect

    cl = request.headers.get("content-length")
    if cl is not None:
        try:
            declared = int(cl)
        except ValueError:
            raise ApiError(400, "bad_request", f"invalid Content-Length {cl!r}") from None
        if declared > limit:
            raise ApiError(413, "too_large", f"body of {declared} bytes exceeds the limit of {limit} bytes")
    parts, total = [], 0
    with anyio.move_on_after(timeout) as scope:
        try:
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise ApiError(413, "too_large", f"body exceeds the limit of {limit} bytes")
                parts.append(chunk)
        except ClientDisconnect:
            raise ClientGone(f"client disconnected after {total} bytes of the body") from None
    if scope.cancelled_caught:
        raise ApiError(408, "body_timeout", f"request body not complete within {timeout:g} s "
                                            f"({total} bytes received)", {"Connection": "close"})
    return b"".join(parts)


async def upload_from_multipart(request, body: bytes) -> tuple[bytes, str]:
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once():
        yield body

    try:
        form = await MultiPartParser(request.headers, once(), max_files=4, max_fields=16).parse()
    except MultiPartException as exc:
        raise ApiError(400, "bad_multipart", f"malformed multipart body ({exc.message})") from None
    try:
        up = form.get("file")
        if not isinstance(up, UploadFile):
            raise ApiError(422, "missing_file", "multipart upload needs the audio in a file field named 'file'")
        return await up.read(), up.filename or "<upload>"
    finally:
        await form.close()


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": "one audio file (WAV, FLAC, OGG, MP3): a multipart field `file`, or the raw bytes "
                       "with Content-Type audio/* or application/octet-stream",
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                               "properties": {"file": {"type": "string", "format": "binary"}}}},
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}

ERROR_RESPONSES = {code: {"description": text, "content": {"application/json": {"example": {
    "error": err, "detail": "..."}}}} for code, text, err in (
    (400, "empty or malformed body; `not_adaptable`: `speaker` given to a model without speaker "
          "normalisation", "empty"), (413, "body too large or audio too long", "too_large"),
    (415, "content type is not audio, octet-stream or multipart", "unsupported_media_type"),
    (422, "not decodable as audio, truncated, non-finite, too short or silent", "not_audio"))}

PREDICT_EXAMPLE = {"file": "clip.wav", "duration": 3.2, "emotion": "anger", "confidence": 0.61,
                   "probabilities": {"anger": 0.61, "fear": 0.03, "happiness": 0.08, "neutral": 0.2, "sadness": 0.03,
                                     "surprise": 0.05},
                   "members": {"<member kind>": {"anger": 0.55, "...": 0.45}, "<another kind>": {"anger": 0.67, "...": 0.33}},
                   "model_version": "0.1.0", "adapted": True,
                   "speaker": {"id": "alice", "utterances": 4, "seconds": 12.8, "required_seconds": 10.0}}
ERROR_RESPONSES[200] = {"description": "the ensemble's top emotion and distribution, each member's distribution; "
                                       "audio longer than one window adds `windows` (start, end, same fields); "
                                       "`adapted`: speaker statistics were used; `speaker` only with ?speaker=",
                        "content": {"application/json": {"example": PREDICT_EXAMPLE}}}

HTTP_ERRORS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
               415: "unsupported_media_type", 422: "validation_error", 500: "internal_error"}


def create_app(recogniser_or_path, settings: Settings | None = None):
    """The FastAPI app around a loaded recogniser, or the model directory to load one from."""
    from fastapi import FastAPI, Path as PathParam, Query, Request, WebSocket
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    settings = settings or Settings()
    rec = recogniser_or_path
    if isinstance(rec, (str, Path)):
        rec = load_recogniser(rec, settings.backend, settings.threads)
    vad = load_vad(settings.vad)
    torch.set_num_threads(settings.threads)  # after the VAD: importing silero_vad sets it to 1
    svc = Service(rec, settings, vad)
    if settings.warmup:
        t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
        rec.predict_wave((0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))

    app = FastAPI(title="persemo", version=__version__,
                  description="Speech emotion recognition for Persian (ShEMO): CNN + BiLSTM soft-voting ensemble. "
                              "Live streaming: WebSocket /v1/stream (protocol in persemo.serve.stream).")
    app.state.service = svc

    def error(status: int, err: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": err, "detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(ClientGone)
    async def _client_gone(request: Request, exc: ClientGone):
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error(400, "client_disconnected", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, HTTP_ERRORS.get(exc.status_code, "http_error"), exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
        return error(422, "validation_error", detail)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return error(500, "internal_error", f"{type(exc).__name__}: the request failed; the service is still up")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health", summary="liveness, backend and voice activity detector in use")
    async def health():
        return svc.health()

    @app.get("/v1/model", summary="labels, members, ensemble weights, feature config, version")
    async def model_info():
        return {**rec.info(), "backend": settings.backend, "vad": vad.describe(),
                "limits": {"max_seconds": settings.max_seconds, "max_bytes": settings.max_bytes,
                           "max_chunk_seconds": settings.max_chunk_seconds, **svc.limits()},
                "adaptation": {"adaptable": svc.adapter is not None,
                               "min_speech_seconds": settings.adapt_min_speech_seconds,
                               "shrink_k": svc.adapter.shrink_k if svc.adapter is not None else None,
                               # a model trained for enrolment (statistics from one emotion, e.g. neutral)
                               # while the service accumulates all of a speaker's audio: said, not hidden
                               "model_enrolment": rec.meta.get("adaptation", {}).get("enrolment"),
                               "max_speakers": settings.max_speakers,
                               "speaker_ttl_seconds": settings.speaker_ttl_seconds}}

    @app.post("/v1/predict", summary="emotion of one audio file", openapi_extra=PREDICT_BODY,
              responses=ERROR_RESPONSES)
    async def predict(request: Request, lang: Literal["en", "fa"] = Query("en", description="label names"),
                      speaker: str | None = Query(None, min_length=1, max_length=64, pattern=SPEAKER_ID_PATTERN,
                                                  description="opt in to speaker adaptation: an id of your choice "
                                                              "(1-64 of A-Z a-z 0-9 _ . -)")):
        """Top emotion and every emotion's probability, per member and ensemble; audio longer than the
        model's window also gets per-window results (50% overlap) and their aggregate.

        **Speaker adaptation** (`?speaker=ID`, only for models trained with speaker normalisation, else
        400 `not_adaptable`): the service adds this audio's feature statistics (moments of its log-mel and
        MFCC frames, never the audio) to the speaker's, then answers with the speaker's own statistics
        once they rest on at least `adapt_min_speech_seconds` (default 10 s) of audio, before that with
        the model's global ones. The answer's `adapted` says which, and `speaker` gives `id`,
        `utterances`, `seconds` (accumulated) and `required_seconds`. Statistics live in this process
        only (with several workers, a speaker's requests may meet different stores), for at most
        `max_speakers` speakers (least recently used dropped) and until `speaker_ttl_seconds` after the
        speaker's last request; `DELETE /v1/speakers/{id}` forgets them at once."""
        if speaker is not None:
            svc.require_adaptable()
        mtype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if mtype == "multipart/form-data":
            body = await read_body(request, settings.max_bytes + MULTIPART_SLACK, settings.body_timeout)
            data, name = await upload_from_multipart(request, body)
            if len(data) > settings.max_bytes:
                raise ApiError(413, "too_large", f"file of {len(data)} bytes exceeds the limit of "
                                                 f"{settings.max_bytes} bytes")
        elif mtype.startswith("audio/") or mtype in RAW_TYPES:
            data, name = await read_body(request, settings.max_bytes, settings.body_timeout), "<upload>"
        else:
            raise ApiError(415, "unsupported_media_type",
                           f"Content-Type {mtype or '(none)'!r} not accepted: send multipart/form-data with a field "
                           "'file', or the raw audio as audio/* or application/octet-stream")
        # a plain dict of str/float/list: JSONResponse directly, skipping FastAPI's jsonable_encoder walk
        return JSONResponse(await svc.run(svc.predict_bytes, data, name, lang, speaker))

    @app.delete("/v1/speakers/{speaker}", summary="forget a speaker's adaptation statistics",
                responses={404: {"description": "no statistics kept for this speaker (never seen, expired or "
                                                "already forgotten)", "content": {"application/json": {
                                                    "example": {"error": "unknown_speaker", "detail": "..."}}}},
                           400: {"description": "the model does not do speaker adaptation",
                                 "content": {"application/json": {"example": {"error": "not_adaptable",
                                                                              "detail": "..."}}}}})
    async def forget_speaker(speaker: str = PathParam(..., min_length=1, max_length=64, pattern=SPEAKER_ID_PATTERN,
                                                      description="the id given as ?speaker= to /v1/predict")):
        """Drop everything the service keeps about a speaker (their accumulated feature statistics and
        counts; no audio is ever kept). Their next `/v1/predict?speaker=` starts from nothing."""
        svc.require_adaptable()
        if not svc.speakers.forget(speaker):
            raise ApiError(404, "unknown_speaker", f"no statistics kept for speaker {speaker!r}")
        return {"id": speaker, "forgotten": True}

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket):
        await serve_stream(ws, svc)

    return app


def app_from_env():
    """uvicorn factory for ``--workers N``: each worker process rebuilds the app from the environment."""
    spec = json.loads(os.environ[SETTINGS_ENV])
    return create_app(spec["model"], Settings(**spec["settings"]))


def listen_socket(host: str, port: int):
    """A socket bound to ``host:port`` (ready for uvicorn to listen on); ConfigError in one line when the
    address is taken or not ours, before anything is loaded."""
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def server_config(app, settings: Settings, **overrides):
    """The uvicorn ``Config`` serving ``app`` (an app, or an import string with ``factory=True``) with the
    service's timeouts and caps: the guarded h11 protocol, the keep-alive timeout, the WebSocket
    message limit, and ``persemo_limits`` for the protocol (pickled to ``--workers`` processes with it)."""
    import uvicorn

    ws_max = max(1 << 20, int(2 * settings.max_chunk_seconds * 192000 * 4))
    kw = dict(host=settings.host, port=settings.port, ws_max_size=ws_max, log_level="info", http=GuardedH11Protocol,
              timeout_keep_alive=settings.keep_alive_timeout, workers=settings.workers)
    kw.update(overrides)
    config = uvicorn.Config(app, **kw)
    config.persemo_limits = ConnectionLimits(settings.header_timeout, settings.body_timeout, settings.max_connections)
    return config


def run(model: str | Path, settings: Settings) -> None:
    """Serve the model at ``model`` with uvicorn until interrupted. The address is taken first: a port
    in use is one ConfigError line, before the model is loaded."""
    import uvicorn

    if settings.backend == "onnx":  # a wrong path fails here in one line, not in every worker
        find_onnx(model)
    else:
        read_meta(model)
    sock = listen_socket(settings.host, settings.port)
    try:
        if settings.workers > 1:
            from uvicorn.supervisors import Multiprocess

            known = {f.name for f in fields(Settings)}
            os.environ[SETTINGS_ENV] = json.dumps({"model": str(model), "settings": {
                k: v for k, v in asdict(settings).items() if k in known}})
            config = server_config("persemo.serve.app:app_from_env", settings, factory=True)
            logging.getLogger("uvicorn.error").info("persemo serve: listening on http://%s:%d, %d workers",
                                                    settings.host, sock.getsockname()[1], settings.workers)
            Multiprocess(config, sockets=[sock]).run()
        else:
            config = server_config(create_app(model, settings), settings)
            server = uvicorn.Server(config)
            logging.getLogger("uvicorn.error").info("persemo serve: listening on http://%s:%d", settings.host,
                                                    sock.getsockname()[1])
            try:
                server.run(sockets=[sock])
            except KeyboardInterrupt:
                pass
    finally:
        sock.close()
