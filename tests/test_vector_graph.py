"""persemo.vector_graph: a fitted head rebuilt in torch gives the numpy head's probabilities (classes unseen
in training included, the speaker normalisation folded in), and refuses what has no graph in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from persemo.ensemble import soften
from persemo.smile import SmileMember
from persemo.vector_graph import LOG_FLOOR, Head, NotExportable, VectorGraph


def _data(seed: int = 0, n_classes: int = 4, absent: int = 2):
    """Rows of 12 values, classes 0..n-1 except ``absent``, with large offsets (as encoder states have)."""
    rng = np.random.default_rng(seed)
    classes = [c for c in range(n_classes) if c != absent]
    y = np.repeat(classes, 15)
    X = rng.normal(0, 1, (len(y), 12)) + 1.5 * np.eye(12)[y * 3 % 12] + np.linspace(-40, 300, 12)
    return X, y, rng.choice(["a", "b", "c", "d"], len(y))


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_head_equals_predict_proba_with_an_unseen_class(kind):
    X, y, groups = _data()
    head = SmileMember(kind).fit(X, y, 4, groups=groups)
    arrays, meta = head.state()
    net = Head(arrays, meta).eval()
    with torch.inference_mode():
        logp = net(torch.from_numpy(X.astype(np.float32))).numpy()
    want = head.predict_proba(X)
    assert logp.shape == (len(X), 4) and np.all(logp[:, 2] == np.float32(LOG_FLOOR))
    got = np.exp(logp.astype(np.float64))
    np.testing.assert_allclose(got, want, atol=1e-5)
    # softmax(out / T) is the ensemble's softened row
    z = logp / 1.7
    soft = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(soft / soft.sum(1, keepdims=True), soften(want, 1.7), atol=1e-5)


def test_single_utterance_normalisation_is_folded_in():
    X, y, groups = _data(1, absent=9)
    mean, std = X.mean(0) + 3.0, X.std(0) * 2.0
    head = SmileMember("logreg").fit((X - mean) / std, y, 4, groups=groups)
    net = Head(*head.state(), norm=(mean, std)).eval()
    with torch.inference_mode():
        got = np.exp(net(torch.from_numpy(X.astype(np.float32))).numpy().astype(np.float64))
    np.testing.assert_allclose(got, head.predict_proba((X - mean) / std), atol=1e-5)


def test_svm_and_quantiles_are_refused_naming_the_setting():
    X, y, groups = _data(2)
    with pytest.raises(NotExportable, match=r"model\.x\.kind: a svm head"):
        Head(*SmileMember("svm").fit(X, y, 4, groups=groups).state(), setting="model.x")
    with pytest.raises(NotExportable, match=r"model\.x\.quantiles"):
        Head(*SmileMember("logreg", quantiles=5).fit(X, y, 4, groups=groups).state(), setting="model.x")


def test_vector_graph_chains_vectors_and_head():
    X, y, groups = _data(3)
    head = SmileMember("logreg").fit(X, y, 4, groups=groups)

    class FirstValues(torch.nn.Module):  # stands in for an encoder: the wave's first 12 samples
        def forward(self, wave, lengths):
            return wave[:, :12]

    g = VectorGraph(FirstValues(), Head(*head.state())).eval()
    with torch.inference_mode():
        out = g(torch.from_numpy(X.astype(np.float32)), torch.full((len(X),), 12))
    np.testing.assert_allclose(np.exp(out.numpy().astype(np.float64)), head.predict_proba(X), atol=1e-5)
