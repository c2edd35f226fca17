"""WebSocket /v1/stream: results per hop, silence as silence, and every malformed message."""

import json
import math

import numpy as np
import pytest
from .conftest import LABELS, SR, int16_chunks, voice
from starlette.websockets import WebSocketDisconnect


def collect(ws, n: int) -> list[dict]:
    return [ws.receive_json() for _ in range(n)]


def expect_close(ws, code: int, error: str) -> dict:
    msg = ws.receive_json()
    assert msg["type"] == "error" and msg["error"] == error and msg["fatal"] is True, msg
    with pytest.raises(WebSocketDisconnect) as exc:
        ws.receive_json()
    assert exc.value.code == code
    return msg


def test_voiced_stream_gives_a_result_per_hop(client):
    """6 s of a speech-like signal in 0.25 s int16 chunks: one result a second, each the last window's
    distribution per member and ensemble, and the detector hears speech."""
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps({"sample_rate": 16000, "format": "int16", "hop_seconds": 1.0, "lang": "en"}))
        ready = ws.receive_json()
        assert ready["type"] == "ready" and ready["labels"] == LABELS and ready["window_seconds"] == pytest.approx(4.0)
        assert ready["vad"] in ("silero-onnx", "silero-jit", "energy")
        for chunk in int16_chunks(voice(6.0)):
            ws.send_bytes(chunk)
        results = collect(ws, 6)
    assert [r["type"] for r in results] == ["result"] * 6
    assert [r["time"] for r in results] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert [r["start"] for r in results] == [0.0, 0.0, 0.0, 0.0, 1.0, 2.0]  # the last 4 s
    speech = [r for r in results if r["speech"]]
    assert len(speech) >= 5, [(r["time"], r["speech_seconds"]) for r in results]
    for r in speech:
        assert r["silence"] is False and r["emotion"] in LABELS
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert set(r["members"]) == {"cnn", "lstm"}
        assert r["confidence"] == pytest.approx(max(r["probabilities"].values()))


def test_silence_is_reported_as_silence(client):
    quiet = (1e-4 * np.random.default_rng(0).standard_normal(5 * SR)).astype(np.float32)  # -80 dBFS hiss
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps({"hop_seconds": 1.0}))
        assert ws.receive_json()["type"] == "ready"
        for chunk in int16_chunks(np.zeros(3 * SR, np.float32)) + int16_chunks(quiet[: 2 * SR]):
            ws.send_bytes(chunk)
        results = collect(ws, 5)
    for r in results:
        assert r["type"] == "result"
        assert r["speech"] is False and r["silence"] is True
        assert r["emotion"] is None and r["probabilities"] is None and r["members"] is None


def test_speech_then_silence(client):
    """A window slides off speech: the detector turns to silence once the speech has left the window."""
    wave = np.concatenate([voice(2.0), np.zeros(6 * SR, np.float32)])
    with client.websocket_connect("/v1/stream") as ws:
        for chunk in int16_chunks(wave):  # no config: the defaults
            ws.send_bytes(chunk)
        assert ws.receive_json()["type"] == "ready"
        results = collect(ws, 8)
    assert results[0]["speech"] is True
    assert results[-1]["silence"] is True and results[-1]["emotion"] is None


def test_float32_half_second_hops_and_48k_input(client):
    wave = voice(2.0, 48000)
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps({"sample_rate": 48000, "format": "float32", "hop_seconds": 0.5, "lang": "fa"}))
        assert ws.receive_json()["hop_seconds"] == 0.5
        step = 48000 // 4
        for i in range(0, len(wave), step):
            ws.send_bytes(wave[i: i + step].astype("<f4").tobytes())
        results = collect(ws, 3)  # the resampler holds back a few ms, so the 4th hop may be short
    assert [r["time"] for r in results] == [0.5, 1.0, 1.5]
    spoken = [r for r in results if r["speech"]]
    assert spoken and all(r["emotion"] in ("خشم", "ترس", "شادی", "خنثی", "غم", "تعجب") for r in spoken)


@pytest.mark.parametrize("text,code,error", [
    ("{not json", 1007, "bad_json"),
    ("[1, 2]", 1007, "bad_config"),
    ('{"format": "mp3"}', 1003, "unsupported_format"),
    ('{"sample_rate": 1000}', 1003, "unsupported_sample_rate"),
    ('{"sample_rate": "fast"}', 1007, "bad_config"),
    ('{"hop_seconds": 0}', 1007, "bad_config"),
    ('{"hop_seconds": 1e400}', 1007, "bad_config"),
    ('{"lang": "de"}', 1007, "bad_config"),
    ('{"colour": "blue"}', 1007, "bad_config"),
    # json reads these as float nan/inf: once a traceback and 1011 internal_error
    ('{"sample_rate": NaN}', 1007, "bad_config"),
    ('{"sample_rate": Infinity}', 1007, "bad_config"),
    ('{"sample_rate": -Infinity}', 1007, "bad_config"),
    ('{"sample_rate": 1e400}', 1007, "bad_config"),
    ('{"format": {}}', 1007, "bad_config"),
    ('{"format": ["int16"]}', 1007, "bad_config"),
])
def test_bad_config_closes(client, text, code, error):
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_text(text)
        expect_close(ws, code, error)


def test_odd_byte_count_closes_1007(client):
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps({"format": "int16"}))
        ws.receive_json()
        ws.send_bytes(b"\x00\x01\x02")
        expect_close(ws, 1007, "bad_chunk")


def test_float32_byte_count_and_nan_close_1007(client):
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps({"format": "float32"}))
        ws.receive_json()
        ws.send_bytes(b"\x00" * 6)
        expect_close(ws, 1007, "bad_chunk")
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps({"format": "float32"}))
        ws.receive_json()
        x = voice(0.25)
        x[10] = math.nan
        ws.send_bytes(x.astype("<f4").tobytes())
        expect_close(ws, 1007, "non_finite")


def test_chunk_too_large_closes_1009(client):
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps({"format": "int16"}))
        limit = ws.receive_json()["max_chunk_bytes"]
        ws.send_bytes(b"\x00" * (limit + 2))
        expect_close(ws, 1009, "chunk_too_large")


def test_text_after_audio_is_a_non_fatal_error(client):
    with client.websocket_connect("/v1/stream") as ws:
        chunks = int16_chunks(voice(2.0))
        ws.send_bytes(chunks[0])
        assert ws.receive_json()["type"] == "ready"
        ws.send_text('{"hop_seconds": 2}')
        err = ws.receive_json()
        assert err["type"] == "error" and err["error"] == "unexpected_text" and err["fatal"] is False
        for c in chunks[1:]:
            ws.send_bytes(c)
        assert [r["time"] for r in collect(ws, 2)] == [1.0, 2.0]  # the stream went on


def test_service_survives_broken_streams(client):
    for payload in (b"\x01", b"\x00" * 10_000_000):
        with client.websocket_connect("/v1/stream") as ws:
            ws.send_bytes(payload)
            msgs = [ws.receive_json(), ws.receive_json()]
            assert msgs[0]["type"] == "ready" and msgs[1]["fatal"] is True
    assert client.get("/health").json()["status"] == "ok"
    with client.websocket_connect("/v1/stream") as ws:
        for c in int16_chunks(voice(1.0)):
            ws.send_bytes(c)
        collect(ws, 1)
        assert ws.receive_json()["type"] == "result"


# ---- the detectors -----------------------------------------------------------------------------

def test_energy_vad_service(recogniser):
    from fastapi.testclient import TestClient

    from persemo.serve import Settings, create_app

    with TestClient(create_app(recogniser, Settings(vad="energy", warmup=False))) as c:
        assert c.get("/health").json()["vad"]["name"] == "energy"
        with c.websocket_connect("/v1/stream") as ws:
            for chunk in int16_chunks(np.concatenate([voice(2.0), np.zeros(5 * SR, np.float32)])):
                ws.send_bytes(chunk)
            assert ws.receive_json()["vad"] == "energy"
            results = collect(ws, 7)
    assert results[0]["speech"] and results[0]["emotion"] in LABELS
    assert results[-1]["silence"] and results[-1]["emotion"] is None


def test_fallback_to_energy_when_silero_is_missing(monkeypatch):
    import sys

    from persemo.serve.vad import EnergyVAD, load_vad

    monkeypatch.setitem(sys.modules, "silero_vad", None)  # import fails as if not installed
    vad = load_vad("auto")
    assert isinstance(vad, EnergyVAD) and "silero-vad unavailable" in vad.describe()["fallback_reason"]
    with pytest.raises(RuntimeError, match="silero-vad unavailable"):
        load_vad("silero")


@pytest.mark.parametrize("kind", ["onnx", "jit"])
def test_silero_loads_offline(monkeypatch, kind):
    """Both bundled silero models load with every network connection refused, and tell speech from silence."""
    pytest.importorskip("silero_vad")
    if kind == "onnx":
        pytest.importorskip("onnxruntime")
    import socket

    import torch

    from persemo.serve.vad import SileroVAD

    def refuse(*a, **k):
        raise AssertionError("silero tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    threads = torch.get_num_threads()
    try:
        vad = SileroVAD(kind)
    finally:
        torch.set_num_threads(threads)  # importing silero_vad set it to 1
    a, b = vad.stream(5.0), vad.stream(5.0)  # independent states
    a.push(voice(3.0))
    b.push(np.zeros(3 * SR, np.float32))
    assert a.decide(3.0).speech and a.decide(3.0).speech_seconds > 2.0
    assert not b.decide(3.0).speech and b.decide(3.0).speech_seconds == 0.0
