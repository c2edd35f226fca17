"""persemo.encoders.whisper: own-frame Whisper encoder against transformers' module, pooling, state, cache.

A tiny randomly initialised Whisper (width 64, 2 blocks) keeps the tests fast and offline; one test runs
the real Whisper base from ``../shared/models/whisper-base`` and skips with a reason where it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the 'encoder' extra (transformers) is not installed")

from persemo.encoders import whisper as W  # noqa: E402

SHARED = (Path(__file__).resolve().parents[2] / ".." / "shared").resolve()
WHISPER_BASE = SHARED / "models" / "whisper-base"
EMODB = SHARED / "data" / "emodb" / "wav"


def tiny_config(**over):
    kw = dict(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128, num_mel_bins=80,
              max_source_positions=1500, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
              vocab_size=100)
    kw.update(over)
    return transformers.WhisperConfig(**kw)


def hf_encoder(cfg, seed=0):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder

    torch.manual_seed(seed)
    hf = HFEncoder(cfg).float().eval().requires_grad_(False)
    with torch.no_grad():  # post_init leaves the positions at zero in some versions: make them matter
        hf.embed_positions.weight.normal_(0, 0.5)
    return hf


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_config()
    hf = hf_encoder(cfg)
    return W.WhisperEncoder(cfg.to_dict(), hf.state_dict(), source="tiny-random"), hf


def voice(seconds, seed=0, f0=150.0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    y = sum(np.sin(2 * np.pi * h * f0 * (1 + 0.02 * np.sin(2 * np.pi * 3 * t)) * t) / h for h in range(1, 6))
    return (0.3 * y * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t)) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_log_mel_equals_the_padded_feature_extractor():
    fe = transformers.WhisperFeatureExtractor()  # Whisper's defaults: 80 bands, n_fft 400, hop 160, 30 s
    for n in (16000, 23457, 160 * 301):
        w = voice(n / 16000, seed=n)[:n]
        ref = fe(w, sampling_rate=16000, return_tensors="np").input_features[0]
        mel, frames = W.log_mel([w])
        T = int(frames[0])
        assert T == -(-n // 160) and mel.shape == (1, 80, T)
        np.testing.assert_allclose(mel[0].numpy(), ref[:, :T], atol=2e-5)


def test_mel_filters_are_the_feature_extractors():
    fe = transformers.WhisperFeatureExtractor()
    np.testing.assert_allclose(W.mel_filters(80).numpy(), fe.mel_filters.T, atol=1e-7)


def test_own_frames_equal_the_hf_module_at_that_length(tiny):
    enc, hf = tiny
    w = voice(1.0)  # 100 mel frames -> 50 encoder frames
    mel, frames = W.log_mel([w])
    T = int(frames[0])
    assert T % 2 == 0
    short = hf_encoder(tiny_config(max_source_positions=T // 2))  # transformers' encoder at exactly this length
    state = dict(hf.state_dict())
    state["embed_positions.weight"] = state["embed_positions.weight"][: T // 2]
    short.load_state_dict(state)
    with torch.no_grad():
        ref = short(mel, output_hidden_states=True).hidden_states
    own = enc.hidden_states([w])[0]
    assert len(own) == len(ref) == 3
    for a, b in zip(own, ref):
        assert a.shape == b[0].shape == (T // 2, 64)
        torch.testing.assert_close(a, b[0], atol=2e-5, rtol=1e-5)
    E = W.embed(enc, [w])
    for k in range(3):
        np.testing.assert_allclose(E[0, k, :64], ref[k][0].mean(0).numpy(), atol=2e-5)
        np.testing.assert_allclose(E[0, k, 64:], ref[k][0].std(0, unbiased=False).numpy(), atol=2e-5)


def test_padded_30s_path_equals_the_hf_module(tiny):
    """The same weights on Whisper's 30-s padded input: the re-implementation is transformers' encoder."""
    enc, hf = tiny
    w = voice(0.7, seed=3)
    fe = transformers.WhisperFeatureExtractor()
    x = torch.from_numpy(fe(w, sampling_rate=16000, return_tensors="np").input_features)
    with torch.no_grad():
        ref = hf(x, output_hidden_states=True).hidden_states
        own, _ = enc.net(x, torch.tensor([3000]))
    for a, b in zip(own, ref):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_shapes_blocks_and_long_clips(tiny):
    enc, _ = tiny
    waves = [voice(0.5, 1), voice(1.3, 2), voice(0.01, 3)]
    assert W.embed(enc, waves).shape == (3, 3, 128)
    assert W.embed(enc, waves, stats=False).shape == (3, 3, 64)
    E = W.embed(enc, waves, blocks=[2, 0])
    assert E.shape == (3, 2, 128) and E.dtype == np.float32
    np.testing.assert_array_equal(E, W.embed(enc, waves)[:, [2, 0]])
    assert np.all(E[..., 64:] >= 0)
    with pytest.raises(ValueError):
        W.embed(enc, waves, blocks=[3])
    with pytest.raises(ValueError):
        W.embed(enc, [np.zeros(0, np.float32)])
    # over 30 s: 30-s pieces, each encoded alone, pooled over all their frames
    long = voice(31.0, 4)
    a, b = long[: W.N_SAMPLES], long[W.N_SAMPLES:]
    ha, hb = enc.hidden_states([a])[0], enc.hidden_states([b])[0]
    want = torch.cat([ha[1], hb[1]]).double().mean(0).numpy()
    np.testing.assert_allclose(W.embed(enc, [long], blocks=[1], stats=False)[0, 0], want, atol=1e-5)


def test_batched_equals_one_at_a_time_and_one_thread(tiny):
    enc, _ = tiny
    waves = [voice(s, i) for i, s in enumerate((0.31, 1.2, 0.8, 2.05, 0.8, 0.333))]
    one = W.embed(enc, waves, threads=1)
    np.testing.assert_array_equal(one, np.concatenate([W.embed(enc, [w]) for w in waves]))
    batched = W.embed(enc, waves, batch_frames=3000)
    np.testing.assert_allclose(batched, one, rtol=1e-5, atol=2e-5)


def test_state_round_trip_gives_the_same_bits(tiny, tmp_path):
    enc, _ = tiny
    waves = [voice(0.9, 7), voice(1.7, 8)]
    E = W.embed(enc, waves)
    config, tensors = enc.state()
    assert all(isinstance(v, np.ndarray) for v in tensors.values())
    import json

    config = json.loads(json.dumps(config))  # JSON-able
    again = W.WhisperEncoder.from_state(config, tensors)
    assert again.weights_sha256 == enc.weights_sha256 and again.meta() == enc.meta()
    np.testing.assert_array_equal(W.embed(again, waves), E)
    enc.save(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["encoder.json", "encoder.safetensors"]
    loaded = W.WhisperEncoder.load(tmp_path / "run")
    np.testing.assert_array_equal(W.embed(loaded, waves), E)
    bad = dict(tensors)
    bad["layer_norm.bias"] = bad["layer_norm.bias"] + 1
    with pytest.raises(ValueError, match="sha256"):
        W.WhisperEncoder.from_state(config, bad)


def test_float16_weights_are_stored_as_float16_and_keep_their_digest():
    hf = hf_encoder(tiny_config(), seed=1).half().float()  # values exactly representable in float16
    enc = W.WhisperEncoder(tiny_config().to_dict(), hf.state_dict())
    config, tensors = enc.state()
    assert {v.dtype for v in tensors.values()} == {np.dtype(np.float16)}
    assert W.WhisperEncoder.from_state(config, tensors).weights_sha256 == enc.weights_sha256


def test_load_encoder_from_a_local_checkpoint(tmp_path, tiny):
    torch.manual_seed(0)
    model = transformers.WhisperForAudioClassification(tiny_config())
    model.save_pretrained(tmp_path / "ckpt")
    enc = W.load_encoder(str(tmp_path / "ckpt"))
    assert enc.source == str(tmp_path / "ckpt") and enc.revision is None
    assert all(not p.requires_grad for p in enc.net.parameters()) and not enc.net.training
    ref = {k: v.float() for k, v in model.encoder.state_dict().items()}
    assert enc.weights_sha256 == W.WhisperEncoder(tiny_config().to_dict(), ref).weights_sha256
    assert enc.meta()["model"]["d_model"] == 64 and len(enc.weights_sha256) == 64


def test_cache_hit_gives_the_same_bits_and_other_weights_miss(tiny, tmp_path, monkeypatch):
    enc, hf = tiny
    waves = [voice(0.6, 1), voice(1.1, 2)]
    first = W.embed_cached(enc, waves, None, tmp_path)
    calls = []
    real = W.embed
    monkeypatch.setattr(W, "embed", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    np.testing.assert_array_equal(W.embed_cached(enc, waves, None, tmp_path), first)
    assert calls == []  # all hits
    np.testing.assert_array_equal(W.embed_cached(enc, waves, None, tmp_path, blocks=[1]), first[:, [1]])
    W.embed_cached(enc, waves, None, tmp_path, tag="speed0.9")  # a perturbation tag: its own entries
    assert calls == [2]
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    state["layer_norm.weight"][0] += 1e-3
    other = W.WhisperEncoder(tiny_config().to_dict(), state)
    assert other.weights_sha256 != enc.weights_sha256
    W.embed_cached(other, waves, None, tmp_path)
    assert calls == [2, 2]
    W.embed_cached(enc, waves[:1] + [voice(0.4, 9)], None, tmp_path, stats=False)
    assert calls == [2, 2, 2]  # another pooling: another key
    W.embed_cached(enc, [waves[1], voice(0.4, 9)], ["x", "y"], tmp_path)  # caller's digests: new keys
    assert calls == [2, 2, 2, 2]


def _emodb_clips(n):
    from persemo.audio import load_audio

    files = sorted(EMODB.glob("*.wav"))[:: 97][:n]
    return [load_audio(f.read_bytes(), 16000, name=str(f)) for f in files]


@pytest.mark.skipif(not (WHISPER_BASE / "model.safetensors").is_file() or not EMODB.is_dir(),
                    reason=f"real Whisper base weights or EmoDB not found under {SHARED} (absent on a user's machine)")
def test_whisper_base_own_frames_agree_with_30s_padding():
    """Blocks 0-3 of the real model, mean-pooled over the clip's frames: own frames vs Whisper's 30-s padding.

    They differ by design (padded, attention also sees 28 s of silence): measured on 20 EmoDB clips
    (benchmarks.encoder_probe) block 0 agrees to 1.0, blocks 1-3 to 0.989-0.998 (mean over clips >= 0.99)."""
    enc = W.load_encoder(str(WHISPER_BASE))
    assert enc.n_layers == 6 and enc.width == 512
    hf = enc.to_hf()
    fe = transformers.WhisperFeatureExtractor.from_pretrained(str(WHISPER_BASE))
    waves = _emodb_clips(2)
    own = W.embed(enc, waves, stats=False)
    cos = np.zeros((len(waves), 4))
    for i, (w, e) in enumerate(zip(waves, own)):
        x = torch.from_numpy(fe(w, sampling_rate=16000, return_tensors="np").input_features)
        with torch.no_grad():
            hs = hf(x, output_hidden_states=True).hidden_states
        n = (W.n_frames(len(w)) + 1) // 2
        for b in range(4):
            p = hs[b][0, :n].mean(0).numpy()
            cos[i, b] = float(e[b] @ p / np.linalg.norm(e[b]) / np.linalg.norm(p))
    assert np.all(cos[:, 0] >= 0.9999), cos
    assert np.all(cos >= 0.985), cos
    assert np.all(cos.mean(0) >= 0.99), cos
