"""nnx.sklearn as a scikit-learn estimator: scikit-learn's own estimator
checks, pipelines, searches, clone and pickles, nnx's additions (dropout,
dtype, backend) and its refusals. Numerical parity with scikit-learn is in
test_sklearn_parity.py."""

import io
import pickle
import warnings
from contextlib import redirect_stdout

import joblib
import numpy as np
import pytest
from conftest import requires_gpu
from sklearn import neural_network as sk
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import LabelBinarizer, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import nnx
from nnx import InputWarning
from nnx import sklearn as mlp
from nnx.sklearn import MLPClassifier, MLPRegressor
from nnx.sklearn._classes import encode_labels


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16.0, y[:300]


# scikit-learn's own battery (fit/predict contracts, input validation,
# n_features_in_, clone, pickling, sample weights, ...). No check needs to be
# marked as an expected failure.
@parametrize_with_checks([MLPClassifier(max_iter=50, random_state=0),
                          MLPRegressor(max_iter=50, random_state=0)])
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_same_parameters_and_defaults_as_scikit_learn():
    for ours, theirs in ((MLPClassifier(), sk.MLPClassifier()),
                         (MLPRegressor(), sk.MLPRegressor())):
        mine = ours.get_params()
        assert {k: mine.pop(k) for k in ("backend", "dtype", "dropout")} == \
            {"backend": "cpu", "dtype": None, "dropout": 0.0}
        assert mine == theirs.get_params()


def test_pipeline_search_cross_validation_and_clone(digits):
    X, y = digits
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=40,
                                                         learning_rate_init=0.01,
                                                         random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_val_score(pipe, X, y, cv=3)
        search = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-2],
                                     "mlpclassifier__solver": ["adam", "sgd"]}, cv=2).fit(X, y)
    assert scores.shape == (3,) and scores.min() > 0.8
    assert set(search.best_params_) == {"mlpclassifier__alpha", "mlpclassifier__solver"}
    assert search.score(X, y) > 0.95
    twin = clone(search.best_estimator_)
    assert twin.get_params()["mlpclassifier__alpha"] == search.best_params_[
        "mlpclassifier__alpha"]
    assert not hasattr(twin[-1], "coefs_")


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_fitted_estimator_round_trips(digits, tmp_path, dump):
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(10,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    if dump == "pickle":
        back = pickle.loads(pickle.dumps(est))
    else:
        joblib.dump(est, tmp_path / "m.joblib")
        back = joblib.load(tmp_path / "m.joblib")
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    # training goes on from the same state (optimiser moments included)
    for model in (est, back):
        model.partial_fit(X, y)
    np.testing.assert_array_equal(back.coefs_[0], est.coefs_[0])


def test_gpu_fitted_estimator_loads_as_cpu_without_a_gpu(digits):
    from nnx.backend import gpu_available
    if gpu_available()[0]:
        pytest.skip("this machine has a GPU: the fallback cannot be seen here")
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(10,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    est.backend = "gpu"  # as a GPU-fitted estimator pickles: its arrays are NumPy
    blob = pickle.dumps(est)
    with pytest.warns(UserWarning, match="backend='gpu', which this machine cannot run"):
        back = pickle.loads(blob)
    assert back.backend == "cpu"
    np.testing.assert_array_equal(back.predict(X), est.set_params(backend="cpu").predict(X))


def test_verbose_prints_what_scikit_learn_prints(digits):
    X, y = digits
    out = []
    for module in (sk, __import__("nnx.sklearn", fromlist=["x"])):
        buf = io.StringIO()
        with redirect_stdout(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module.MLPClassifier(hidden_layer_sizes=(5,), max_iter=4, verbose=True,
                                 early_stopping=True, random_state=0).fit(X, y)
        out.append(buf.getvalue())
    assert out[0] == out[1] and "Iteration 4, loss =" in out[1]


def test_dropout_is_reproducible_and_trains(digits):
    X, y = digits

    def fit(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return MLPClassifier(hidden_layer_sizes=(32,), max_iter=15, random_state=0,
                                 learning_rate_init=0.01, **kw).fit(X, y)
    a, b, plain = fit(dropout=0.3), fit(dropout=0.3), fit()
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    assert not np.allclose(a.coefs_[0], plain.coefs_[0])
    assert a.score(X, y) > 0.9
    np.testing.assert_array_equal(a.predict_proba(X), a.predict_proba(X))  # no masks


def test_float32_dtype_and_predict_log_proba(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, dtype="float32",
                            random_state=0).fit(X, y)
    assert est.coefs_[0].dtype == np.float32
    P = est.predict_proba(X)
    assert P.dtype == np.float32 and np.allclose(P.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(est.predict_log_proba(X), np.log(P), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.dtype("float32")])
def test_dtype_takes_numpy_types_as_well_as_names(digits, dtype):
    """dtype=np.float32 was refused by the parameter check (names only),
    where scikit-learn's own dtype parameters take NumPy types."""
    X, y = digits
    kw = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_type = MLPClassifier(dtype=dtype, **kw).fit(X, y)
        by_name = MLPClassifier(dtype=np.dtype(dtype).name, **kw).fit(X, y)
    assert by_type.coefs_[0].dtype == dtype
    np.testing.assert_array_equal(by_type.coefs_[0], by_name.coefs_[0])
    with pytest.raises(ValueError, match="dtype"):
        MLPClassifier(dtype=np.int32).fit(X, y)


def test_refusals_name_the_problem(digits):
    X, y = digits
    import scipy.sparse
    with pytest.raises(TypeError, match=r"sparse matrix .* backend='gpu' .* \(pass X.toarray"):
        MLPClassifier(backend="gpu").fit(scipy.sparse.csr_matrix(X), y)  # the CPU takes it
    with pytest.raises(ValueError, match="dropout=0.2 needs a stochastic solver"):
        MLPClassifier(solver="lbfgs", dropout=0.2).fit(X, y)
    with pytest.raises(ValueError, match="dropout"):
        MLPClassifier(dropout=1.0).fit(X, y)
    with pytest.raises(ValueError, match="backend"):
        MLPClassifier(backend="tpu").fit(X, y)
    with pytest.raises(ValueError, match="does not support early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=np.arange(10))
    with pytest.raises(AttributeError, match="no attribute 'partial_fit'") as caught:
        MLPClassifier(solver="lbfgs").partial_fit(X, y)
    assert "lbfgs is not stochastic" in str(caught.value.__cause__)
    with pytest.warns(InputWarning, match="far from standardised"):
        MLPClassifier(max_iter=1).fit(X * 255, y)


def test_a_diverging_fit_says_so_where_scikit_learn_is_silent(digits):
    X, y = digits
    kw = dict(solver="sgd", learning_rate_init=10.0, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn: not a word about it
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = sk.MLPRegressor(**kw).fit(X, y * 10)
    with pytest.warns(InputWarning, match=r"training is diverging; lower learning_rate_init "
                                          r"\(now 10\)"):
        est = MLPRegressor(**kw).fit(X, y * 10)
    np.testing.assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=1e-8)  # same numbers


def test_continuous_labels_are_refused_on_the_device_path():
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        encode_labels(np, np.array([0.5, 1.0, 2.0]), MLPClassifier(), incremental=False)


def test_labels_encoded_on_the_device_as_label_binarizer(digits):
    # the path CuPy labels take, run with NumPy as the device's array library
    _, y = digits
    for labels in (y, y % 2, np.where(y > 3, 7.0, -1.0)):
        est = MLPClassifier()
        Y = encode_labels(np, labels, est, incremental=False)
        np.testing.assert_array_equal(Y, LabelBinarizer().fit_transform(labels).astype(bool))
        np.testing.assert_array_equal(est.classes_, np.unique(labels))
        back = est._decode(np, Y.astype(float))
        np.testing.assert_array_equal(back.ravel(), labels)


@pytest.mark.gpu
@requires_gpu()
def test_gpu_estimator_keeps_cupy_inputs_on_the_device(digits):
    import cupy

    X, y = digits
    for Model, target in ((MLPClassifier, y), (MLPRegressor, y / 9.0)):
        kw = dict(hidden_layer_sizes=(16,), max_iter=5, random_state=0, dtype="float64")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cpu = Model(**kw).fit(X, target)
            gpu = Model(backend="gpu", **kw).fit(cupy.asarray(X), cupy.asarray(target))
        for a, b in zip(cpu.coefs_, gpu.coefs_):
            assert type(b) is np.ndarray  # the fitted attributes are NumPy arrays
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
        pred = gpu.predict(cupy.asarray(X))
        assert isinstance(pred, cupy.ndarray)
        np.testing.assert_allclose(cupy.asnumpy(pred), cpu.predict(X), rtol=1e-9, atol=1e-12)
        assert type(gpu.predict(X)) is np.ndarray  # NumPy in, NumPy out
        assert type(gpu.predict(cupy.asarray(X))) is not np.ndarray
    # partial_fit on device labels, and host string labels with device features
    clf = MLPClassifier(backend="gpu", hidden_layer_sizes=(8,), random_state=0)
    clf.partial_fit(cupy.asarray(X), cupy.asarray(y), classes=np.arange(10))
    clf.partial_fit(X, y)
    names = np.array(["even", "odd"])[y % 2]
    est = MLPClassifier(backend="gpu", hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(cupy.asarray(X), names)
    assert set(est.predict(X)) <= {"even", "odd"}


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regression", "poisson"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_onnx_export_matches_predictions(digits, tmp_path, kind, dtype):
    ort = pytest.importorskip("onnxruntime")
    X, y = digits
    if kind in ("regression", "poisson"):
        est = MLPRegressor(loss="poisson" if kind == "poisson" else "squared_error",
                           activation="tanh")
        target = np.stack([y / 9.0, (y % 3) / 2.0], axis=1)
    else:
        est = MLPClassifier(activation="logistic")
        target = {"multiclass": y, "binary": y % 2,
                  "multilabel": np.stack([y % 2, y > 4], axis=1).astype(int)}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.set_params(hidden_layer_sizes=(12, 7), max_iter=5, random_state=0,
                       dtype=dtype).fit(X, target)
    path = est.to_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"X": X.astype(dtype)})[0]
    want = est.predict_proba(X) if kind not in ("regression", "poisson") else est.predict(X)
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-12,
                               atol=1e-6 if dtype == "float32" else 1e-13)


def test_onnx_metadata_lists_the_classes_as_json(digits, tmp_path):
    """The classes were written as a Python repr (['cat', 'dog']), which a
    reader in another language cannot parse."""
    pytest.importorskip("onnx")
    import json

    import onnx
    X, y = digits
    names = np.array(["cat", "dog", "eel"])[y % 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, random_state=0).fit(X, names)
    meta = {p.key: p.value for p in onnx.load(est.to_onnx(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["classes"]) == ["cat", "dog", "eel"]


# ------------------------------------------- found by a review of the estimators
def test_one_class_predicts_that_class_as_scikit_learn(digits):
    X, _ = digits
    y = np.full(X.shape[0], 7)
    kw = dict(hidden_layer_sizes=(6,), random_state=0, max_iter=1, solver="sgd",
              learning_rate_init=1e-9)
    ours, theirs = MLPClassifier(**kw).fit(X, y), sk.MLPClassifier(**kw).fit(X, y)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    assert ours.score(X, y) == theirs.score(X, y) == 1.0
    # the device path binarises one class as LabelBinarizer does: zeros
    np.testing.assert_array_equal(encode_labels(np, y, MLPClassifier(), False),
                                  np.zeros((X.shape[0], 1), dtype=bool))


def test_labels_binarised_on_the_device_go_on_with_host_labels(digits):
    """A fit on device labels keeps a LabelBinarizer, so warm starts, partial
    fits and pickles loaded without a GPU go on with host labels."""
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(6,), random_state=0, max_iter=2)
    Y = encode_labels(np, y, est, incremental=False)  # as a fit on CuPy labels does
    np.testing.assert_array_equal(est._label_binarizer.transform(y).astype(bool), Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    back = pickle.loads(pickle.dumps(est))
    back.partial_fit(X, y)
    back.set_params(warm_start=True).fit(X, y)
    assert back.n_iter_ == 2


def test_a_continued_fit_keeps_the_first_fits_dtype_as_scikit_learn(digits):
    X, y = digits
    pair = [m.MLPClassifier(hidden_layer_sizes=(8,), random_state=0) for m in (sk, mlp)]
    for est in pair:
        est.partial_fit(X, y, classes=np.arange(10))
        est.partial_fit(X.astype(np.float32), y)
    ref, est = pair
    assert est.coefs_[0].dtype == ref.coefs_[0].dtype == np.float64
    np.testing.assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=1e-8)


def test_regressor_refuses_the_classifiers_loss():
    with pytest.raises(ValueError, match="'loss' parameter of MLPRegressor"):
        MLPRegressor(loss="log_loss").fit(np.ones((4, 2)), np.ones(4))


def test_lbfgs_verbose_passes_options_as_scipy_wants_them(digits, capsys):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(solver="lbfgs", max_iter=2, verbose=True, random_state=0).fit(X, y)


def test_a_batch_of_zero_weights_is_refused_as_scikit_learn(digits):
    X, y = digits
    sw = np.ones(len(y))
    sw[:10] = 0
    kw = dict(batch_size=5, shuffle=False, max_iter=1, random_state=0)
    for Model in (sk.MLPClassifier, MLPClassifier):
        with pytest.raises(ZeroDivisionError, match="Weights sum to zero, can't be normalized"):
            Model(**kw).fit(X, y, sample_weight=sw)


def test_nnx_warnings_point_at_the_callers_line(digits):
    X, y = digits
    with pytest.warns(InputWarning, match="far from standardised") as caught:
        MLPClassifier(max_iter=1).fit(X * 255, y)
    assert {w.filename for w in caught if w.category is InputWarning} == {__file__}


def test_a_warm_start_with_other_hidden_sizes_says_what_changed(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier(hidden_layer_sizes=(6,), max_iter=1, warm_start=True).fit(X, y)
        with pytest.raises(ValueError, match=r"hidden_layer_sizes=\(9,\) .* differs from the "
                                             r"fitted coefs_"):
            est.set_params(hidden_layer_sizes=(9,)).fit(X, y)


def test_a_continued_fit_with_another_number_of_outputs_names_the_outputs():
    """partial_fit on y of another width blamed hidden_layer_sizes, which had
    not changed, and advised warm_start=False, which partial_fit ignores."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    Y = X[:, :2] * 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2).partial_fit(X, Y)
        with pytest.raises(ValueError, match=r"y has 1 output\(s\) but the fitted network has "
                                             r"2: .*; fit a new estimator$"):
            est.partial_fit(X, Y[:, 0])
        warm = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, warm_start=True).fit(X, Y)
        with pytest.raises(ValueError, match="y has 1 output.*set warm_start=False"):
            warm.fit(X, Y[:, 0])


def test_a_first_epoch_divergence_does_not_compare_the_epoch_with_itself():
    """It said "inf in epoch 1, up from inf in epoch 1 ... standardise X" for a
    regressor whose y was the problem."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3))
    with pytest.warns(InputWarning) as caught:
        with np.errstate(all="ignore"):
            MLPRegressor(max_iter=2).fit(X, X[:, 0] * 1e200)
    (message,) = [str(w.message) for w in caught if "diverging" in str(w.message)]
    assert "in the first epoch: training is diverging" in message
    assert "up from" not in message and message.endswith("standardise X and scale y")


def test_integer_x_becomes_the_compute_dtype_in_one_copy():
    """Integer X with dtype="float32" became float64 first (scikit-learn's
    checks) and then float32 beside it: 12 bytes an element at the peak, in
    fit and in predict_proba, for 4 bytes of data an element."""
    import tracemalloc
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (20000, 100), dtype=np.uint8)  # (the checks sample 1000 rows)
    y = np.arange(20000) % 3
    est = MLPClassifier((8,), max_iter=1, dtype="float32", random_state=0)
    for call in (lambda: est.fit(X, y), lambda: est.predict_proba(X)):
        tracemalloc.start()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 6 * X.size, f"{peak / X.size:.1f} bytes an element at the peak"


def test_fortran_ordered_x_is_made_row_contiguous_once_for_the_batches(monkeypatch):
    """pandas' to_numpy() gives Fortran-ordered arrays: np.take copied such an
    X whole at every batch. It is made row-contiguous once, for fit only:
    predictions slice rows, which needs no copy of X."""
    import tracemalloc

    from nnx.backend.numpy_backend import NumpyBackend
    rng = np.random.default_rng(0)
    X = np.asfortranarray(rng.standard_normal((20000, 100)).astype(np.float32))
    y = np.arange(20000) % 3
    sources = []
    real = NumpyBackend.take_rows
    monkeypatch.setattr(NumpyBackend, "take_rows", lambda self, x, idx, out=None:
                        sources.append(x.flags.c_contiguous) or real(self, x, idx, out))
    est = MLPClassifier((8,), max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    assert sources and all(sources)
    tracemalloc.start()
    est.predict_proba(X)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < X.nbytes / 4, f"predict_proba took {peak / X.nbytes:.2f} of X's size"


def test_a_dropout_above_one_half_is_warned_of_in_the_estimators_words():
    """MLPClassifier(dropout=0.8), meant as nnx.Dense's keep probability,
    dropped 80% of the units, silently."""
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MLPClassifier(dropout=0.8, max_iter=1, random_state=0).fit(X[:200] / 16, y[:200])
    said = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    assert said == ["dropout=0.8 drops 80% of the hidden units in training: the estimators' "
                    "dropout is the share dropped, as in Keras and PyTorch (nnx.Dense's is the "
                    "share kept); to keep 80%, pass dropout=0.2"], said


@pytest.mark.parametrize("first, then", [("squared_error", "poisson"),
                                         ("poisson", "squared_error")])
def test_a_warm_start_or_partial_fit_with_another_loss_is_refused(first, then):
    """The network was built from the new loss (an exp output), predictions
    used the fitted one (identity): predict returned the raw outputs and
    score fell to -0.53, in silence."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = rng.poisson(2.0, 60).astype(float)
    est = MLPRegressor(hidden_layer_sizes=(5,), loss=first, max_iter=3, random_state=0,
                       warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    coefs = [c.copy() for c in est.coefs_]
    est.set_params(loss=then)
    with pytest.raises(ValueError, match=r"the fitted network has an? \w+ output .*set "
                                         r"warm_start=False to fit anew"):
        est.fit(X, y)
    with pytest.raises(ValueError, match="fit a new estimator"):
        est.partial_fit(X, y)
    for a, b in zip(coefs, est.coefs_):
        np.testing.assert_array_equal(a, b)
    est.set_params(warm_start=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert est.fit(X, y).out_activation_ == ("exp" if then == "poisson" else "identity")


# ------------------------------------- a fit that learned nothing says so
def _digits01():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.mark.parametrize("params", [
    dict(solver="sgd", learning_rate_init=10.0),  # diverges: accuracy 0.1, in silence before
    dict(learning_rate_init=1e-5),  # hardly moves from its start
    dict(alpha=1000.0),  # the penalty holds every weight at zero
])
def test_a_classifier_no_better_than_the_class_frequencies_warns(params):
    X, y = _digits01()
    est = MLPClassifier(random_state=0, max_iter=30, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(InputWarning, match=r"no lower than that of predicting the class "
                                              r"frequencies for every row \(2\.30\d\): it has "
                                              r"learned nothing"):
            est.fit(X, y)
    p = np.bincount(y) / len(y)
    assert est.score(X, y) <= p.max() + 0.01  # indeed no better than guessing


def test_a_regressor_no_better_than_the_mean_warns():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    y = 50.0 + X @ np.array([1.0, -2.0, 0.5, 0.0])  # far from where the outputs start
    est = MLPRegressor(solver="sgd", learning_rate_init=1e-6, random_state=0, max_iter=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(InputWarning, match="predicting the mean of y for every row"):
            est.fit(X, y)


@pytest.mark.parametrize("est, data", [
    (MLPClassifier(random_state=0, max_iter=30), "digits"),
    (MLPClassifier(random_state=0, max_iter=30, early_stopping=True), "digits"),
    (MLPClassifier(solver="lbfgs", random_state=0, max_iter=30), "digits"),
    (MLPClassifier(random_state=0, max_iter=30), "binary"),
    (MLPClassifier(alpha=100.0, random_state=0, max_iter=9), "digits"),  # too few to judge
    (MLPRegressor(random_state=0, max_iter=100, learning_rate_init=0.01), "regression"),
    (MLPRegressor(random_state=0, max_iter=30), "constant"),
])
def test_fits_that_learned_something_do_not_warn(est, data):
    X, y = _digits01()
    if data == "binary":
        y = y % 2
    elif data in ("regression", "constant"):
        y = X[:, 10] - X[:, 20] if data == "regression" else np.ones(len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("error", InputWarning)
        est.fit(X, y)
    est.set_params(warm_start=False)
    with warnings.catch_warnings():  # partial_fit is never judged: one epoch says little
        warnings.simplefilter("error", InputWarning)
        if hasattr(est, "partial_fit") and data == "digits":
            MLPClassifier(learning_rate_init=1e-5, random_state=0).partial_fit(
                X, y, classes=np.arange(10))


def test_a_fortran_ordered_float64_x_is_converted_once_for_a_float32_fit(monkeypatch):
    """Cast keeping its layout, then copied again by its rows: two copies."""
    from nnx.backend.numpy_backend import NumpyBackend
    X, y = _digits01()
    given, real = [], NumpyBackend.rows_contiguous
    monkeypatch.setattr(NumpyBackend, "rows_contiguous",
                        lambda self, x: given.append(x.flags.c_contiguous) or real(self, x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(dtype="float32", max_iter=2, random_state=0).fit(np.asfortranarray(X), y)
    assert given and all(given)


@pytest.mark.parametrize("y", [np.arange(60) % 5, np.arange(60) % 2,
                               np.array(["b", "a", "c"] * 20), np.arange(60) % 3 * 2.0])
def test_labels_are_binarised_as_booleans_without_the_int64_matrix(y, monkeypatch):
    """LabelBinarizer.transform built an int64 rows x classes array, then cast
    it: 8 times the memory of the boolean targets kept."""
    from nnx.sklearn._classes import _binarised
    lb = LabelBinarizer().fit(y)
    want = lb.transform(y).astype(bool)
    monkeypatch.setattr(LabelBinarizer, "transform", lambda *a: pytest.fail("transform used"))
    got = _binarised(lb, y)
    assert got.dtype == bool and got.shape == want.shape and (got == want).all()


def test_the_judgement_against_a_constant_takes_a_block_of_rows_at_a_time(monkeypatch):
    """It copied the targets whole into float64 and predicted every row at
    once: 630 MiB at 100k rows x 200 classes, after the booleans had cut it."""
    from nnx.sklearn import _base, _data
    X, y = _digits01()
    monkeypatch.setattr(_base, "_JUDGE_BLOCK", 500)  # 50 rows of 10 classes
    judging, seen, real = [False], [], _data.to_numpy
    monkeypatch.setattr(_data, "to_numpy", lambda a: (judging[0] and seen.append(
        getattr(a, "shape", (0,))[0])) or real(a))
    real_judge = _base.BaseMLP._judge_against_constant

    def judge(self, net, data):
        judging[0] = True
        try:
            return real_judge(self, net, data)
        finally:
            judging[0] = False

    monkeypatch.setattr(_base.BaseMLP, "_judge_against_constant", judge)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(InputWarning, match="learned nothing"):
            MLPClassifier(alpha=1000.0, max_iter=30, random_state=0).fit(X, y)
    assert seen and max(seen) <= 50


def test_predicting_from_another_dtype_than_the_fits_converts_by_chunks():
    """predict, predict_proba and score converted all of a float64 X to the
    float32 fit's dtype first; the network converts a chunk at a time."""
    import tracemalloc
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40_000, 300))
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((8,), dtype="float32", max_iter=2, random_state=0)
        est.fit(X[:500], y[:500])
    want = est.predict_proba(X.astype(np.float32))
    tracemalloc.start()
    try:
        got = est.predict_proba(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, want)
    assert peak < X.size * 4 / 2  # 4096-row chunks, not X in float32
    pixels = (np.abs(X[:100]) * 40).astype(np.uint8)
    np.testing.assert_array_equal(est.predict(pixels), est.predict(pixels.astype(np.float32)))


def test_an_unfitted_gpu_estimator_unpickled_without_a_gpu_stays_on_the_gpu():
    """joblib pickles the unfitted estimator to each worker of a search: one
    without a GPU switched it to the CPU and trained there, in silence (the
    serial search refused it). A fitted one still predicts on the CPU."""
    from nnx.backend import gpu_available
    if gpu_available()[0]:
        pytest.skip("this machine has a GPU")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = pickle.loads(pickle.dumps(MLPClassifier(max_iter=2, backend="gpu")))
    assert back.backend == "gpu"
    X, y = np.random.default_rng(0).standard_normal((30, 4)), np.arange(30) % 2
    with pytest.raises(ValueError, match="backend='gpu' cannot run here"):
        back.fit(X, y)


@pytest.mark.parametrize("weights, expected", [
    (np.full(60, 1e308), "sums to inf"), ([-1.0] * 30 + [1.0] * 30, "sums to 0")])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_sample_weights_whose_sum_is_no_positive_finite_number_are_refused(weights, expected,
                                                                          solver):
    """1e308 each summed to inf: a NaN fit that returned normally (loss_ nan,
    weights unmoved, a warning blaming the learning rate); a sum of zero
    raised ZeroDivisionError from inside NumPy."""
    X, y = np.random.default_rng(0).standard_normal((60, 4)), np.arange(60) % 3
    est = MLPClassifier((8,), solver=solver, max_iter=5, random_state=0)
    with pytest.raises(nnx.InputValueError, match=rf"sample_weight {expected}; the weights "
                                                  "divide the loss by their sum"):
        est.fit(X, y, sample_weight=weights)
    assert not hasattr(est, "coefs_")
    with pytest.raises(nnx.InputValueError, match="sums to 6e\\+38.*float32"):
        MLPClassifier((8,), dtype="float32", max_iter=5).fit(X, y,
                                                             sample_weight=np.full(60, 1e37))


def test_dates_and_strings_are_refused_by_fit_as_predict_refuses_them():
    """A regressor trained on datetime64 targets (nanoseconds since 1970, a
    loss of 1e30) and fit took datetime or numeric-string X that predict
    then refused: the work was lost."""
    import pandas as pd
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 4)), np.arange(60) % 3
    dates = pd.date_range("2020", periods=60)
    with pytest.raises(nnx.InputTypeError, match=r"^y holds datetime64\[.*dates and durations"):
        MLPRegressor(hidden_layer_sizes=(8,), max_iter=5).fit(X, dates.values)
    with pytest.raises(nnx.InputTypeError, match=r"^y holds timedelta64"):
        MLPRegressor(hidden_layer_sizes=(8,), max_iter=5).fit(X, pd.Series(dates - dates[0]))
    with pytest.raises(nnx.InputTypeError, match=r"^X holds datetime64\[s\]"):
        MLPClassifier(max_iter=5).fit(np.arange(240).reshape(60, 4).astype("datetime64[s]"), y)
    frame = pd.DataFrame(X, columns=list("abcd")).assign(when=dates)
    with pytest.raises(nnx.InputTypeError, match=r"^X's column 'when' holds datetime64"):
        MLPClassifier(max_iter=5).fit(frame, y)
    with pytest.raises(nnx.InputValueError, match="X holds strings .*training takes numbers"):
        MLPClassifier(max_iter=5).fit(X.astype(str), y)


def test_a_subclass_with_an_init_of_its_own_builds_and_fits_as_scikit_learns():
    """A subclass adding a parameter (for a search over it) raised KeyError in
    the parent's __init__; one leaving parameters out had none of them set
    (AttributeError at fit). scikit-learn's estimators take both."""
    class Scaled(MLPClassifier):
        def __init__(self, hidden_layer_sizes=(5,), max_iter=30, scale=1.0):
            super().__init__(hidden_layer_sizes=hidden_layer_sizes, max_iter=max_iter)
            self.scale = scale

    class Small(MLPRegressor):
        def __init__(self, hidden_layer_sizes=(5,)):
            super().__init__(hidden_layer_sizes=hidden_layer_sizes, max_iter=30)

    rng = np.random.RandomState(0)
    X = rng.randn(60, 3)
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search = GridSearchCV(Scaled(), {"scale": [1.0, 2.0]}, cv=2).fit(X, y)
        assert search.best_estimator_.scale in (1.0, 2.0)
        assert Scaled(scale=2.0).get_params() == {"hidden_layer_sizes": (5,), "max_iter": 30,
                                                   "scale": 2.0}
        small = Small().fit(X, X[:, 0])
    assert small.predict(X).shape == (60,) and small.dropout == 0.0


def test_assume_finite_lets_predict_skip_the_scan_as_scikit_learn_does():
    """With sklearn.config_context(assume_finite=True) scikit-learn predicts
    (a NaN row gives NaN probabilities); the network's own check refused
    X, and scanned it a second time even when scikit-learn had."""
    import sklearn
    rng = np.random.RandomState(0)
    X = rng.randn(60, 3)
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = MLPClassifier(max_iter=20, random_state=0).fit(X, y)
        theirs = sk.MLPClassifier(max_iter=20, random_state=0).fit(X, y)
    bad = X.copy()
    bad[0, 1] = np.nan
    with sklearn.config_context(assume_finite=True):
        got, want = ours.predict_proba(bad), theirs.predict_proba(bad)
    assert np.isnan(got[0]).all() and np.isnan(want[0]).all()
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-10)
    with pytest.raises(ValueError, match="NaN"):  # scikit-learn's own check, as its estimator's
        ours.predict(bad)


def test_learning_nothing_from_unscaled_y_names_y_and_the_iterations():
    """Standardised X and y of ~150 +- 77 (the diabetes data): the warning
    blamed the learning rate, alpha and the features, all fine; y and the
    200 iterations (the loss still falling) were the causes."""
    from sklearn.datasets import load_diabetes
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(InputWarning, match=r"Likely causes: too few iterations \(max_iter=200 "
                                              r"reached while the loss still fell\), y far from "
                                              r"scaled \(mean up to 152.1, standard deviation "
                                              r"up to 77.0\d\): scale it"):
            MLPRegressor(random_state=0).fit(X, y)


def test_warnings_inside_a_search_point_at_the_users_line_not_joblibs():
    """Through cross_val_score the ConvergenceWarning pointed at joblib's
    parallel.py: neither scikit-learn's line nor the user's."""
    rng = np.random.RandomState(0)
    X = rng.randn(60, 3)
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cross_val_score(MLPClassifier(max_iter=5, random_state=0), X, y, cv=2)
    files = {w.filename for w in caught if issubclass(w.category, ConvergenceWarning)}
    assert files == {__file__}


def test_a_refit_with_dropout_repeats_the_first_and_pickling_leaves_the_estimator_alone():
    """With dropout and a fixed random_state, a second fit went on with the
    first fit's dropout stream (other coefs_); pickle.dumps removed the
    estimator's cached network from the live object, so results depended on
    whether it had been pickled in between."""
    rng = np.random.RandomState(0)
    X = rng.randn(80, 5)
    y = (X[:, 0] > 0).astype(int)
    est = MLPClassifier((16,), max_iter=5, random_state=0, dropout=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = [w.copy() for w in est.fit(X, y).coefs_]
        est.predict(X)  # builds the cached network
        assert "_net" in est.__dict__
        pickle.dumps(est)
        assert "_net" in est.__dict__  # the original keeps it
        second = est.fit(X, y).coefs_
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["predict_proba", "predict"])
def test_predictions_hold_the_whole_sets_probabilities_once(method):
    """predict, predict_proba and score held the whole set's outputs three
    times at the peak: a list of chunks, their concatenation and a whole-set
    softmax's temporaries (572 MiB for 191 MiB of probabilities)."""
    import tracemalloc
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1000, 4)).astype(np.float32)
    est = MLPClassifier((8,), max_iter=1, dtype="float32", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, np.arange(1000) % 500)
    big = rng.standard_normal((20000, 4)).astype(np.float32)
    getattr(est, method)(big[:5000])  # (first-use allocations out of the count)
    tracemalloc.start()
    try:
        out = getattr(est, method)(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    probabilities = 20000 * 500 * 4
    assert out.shape[0] == 20000
    chunk = 4096 * 500 * 4  # a 4096-row chunk's outputs: what predicting one takes a few of
    assert peak < probabilities + 4 * chunk, (peak, probabilities)  # it was 3 x probabilities


@pytest.mark.parametrize("solver, classes", [("lbfgs", 3), ("adam", 400)])
def test_a_fitted_estimator_keeps_no_copy_of_its_training_data(solver, classes):
    """L-BFGS copied all of X at every loss evaluation (two copies at the
    peak) and the fitted estimator kept the last one; after 10 or more
    epochs the check against a constant model left the loss holding a view
    of all the encoded targets (76 MiB for 20,000 rows of 1,000 classes)."""
    import gc
    import tracemalloc
    rng = np.random.default_rng(0)
    n = 4000
    X = rng.standard_normal((n, 200)).astype(np.float32)
    y = np.arange(n) % classes
    est = MLPClassifier((4,), solver=solver, max_iter=10, dtype="float32", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracemalloc.start()
        try:
            est.fit(X, y)
            gc.collect()
            peak, held = tracemalloc.get_traced_memory()[1], tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    data = X.nbytes + n * classes * 4  # the training rows, and their encoded targets
    assert held < 0.1 * data, (held, data)
    if solver == "lbfgs":
        assert peak < 1.5 * X.nbytes, (peak, X.nbytes)  # X taken whole at each evaluation
