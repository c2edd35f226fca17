"""CNN on log-mel: (B, C) logits; masked pooling ignores zero padding beyond a clip's valid frames."""

from __future__ import annotations

import pytest
import torch

from persemo.members.cnn import CNN

N_MELS = 64


POOLINGS = ["gap", "time", "timestats"]


def _cnn(hidden: int = 0, pooling: str = "gap") -> CNN:
    torch.manual_seed(0)
    return CNN(5, channels=(8, 16, 32), hidden=hidden, pooling=pooling, n_mels=N_MELS).eval()


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("hidden", [0, 16])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_output_shape(batch, hidden, pooling):
    x = torch.randn(batch, N_MELS, 126)
    with torch.no_grad():
        assert _cnn(hidden, pooling)(x).shape == (batch, 5)
        assert _cnn(hidden, pooling)(x, torch.full((batch,), 100)).shape == (batch, 5)


def test_pooled_feature_sizes():
    # gap: channels; time: channels x pooled mel bands (64 / 2**3); timestats: twice that (mean and std)
    sizes = {p: _cnn(0, p).head[-1].in_features for p in POOLINGS}
    assert sizes == {"gap": 32, "time": 32 * 8, "timestats": 2 * 32 * 8}


def test_timestats_features_are_the_mean_and_std_over_time():
    # with every frame valid the pooled features are each channel-frequency map's mean over time, then
    # its standard deviation over time
    model = _cnn(0, "timestats")
    torch.manual_seed(3)
    x = torch.randn(1, N_MELS, 128)
    with torch.no_grad():
        h = model.body(x.unsqueeze(1)).flatten(1, 2)
    mean, std = h.mean(-1), h.std(-1, unbiased=False)
    model.head = torch.nn.Identity()
    with torch.no_grad():
        feats = model(x, torch.tensor([128]))
    n = mean.shape[1]
    torch.testing.assert_close(feats[:, :n], mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(feats[:, n:], torch.sqrt(std ** 2 + 1e-5), atol=1e-4, rtol=0)


@pytest.mark.parametrize("valid", [1, 7, 50, 63, 90])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_extra_zero_padding_does_not_change_a_clip(valid, pooling):
    # padding must be at least the receptive field's reach past the last pooled step (about 24 frames
    # for three blocks); 126 is the model's own length, which is not a multiple of the pooling stride
    torch.manual_seed(1)
    x = torch.randn(1, N_MELS, valid)
    model = _cnn(0, pooling)
    outs = []
    with torch.no_grad():
        for total in (valid + 32, 126, valid + 101, 256):
            if total < valid + 32:
                continue
            padded = torch.nn.functional.pad(x, (0, total - valid))
            outs.append(model(padded, torch.tensor([valid])))
    assert len(outs) >= 3
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], atol=1e-5, rtol=0)


def test_padding_would_matter_without_the_mask():
    # the property above is not vacuous: unmasked pooling sees the padding
    torch.manual_seed(1)
    x = torch.nn.functional.pad(torch.randn(1, N_MELS, 40), (0, 86))
    model = _cnn()
    with torch.no_grad():
        masked = model(x, torch.tensor([40]))
        unmasked = model(x)
    assert (masked - unmasked).abs().max() > 1e-3


def test_batched_equals_one_at_a_time():
    torch.manual_seed(2)
    valid = [126, 80, 33, 5]
    x = torch.randn(len(valid), N_MELS, 126)
    for i, v in enumerate(valid):
        x[i, :, v:] = 0.0
    lengths = torch.tensor(valid)
    model = _cnn(16)
    with torch.no_grad():
        batched = model(x, lengths)
        single = torch.cat([model(x[i: i + 1], lengths[i: i + 1]) for i in range(len(valid))])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
