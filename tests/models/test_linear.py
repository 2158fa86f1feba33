"""LogisticRegression and LinearSVC against scikit-learn's optimum on the same data."""

from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
from sklearn import linear_model, svm
from sklearn.datasets import make_classification

from shardlearn.base import clone
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.exceptions import ConvergenceWarning, DataError, SchemaError, WorkerLost
from shardlearn.models import LinearSVC, LogisticRegression, Pipeline
from shardlearn.models.linear_model._lbfgs import minimize_lbfgs, whitening

TIGHT = {"tol": 1e-9, "max_iter": 5000}


def _data(n_classes: int, n: int = 600, p: int = 12, seed: int = 0):
    X, y = make_classification(
        n_samples=n,
        n_features=p,
        n_informative=min(p, max(4, n_classes)),
        n_redundant=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        random_state=seed,
    )
    return X.astype(np.float32), y


def _sklearn(X, y, **params):
    # float32 values are exact in float64: both minimise the same float64 objective.
    X = X.astype(np.float64) if sp.issparse(X) else np.asarray(X, np.float64)
    return linear_model.LogisticRegression(**params).fit(X, y)


def _assert_same_model(ours, ref, X, rtol=1e-4):
    scale = np.abs(ref.coef_).max()
    assert np.abs(ours.coef_ - ref.coef_).max() <= rtol * scale
    assert np.abs(ours.intercept_ - ref.intercept_).max() <= rtol * max(scale, 1.0)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_binary_logistic_matches_sklearn_lbfgs_on_both_engines(any_engine):
    X, y = _data(2)
    ours = LogisticRegression(C=0.5, **TIGHT).fit(X, y)
    ref = _sklearn(X, y, C=0.5, **TIGHT)
    assert ours.coef_.shape == (1, X.shape[1])
    _assert_same_model(ours, ref, X)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)
    assert ours.grad_norm_ <= TIGHT["tol"] * 10


@pytest.mark.parametrize("n_classes", [3, 26])
def test_multinomial_logistic_matches_sklearn_lbfgs(n_classes):
    X, y = _data(n_classes, n=60 * n_classes, p=16, seed=n_classes)
    with engine("local", workers=2):
        ours = LogisticRegression(**TIGHT).fit(X, y)
    ref = _sklearn(X, y, **TIGHT)
    assert ours.coef_.shape == (n_classes, X.shape[1])
    _assert_same_model(ours, ref, X)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)


def test_class_weight_balanced_and_sample_weights_match_sklearn():
    X, y = _data(3, n=500)
    keep = (y != 2) | (np.arange(y.size) % 4 == 0)  # make class 2 rare
    X, y = X[keep], y[keep]
    weights = np.random.default_rng(1).uniform(0.2, 3.0, size=y.size)
    with engine("local", workers=2):
        ours = LogisticRegression(class_weight="balanced", **TIGHT).fit(X, y, sample_weight=weights)
    ref = linear_model.LogisticRegression(class_weight="balanced", **TIGHT).fit(
        X.astype(np.float64), y, sample_weight=weights
    )
    _assert_same_model(ours, ref, X)


def test_no_intercept_matches_sklearn():
    X, y = _data(2)
    with engine("local", workers=1):
        ours = LogisticRegression(fit_intercept=False, **TIGHT).fit(X, y)
    ref = _sklearn(X, y, fit_intercept=False, **TIGHT)
    _assert_same_model(ours, ref, X)
    assert np.all(ours.intercept_ == 0.0)


def test_one_two_and_four_workers_give_the_same_model():
    # float64 data: every evaluation is exact, so the runs follow the same path up to the
    # order of the sums and end at the same point.
    X, y = _data(3, n=400)
    X = X.astype(np.float64)
    coefs = []
    for workers in (1, 2, 4):
        with engine("local", workers=workers):
            coefs.append(LogisticRegression(**TIGHT).fit(X, y).coef_)
    np.testing.assert_allclose(coefs[1], coefs[0], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(coefs[2], coefs[0], rtol=1e-7, atol=1e-9)


def test_one_two_and_four_workers_agree_on_float32_data_within_the_tolerance():
    # float32 data: the first phase rounds differently with each split of the rows, so the runs
    # stop at different points of the small neighbourhood of the one optimum where L-BFGS stops
    # (gradient or relative decrease at float64 resolution): here within 1e-6 of the largest
    # coefficient.
    X, y = _data(3, n=400)
    models = []
    for workers in (1, 2, 4):
        with engine("local", workers=workers):
            models.append(LogisticRegression(**TIGHT).fit(X, y))
    scale = np.abs(models[0].coef_).max()
    for model in models[1:]:
        np.testing.assert_allclose(model.coef_, models[0].coef_, rtol=0, atol=1e-6 * scale)
        assert model.converged_
        np.testing.assert_array_equal(model.predict(X), models[0].predict(X))


def test_sparse_text_sms_spam_matches_sklearn(shared_datasets, tmp_path, any_engine):
    from shardlearn.preprocess import Preprocessor

    lines = (shared_datasets / "sms_spam" / "SMSSpamCollection").read_text("latin-1")
    rows = [line.split("\t", 1) for line in lines.splitlines() if "\t" in line]
    table = pa.table({"label": [r[0] for r in rows], "text": [r[1] for r in rows]})
    ds = write_dataset(table, tmp_path / "sms", label="label", partitions=4, kinds={"text": "text"})
    pre = Preprocessor({"text": {"kind": "text", "n_features": 4096}}, output="sparse")
    model = Pipeline(pre, LogisticRegression(C=10.0, **TIGHT)).fit(ds)
    X = model.preprocessor.transform(ds.read("train"))
    assert sp.issparse(X)
    y = np.asarray(ds.read("train").column("label").to_pylist())
    ref = _sklearn(X, y, C=10.0, **TIGHT)
    _assert_same_model(model.estimator, ref, X)
    np.testing.assert_array_equal(model.predict(ds.read("train")), ref.predict(X))
    assert list(model.classes_) == ["ham", "spam"]


def test_bare_estimator_uses_numeric_columns_of_a_dataset(tmp_path):
    X, y = _data(2, n=300, p=4)
    table = pa.table({f"f{j}": X[:, j].astype(np.float64) for j in range(4)} | {"y": y})
    ds = write_dataset(table, tmp_path / "num", label="y", partitions=3)
    with engine("local", workers=2):
        ours = LogisticRegression(**TIGHT).fit(ds)
    ref = _sklearn(X, y, **TIGHT)
    _assert_same_model(ours, ref, X)
    assert ours.feature_names_in_ == ["f0", "f1", "f2", "f3"]
    np.testing.assert_array_equal(ours.predict(table), ref.predict(X))


def test_bare_estimator_on_non_numeric_dataset_suggests_a_pipeline(tmp_path):
    table = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "city": ["a", "b", "a", "b"], "y": [0, 1, 0, 1]})
    ds = write_dataset(table, tmp_path / "mixed", label="y", partitions=1)
    with pytest.raises(SchemaError, match=r"city.*Pipeline\(Preprocessor.auto"):
        LogisticRegression().fit(ds, engine="local")


def _worker_pid(state):
    return os.getpid()


@pytest.mark.parametrize("n_classes", [2, 3])
def test_worker_killed_mid_fit_still_yields_the_same_model(n_classes, tmp_path):
    # A Dataset trains on worker processes (arrays train on threads of this process), and the
    # idle processes a closed group hands back are the ones the next fit's group takes.
    X, y = _data(n_classes, n=600)
    table = pa.table({f"f{j}": X[:, j].astype(np.float64) for j in range(X.shape[1])} | {"y": y})
    ds = write_dataset(table, tmp_path / "rows", label="y", partitions=4)
    with engine("local", workers=2) as eng:
        reference = LogisticRegression(**TIGHT).fit(ds)
        assert reference.n_iter_ >= 2
        with eng.workers(2) as group:
            pids = group.run(_worker_pid)
        killed = []

        def kill_at_second_iteration(info):
            if info.iteration == 2 and not killed:
                os.kill(pids[1], signal.SIGKILL)
                killed.append(pids[1])

        model = LogisticRegression(**TIGHT).fit(ds, callback=kill_at_second_iteration)
        with eng.workers(2) as group:
            after = group.run(_worker_pid)
    assert killed and killed[0] not in after  # the worker really died and was replaced
    np.testing.assert_array_equal(model.coef_, reference.coef_)
    assert model.n_iter_ == reference.n_iter_


def test_lbfgs_resumes_from_checkpoint_when_the_engine_gives_up():
    target = np.arange(1.0, 11.0)
    scales = np.logspace(0, 3, 10)  # ill-conditioned, so L-BFGS needs many iterations
    calls = {"n": 0}
    seen = []

    def evaluate(x):
        calls["n"] += 1
        if calls["n"] == 6:
            raise WorkerLost("worker 1 died 4 times")
        diff = x - target
        return float(scales @ (diff * diff)), 2 * scales * diff

    result = minimize_lbfgs(
        evaluate, np.zeros(10), max_iter=500, tol=1e-8, callback=lambda i: seen.append(i.iteration)
    )
    np.testing.assert_allclose(result.x, target, rtol=1e-7)
    assert result.resumes == 1
    assert seen == list(range(1, len(seen) + 1))  # iterations continue across the resume


def test_max_iter_reached_warns_convergence():
    X, y = _data(3)
    with engine("local", workers=1), pytest.warns(ConvergenceWarning, match="max_iter=3"):
        model = LogisticRegression(max_iter=3).fit(X, y)
    assert model.n_iter_ == 3
    assert not model.converged_


def test_linear_svc_matches_sklearn_squared_hinge():
    for n_classes in (2, 3):
        X, y = _data(n_classes, n=400)
        with engine("local", workers=2):
            ours = LinearSVC(C=0.1, fit_intercept=False, **TIGHT).fit(X, y)
        ref = svm.LinearSVC(C=0.1, fit_intercept=False, dual=False, tol=1e-10, max_iter=100000)
        ref.fit(X.astype(np.float64), y)
        assert ours.coef_.shape == ref.coef_.shape
        scale = np.abs(ref.coef_).max()
        assert np.abs(ours.coef_ - ref.coef_).max() <= 1e-4 * scale
        np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_artifact_round_trip_predicts_the_same():
    X, y = _data(3)
    with engine("local", workers=1):
        model = LogisticRegression(C=2.0).fit(X, np.array(["a", "b", "c"])[y])
    meta, arrays, files = model._to_artifact()
    restored = LogisticRegression._from_artifact(meta, arrays, files)
    assert restored.get_params() == model.get_params()
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))
    assert all(a.dtype != object for a in arrays.values())


def test_get_params_set_params_and_clone():
    model = LogisticRegression(C=3.0, class_weight="balanced")
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    with pytest.raises(ValueError, match=r"Unknown parameter .*'Cc'.*Did you mean 'C'"):
        model.set_params(Cc=1.0)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("C", [0, -1.0])
def test_non_positive_C_is_a_clear_error(C):
    X, y = _data(2, n=50)
    with pytest.raises(ValueError, match=r"'C' parameter of LogisticRegression must be"):
        LogisticRegression(C=C).fit(X, y)


def test_a_single_class_is_a_clear_error():
    X, _ = _data(2, n=50)
    with pytest.raises(DataError, match="at least two classes.*found only 1"):
        LogisticRegression().fit(X, np.ones(50, dtype=int), engine="local")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_features_are_a_clear_error(bad):
    X, y = _data(2, n=50)
    X[7, 3] = bad
    with pytest.raises(DataError, match="NaN or infinity"):
        LogisticRegression().fit(X, y)


def test_nan_in_a_dataset_reaching_the_trainer_is_a_clear_error(tmp_path):
    table = pa.table({"x": [1.0, float("nan"), 3.0, 4.0], "y": [0, 1, 0, 1]})
    ds = write_dataset(table, tmp_path / "nan", label="y", partitions=2)
    with engine("local", workers=1), pytest.raises(DataError, match="NaN or infinite"):
        LogisticRegression().fit(ds)


def test_no_warning_when_converged():
    X, y = _data(2, n=200)
    with engine("local", workers=1), warnings.catch_warnings():
        warnings.simplefilter("error")
        LogisticRegression().fit(X, y)


# ------------------------------------------------------------------ preconditioned L-BFGS
def _ill_conditioned_logistic(n=3000, p=8, seed=5):
    """Binary data whose feature scales span four decades (the case preconditioning is for)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) * np.logspace(-2, 2, p)
    y = X @ (rng.standard_normal(p) / np.logspace(-2, 2, p)) + rng.logistic(size=n) > 0
    return X, y.astype(int)


def _logistic_objective(X, y, l2=1e-3):
    t = np.where(y == 1, 1.0, 0.0)
    Xt = np.hstack([X, np.ones((len(y), 1))])

    def evaluate(x):
        z = Xt @ x
        loss = float(np.mean(np.logaddexp(0.0, z) - t * z)) + 0.5 * l2 * float(x[:-1] @ x[:-1])
        grad = Xt.T @ (1.0 / (1.0 + np.exp(-z)) - t) / len(y)
        grad[:-1] += l2 * x[:-1]
        return loss, grad

    def hessian(x):
        q = 1.0 / (1.0 + np.exp(-(Xt @ x)))
        H = (Xt * (q * (1 - q))[:, None]).T @ Xt / len(y)
        H[np.arange(X.shape[1]), np.arange(X.shape[1])] += l2
        return H

    return evaluate, hessian


def _newton_optimum(evaluate, hessian, x):
    """The optimum by plain Newton iterations (the reference, independent of L-BFGS)."""
    for _ in range(50):
        x = x - np.linalg.solve(hessian(x), evaluate(x)[1])
    return x


def _counting(evaluate):
    calls = {"n": 0}

    def counted(x):
        calls["n"] += 1
        return evaluate(x)

    return counted, calls


def test_whitening_inverts_the_hessian_and_floors_singular_directions():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    H = A @ A.T + 0.1 * np.eye(6)
    T = whitening(H)
    np.testing.assert_allclose(T @ T.T, np.linalg.inv(H), rtol=1e-8, atol=1e-10)
    singular = np.diag([4.0, 1.0, 0.0])  # a feature the sample never saw
    T = whitening(singular)
    assert np.isfinite(T).all()
    np.testing.assert_allclose(np.diag(T @ T.T)[:2], [0.25, 1.0])


def test_preconditioned_lbfgs_reaches_the_same_optimum_in_fewer_evaluations():
    X, y = _ill_conditioned_logistic()
    evaluate, hessian = _logistic_objective(X, y)
    x0 = np.zeros(X.shape[1] + 1)
    plain, plain_calls = _counting(evaluate)
    reference = minimize_lbfgs(plain, x0, max_iter=10_000, tol=1e-9)
    pre, pre_calls = _counting(evaluate)
    ours = minimize_lbfgs(
        pre, x0, max_iter=10_000, tol=1e-9, precondition=lambda x: whitening(hessian(x))
    )
    assert ours.converged  # (scipy may stop on ftol: no float64 progress left)
    optimum = _newton_optimum(evaluate, hessian, reference.x)
    np.testing.assert_allclose(ours.x, optimum, rtol=1e-6, atol=1e-8)
    assert ours.loss <= reference.loss + 1e-12
    assert pre_calls["n"] * 3 <= plain_calls["n"]


def test_a_quadratic_with_its_exact_hessian_converges_in_one_newton_step():
    H = np.diag(np.logspace(0, 4, 5))
    target = np.arange(1.0, 6.0)
    seen = []

    def evaluate(x):
        d = x - target
        return 0.5 * float(d @ H @ d), H @ d

    result = minimize_lbfgs(
        evaluate,
        np.zeros(5),
        max_iter=100,
        tol=1e-8,
        callback=seen.append,
        precondition=lambda x: whitening(H),
    )
    np.testing.assert_allclose(result.x, target, rtol=1e-10)
    assert [info.iteration for info in seen] == [1]
    assert result.converged and result.n_iter == 1


def test_warm_start_on_a_sample_reports_only_full_objective_iterations():
    X, y = _ill_conditioned_logistic(n=4000)
    evaluate, hessian = _logistic_objective(X, y)
    warm, _ = _logistic_objective(X[::8], y[::8])
    x0 = np.zeros(X.shape[1] + 1)
    seen = []
    result = minimize_lbfgs(
        evaluate,
        x0,
        max_iter=1000,
        tol=1e-9,
        callback=seen.append,
        precondition=lambda x: whitening(hessian(x)),
        warm_evaluate=warm,
    )
    optimum = _newton_optimum(evaluate, hessian, x0)
    np.testing.assert_allclose(result.x, optimum, rtol=1e-6, atol=1e-8)
    # Every reported loss is the full objective at that iterate, never the sample's.
    assert [info.iteration for info in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].loss == pytest.approx(evaluate(result.x)[0], rel=1e-12)
    assert all(info.loss >= evaluate(optimum)[0] - 1e-12 for info in seen)


@pytest.mark.parametrize("workers", [1, 2])
def test_warm_start_on_a_row_sample_matches_sklearn(monkeypatch, workers):
    """Small sample sizes make this fit take the large-data path: the Hessian on a strided
    row sample, the optimum of another strided sample as the start, then all rows to tol."""
    import shardlearn.models.linear_model._linear as linear

    monkeypatch.setattr(linear, "HESSIAN_MIN_ROWS", 500)
    monkeypatch.setattr(linear, "HESSIAN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(linear, "WARM_START_ROWS", 2000)
    samples = []
    real = linear._warm_start_sample

    def spy(ctx, n_rows):
        samples.append(real(ctx, n_rows))
        return samples[-1]

    monkeypatch.setattr(linear, "_warm_start_sample", spy)
    # 200 float32 columns: a kernel chunk is 1,310 rows, so each worker's block has 16-31.
    X, y = _data(2, n=40_000, p=200, seed=9)
    with engine("local", workers=workers):
        ours = LogisticRegression(C=0.3, **TIGHT).fit(X, y)
    assert [s.stride for s in samples] == [20]
    assert 0 < samples[0].weight < 40_000 / 5
    _assert_same_model(ours, _sklearn(X, y, C=0.3, **TIGHT), X)


def test_the_hessian_is_estimated_again_where_each_later_phase_starts():
    X, y = _ill_conditioned_logistic(n=4000)
    evaluate, hessian = _logistic_objective(X, y)
    warm, warm_hessian = _logistic_objective(X[::8], y[::8])

    def fast(x):  # the objective with float32 rounding, like the "fast" passes
        f, g = evaluate(x)
        return float(np.float32(f)), g.astype(np.float32).astype(np.float64)

    points = []

    def precondition(x):
        points.append(x.copy())
        return whitening(hessian(x))

    x0 = np.zeros(X.shape[1] + 1)
    result = minimize_lbfgs(
        evaluate,
        x0,
        max_iter=1000,
        tol=1e-9,
        precondition=precondition,
        warm_evaluate=warm,
        fast_evaluate=fast,
        fast_gtol=1e-5,
    )
    np.testing.assert_allclose(result.x, _newton_optimum(evaluate, hessian, x0), rtol=1e-6)
    assert len(points) == 3  # at x0, at the sample's optimum, where the float32 phase ended
    np.testing.assert_array_equal(points[0], x0)
    assert np.abs(warm(points[1])[1]).max() <= 1e-5  # the sample's optimum
    assert not np.array_equal(points[1], points[2])


def test_every_phase_starts_with_newton_steps_of_one_evaluation_each():
    # An estimate 30% off: each Newton step closes 1/1.3 of the gap on a quadratic, and scipy's
    # first step (unit length in the scaled coordinates) is that same step, accepted as it is.
    H = np.diag(np.logspace(0, 4, 6))
    target = np.linspace(1.0, 2.0, 6)
    evaluations = []

    def evaluate(x):
        evaluations.append(x.copy())
        d = x - target
        return 0.5 * float(d @ H @ d), H @ d

    seen = []
    result = minimize_lbfgs(
        evaluate,
        np.zeros(6),
        max_iter=100,
        tol=1e-8,
        callback=lambda info: seen.append(len(evaluations)),
        precondition=lambda x: whitening(1.3 * H),
    )
    np.testing.assert_allclose(result.x, target, rtol=1e-8)
    # Newton step: the start and the step (2 evaluations); scipy's first iteration: 1 more.
    assert seen[:2] == [2, 3]
    np.testing.assert_allclose(evaluations[2], target - (target - evaluations[1]) * 0.3 / 1.3)


def test_a_run_that_has_not_converged_restarts_with_a_new_estimate():
    X, y = _ill_conditioned_logistic(n=3000)
    evaluate, hessian = _logistic_objective(X, y)
    points, seen = [], []

    def precondition(x):
        points.append(x.copy())
        return whitening(hessian(np.zeros_like(x)))  # a poor model away from zero

    x0 = np.zeros(X.shape[1] + 1)
    result = minimize_lbfgs(
        evaluate,
        x0,
        max_iter=1000,
        tol=1e-9,
        callback=seen.append,
        precondition=precondition,
        refresh_every=3,
    )
    optimum = _newton_optimum(evaluate, hessian, x0)
    np.testing.assert_allclose(result.x, optimum, rtol=1e-6, atol=1e-8)
    assert [info.iteration for info in seen] == list(range(1, result.n_iter + 1))
    # Estimated at x0, then after every 3 scipy iterations (each run starts with a Newton
    # step: 4 iterations per run) at the point reached, a new one each time.
    assert len(points) == -(-result.n_iter // 4) >= 2
    assert len({tuple(point) for point in points}) == len(points)


# ------------------------------------------------------------------ LinearSVC class weights
def _label_sorted(n_classes: int, n: int = 600, seed: int = 3):
    """Overlapping classes (so every class weight moves the optimum), rows sorted by label:
    each worker's block then holds one or two classes only."""
    X, y = make_classification(
        n_samples=n,
        n_features=10,
        n_informative=5,
        n_redundant=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        class_sep=0.7,
        random_state=seed,
    )
    order = np.argsort(y, kind="stable")
    return X[order], y[order]


@pytest.mark.parametrize(
    "class_weight, weighted_rows",
    [({0: 3.0, 2: 0.5, 3: 2.0}, False), ("balanced", False), ({1: 4.0}, True), ("balanced", True)],
)
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_linear_svc_class_weight_is_liblinears_one_vs_rest(
    class_weight, weighted_rows, fit_intercept
):
    # liblinear's OvR gives class k's problem C * class_weight[k] on its own rows and plain C on
    # the rest. scikit-learn penalises the intercept as the weight of a constant feature of
    # value intercept_scaling; ours is not penalised, which is that penalty's limit (1e-6 here).
    X, y = _label_sorted(4)
    weights = np.random.default_rng(2).uniform(0.5, 2.0, y.size) if weighted_rows else None
    with engine("local", workers=2):
        ours = LinearSVC(C=0.5, class_weight=class_weight, fit_intercept=fit_intercept, **TIGHT)
        ours.fit(X, y, sample_weight=weights)
    ref = svm.LinearSVC(
        C=0.5,
        class_weight=class_weight,
        fit_intercept=fit_intercept,
        intercept_scaling=100.0,
        dual=False,
        tol=1e-12,
        max_iter=100_000,
    ).fit(X, y, sample_weight=weights)
    _assert_same_model(ours, ref, X)


# ------------------------------------------------------------------ max_iter is a hard budget
@pytest.mark.parametrize(
    "model, n_classes",
    [(LogisticRegression, 2), (LogisticRegression, 3), (LinearSVC, 2), (LinearSVC, 3)],
)
def test_max_iter_is_a_hard_budget(model, n_classes):
    # float32 rows: the fast phase, the exact phase and (binary) the Newton steps all count.
    X, y = _data(n_classes)
    coefs = []
    for max_iter in (1, 2, 3):
        seen = []
        with engine("local", workers=2), pytest.warns(ConvergenceWarning, match="max_iter"):
            fitted = model(max_iter=max_iter).fit(X, y, callback=seen.append)
        assert fitted.n_iter_ == max_iter and not fitted.converged_
        assert [info.iteration for info in seen] == list(range(1, max_iter + 1))
        coefs.append(fitted.coef_)
    assert not np.allclose(coefs[0], coefs[1]) and not np.allclose(coefs[1], coefs[2])


@pytest.mark.parametrize("model", [LogisticRegression, LinearSVC])
def test_max_iter_zero_returns_the_starting_point(model):
    X, y = _data(2)
    with engine("local", workers=1):
        with pytest.warns(ConvergenceWarning, match="max_iter=0"):
            cold = model(max_iter=0).fit(X, y)
        assert cold.n_iter_ == 0
        assert np.all(cold.coef_ == 0.0) and np.all(cold.intercept_ == 0.0)
        warm = model(warm_start=True).fit(X, y)
        previous = warm.coef_.copy()
        warm.set_params(max_iter=0)
        with pytest.warns(ConvergenceWarning, match="max_iter=0"):
            warm.fit(X[::2], y[::2])
    np.testing.assert_array_equal(warm.coef_, previous)


def test_lbfgs_budget_bounds_every_phase_restart_and_estimate():
    X, y = _ill_conditioned_logistic(n=4000)
    evaluate, hessian = _logistic_objective(X, y)
    warm, _ = _logistic_objective(X[::8], y[::8])
    calls = {"warm": 0, "fast": 0, "precondition": 0}

    def counted(name, function):
        def call(x):
            calls[name] += 1
            return function(x)

        return call

    def fast(x):  # the objective with float32 rounding, like the "fast" passes
        f, g = evaluate(x)
        return float(np.float32(f)), g.astype(np.float32).astype(np.float64)

    def run(max_iter):
        seen = []
        result = minimize_lbfgs(
            evaluate,
            np.zeros(X.shape[1] + 1),
            max_iter=max_iter,
            tol=1e-12,
            callback=seen.append,
            precondition=counted("precondition", lambda x: whitening(hessian(np.zeros_like(x)))),
            warm_evaluate=counted("warm", warm),
            fast_evaluate=counted("fast", fast),
            fast_gtol=1e-9,
            refresh_every=2,
        )
        assert result.n_iter == max_iter == len(seen) and not result.converged
        return result.x

    with pytest.warns(ConvergenceWarning, match="max_iter=0"):
        np.testing.assert_array_equal(run(0), 0.0)
    assert calls == {"warm": 0, "fast": 0, "precondition": 0}
    points = []
    for max_iter in (1, 2, 3, 7):
        with pytest.warns(ConvergenceWarning, match=f"max_iter={max_iter}"):
            points.append(run(max_iter))
    for a, b in zip(points, points[1:], strict=False):
        assert not np.allclose(a, b)


# ------------------------------------------------------------------ layout and worker count
@pytest.mark.parametrize("n_classes", [2, 4])
def test_label_sorted_arrays_on_one_two_and_four_workers_match_sklearn(n_classes):
    X, y = _label_sorted(n_classes, n=800)
    weights = np.random.default_rng(4).uniform(0.5, 2.0, y.size)
    ref = linear_model.LogisticRegression(class_weight="balanced", **TIGHT)
    ref.fit(X, y, sample_weight=weights)
    svc = svm.LinearSVC(fit_intercept=False, dual=False, tol=1e-12, max_iter=100_000).fit(X, y)
    for workers in (1, 2, 4):
        with engine("local", workers=workers):
            ours = LogisticRegression(class_weight="balanced", **TIGHT)
            _assert_same_model(ours.fit(X, y, sample_weight=weights), ref, X)
            _assert_same_model(LinearSVC(fit_intercept=False, **TIGHT).fit(X, y), svc, X)


@pytest.mark.parametrize("strategy", ["range:y", "hash:y"])
def test_keyed_shards_match_sklearn(strategy, tmp_path):
    # Partitioned on the label: each shard (4, on 2 workers) holds one or two classes only.
    X, y = _label_sorted(3, n=600)
    table = pa.table({f"f{j}": X[:, j] for j in range(X.shape[1])} | {"y": y})
    ds = write_dataset(table, tmp_path / "keyed", label="y", partitions=4, strategy=strategy)
    rows = ds.read("train")
    X_read = np.column_stack([rows.column(f"f{j}").to_numpy() for j in range(X.shape[1])])
    y_read = rows.column("y").to_numpy()
    class_weight = {0: 2.0, 2: 0.5}
    with engine("local", workers=2):
        logistic = LogisticRegression(class_weight=class_weight, **TIGHT).fit(ds)
        svc = LinearSVC(class_weight=class_weight, fit_intercept=False, **TIGHT).fit(ds)
    ref = linear_model.LogisticRegression(class_weight=class_weight, **TIGHT).fit(X_read, y_read)
    _assert_same_model(logistic, ref, X_read)
    ref_svc = svm.LinearSVC(
        class_weight=class_weight, fit_intercept=False, dual=False, tol=1e-12, max_iter=100_000
    ).fit(X_read, y_read)
    _assert_same_model(svc, ref_svc, X_read)


def test_the_warm_start_on_a_row_sample_stays_within_the_budget(monkeypatch):
    import shardlearn.models.linear_model._linear as linear

    monkeypatch.setattr(linear, "HESSIAN_MIN_ROWS", 500)
    monkeypatch.setattr(linear, "HESSIAN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(linear, "WARM_START_ROWS", 500)
    samples = []
    real = linear._warm_start_sample
    monkeypatch.setattr(
        linear, "_warm_start_sample", lambda *args: samples.append(real(*args)) or samples[-1]
    )
    X, y = _data(2, n=20_000, p=20, seed=9)
    coefs = []
    with engine("local", workers=2):
        for max_iter in (0, 1, 2):
            seen = []
            with pytest.warns(ConvergenceWarning, match=f"max_iter={max_iter}"):
                model = LogisticRegression(max_iter=max_iter, tol=1e-10)
                model.fit(X, y, callback=seen.append)
            assert model.n_iter_ == max_iter == len(seen)
            coefs.append(model.coef_)
    assert len(samples) == 2 and samples[0].stride == 40  # none for max_iter=0
    assert not np.allclose(coefs[1], coefs[2]) and np.all(coefs[0] == 0.0)
