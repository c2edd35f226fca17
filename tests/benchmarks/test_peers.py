"""benchmarks.peers: the peer SVM's hand-made grid search is sklearn's GridSearchCV, faster."""

from __future__ import annotations

import numpy as np

from benchmarks.peers import PEER_C, PEER_GAMMA_X_DIM, peer_svm


def test_peer_svm_chooses_and_predicts_as_grid_search_cv():
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(6), 20)
    y = rng.integers(0, 3, 120)
    X = rng.normal(size=(120, 30)) * rng.uniform(0.5, 20, 30)  # unequal scales: the scaler matters
    X[:, :3] += 0.8 * y[:, None] * X[:, :3].std(0)
    d = X.shape[1]
    grid = {"svc__C": list(PEER_C), "svc__gamma": [g / d for g in PEER_GAMMA_X_DIM]}
    ref = GridSearchCV(make_pipeline(StandardScaler(), SVC(kernel="rbf", class_weight="balanced")), grid,
                       scoring="balanced_accuracy", cv=GroupKFold(n_splits=4)).fit(X, y, groups=groups)
    model, info = peer_svm(X, y, groups)
    assert info["C"] == ref.best_params_["svc__C"]
    assert abs(info["gamma_x_dim"] - ref.best_params_["svc__gamma"] * d) < 1e-12
    assert abs(info["inner_uar"] - ref.best_score_) < 1e-12
    X_new = rng.normal(size=(40, 30)) * X.std(0)
    np.testing.assert_array_equal(model.predict(X_new), ref.predict(X_new))
