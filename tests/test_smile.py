"""openSMILE functionals, per-group normalisation and SmileMember (fast: a handful of short files)."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

pytest.importorskip("opensmile")

from conftest import write_tone  # noqa: E402

from persemo import heads, smile  # noqa: E402
import persemo.heads.mlp  # noqa: E402,F401
from persemo.smile import (FEATURE_SETS, SmileMember, extract_functionals, normalise_by_group,  # noqa: E402
                           rbf_decision_function, usable)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    root = tmp_path_factory.mktemp("smile")
    return [write_tone(root / f"t{i}.wav", 1.0 + 0.2 * i, 22050, freq=140.0 + 40 * i, seed=i) for i in range(3)]


def blobs(n_per: int = 12, n_classes: int = 3, dim: int = 20, speakers: int = 6, seed: int = 0):
    """Separable classes (shifted means) spread over ``speakers``; each speaker has an offset."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per * speakers)
    groups = np.tile(np.repeat(np.arange(speakers), n_per), n_classes)
    centres = rng.normal(0, 3, (n_classes, dim))
    X = centres[y] + rng.normal(0, 1, (len(y), dim)) + rng.normal(0, 0.5, (speakers, dim))[groups]
    return X, y, groups


@pytest.mark.parametrize("feature_set", ["eGeMAPSv02", "ComParE_2016"])
def test_functionals_shape(wavs, feature_set):
    X, names, problems = extract_functionals(wavs[:2], feature_set, cache_dir=None, threads=2)
    assert X.shape == (2, FEATURE_SETS[feature_set]) == (2, {"eGeMAPSv02": 88, "ComParE_2016": 6373}[feature_set])
    assert X.dtype == np.float32 and len(names) == X.shape[1] and not problems
    assert np.all(np.isfinite(X))


def test_threads_equal_serial(wavs):
    a, _, _ = extract_functionals(wavs, "eGeMAPSv02", threads=1)
    b, _, _ = extract_functionals(wavs, "eGeMAPSv02", threads=2)
    assert np.array_equal(a, b)


def test_cache_hit_on_second_call(wavs, tmp_path, monkeypatch):
    first, _, _ = extract_functionals(wavs, "eGeMAPSv02", cache_dir=tmp_path)

    def no_decoding(*args, **kwargs):
        raise AssertionError("audio decoded although every vector is cached")

    monkeypatch.setattr(smile, "load_audio", no_decoding)
    second, _, problems = extract_functionals(wavs, "eGeMAPSv02", cache_dir=tmp_path)
    assert np.array_equal(first, second) and not problems


def test_bad_file_is_a_problem_not_a_row(wavs, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really")
    paths = [wavs[0], bad, wavs[1]]
    X, _, problems = extract_functionals(paths, "eGeMAPSv02")
    assert X.shape[0] == 2 and [p.path for p in problems] == [str(bad)]
    assert usable(paths, problems) == [wavs[0], wavs[1]]


def test_real_emodb_files(emodb_scan):
    X, _, problems = extract_functionals(emodb_scan.utterances[:2], "eGeMAPSv02")
    assert X.shape == (2, 88) and not problems


def test_normalise_by_reference_uses_the_reference_rows_statistics():
    from persemo.smile import normalise_by_reference

    rng = np.random.default_rng(0)
    X, speakers = rng.normal(size=(9, 3)), list("aaabbbbcc")
    assert np.allclose(normalise_by_reference(X, speakers, X), normalise_by_group(X, speakers))
    # speaker a's reference rows have mean 1 and std 1, speaker b's mean 15 and std 5
    X, ref = np.array([[1.0], [3.0], [10.0], [20.0]]), np.array([[0.0], [2.0], [10.0], [20.0]])
    assert normalise_by_reference(X, ["a", "a", "b", "b"], ref).ravel().tolist() == [0.0, 2.0, -1.0, 1.0]


def test_normalise_by_group_uses_own_statistics_only():
    assert list(inspect.signature(normalise_by_group).parameters) == ["X", "groups", "eps"]  # no labels
    rng = np.random.default_rng(1)
    X = rng.normal(5, 3, (40, 4)).astype(np.float32)
    groups = np.array(["a"] * 15 + ["b"] * 25)
    out = normalise_by_group(X, groups)
    assert out.dtype == np.float32 and out.shape == X.shape
    for g in ("a", "b"):
        np.testing.assert_allclose(out[groups == g].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(out[groups == g].std(0), 1, atol=1e-4)
    other = X.copy()
    other[groups == "b"] *= 10  # another speaker's data does not change speaker a's output
    np.testing.assert_array_equal(normalise_by_group(other, groups)[groups == "a"], out[groups == "a"])


@pytest.mark.parametrize("n_classes", [4, 2])
def test_numpy_rbf_equals_sklearn(n_classes):
    from sklearn.svm import SVC

    X, y, _ = blobs(n_per=5, n_classes=n_classes, dim=8)
    clf = SVC(C=2.0, gamma=0.03, class_weight="balanced").fit(X, y)
    Xt = np.random.default_rng(2).normal(0, 3, (25, 8))
    ref = clf.decision_function(Xt)
    if n_classes == 2:  # sklearn flips libsvm's signs for two classes; SmileMember stores libsvm's
        ovo = smile.rbf_ovo(Xt, clf.support_vectors_, -clf.dual_coef_, -clf.intercept_, clf.n_support_, 0.03)
        np.testing.assert_allclose(-ovo[:, 0], ref, atol=1e-10)
    else:
        mine = rbf_decision_function(Xt, clf.support_vectors_, clf.dual_coef_, clf.intercept_, clf.n_support_, 0.03)
        np.testing.assert_allclose(mine, ref, atol=1e-10)


@pytest.fixture(scope="module", autouse=True)
def small_mlp_search():
    """The MLP's search is sized for 6,373 features; a smaller one keeps these tests fast. One thread:
    on tiny matrices, BLAS and torch threads only wait for each other (badly so on a busy machine)."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp, threadpool_limits(limits=1):
        mp.setattr(heads.mlp, "MLP_EPOCHS", 40)
        mp.setattr(heads.mlp, "MLP_HIDDEN", 32)
        mp.setattr(heads.mlp, "MLP_LR", 1e-2)
        mp.setattr(heads.mlp, "MLP_WEIGHT_DECAY", (1e-2,))
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fitted():
    X, y, groups = blobs()
    return X, y, groups, {k: SmileMember(k).fit(X, y, n_classes=4, groups=groups) for k in smile.MEMBER_KINDS}


@pytest.mark.parametrize("kind", smile.MEMBER_KINDS)
def test_member_state_round_trip_is_identical(fitted, kind, tmp_path):
    from safetensors.numpy import load_file, save_file

    X, _, _, members = fitted
    arrays, meta = members[kind].state()
    save_file(arrays, str(tmp_path / "m.safetensors"))
    (tmp_path / "m.json").write_text(json.dumps(meta))
    back = SmileMember.from_state(load_file(str(tmp_path / "m.safetensors")),
                                  json.loads((tmp_path / "m.json").read_text()))
    np.testing.assert_array_equal(back.predict_proba(X), members[kind].predict_proba(X))


@pytest.mark.parametrize("kind", smile.MEMBER_KINDS)
def test_member_probabilities_and_learnability(fitted, kind):
    X, y, groups, members = fitted
    p = members[kind].predict_proba(X)
    assert p.shape == (len(X), 4)  # class 3 never seen: probability exactly 0
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    assert np.all(p[:, 3] == 0)
    # held-out speakers: fit on speakers 0-3, test on 4-5
    tr, te = groups < 4, groups >= 4
    m = SmileMember(kind).fit(X[tr], y[tr], n_classes=3, groups=groups[tr])
    assert np.mean(m.predict_proba(X[te]).argmax(1) == y[te]) > 0.9
    assert m.meta["inner_cv"]["grouped"] and 0.0 <= m.meta["inner_cv"]["uar"] <= 1.0


def test_svm_member_scores_match_sklearn(fitted):
    from sklearn.svm import SVC

    X, y, _, members = fitted
    arrays, meta = members["svm"].state()
    Z = (X - arrays["mean"]) / arrays["scale"]
    clf = SVC(C=meta["C"], gamma=meta["gamma"], class_weight="balanced").fit(Z, y)
    np.testing.assert_allclose(heads.state_scores(arrays, meta, X), clf.decision_function(Z), atol=1e-8)


def test_from_state_rejects_foreign_state():
    with pytest.raises(ValueError, match="not a classifier head state"):
        SmileMember.from_state({}, {"format": 99, "kind": "svm"})


def test_copies_stay_in_their_originals_inner_fold():
    # noise labels: nothing to learn, so the inner CV should sit near chance. Exact copies of the rows
    # split apart from their originals leak (a clip's twin trains its fold); with origin they stay together.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 20))
    y = rng.integers(0, 3, 60)
    X2, y2 = np.concatenate([X, X]), np.concatenate([y, y])
    origin = np.tile(np.arange(60), 2)
    leaky = SmileMember("logreg").fit(X2, y2, 3, seed=0).meta["inner_cv"]["uar"]
    fair = SmileMember("logreg").fit(X2, y2, 3, seed=0, origin=origin).meta["inner_cv"]["uar"]
    assert leaky > fair + 0.1 and fair < 0.5
    with pytest.raises(ValueError, match="origin"):
        SmileMember("logreg").fit(X2, y2, 3, origin=np.tile(np.arange(60), 2)[::-1])


def test_origin_keeps_the_speaker_grouped_inner_folds():
    # with speaker groups, copies already follow their speaker: the folds (and the fit) are unchanged
    X, y, groups = blobs()
    rng = np.random.default_rng(1)
    X2 = np.concatenate([X, X + rng.normal(0, 0.1, X.shape)])
    y2, g2 = np.concatenate([y, y]), np.concatenate([groups, groups])
    a = SmileMember("logreg").fit(X2, y2, 4, groups=g2)
    b = SmileMember("logreg").fit(X2, y2, 4, groups=g2, origin=np.tile(np.arange(len(y)), 2))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.meta["inner_cv"] == b.meta["inner_cv"]


# -- Gaussianisation through training quantiles -------------------------------------------------------

def _skewed(rng, n):
    """Skewed, discrete, constant and normal columns: every kind of tie the quantiles can have."""
    return np.column_stack([rng.exponential(size=n), rng.integers(0, 3, n).astype(float), np.ones(n),
                            rng.normal(size=n)])


@pytest.mark.parametrize("n", [2, 5, 20, 300])
def test_gaussianise_equals_sklearn_quantile_transformer(n):
    from sklearn.preprocessing import QuantileTransformer

    rng = np.random.default_rng(0)
    X, T = _skewed(rng, 200), 2.0 * _skewed(rng, 50) - 0.5  # T reaches beyond the training range
    T[:25, 2] = 1.0
    ref = QuantileTransformer(n_quantiles=min(n, 200), output_distribution="normal").fit(X)
    q = smile.fit_quantiles(X, min(n, 200))
    for A in (X, T):
        np.testing.assert_allclose(smile.gaussianise(A, q), ref.transform(A), atol=1e-8)


def test_gaussianise_is_monotone_and_normal_on_its_training_data():
    rng = np.random.default_rng(1)
    X = rng.lognormal(sigma=1.5, size=(2000, 3))
    G = smile.gaussianise(X, smile.fit_quantiles(X, 100))
    for j in range(3):  # order kept per feature
        assert np.all(np.diff(G[np.argsort(X[:, j]), j]) >= 0)
    inner = np.abs(G) < 3
    assert abs(G[inner].mean()) < 0.05 and abs(G[inner].std() - 1.0) < 0.1  # skew gone: near N(0, 1)
    with pytest.raises(ValueError, match="quantile levels"):
        smile.fit_quantiles(X, 1)
    with pytest.raises(ValueError, match="quantiles"):
        smile.gaussianise(X, smile.fit_quantiles(X[:, :2], 5))


def test_member_with_quantiles_keeps_them_in_its_state(tmp_path):
    from safetensors.numpy import load_file, save_file

    X, y, groups = blobs()
    X = np.exp(X)  # skewed features: the transform has something to undo
    m = SmileMember("logreg", quantiles=10).fit(X, y, n_classes=4, groups=groups)
    arrays, meta = m.state()
    assert arrays["quantiles"].shape == (10, X.shape[1]) and meta["quantiles"] == 10
    save_file(arrays, str(tmp_path / "m.safetensors"))
    back = SmileMember.from_state(load_file(str(tmp_path / "m.safetensors")), json.loads(json.dumps(meta)))
    np.testing.assert_array_equal(back.predict_proba(X), m.predict_proba(X))
    plain = SmileMember("logreg").fit(X, y, n_classes=4, groups=groups)
    assert "quantiles" not in plain.state()[0] and plain.meta["quantiles"] == 0
    assert not np.allclose(plain.predict_proba(X), m.predict_proba(X))  # the option changes the model
    with pytest.raises(ValueError, match="quantiles"):
        SmileMember("logreg", quantiles=1)
