"""Speaker adaptation in the service: the speaker store, /v1/predict?speaker=, DELETE, and adapting streams."""

import json

import numpy as np
import pytest
from .conftest import LABELS, SR, int16_chunks, voice, wav_bytes


@pytest.fixture(scope="module")
def speaker_model_dir(tmp_path_factory):
    """An untrained speaker-normalised model with non-trivial global statistics."""
    import torch

    from persemo.artifact import save_model
    from persemo.config import load_config
    from persemo.ensemble import Ensemble

    cfg = load_config(features={"normalisation": "speaker"})
    torch.manual_seed(0)
    m = Ensemble(cfg, LABELS)
    m.front.norm_mel.set_stats(torch.randn(cfg.features.n_mels) - 40, torch.rand(cfg.features.n_mels) * 10 + 5)
    m.front.norm_mfcc.set_stats(torch.randn(cfg.features.mfcc_dim), torch.rand(cfg.features.mfcc_dim) * 20 + 1)
    d = tmp_path_factory.mktemp("serve_speaker_model")
    save_model(d, m)
    return d


@pytest.fixture(scope="module")
def speaker_rec(speaker_model_dir):
    from persemo.inference import Recogniser

    rec = Recogniser.load(speaker_model_dir)
    assert rec.adaptable
    return rec


@pytest.fixture(scope="module")
def adapt_client(speaker_rec):
    from fastapi.testclient import TestClient

    from persemo.serve import Settings, create_app

    with TestClient(create_app(speaker_rec, Settings(warmup=False, adapt_min_speech_seconds=5.0))) as c:
        yield c


def fake_moments(dim: int = 3, seconds: float = 1.0):
    from persemo.serve.speakers import Moments, SpeakerMoments

    x = np.arange(2 * dim, dtype=float).reshape(2, dim)
    return SpeakerMoments({"logmel": Moments.of(x), "mfcc": Moments.of(x)}, 1, seconds)


# ---- the store ----------------------------------------------------------------------------------

def test_store_is_bounded_lru():
    from persemo.serve.speakers import SpeakerStore

    store = SpeakerStore(max_speakers=3, ttl=100)
    for sid in ("a", "b", "c"):
        store.add(sid, fake_moments())
    store.add("a", fake_moments())  # a is now the most recently used
    store.add("d", fake_moments())  # max + 1: the oldest (b) goes
    assert len(store) == 3 and store.ids() == ["c", "a", "d"]
    assert "b" not in store and store.get("a").utterances == 2


def test_store_entries_expire():
    from persemo.serve.speakers import SpeakerStore

    now = [0.0]
    store = SpeakerStore(max_speakers=10, ttl=60, clock=lambda: now[0])
    store.add("a", fake_moments())
    now[0] = 30.0
    store.add("b", fake_moments())
    now[0] = 59.0
    store.add("a", fake_moments())  # refreshed: a's clock starts again
    now[0] = 95.0  # b last used at 30: expired; a at 59: not
    assert store.ids() == ["a"] and store.get("a").utterances == 2
    now[0] = 200.0
    assert len(store) == 0 and store.get("a") is None
    total = store.add("a", fake_moments())  # an expired speaker starts from nothing
    assert total.utterances == 1
    assert not store.forget("zzz") and store.forget("a") and len(store) == 0


def test_store_keeps_only_feature_sized_moments(speaker_rec):
    """The store's entries hold moment vectors of feature size and counts, never audio, and their
    statistics are those computed from the audio itself."""
    from persemo.adaptation import compute_speaker_stats
    from persemo.serve.speakers import SpeakerAdapter, SpeakerMoments, SpeakerStore

    adapter = SpeakerAdapter(speaker_rec)
    store = SpeakerStore()
    waves = [voice(3.0, seed=1), voice(2.0, f0=180.0, seed=2)]
    for w in waves:
        store.add("s1", adapter.measure(w))
    entry = store._entries["s1"][1]
    assert isinstance(entry, SpeakerMoments)
    fc = speaker_rec.cfg.features
    dims = {fc.n_mels, fc.mfcc_dim}
    assert all(a.ndim == 1 and a.shape[0] in dims for a in entry.arrays())
    assert sum(a.size for a in entry.arrays()) == 2 * (fc.n_mels + fc.mfcc_dim)
    assert {k: m.n for k, m in entry.parts.items()}["logmel"] > 0
    assert entry.utterances == 2 and entry.seconds == pytest.approx(5.0)
    assert not any(isinstance(v, np.ndarray) and v.size >= SR for v in vars(entry).values())
    assert adapter.shrink_k == 10.0  # the model's adaptation.shrink (default), n = utterances
    direct = compute_speaker_stats(speaker_rec.model, waves, adapter.shrink_k)
    acc = adapter.stats(entry)
    for k in direct:
        assert np.allclose(acc[k], direct[k], rtol=1e-3, atol=1e-3), k


# ---- POST /v1/predict?speaker= and DELETE ---------------------------------------------------------

def test_predict_with_speaker_adapts_after_enough_audio(adapt_client):
    clip = wav_bytes(voice(3.0, seed=3))
    plain = adapt_client.post("/v1/predict", files={"file": ("a.wav", clip, "audio/wav")}).json()
    assert plain["adapted"] is False and "speaker" not in plain
    first = adapt_client.post("/v1/predict?speaker=alice.01", content=clip,
                              headers={"content-type": "audio/wav"}).json()
    assert first["adapted"] is False  # 3 s < 5 s: global statistics
    assert first["speaker"] == {"id": "alice.01", "utterances": 1, "seconds": pytest.approx(3.0, abs=0.01),
                                "required_seconds": 5.0}
    assert first["probabilities"] == plain["probabilities"]
    second = adapt_client.post("/v1/predict?speaker=alice.01", content=clip,
                               headers={"content-type": "audio/wav"}).json()
    assert second["adapted"] is True and second["speaker"]["utterances"] == 2
    assert second["speaker"]["seconds"] == pytest.approx(6.0, abs=0.01)
    assert second["probabilities"] != plain["probabilities"]
    assert sum(second["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    # another speaker is independent
    other = adapt_client.post("/v1/predict?speaker=bob", content=clip, headers={"content-type": "audio/wav"}).json()
    assert other["adapted"] is False and other["speaker"]["utterances"] == 1
    assert adapt_client.get("/health").json()["speakers"] >= 2

    r = adapt_client.delete("/v1/speakers/alice.01")
    assert r.status_code == 200 and r.json() == {"id": "alice.01", "forgotten": True}
    r = adapt_client.delete("/v1/speakers/alice.01")
    assert r.status_code == 404 and r.json()["error"] == "unknown_speaker"
    again = adapt_client.post("/v1/predict?speaker=alice.01", content=clip,
                              headers={"content-type": "audio/wav"}).json()
    assert again["adapted"] is False and again["speaker"]["utterances"] == 1


def test_silent_upload_does_not_join_the_statistics(adapt_client):
    r = adapt_client.post("/v1/predict?speaker=quiet", content=wav_bytes(np.zeros(2 * SR, np.float32)),
                          headers={"content-type": "audio/wav"})
    assert r.status_code == 422 and r.json()["error"] == "silent"
    assert adapt_client.delete("/v1/speakers/quiet").status_code == 404


@pytest.mark.parametrize("bad", ["a b", "x" * 65, "al/ice", "émile", ""])
def test_bad_speaker_id_is_422(adapt_client, bad):
    r = adapt_client.post("/v1/predict", params={"speaker": bad}, content=wav_bytes(voice(1.0)),
                          headers={"content-type": "audio/wav"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    if bad and "/" not in bad:
        r = adapt_client.delete(f"/v1/speakers/{bad}")
        assert r.status_code == 422 and r.json()["error"] == "validation_error"


def test_non_adaptable_model_refuses_speaker(client):
    r = client.post("/v1/predict?speaker=alice", content=wav_bytes(voice(1.0)), headers={"content-type": "audio/wav"})
    assert r.status_code == 400 and r.json()["error"] == "not_adaptable" and r.json()["detail"]
    assert client.delete("/v1/speakers/alice").json()["error"] == "not_adaptable"
    ok = client.post("/v1/predict", content=wav_bytes(voice(1.0)), headers={"content-type": "audio/wav"})
    assert ok.status_code == 200 and ok.json()["adapted"] is False


def test_model_info_and_openapi_describe_adaptation(adapt_client):
    info = adapt_client.get("/v1/model").json()["adaptation"]
    assert info["adaptable"] is True and info["min_speech_seconds"] == 5.0 and info["max_speakers"] == 1000
    spec = adapt_client.get("/openapi.json").json()
    assert "delete" in spec["paths"]["/v1/speakers/{speaker}"]
    params = {p["name"] for p in spec["paths"]["/v1/predict"]["post"]["parameters"]}
    assert "speaker" in params
    assert "Speaker adaptation" in spec["paths"]["/v1/predict"]["post"]["description"]


def test_settings_and_cli_options():
    from typer.testing import CliRunner

    from persemo.cli import app
    from persemo.config import ConfigError
    from persemo.serve import Settings

    for bad in ({"max_speakers": 0}, {"speaker_ttl_seconds": 0}, {"adapt_min_speech_seconds": -1}):
        with pytest.raises(ConfigError):
            Settings(**bad)
    res = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert "--max-speakers" in res.output and "--speaker-ttl" in res.output


# ---- WebSocket /v1/stream with adapt --------------------------------------------------------------

def test_stream_adapts_after_enough_speech(adapt_client):
    with adapt_client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps({"hop_seconds": 1.0, "adapt": True, "adapt_min_speech_seconds": 2}))
        ready = ws.receive_json()
        assert ready["adapt"] is True and ready["adapt_min_speech_seconds"] == 2.0
        for chunk in int16_chunks(voice(6.0, seed=4)):
            ws.send_bytes(chunk)
        results = [ws.receive_json() for _ in range(6)]
    assert all(r["type"] == "result" for r in results)
    seconds = [r["adaptation"]["speech_seconds"] for r in results]
    assert seconds == sorted(seconds) and seconds[-1] >= 4.0, seconds
    assert all(r["adaptation"]["required_seconds"] == 2.0 for r in results)
    assert results[0]["adapted"] is False and results[0]["adaptation"]["speech_seconds"] < 2.0
    assert results[-1]["adapted"] is True
    for r in results:
        assert r["adapted"] == (r["adaptation"]["speech_seconds"] >= 2.0)
    assert any(r["adapted"] and r["speech"] and r["emotion"] in LABELS for r in results)


def test_stream_without_adapt_is_unchanged(adapt_client):
    with adapt_client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps({"hop_seconds": 1.0}))
        assert ws.receive_json()["adapt"] is False
        for chunk in int16_chunks(voice(3.0, seed=5)):
            ws.send_bytes(chunk)
        results = [ws.receive_json() for _ in range(3)]
    assert all(r["adapted"] is False and r["adaptation"] is None for r in results)


def test_stream_adapt_on_non_adaptable_model_is_fatal(client):
    from starlette.websockets import WebSocketDisconnect

    with client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps({"adapt": True}))
        msg = ws.receive_json()
        assert msg["type"] == "error" and msg["error"] == "not_adaptable" and msg["fatal"] is True
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_json()
        assert exc.value.code == 1003


@pytest.mark.parametrize("cfg", [{"adapt": "yes"}, {"adapt": True, "adapt_min_speech_seconds": -1},
                                 {"adapt": True, "adapt_min_speech_seconds": "ten"}])
def test_stream_bad_adapt_config(adapt_client, cfg):
    from starlette.websockets import WebSocketDisconnect

    with adapt_client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps(cfg))
        msg = ws.receive_json()
        assert msg["error"] == "bad_config" and msg["fatal"] is True
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_json()
        assert exc.value.code == 1007
