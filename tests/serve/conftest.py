"""Fixtures for the service tests: an untrained model (accuracy is irrelevant here), the app with
FastAPI's TestClient, a real uvicorn server on a free loopback port, and generated audio.

``voice`` synthesises a speech-like signal (glottal pulses through moving vowel formants, syllables
with short fricative onsets): silero-vad hears it as speech, which plain harmonic tones are not.
"""

import io
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed")

SR = 16000
LABELS = ["anger", "fear", "happiness", "neutral", "sadness", "surprise"]
VOWELS = np.array([(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
                   (570, 840, 2410), (440, 1020, 2240), (660, 1720, 2410)], float)


def _formants(x: np.ndarray, freqs, sr: int, zi=None):
    from scipy.signal import lfilter

    y, states = np.zeros_like(x), []
    for k, f in enumerate(freqs):
        r = np.exp(-np.pi * (60 + 50 * k) / sr)
        z0 = np.zeros(2) if zi is None else zi[k]
        yk, z = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / sr), r * r], x, zi=z0)
        y += yk / (k + 1)
        states.append(z)
    return y, states


def voice(seconds: float, sr: int = SR, f0: float = 120.0, seed: int = 0) -> np.ndarray:
    """A speech-like utterance: (samples,) float32, peak 0.5. About 4 syllables a second, each a short
    high-passed noise onset (half of them) then a voiced vowel gliding toward the next, under a
    declining, wavering pitch."""
    from scipy.signal import butter, lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f = f0 * (1.1 - 0.2 * t / seconds + 0.1 * np.sin(2 * np.pi * 0.8 * t + rng.uniform(0, 6)))
    f *= 1 + 0.005 * rng.standard_normal(n)
    frac = np.cumsum(f) / sr % 1.0
    flow = np.where(frac < 0.5, 0.5 * (1 - np.cos(np.pi * frac / 0.5)),
                    np.where(frac < 0.7, np.cos(np.pi * (frac - 0.5) / 0.4), 0.0))
    src = np.diff(flow, prepend=0.0) + 0.003 * rng.standard_normal(n)
    hp = butter(4, 3000, "highpass", fs=sr)
    out = np.zeros(n)
    pos = 0
    while pos < n:
        end = min(n, pos + int(sr * rng.uniform(0.7, 1.3) / 4.0))
        gap = int(0.05 * sr)
        fric = int(0.3 * (end - pos)) if rng.random() < 0.5 else 0
        if fric:
            seg = lfilter(*hp, rng.standard_normal(fric)) * 0.05
            out[pos + gap: pos + gap + fric] = seg[: max(0, min(fric, n - pos - gap))]
        vstart = min(end, pos + gap + fric)
        if vstart < end:
            a, b = VOWELS[rng.integers(len(VOWELS))], VOWELS[rng.integers(len(VOWELS))]
            seg = src[vstart:end]
            h = len(seg) // 2
            y1, z = _formants(seg[:h], a, sr)
            y2, _ = _formants(seg[h:], (a + b) / 2, sr, z)
            y = np.concatenate([y1, y2]) * np.sin(np.pi * np.linspace(0, 1, len(seg))) ** 0.5
            out[vstart:end] = 0.1 * y / (np.std(y) + 1e-9)
        pos = end
    out += 1e-3 * rng.standard_normal(n)
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)


def wav_bytes(wave: np.ndarray, sr: int = SR, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def int16_chunks(wave: np.ndarray, chunk_seconds: float = 0.25, sr: int = SR) -> list[bytes]:
    pcm = (np.clip(wave, -1, 1) * 32767).astype("<i2")
    step = int(chunk_seconds * sr)
    return [pcm[i: i + step].tobytes() for i in range(0, len(pcm), step)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def _torch_threads_outside() -> int:
    """torch's thread count before these tests: autouse, so taken before any app is built."""
    import torch

    return torch.get_num_threads()


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(_torch_threads_outside):
    """The service runs torch on one thread (create_app sets it, and importing silero_vad does too,
    process-wide); keep that within these modules and give the rest of the suite its own back."""
    import torch

    torch.set_num_threads(1)
    yield
    torch.set_num_threads(_torch_threads_outside)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    import torch

    from persemo.artifact import save_model
    from persemo.config import load_config
    from persemo.ensemble import Ensemble

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("serve_model")
    save_model(out, Ensemble(load_config(), LABELS))
    return out


@pytest.fixture(scope="session")
def recogniser(model_dir):
    from persemo.inference import Recogniser

    return Recogniser.load(model_dir)


@pytest.fixture(scope="session")
def app(recogniser):
    from persemo.serve import Settings, create_app

    return create_app(recogniser, Settings())


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def small_limits_client(recogniser):
    """An app with low limits (3 s of audio, 200 kB) for the refusal tests."""
    from fastapi.testclient import TestClient

    from persemo.serve import Settings, create_app

    with TestClient(create_app(recogniser, Settings(max_seconds=3.0, max_bytes=200_000, warmup=False))) as c:
        yield c


class LiveServer:
    """``app`` served by uvicorn in a thread, configured as ``persemo serve`` configures it (the guarded
    protocol, timeouts and caps of ``settings``, default: the app's own)."""

    def __init__(self, app, port: int, settings=None):
        import uvicorn

        from persemo.serve.app import server_config

        settings = settings or app.state.service.settings
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(server_config(app, settings, host="127.0.0.1", port=port, log_level="warning",
                                                   ws_max_size=4 << 20, workers=None))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def live_server(recogniser):
    """A real uvicorn server (in a thread) on a free loopback port, with a 200 kB upload limit."""
    from persemo.serve import Settings, create_app

    app = create_app(recogniser, Settings(max_bytes=200_000, warmup=False))
    with LiveServer(app, free_port()) as srv:
        yield srv


@pytest.fixture(scope="session")
def onnx_model_dir(model_dir, tmp_path_factory):
    """The test model exported to ONNX (persemo export), when the export module and onnx are present."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("onnx", reason="onnx is not installed (export extra)")
    try:
        from persemo.export import export_onnx
    except ImportError as exc:
        pytest.skip(f"persemo.export is not available: {exc}")
    import shutil

    out = tmp_path_factory.mktemp("serve_onnx") / "model"
    shutil.copytree(model_dir, out)
    export_onnx(out, check=False)
    return out
