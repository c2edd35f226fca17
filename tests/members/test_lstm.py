"""BiLSTM on MFCC: (B, C) logits for both poolings; padding beyond the valid frames changes nothing."""

from __future__ import annotations

import pytest
import torch

from persemo.members.lstm import BiLSTM

D = 40


def _lstm(pooling: str, layers: int = 2) -> BiLSTM:
    torch.manual_seed(0)
    return BiLSTM(D, 4, hidden=16, layers=layers, pooling=pooling).eval()


@pytest.mark.parametrize("pooling", ["meanmax", "attention"])
@pytest.mark.parametrize("batch", [1, 2, 7])
def test_output_shape(pooling, batch):
    x = torch.randn(batch, D, 126)
    with torch.no_grad():
        assert _lstm(pooling)(x).shape == (batch, 4)
        assert _lstm(pooling)(x, torch.randint(1, 127, (batch,))).shape == (batch, 4)


def test_poolings_differ():
    # both poolings are really used: same weights except the head, different heads -> different widths
    a, b = _lstm("meanmax"), _lstm("attention")
    assert a.head[-1].in_features == 2 * b.head[-1].in_features
    assert hasattr(b, "score") and not hasattr(a, "score")


@pytest.mark.parametrize("pooling", ["meanmax", "attention"])
@pytest.mark.parametrize("valid", [1, 9, 50])
def test_extra_zero_padding_does_not_change_a_clip(pooling, valid):
    torch.manual_seed(1)
    x = 3.0 * torch.randn(1, D, valid)
    model = _lstm(pooling)
    with torch.no_grad():
        outs = [model(torch.nn.functional.pad(x, (0, extra)), torch.tensor([valid])) for extra in (0, 1, 17, 126)]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", ["meanmax", "attention"])
def test_batched_equals_one_at_a_time(pooling):
    torch.manual_seed(2)
    valid = [126, 3, 64, 100]
    x = torch.randn(len(valid), D, 126)
    for i, v in enumerate(valid):
        x[i, :, v:] = 0.0
    lengths = torch.tensor(valid)
    model = _lstm(pooling)
    with torch.no_grad():
        batched = model(x, lengths)
        single = torch.cat([model(x[i: i + 1, :, : valid[i]], lengths[i: i + 1]) for i in range(len(valid))])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", ["meanmax", "attention"])
def test_frames_beyond_valid_are_never_read(pooling):
    # stronger than zero padding: whatever lies past a clip's valid frames, its output is the same
    torch.manual_seed(3)
    x = torch.randn(2, D, 60)
    garbage = x.clone()
    garbage[:, :, 25:] = 100.0 * torch.randn(2, D, 35)
    valid = torch.tensor([25, 25])
    model = _lstm(pooling)
    with torch.no_grad():
        torch.testing.assert_close(model(garbage, valid), model(x, valid), atol=1e-5, rtol=0)
        assert not torch.allclose(model(garbage), model(x))  # without lengths, all frames count
