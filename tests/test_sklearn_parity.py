"""nnx's MLPClassifier/MLPRegressor against the installed scikit-learn's own
estimators: same data, parameters and random_state, float64 on the CPU, so
the same initial weights, batches, updates and stopping decisions. Targets
(issue 16): ``coefs_`` after one epoch within 1e-10 relative, ``loss_curve_``
over 20 epochs within 1e-8, the same ``n_iter_`` and predictions."""

import itertools
import warnings

import numpy as np
import pytest
from sklearn import neural_network as sk
from sklearn.datasets import load_digits, make_multilabel_classification, make_regression

from nnx import sklearn as nx

SOLVERS = {"sgd-nesterov": dict(solver="sgd", learning_rate_init=0.05),
           "sgd": dict(solver="sgd", nesterovs_momentum=False, learning_rate_init=0.05),
           "adam": dict(solver="adam", learning_rate_init=0.01),
           "lbfgs": dict(solver="lbfgs")}
ACTIVATIONS = ("identity", "logistic", "tanh", "relu")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(y), 240, replace=False)
    return X[rows] / 16.0, y[rows], rng.uniform(0.2, 3.0, 240)


def fit_both(kind, X, y, sample_weight=None, **params):
    """The scikit-learn estimator and nnx's, fitted alike (warnings kept
    quiet: both warn the same way when max_iter is reached)."""
    pair = []
    for module in (sk, nx):
        est = getattr(module, kind)(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X, y, sample_weight=sample_weight)
        pair.append(est)
    return pair


def assert_close(ours, theirs, rel, what):
    """Largest difference within ``rel`` of the reference's largest value."""
    for i, (a, b) in enumerate(zip(theirs, ours, strict=True)):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        assert a.shape == b.shape, f"{what}[{i}] shapes {a.shape} != {b.shape}"
        gap = float(np.max(np.abs(a - b))) if a.size else 0.0
        assert gap <= rel * max(float(np.max(np.abs(a))), 1e-300), \
            f"{what}[{i}]: differs by {gap:.3g} (limit {rel:g} relative)"


def assert_same_model(ref, est, X, rel=1e-8):
    assert est.n_iter_ == ref.n_iter_
    assert est.t_ == ref.t_
    assert_close(est.coefs_, ref.coefs_, rel, "coefs_")
    assert_close(est.intercepts_, ref.intercepts_, rel, "intercepts_")
    if hasattr(ref, "loss_curve_"):
        assert len(est.loss_curve_) == len(ref.loss_curve_)
        assert_close([est.loss_curve_], [ref.loss_curve_], 1e-8, "loss_curve_")
        assert est.best_loss_ == pytest.approx(ref.best_loss_, rel=1e-8, abs=0) \
            if ref.best_loss_ is not None else est.best_loss_ is None
    assert est.loss_ == pytest.approx(ref.loss_, rel=1e-8)
    ours, theirs = est.predict(X), ref.predict(X)
    if np.issubdtype(theirs.dtype, np.floating):  # a regressor's predictions: to rounding
        np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-10)
    else:  # labels: the same
        np.testing.assert_array_equal(ours, theirs)


CASES = [(s, a, es, w) for s, a, es, w in itertools.product(SOLVERS, ACTIVATIONS,
                                                             (False, True), (False, True))
         if not (es and s == "lbfgs")]


@pytest.mark.parametrize("solver,activation,early_stopping,weighted", CASES,
                         ids=["-".join(map(str, c)) for c in CASES])
def test_classifier_matches_scikit_learn(digits, solver, activation, early_stopping, weighted):
    X, y, w = digits
    params = dict(hidden_layer_sizes=(12,), activation=activation, random_state=3,
                  early_stopping=early_stopping, batch_size=50, alpha=1e-3, **SOLVERS[solver])
    sw = w if weighted else None
    # the first epoch: coefficients to 1e-10
    ref, est = fit_both("MLPClassifier", X, y, sw, max_iter=1, **params)
    assert_close(est.coefs_, ref.coefs_, 1e-10, "coefs_ after one epoch")
    assert_close(est.intercepts_, ref.intercepts_, 1e-10, "intercepts_ after one epoch")
    # 20 epochs: the loss curve to 1e-8, the same epochs and predictions
    ref, est = fit_both("MLPClassifier", X, y, sw, max_iter=20, **params)
    assert_same_model(ref, est, X)
    np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(X), rtol=1e-7, atol=1e-12)
    if early_stopping:
        np.testing.assert_allclose(est.validation_scores_, ref.validation_scores_, rtol=1e-12)
        assert est.best_validation_score_ == ref.best_validation_score_


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("weighted", [False, True])
def test_regressor_matches_scikit_learn(solver, weighted):
    X, y = make_regression(200, 8, n_targets=2, noise=0.5, random_state=1)
    y = y / y.std()
    sw = np.random.default_rng(1).uniform(0.5, 2.0, 200) if weighted else None
    params = dict(hidden_layer_sizes=(10, 6), activation="tanh", random_state=5, batch_size=32,
                  **SOLVERS[solver])
    ref, est = fit_both("MLPRegressor", X, y, sw, max_iter=1, **params)
    assert_close(est.coefs_, ref.coefs_, 1e-10, "coefs_ after one epoch")
    ref, est = fit_both("MLPRegressor", X, y, sw, max_iter=20, **params)
    assert_same_model(ref, est, X)
    np.testing.assert_allclose(est.score(X, y), ref.score(X, y), rtol=1e-10)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_regressor_one_output_and_poisson(early_stopping):
    X, y = make_regression(150, 5, noise=1.0, random_state=2)
    for loss, target in (("squared_error", y / y.std()), ("poisson", np.exp(y / y.std()))):
        ref, est = fit_both("MLPRegressor", X, target, loss=loss, hidden_layer_sizes=(7,),
                            random_state=0, max_iter=20, early_stopping=early_stopping,
                            learning_rate_init=0.01)
        assert est.out_activation_ == ref.out_activation_
        assert_same_model(ref, est, X)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_binary_and_multilabel_classification(digits, solver):
    X, y, w = digits
    params = dict(hidden_layer_sizes=(9,), random_state=1, max_iter=20, **SOLVERS[solver])
    for target in (y % 2, np.where(y > 4, "high", "low")):  # stratified split when binary
        ref, est = fit_both("MLPClassifier", X, target, w, early_stopping=solver != "lbfgs",
                            **params)
        assert est.out_activation_ == ref.out_activation_ == "logistic"
        assert_same_model(ref, est, X)
        np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(X), rtol=1e-7)
    Xm, Ym = make_multilabel_classification(200, 10, n_classes=4, random_state=0)
    ref, est = fit_both("MLPClassifier", Xm / Xm.max(), Ym, **params)
    assert_same_model(ref, est, Xm / Xm.max())
    assert est.predict(Xm).shape == Ym.shape


def test_learning_rate_schedules_and_stopping(digits):
    X, y, _ = digits
    for schedule in ("constant", "invscaling", "adaptive"):
        # a large tol makes the no-improvement rule fire: adaptive divides the
        # rate by 5 each time, the others stop
        ref, est = fit_both("MLPClassifier", X, y, solver="sgd", learning_rate=schedule,
                            learning_rate_init=0.2, power_t=0.3, tol=0.05, n_iter_no_change=2,
                            hidden_layer_sizes=(10,), random_state=4, max_iter=60)
        assert ref.n_iter_ < 60
        assert_same_model(ref, est, X)
        assert est._optimizer.learning_rate == pytest.approx(ref._optimizer.learning_rate,
                                                             rel=1e-12)


def test_batches_shuffle_and_clipped_batch_size(digits):
    X, y, _ = digits
    for extra in (dict(shuffle=False), dict(batch_size=1000), dict(batch_size=7)):
        ref, est = fit_both("MLPClassifier", X, y, hidden_layer_sizes=(8,), random_state=2,
                            max_iter=5, **extra)
        assert_same_model(ref, est, X)


def test_warm_start_and_partial_fit_continue_alike(digits):
    X, y, w = digits
    pair = [m.MLPClassifier(hidden_layer_sizes=(8,), random_state=0, max_iter=4,
                            warm_start=True) for m in (sk, nx)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for est in pair:
            est.fit(X, y).fit(X, y, sample_weight=w)
    assert_same_model(*pair, X)
    pair = [m.MLPClassifier(hidden_layer_sizes=(8,), random_state=0) for m in (sk, nx)]
    for est in pair:
        for lo in range(0, 240, 80):
            est.partial_fit(X[lo:lo + 80], y[lo:lo + 80], classes=np.arange(10))
    assert_same_model(*pair, X)
    pair = [m.MLPRegressor(hidden_layer_sizes=(8,), random_state=0, solver="sgd")
            for m in (sk, nx)]
    for est in pair:
        for _ in range(3):
            est.partial_fit(X, y.astype(float) / 9)
    assert_same_model(*pair, X)


def test_float32_follows_scikit_learn_closely(digits):
    X, y, _ = digits
    X32 = X.astype(np.float32)
    ref, est = fit_both("MLPClassifier", X32, y, hidden_layer_sizes=(12,), random_state=0,
                        max_iter=10)
    assert est.coefs_[0].dtype == ref.coefs_[0].dtype == np.float32
    assert est.n_iter_ == ref.n_iter_
    assert_close(est.coefs_, ref.coefs_, 1e-4, "float32 coefs_")
    assert_close([est.loss_curve_], [ref.loss_curve_], 1e-5, "float32 loss_curve_")


def test_float64_on_float32_input_is_scikit_learn_on_the_same_values(digits):
    """dtype="float64" on float32 X drew the initial weights in float32: the
    fit differed from scikit-learn's on the same (exactly representable)
    values by 6.5e-8 relative after 15 L-BFGS iterations."""
    X, y, _ = digits
    X32 = X.astype(np.float32)
    params = dict(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=15, random_state=0)
    ref = sk.MLPClassifier(**params)
    est = nx.MLPClassifier(**params, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(X32.astype(np.float64), y)
        est.fit(X32, y)
    assert est.coefs_[0].dtype == np.float64
    assert_same_model(ref, est, X32.astype(np.float64), rel=1e-12)


def test_poisson_refuses_negative_targets_and_the_classifier_names_its_loss():
    """loss="poisson" with y < 0 trained on a deviance that read y < 0 as 0
    (scikit-learn's is NaN there); MLPClassifier had no loss attribute."""
    X = np.random.default_rng(0).random((40, 3))
    with pytest.raises(ValueError, match=r"y has negative values \(the smallest -0\.2.*"
                                         r"loss='poisson' needs y >= 0"):
        nx.MLPRegressor(loss="poisson", max_iter=5).fit(X, X[:, 0] - 0.3)
    assert nx.MLPClassifier().loss == sk.MLPClassifier().loss == "log_loss"


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_warm_starts_with_early_stopping_keep_the_best_weights_alike(digits, solver):
    """The best epoch's weights (kept across warm starts, as scikit-learn
    keeps them) end up in coefs_, including after a second fit whose
    validation score never beats the first fit's best."""
    X, y, _ = digits
    pair = [m.MLPClassifier(hidden_layer_sizes=(8,), random_state=1, max_iter=6,
                            early_stopping=True, warm_start=True, solver=solver,
                            learning_rate_init=0.3 if solver == "sgd" else 0.05)
            for m in (sk, nx)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for est in pair:
            est.fit(X, y)
            est.set_params(learning_rate_init=1e-6).fit(X, y)  # no improvement left
    ref, est = pair
    assert_same_model(ref, est, X)
    assert est.best_validation_score_ == ref.best_validation_score_


def _sparse(X, fmt, rng=None):
    """``X`` with most entries zeroed, in the SciPy format ``fmt``."""
    import scipy.sparse

    rng = rng or np.random.default_rng(1)
    dense = X * (rng.random(X.shape) < 0.3)
    return dense, scipy.sparse.csr_matrix(dense).asformat(fmt)


SPARSE_CASES = [("adam", False, "csr"), ("adam", True, "csc"), ("sgd-nesterov", False, "coo"),
                ("sgd", True, "csr"), ("lbfgs", False, "csr")]


@pytest.mark.parametrize("solver,early_stopping,fmt", SPARSE_CASES)
def test_sparse_input_trains_as_scikit_learn_does(digits, solver, early_stopping, fmt):
    """SciPy sparse X (scikit-learn's MLP takes it, nnx's refused it): the
    same numbers as scikit-learn's with the same sparse X, and as nnx's own
    fit of the same values densified."""
    X, y, w = digits
    dense, Xs = _sparse(X, fmt)
    params = dict(hidden_layer_sizes=(12,), activation="relu", random_state=3,
                  early_stopping=early_stopping, batch_size=50, alpha=1e-3, max_iter=20,
                  **SOLVERS[solver])
    ref, est = fit_both("MLPClassifier", Xs, y, w if solver != "lbfgs" else None, **params)
    assert_same_model(ref, est, Xs)
    np.testing.assert_allclose(est.predict_proba(Xs), ref.predict_proba(Xs), rtol=1e-7,
                               atol=1e-12)
    _, from_dense = fit_both("MLPClassifier", dense, y, w if solver != "lbfgs" else None,
                             **params)
    assert_close(est.coefs_, from_dense.coefs_, 1e-10, "sparse against dense coefs_")
    np.testing.assert_array_equal(est.predict(dense), est.predict(Xs))


def test_sparse_regression_and_partial_fit_follow_scikit_learn(digits):
    X, y, _ = digits
    _, Xs = _sparse(X, "csr")
    ref, est = fit_both("MLPRegressor", Xs, y / 9.0, hidden_layer_sizes=(8,), random_state=0,
                        max_iter=10)
    assert_same_model(ref, est, Xs)
    pair = [m.MLPClassifier(hidden_layer_sizes=(8,), random_state=0) for m in (sk, nx)]
    for est in pair:
        for lo in range(0, 240, 80):
            est.partial_fit(Xs[lo:lo + 80], y[lo:lo + 80], classes=np.arange(10))
    assert_same_model(*pair, Xs)


def test_sparse_x_stays_one_sparse_copy_in_the_compute_dtype(digits, monkeypatch):
    """No dense copy of a sparse X: the fit keeps CSR rows in its dtype, and
    each batch is a CSR matrix of its rows."""
    import scipy.sparse

    from nnx.backend import numpy_backend
    from nnx.sklearn import _data

    X, y, _ = digits
    _, Xs = _sparse(X, "csc")
    seen, batches = {}, []
    real_to_device, real_take = _data.FitData.to_device, numpy_backend.NumpyBackend.take_rows

    def to_device(self, backend):
        real_to_device(self, backend)
        seen["X"] = self.X

    def take_rows(self, x, idx, out=None):
        result = real_take(self, x, idx, out)
        if x is seen.get("X"):
            batches.append(result)
        return result
    monkeypatch.setattr(_data.FitData, "to_device", to_device)
    monkeypatch.setattr(numpy_backend.NumpyBackend, "take_rows", take_rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nx.MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, dtype="float32").fit(Xs, y)
    assert scipy.sparse.issparse(seen["X"]) and seen["X"].format == "csr"
    assert seen["X"].dtype == np.float32 and seen["X"].nnz == Xs.nnz
    assert batches and all(scipy.sparse.issparse(b) and b.shape[0] <= 200 for b in batches)


def test_sparse_x_far_from_standardised_gets_the_warning_dense_x_gets(digits):
    """Found by a review: the same raw values warned when dense and said
    nothing when sparse (count matrices are the usual case); the advice for
    sparse X scales without centring, which keeps it sparse."""
    from nnx import InputWarning

    X, y, _ = digits
    _, Xs = _sparse(X * 500.0, "csr")
    for data, advice in ((Xs, "MaxAbsScaler"), (Xs.toarray(), "standardize_with")):
        with pytest.warns(InputWarning, match=f"far from standardised.*{advice}"):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning,
                                        message="Stochastic Optimizer")
                nx.MLPClassifier(hidden_layer_sizes=(4,), max_iter=1).fit(data, y)
    _, scaled = _sparse(X, "csr")  # values in [0, 1]: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        warnings.filterwarnings("ignore", message="Stochastic Optimizer")
        nx.MLPClassifier(hidden_layer_sizes=(4,), max_iter=1).fit(scaled, y)


def test_a_scipy_object_that_is_not_a_sparse_matrix_is_refused_by_name():
    """Found by a review: anything from scipy.sparse counted as sparse, so a
    LinearOperator ended in an AttributeError ('no attribute tocsr')."""
    import scipy.sparse.linalg

    import nnx
    net = nnx.NeuralNetwork([nnx.Dense(3, "tanh"), nnx.Dense(2, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0)
    net.build(4)
    with pytest.raises(nnx.InputTypeError, match="X must hold numbers, got dtype object"):
        net.predict(scipy.sparse.linalg.aslinearoperator(np.eye(4)))
    assert nx.MLPClassifier.__doc__.count("SciPy sparse X") == 1


def test_validation_scores_over_more_rows_than_one_chunk_match(monkeypatch):
    """The validation rows are scored a chunk (4096 rows) at a time, not
    gathered whole every epoch: the scores are scikit-learn's all the same."""
    from nnx.backend.numpy_backend import NumpyBackend
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50000, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    taken = []
    real = NumpyBackend.take_rows
    monkeypatch.setattr(NumpyBackend, "take_rows",
                        lambda self, x, idx, out=None: (x.shape[1] == 5 and taken.append(len(idx)))
                        or real(self, x, idx, out))  # rows of X (5 columns), not of y
    ref, est = fit_both("MLPClassifier", X, y, hidden_layer_sizes=(4,), max_iter=3,
                        early_stopping=True, random_state=0)
    assert_close([est.validation_scores_], [ref.validation_scores_], 1e-12,
                 "validation_scores_")
    assert max(taken) <= 4096


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_an_alpha_of_numpy_float32_gives_scikit_learns_numbers(digits, solver):
    """The L2 term stayed float32 under NumPy 2's promotion (alpha / weight_sum):
    coefs_ 3.3e-9 off scikit-learn's, which promotes alpha * coefs_ to float64."""
    X, y, _ = digits
    ref, est = fit_both("MLPClassifier", X, y, hidden_layer_sizes=(12,), max_iter=5,
                        random_state=0, alpha=np.float32(0.37), **SOLVERS[solver])
    assert_same_model(ref, est, X, rel=1e-12)


def test_a_sparse_multilabel_y_predicts_sparse_labels_as_scikit_learn():
    import scipy.sparse as sp
    X, Y = make_multilabel_classification(n_samples=80, n_features=6, n_classes=3,
                                          random_state=0)
    ref, est = fit_both("MLPClassifier", X, sp.csr_matrix(Y), hidden_layer_sizes=(8,),
                        max_iter=20, random_state=0)
    got, want = est.predict(X), ref.predict(X)
    assert type(got) is type(want) and sp.issparse(got)
    np.testing.assert_array_equal(got.toarray(), want.toarray())
    assert not sp.issparse(fit_both("MLPClassifier", X, Y, hidden_layer_sizes=(8,),
                                    max_iter=2, random_state=0)[1].predict(X))


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_a_convergence_warning_made_an_error_leaves_the_weights_trained_so_far(digits, solver):
    """Under warnings.simplefilter("error", ConvergenceWarning) the caught
    estimator kept its initial coefs_ while n_iter_ and loss_curve_ said it
    had trained: scikit-learn's had trained them in place before warning."""
    from sklearn.exceptions import ConvergenceWarning
    X, y, _ = digits
    pair = []
    for module in (sk, nx):
        est = module.MLPClassifier(hidden_layer_sizes=(12,), max_iter=6, random_state=0,
                                   **SOLVERS[solver])
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            with pytest.raises(ConvergenceWarning):
                est.fit(X, y)
        pair.append(est)
    ref, est = pair
    assert est.n_iter_ == ref.n_iter_
    assert_close(est.coefs_, ref.coefs_, 1e-8, "coefs_")
    assert_close(est.intercepts_, ref.intercepts_, 1e-8, "intercepts_")


def test_strings_are_refused_where_scikit_learn_refuses_them(digits):
    """MLPRegressor trained on y = ["0.5", ...] (converted to floats), and
    predict read string X as numbers; scikit-learn refuses both."""
    X, y, _ = digits
    with pytest.raises(TypeError, match=r"y holds strings .* MLPRegressor fits numbers"):
        nx.MLPRegressor(max_iter=2).fit(X, (y / 9).astype(str))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = nx.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)
        ref = sk.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)
    for model in (ref, est):
        with pytest.raises(ValueError, match="strings"):
            model.predict(X.astype(str))


def test_partial_fit_refuses_a_setting_set_params_made_invalid(digits):
    """set_params(alpha="0.01") then partial_fit trained with alpha 0.01
    (float() of the string); scikit-learn fails on it too (TypeError)."""
    X, y, _ = digits
    est = nx.MLPRegressor(hidden_layer_sizes=(4,), random_state=0).partial_fit(X, y)
    est.set_params(alpha="0.01")
    with pytest.raises((TypeError, ValueError), match="alpha"):
        est.partial_fit(X, y)


def test_partial_fit_validates_settings_again_only_when_one_changed(digits, monkeypatch):
    """Each partial_fit validated every setting again (about a tenth of a small
    call); now only after one was given another value, which is still refused."""
    X, y, _ = digits
    est = nx.MLPClassifier(hidden_layer_sizes=(4,), random_state=0)
    calls = []
    real = type(est)._validate_params
    monkeypatch.setattr(type(est), "_validate_params",
                        lambda self: calls.append(1) or real(self))
    est.partial_fit(X[:50], y[:50], classes=np.unique(y))
    first = len(calls)
    for _ in range(3):
        est.partial_fit(X[:50], y[:50])
    assert len(calls) == first
    est.set_params(learning_rate_init=0.002)
    est.partial_fit(X[:50], y[:50])
    assert len(calls) == first + 1
    est.momentum = -1.0  # as set_params, bypassed
    with pytest.raises(ValueError, match="momentum"):
        est.partial_fit(X[:50], y[:50])
