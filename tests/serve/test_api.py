"""HTTP endpoints through FastAPI's TestClient: answers, every refusal, and concurrency."""

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from .conftest import LABELS, SR, int16_chunks, voice, wav_bytes

STATIC = Path(__file__).resolve().parents[2] / "src" / "persemo" / "serve" / "static"


def assert_error(r, status: int, error: str):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == error, body
    assert body["detail"]
    return body


def assert_prediction(body: dict, labels=LABELS, duration: float | None = None, window: bool = False):
    assert body["emotion"] in labels
    assert set(body["probabilities"]) == set(labels)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["probabilities"][body["emotion"]] == pytest.approx(max(body["probabilities"].values()))
    assert body["confidence"] == pytest.approx(body["probabilities"][body["emotion"]])
    assert set(body["members"]) == {"cnn", "lstm"}
    for dist in body["members"].values():
        assert sum(dist.values()) == pytest.approx(1.0, abs=1e-4)
    assert window or body["model_version"]
    if duration is not None:
        assert body["duration"] == pytest.approx(duration, abs=0.01)


# ---- the service's own endpoints ---------------------------------------------------------------

def test_health_names_backend_and_vad(client):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["backend"] == "torch"
    assert body["model_version"]
    assert body["max_concurrency"] >= 1
    try:
        import silero_vad  # noqa: F401
        assert body["vad"]["name"] in ("silero-onnx", "silero-jit")
        assert body["vad"]["fallback_reason"] is None
    except ImportError:
        assert body["vad"]["name"] == "energy"


def test_model_info(client, recogniser):
    body = client.get("/v1/model").json()
    assert body["labels"] == LABELS
    assert body["labels_fa"][0] == "خشم"
    assert body["members"] == ["cnn", "lstm"]
    assert body["version"] == recogniser.version
    assert body["adaptation"]["model_enrolment"] is None
    assert body["window_seconds"] == pytest.approx(4.0, abs=0.05)
    assert body["vad"]["name"] and body["backend"] == "torch"
    assert body["limits"]["max_seconds"] == 60.0


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/model", "/health"} <= set(spec["paths"])
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "audio/*", "application/octet-stream"} <= set(body)
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for el in ('id="file-input"', 'id="result"', 'id="top-emotion"', 'id="record-button"', 'id="live-status"',
               'id="live-result"', 'dir="rtl"', 'lang="fa"'):
        assert el in r.text
    for name in ("app.js", "resampler.js", "capture-worklet.js"):
        js = client.get(f"/static/{name}")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]


def test_page_loads_nothing_from_outside():
    for f in STATIC.iterdir():
        text = f.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f.name


# ---- predictions -------------------------------------------------------------------------------

def test_predict_multipart(client):
    r = client.post("/v1/predict", files={"file": ("a.wav", wav_bytes(voice(2.0)), "audio/wav")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_prediction(body, duration=2.0)
    assert body["file"] == "a.wav"
    assert "windows" not in body


@pytest.mark.parametrize("ctype", ["audio/wav", "audio/x-wav", "application/octet-stream"])
def test_predict_raw_body(client, ctype):
    r = client.post("/v1/predict", content=wav_bytes(voice(1.5)), headers={"content-type": ctype})
    assert r.status_code == 200, r.text
    assert_prediction(r.json(), duration=1.5)


@pytest.mark.parametrize("fmt,subtype,ctype", [("FLAC", "PCM_16", "audio/flac"), ("OGG", "VORBIS", "audio/ogg"),
                                               ("MP3", "MPEG_LAYER_III", "audio/mpeg")])
def test_predict_other_formats(client, fmt, subtype, ctype):
    try:
        data = wav_bytes(voice(2.0), SR, subtype, fmt)
    except Exception as exc:  # noqa: BLE001 - this libsndfile cannot write the format
        pytest.skip(f"libsndfile cannot write {fmt}: {exc}")
    r = client.post("/v1/predict", content=data, headers={"content-type": ctype})
    assert r.status_code == 200, r.text
    assert_prediction(r.json())
    assert r.json()["duration"] == pytest.approx(2.0, abs=0.1)


def test_predict_stereo_44k(client):
    wave = np.stack([voice(2.0, 44100), voice(2.0, 44100, seed=1)], axis=1)
    r = client.post("/v1/predict", files={"file": ("s.wav", wav_bytes(wave, 44100), "audio/wav")})
    assert r.status_code == 200, r.text
    assert_prediction(r.json(), duration=2.0)


def test_predict_persian_labels(client, recogniser):
    r = client.post("/v1/predict?lang=fa", content=wav_bytes(voice(1.0)), headers={"content-type": "audio/wav"})
    assert r.status_code == 200, r.text
    fa = client.get("/v1/model").json()["labels_fa"]
    assert_prediction(r.json(), labels=fa)


def test_predict_long_audio_has_windows(client):
    r = client.post("/v1/predict", content=wav_bytes(voice(10.0)), headers={"content-type": "audio/wav"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_prediction(body, duration=10.0)
    wins = body["windows"]
    assert len(wins) == 4  # 4 s windows, 2 s hop, last one aligned to the end
    assert wins[0]["start"] == 0 and wins[-1]["end"] == pytest.approx(10.0)
    for w in wins:
        assert_prediction(w, window=True)


# ---- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("ctype", ["text/plain", "application/json", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_415(client, ctype):
    headers = {"content-type": ctype} if ctype else {}
    r = client.post("/v1/predict", content=wav_bytes(voice(1.0)), headers=headers)
    if ctype is None:  # httpx sends no content type for raw bytes
        assert "content-type" not in r.request.headers
    assert_error(r, 415, "unsupported_media_type")


def test_not_audio_422(client):
    assert_error(client.post("/v1/predict", content=b"this is not audio" * 100,
                             headers={"content-type": "audio/wav"}), 422, "not_audio")
    body = assert_error(client.post("/v1/predict", files={"file": ("notes.txt", b"hello world" * 50, "text/plain")}),
                        422, "not_audio")
    assert "BytesIO" not in body["detail"] and "notes.txt" in body["detail"]


def test_empty_400(client):
    assert_error(client.post("/v1/predict", content=b"", headers={"content-type": "audio/wav"}), 400, "empty")
    assert_error(client.post("/v1/predict", files={"file": ("e.wav", b"", "audio/wav")}), 400, "empty")
    header_only = wav_bytes(np.zeros(0, np.float32))
    assert_error(client.post("/v1/predict", content=header_only, headers={"content-type": "audio/wav"}), 400, "empty")


def test_truncated_wav_422(client):
    data = wav_bytes(voice(2.0))
    body = assert_error(client.post("/v1/predict", content=data[: len(data) // 2],
                                    headers={"content-type": "audio/wav"}), 422, "truncated")
    assert "declares" in body["detail"]
    assert_error(client.post("/v1/predict", content=data[:20], headers={"content-type": "audio/wav"}), 422,
                 "not_audio")


def test_streamed_wav_of_unknown_length_is_accepted(client):
    data = bytearray(wav_bytes(voice(1.0)))
    data[40:44] = (0xFFFFFFFF).to_bytes(4, "little")  # what a writer to a pipe puts in the data size
    r = client.post("/v1/predict", content=bytes(data), headers={"content-type": "audio/wav"})
    assert r.status_code == 200, r.text


def test_nan_samples_422(client):
    wave = voice(1.0)
    wave[100:200] = np.nan
    assert_error(client.post("/v1/predict", content=wav_bytes(wave, subtype="FLOAT"),
                             headers={"content-type": "audio/wav"}), 422, "non_finite")


def test_silent_and_too_short_422(client):
    assert_error(client.post("/v1/predict", content=wav_bytes(np.zeros(SR, np.float32)),
                             headers={"content-type": "audio/wav"}), 422, "silent")
    assert_error(client.post("/v1/predict", content=wav_bytes(voice(0.05)),
                             headers={"content-type": "audio/wav"}), 422, "too_short")


def test_too_long_413(small_limits_client):
    body = assert_error(small_limits_client.post("/v1/predict", content=wav_bytes(voice(5.0, 8000), 8000),
                                                 headers={"content-type": "audio/wav"}), 413, "too_long")
    assert "3 s" in body["detail"]
    r = small_limits_client.post("/v1/predict", content=wav_bytes(voice(2.5, 8000), 8000),
                                 headers={"content-type": "audio/wav"})
    assert r.status_code == 200, r.text


def test_too_large_413(small_limits_client):
    big = wav_bytes(voice(7.0))  # 224 kB > 200 kB
    assert_error(small_limits_client.post("/v1/predict", content=big, headers={"content-type": "audio/wav"}),
                 413, "too_large")
    assert_error(small_limits_client.post("/v1/predict", files={"file": ("big.wav", big, "audio/wav")}),
                 413, "too_large")

    def chunks():  # no Content-Length: counted while reading
        for i in range(0, len(big), 16384):
            yield big[i: i + 16384]

    r = small_limits_client.post("/v1/predict", content=chunks(), headers={"content-type": "audio/wav"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "too_large")


def test_bad_query_and_multipart(client):
    data = wav_bytes(voice(1.0))
    body = assert_error(client.post("/v1/predict?lang=de", content=data, headers={"content-type": "audio/wav"}),
                        422, "validation_error")
    assert body["detail"][0]["loc"] == ["query", "lang"]
    assert_error(client.post("/v1/predict", files={"audio": ("a.wav", data, "audio/wav")}), 422, "missing_file")
    assert_error(client.post("/v1/predict", content=b"--xyz\r\nbroken",
                             headers={"content-type": "multipart/form-data"}), 400, "bad_multipart")  # no boundary
    nameless = b"--xyz\r\nContent-Disposition: form-data\r\n\r\nzz\r\n--xyz--\r\n"
    assert_error(client.post("/v1/predict", content=nameless,
                             headers={"content-type": "multipart/form-data; boundary=xyz"}), 400, "bad_multipart")
    cut = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n" + data[:500]
    assert_error(client.post("/v1/predict", content=cut,  # no closing boundary: the part is dropped
                             headers={"content-type": "multipart/form-data; boundary=xyz"}), 422, "missing_file")


def test_unknown_route_and_method(client):
    assert_error(client.get("/v2/nothing"), 404, "not_found")
    assert_error(client.get("/v1/predict"), 405, "method_not_allowed")


def test_service_survives_bad_input(client):
    for content, ctype in ((b"\x00" * 10, "audio/wav"), (b"RIFF", "audio/wav"), (b"{}", "application/json")):
        assert client.post("/v1/predict", content=content, headers={"content-type": ctype}).status_code in (
            400, 415, 422)
    assert client.get("/health").json()["status"] == "ok"
    r = client.post("/v1/predict", content=wav_bytes(voice(1.0)), headers={"content-type": "audio/wav"})
    assert r.status_code == 200


def test_internal_error_is_json_500(recogniser):
    from fastapi.testclient import TestClient

    from persemo.serve import Settings, create_app

    class Broken:
        def __getattr__(self, name):
            return getattr(recogniser, name)

        def predict_wave(self, *a, **k):
            raise RuntimeError("boom")

    app = create_app(Broken(), Settings(vad="energy", warmup=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        body = assert_error(c.post("/v1/predict", content=wav_bytes(voice(1.0)),
                                   headers={"content-type": "audio/wav"}), 500, "internal_error")
        assert "still up" in body["detail"]
        assert c.get("/health").status_code == 200


# ---- concurrency -------------------------------------------------------------------------------

class Slow:
    """The real recogniser, with each prediction held up by ``delay`` seconds (a slow request)."""

    def __init__(self, rec, delay: float):
        self._rec, self.delay = rec, delay

    def __getattr__(self, name):
        return getattr(self._rec, name)

    def predict_wave(self, *a, **k):
        time.sleep(self.delay)
        return self._rec.predict_wave(*a, **k)


def _parallel(fns):
    out = [None] * len(fns)

    def run(i):
        out[i] = fns[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


@pytest.mark.parametrize("slots", [2, 1])
def test_parallel_requests_and_the_limiter(recogniser, slots):
    """Two slow requests in parallel both succeed; with two slots they overlap, with one they queue;
    either way the event loop stays free and /health answers at once."""
    from fastapi.testclient import TestClient

    from persemo.serve import Settings, create_app

    delay = 0.6
    app = create_app(Slow(recogniser, delay), Settings(max_concurrency=slots, vad="energy", warmup=False))
    data = wav_bytes(voice(1.0))
    with TestClient(app) as c:
        post = lambda: c.post("/v1/predict", content=data, headers={"content-type": "audio/wav"})  # noqa: E731

        def health():
            time.sleep(0.2)
            t = time.perf_counter()
            r = c.get("/health")
            return r, time.perf_counter() - t

        t0 = time.perf_counter()
        a, b, (h, h_time) = _parallel([post, post, health])
        wall = time.perf_counter() - t0
    assert a.status_code == 200 and b.status_code == 200
    assert_prediction(a.json())
    assert_prediction(b.json())
    assert h.status_code == 200 and h_time < delay / 2
    assert h.json()["in_flight"] >= 1
    if slots == 2:
        assert wall < 2 * delay + 0.5
    else:
        assert wall >= 2 * delay


def test_onnx_backend(onnx_model_dir, client):
    """The service on onnxruntime answers as on torch (same untrained weights, exported)."""
    from fastapi.testclient import TestClient

    from persemo.serve import Settings, create_app

    data = wav_bytes(voice(6.0))
    want = client.post("/v1/predict", content=data, headers={"content-type": "audio/wav"}).json()
    with TestClient(create_app(onnx_model_dir, Settings(backend="onnx", vad="energy", warmup=False))) as c:
        assert c.get("/health").json()["backend"] == "onnx"
        assert c.get("/v1/model").json()["labels"] == LABELS
        r = c.post("/v1/predict", content=data, headers={"content-type": "audio/wav"})
        assert r.status_code == 200, r.text
        got = r.json()
        assert_prediction(got, duration=6.0)
        for label, p in want["probabilities"].items():
            assert got["probabilities"][label] == pytest.approx(p, abs=1e-4)
        with c.websocket_connect("/v1/stream") as ws:
            for chunk in int16_chunks(voice(2.0)):
                ws.send_bytes(chunk)
            assert ws.receive_json()["type"] == "ready"
            assert [ws.receive_json()["emotion"] in LABELS for _ in range(2)] == [True, True]
