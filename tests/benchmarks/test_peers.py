"""benchmarks.peers: the peer SVM's hand-made grid search is sklearn's GridSearchCV, faster."""

from __future__ import annotations

import numpy as np

from benchmarks.peers import peer_svm, peer_svm_reference


def test_peer_svm_chooses_and_predicts_as_grid_search_cv():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(6), 20)
    y = rng.integers(0, 3, 120)
    X = rng.normal(size=(120, 30)) * rng.uniform(0.5, 20, 30)  # unequal scales: the scaler matters
    X[:, :3] += 0.8 * y[:, None] * X[:, :3].std(0)
    ref, C, gamma_x_dim, inner_uar = peer_svm_reference(X, y, groups)
    model, info = peer_svm(X, y, groups)
    assert info["C"] == C
    assert abs(info["gamma_x_dim"] - gamma_x_dim) < 1e-12
    assert abs(info["inner_uar"] - inner_uar) < 1e-12
    X_new = rng.normal(size=(40, 30)) * X.std(0)
    np.testing.assert_array_equal(model.predict(X_new), ref.predict(X_new))
