"""The engine shared by nnx's MLPClassifier and MLPRegressor.

It follows scikit-learn's ``neural_network._multilayer_perceptron`` step for
step (the same draws from ``random_state`` in the same order, the same batch
order, losses, L2 term, optimiser updates and stopping rules), so that in
float64 on the CPU the two give the same numbers; the arithmetic runs on an
nnx network on the CPU or the GPU. The training data go to the device once;
per batch only the batch is gathered there, and the host reads the device
once per epoch (the epoch's loss, and the validation score with
``early_stopping``).
"""

from __future__ import annotations

import json
import math
import warnings
from numbers import Integral, Real

import joblib
import numpy as np
import scipy.optimize
import sklearn
from sklearn.base import BaseEstimator, is_regressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as _SkMLPClassifier
from sklearn.utils import check_random_state, shuffle
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
from sklearn.utils.optimize import _check_optimize_result

from .._checks import InputValueError, InputWarning, warn_caller
from ..backend import BackendUnavailableError, get_backend, gpu_available
from ..backend.host import is_sparse, spread_problem
from ..layers import QUIET_DROPOUT, Dense
from ..network import NeuralNetwork
from . import _data
from ._losses import LOSSES, activate

_STOCHASTIC = ("sgd", "adam")
# the packages between a user's call and an estimator's fit (GridSearchCV,
# cross_validate and their joblib): warnings point past them, at the user's line
_WRAPPERS = (sklearn, joblib)
# scikit-learn's activation names -> nnx's
_JUDGED_AFTER = 10  # iterations before a fit is judged against a constant prediction
_JUDGE_BLOCK = 2**20  # values of the targets (rows x outputs) judged at a time
_HIDDEN = {"identity": "linear", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


class _Solver:
    """scikit-learn's SGD (momentum, Nesterov) or Adam over the network's flat
    buffers, with its learning-rate rules. The moments live on the device; the
    rate is a host number (changed at most once per epoch) that each step
    passes to the backend's fused update."""

    def __init__(self, est, backend, size):
        self.kind = est.solver
        self.lr_init = float(est.learning_rate_init)
        self.learning_rate = self.lr_init
        # Python numbers: a NumPy float64 (as searches give) would make NumPy
        # compute a float32 network's update in float64
        self.schedule, self.power_t = est.learning_rate, float(est.power_t)
        self.momentum, self.nesterov = float(est.momentum), est.nesterovs_momentum
        self.beta1, self.beta2, self.eps = (float(est.beta_1), float(est.beta_2),
                                            float(est.epsilon))
        self.t = 0
        self.state = [backend.zeros((size,)) for _ in range(2 if self.kind == "adam" else 1)]

    def step(self, backend, param, grad):
        if self.kind == "sgd":
            # scikit-learn's velocity is minus nnx's: v = mu v - lr g, p += v is
            # nnx's v = mu v + lr g, p -= v (and likewise with Nesterov)
            backend.momentum_step(param, grad, self.state[0], self.learning_rate,
                                  self.momentum, self.nesterov)
            return
        # scikit-learn's Adam: p -= lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps),
        # which is nnx's (PyTorch's) form with eps / sqrt(1-b2^t)
        self.t += 1
        eps = self.eps / math.sqrt(1.0 - self.beta2 ** self.t)
        backend.adam_step(param, grad, self.state[0], self.state[1], self.lr_init,
                          np.int64(self.t), self.beta1, self.beta2, eps, 0.0)
        self.learning_rate = (self.lr_init * math.sqrt(1.0 - self.beta2 ** self.t)
                              / (1.0 - self.beta1 ** self.t))

    def on_device(self, backend):
        """Make the rate and the step count device arrays: the recorded steps
        of a GPU fit read them there (``device_step``)."""
        self._lr_device = backend.asarray(self.learning_rate)
        self._t_device = backend.zeros_int(())
        backend.assign(self._t_device, self.t)

    def device_step(self, backend, param, grad):
        """``step`` with the rate and step count read on the device (no host
        number changes per step, so a recorded step serves every batch)."""
        if self.kind == "sgd":
            backend.momentum_step(param, grad, self.state[0], self._lr_device, self.momentum,
                                  self.nesterov)
            return
        backend.tick(self._t_device)
        backend.adam_step(param, grad, self.state[0], self.state[1], self.lr_init,
                          self._t_device, self.beta1, self.beta2, self.eps, 0.0,
                          eps_bias_corrected=True)

    def epoch_starts(self, backend):
        """The epoch's rate on the device (SGD's changes between epochs only)."""
        if self.kind == "sgd":
            backend.assign(self._lr_device, self.learning_rate)

    def read_back(self, backend):
        """After device steps (an epoch, or steps cut short by an interrupt):
        the host's step count and Adam's rate follow the device's count."""
        if self.kind == "adam":
            self.t = int(backend.to_numpy(self._t_device))
            if self.t:
                self.learning_rate = (self.lr_init * math.sqrt(1.0 - self.beta2 ** self.t)
                                      / (1.0 - self.beta1 ** self.t))

    def iteration_ends(self, time_step):
        if self.kind == "sgd" and self.schedule == "invscaling":
            self.learning_rate = self.lr_init / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg, verbose):
        """True to stop; with the "adaptive" SGD rate, divide it by 5 first."""
        if self.kind != "sgd" or self.schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(f"{msg} Setting learning rate to {self.learning_rate:f}")
        return False

    def __getstate__(self):
        # the moments travel as NumPy arrays, so a pickle loads without a GPU
        state = dict(self.__dict__)
        state["state"] = [_data.to_numpy(a) for a in self.state]
        state.pop("_lr_device", None)
        state.pop("_t_device", None)
        return state

    def to_backend(self, backend):
        self.state = [backend.asarray(a) for a in self.state]  # casts to its dtype too


class BaseMLP(BaseEstimator):
    """Everything but the targets' encoding, the loss and the score."""

    _parameter_constraints: dict = {
        **_SkMLPClassifier._parameter_constraints,
        "backend": [StrOptions({"cpu", "gpu"})],
        # a name, or NumPy's type as scikit-learn's own dtype parameters take it
        "dtype": [None, StrOptions({"float32", "float64"}),
                  Options(type, {np.float32, np.float64}),
                  Options(np.dtype, {np.dtype("float32"), np.dtype("float64")})],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = self.backend != "gpu"  # SciPy sparse X: the CPU's
        return tags

    # ----------------------------------------------------------- pickling
    def __getstate__(self):
        # a copy: on some Pythons the base's state is the live __dict__ itself
        state = dict(super().__getstate__())
        state.pop("_net", None)  # rebuilt from coefs_ on the next use
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        # a fitted GPU estimator predicts on a machine without one; an unfitted one
        # (joblib's copy for a search's worker) stays on the GPU, where a fit on a
        # worker without one is refused: it trained on the CPU, in silence
        if self.backend == "gpu" and "coefs_" in self.__dict__ and not gpu_available()[0]:
            warnings.warn(f"{type(self).__name__} was fitted with backend='gpu', which this "
                          "machine cannot run; it continues on the CPU (backend='cpu')",
                          UserWarning, stacklevel=2)
            self.backend = "cpu"

    # ------------------------------------------------------------ device
    def _compute_dtype(self, X):
        if self.dtype is not None:
            return np.dtype(self.dtype).name
        return "float32" if _data.dtype_of(X) == np.float32 else "float64"

    def _backend(self, dtype):
        try:
            return get_backend(self.backend, dtype)
        except BackendUnavailableError as exc:
            raise InputValueError(f"backend={self.backend!r} cannot run here: {exc}") from None

    def _network(self, layer_units, dtype):
        """The device network for ``layer_units`` in ``dtype``, holding
        ``coefs_`` and ``intercepts_`` (kept between calls; rebuilt when the
        shape, dtype, backend or dropout changed)."""
        backend = self._backend(dtype)
        key = (tuple(layer_units), backend.name, backend.dtype_name, self.activation,
               self.dropout, self._loss_name())
        net = getattr(self, "_net", None)
        if net is None or getattr(self, "_net_key", None) != key:
            keep = 1.0 - self.dropout
            quiet = QUIET_DROPOUT.set(True)  # the keep probability is ours: _fit said the rest
            try:
                hidden = [Dense(u, _HIDDEN[self.activation], dropout=keep)
                          for u in layer_units[1:-1]]
            finally:
                QUIET_DROPOUT.reset(quiet)
            seed = self._dropout_seed() if self.dropout > 0 else 0
            net = NeuralNetwork(hidden + [Dense(layer_units[-1], "linear")],
                                LOSSES[self._loss_name()](), seed=seed, backend=backend)
            net.build(layer_units[0])
            self._net, self._net_key = net, key
        self._push(net)
        return net

    def _dropout_seed(self):
        # a fixed random_state gives reproducible masks; drawn only with
        # dropout on, so scikit-learn's stream of draws is untouched without it
        if isinstance(self.random_state, Integral):
            return int(self.random_state)
        return int(self._random_state.randint(2**31 - 1))

    def _push(self, net):
        """``coefs_`` and ``intercepts_`` (the NumPy truth) into the network."""
        b = net.backend
        for layer, W, B in zip(net.layers, self.coefs_, self.intercepts_):
            w, bias = layer.params()
            b.assign(w, b.asarray(np.asarray(W, dtype=b.dtype_name)))
            b.assign(bias, b.asarray(np.asarray(B, dtype=b.dtype_name).reshape(1, -1)))

    def _pull(self, net):
        b = net.backend
        params = [b.to_numpy(p) for p in net.params()]
        self.coefs_ = [w.copy() for w in params[0::2]]
        self.intercepts_ = [bias.reshape(-1).copy() for bias in params[1::2]]

    # ---------------------------------------------------------- training
    def _initialize(self, n_outputs, layer_units, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._out_activation()
        self.coefs_, self.intercepts_ = [], []
        factor = 2.0 if self.activation == "logistic" else 6.0
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            coef = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            intercept = self._random_state.uniform(-bound, bound, fan_out)
            self.coefs_.append(coef.astype(dtype, copy=False))
            self.intercepts_.append(intercept.astype(dtype, copy=False))
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [i.copy() for i in self.intercepts_]
        self._best_is_live = False  # copies, not the trained arrays (see _fit_stochastic)
        if self.solver in _STOCHASTIC:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _validate_changed_params(self):
        """partial_fit's validation: _fit_context skips it on a fitted estimator,
        where set_params can have left alpha="0.01" (taken as 0.01 by float()).
        Validated again only when a setting is another object than at the last
        validation (a validation costs about a tenth of a small partial_fit)."""
        names = type(self).__dict__.get("_param_names_cache")
        if names is None:
            names = type(self)._param_names_cache = tuple(self._get_param_names())
        now = [getattr(self, name) for name in names]
        last = self.__dict__.get("_validated_params")
        if last is None or any(a is not b for a, b in zip(now, last)):
            self._validate_params()
            self._validated_params = now

    def _fit(self, X, y, sample_weight=None, incremental=False):
        if incremental:
            self._validate_changed_params()
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
        if np.any(np.array(hidden) <= 0):
            raise InputValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        if self.dropout > 0 and self.solver == "lbfgs":
            raise InputValueError(f"dropout={self.dropout} needs a stochastic solver ('adam' or "
                             "'sgd'): L-BFGS's line search needs the same loss each time "
                             "it evaluates the same weights")
        if self.dropout > 0.5:  # likely nnx.Dense's keep probability
            warn_caller(f"dropout={self.dropout:g} drops {self.dropout:.0%} of the hidden units "
                        "in training: the estimators' dropout is the share dropped, as in "
                        "Keras and PyTorch (nnx.Dense's is the share kept); to keep "
                        f"{self.dropout:.0%}, pass dropout={1 - self.dropout:g}", InputWarning,
                        also=_WRAPPERS)
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        data = _data.prepare_fit(self, X, y, sample_weight, incremental, first_pass)
        self._warned_divergence = False
        if first_pass and (not _data.on_device(data.X) or is_sparse(data.X)):
            problem = spread_problem(data.X, "X")
            if problem:
                warn_caller(problem, InputWarning, also=_WRAPPERS)
        layer_units = [data.n_features] + hidden + [data.n_outputs]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            # in the compute dtype: float64 weights for dtype="float64" on float32 X
            self._initialize(data.n_outputs, layer_units, data.dtype)
        self._fit_dtype = data.dtype
        self._check_continuation(data, layer_units, incremental)
        if first_pass and self.dropout > 0:  # the last fit's would go on with its stream
            self.__dict__.pop("_net", None)
        net = self._network(layer_units, data.dtype)
        data.to_device(net.backend)
        try:
            self._train(net, data, layer_units, incremental)
        finally:
            # the last pass's arrays (a view of all of X or of the encoded targets,
            # the sample weights) stay out of the fitted estimator
            net.forget_pass()
            net.loss.weights = None
        return self

    def _train(self, net, data, layer_units, incremental):
        try:
            if self.solver in _STOCHASTIC:
                self._fit_stochastic(net, data, incremental)
            else:
                self._fit_lbfgs(net, data, layer_units)
        except BaseException:
            # scikit-learn trains coefs_ in place: a warning made an error (or any other
            # exception) leaves them as trained so far, as there; a failure to read them
            # back (the device's, say) must not hide the error that stopped the fit
            try:
                self._pull(net)
            except Exception:
                pass
            raise
        self._pull(net)
        if self.solver in _STOCHASTIC and self.early_stopping:
            self.coefs_, self.intercepts_ = self._best_coefs, self._best_intercepts
        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise InputValueError("Solver produced non-finite parameter weights. The input data "
                             "may contain large values and need to be preprocessed.")
        if not incremental and self.n_iter_ >= _JUDGED_AFTER:
            self._judge_against_constant(net, data)

    def _judge_against_constant(self, net, data):
        """Warn when the fitted model's training loss (the data term, without
        the L2 penalty, with the sample weights) is no lower than that of the
        best constant prediction: the class frequencies, or the mean of y. A
        learning rate far too large or small, or too strong an alpha, leaves
        such a model, in silence otherwise (digits at learning_rate_init=10:
        accuracy 0.1)."""
        b, loss = net.backend, net.loss
        if data.n_outputs == 1 and getattr(self, "classes_", np.zeros(2)).shape[0] < 2:
            return  # one class: nothing to learn
        self._push(net)  # the kept weights (early stopping's best ones, say)
        n, sw = data.n_samples, data.sw_host
        total = float(n if sw is None else sw.sum())
        # a block of rows at a time, in float64: no copy of the targets, no
        # outputs for every row (the targets may be rows x 1000 classes)
        step = max(1, _JUDGE_BLOCK // max(1, data.n_outputs))
        first = second = 0.0
        for i in range(0, n, step):
            block = _data.to_numpy(data.Y[i:i + step]).astype(np.float64)
            w = np.ones(len(block)) if sw is None else sw[i:i + step]
            first = first + w @ block
            second = second + w @ (block * block)
        mean = first / total
        if not (second / total - mean * mean).sum() > 1e-12 * max(1.0, (mean * mean).sum()):
            return  # constant targets: the constant is the answer
        tiny = np.finfo(np.float64).tiny
        if self.out_activation_ in ("softmax", "exp"):
            z0 = np.log(np.maximum(mean, tiny))
        elif self.out_activation_ == "logistic":
            m = np.clip(mean, tiny, 1 - 1e-16)
            z0 = np.log(m) - np.log1p(-m)
        else:
            z0 = mean
        loss.weight_sum = total  # each block's loss is its share of the whole
        fitted = constant = 0.0
        with b.quiet_float_errors():
            for i in range(0, n, step):
                rows = b.asarray(np.arange(i, min(i + step, n)), dtype="int64")
                Y = data.Y[i:i + step]
                loss.weights = None if data.sw is None else data.sw[i:i + step].reshape(-1, 1)
                share = len(rows) / total if data.sw is None else 1.0  # unweighted: a mean
                fitted += share * b.to_float(loss.forward(data.predict_rows(net, rows), Y))
                z = b.asarray(np.broadcast_to(z0, (len(rows), z0.shape[0])).astype(data.dtype))
                constant += share * b.to_float(loss.forward(z, Y))
        if not fitted >= constant:
            return
        what = "the class frequencies" if hasattr(self, "classes_") else "the mean of y"
        curve = getattr(self, "loss_curve_", None)
        moved = (f"; its loss went from {curve[0]:.4g} to {curve[-1]:.4g} over the epochs"
                 if curve else "")
        causes = []
        if curve and len(curve) > 1 and self.n_iter_ >= self.max_iter and \
                curve[-1] < curve[-2] * (1 - 1e-3):  # stopped by max_iter, still learning
            causes.append(f"too few iterations (max_iter={self.max_iter} reached while the "
                          "loss still fell)")
        spread = np.sqrt(np.maximum(second / total - mean * mean, 0.0))
        if not hasattr(self, "classes_") and (np.abs(mean).max() > 10 or spread.max() > 10):
            causes.append(f"y far from scaled (mean up to {np.abs(mean).max():.4g}, standard "
                          f"deviation up to {spread.max():.4g}): scale it, e.g. "
                          "TransformedTargetRegressor(regressor=..., "
                          "transformer=StandardScaler())")
        if self.solver in _STOCHASTIC:
            causes.append(f"learning_rate_init={self.learning_rate_init:g} far too large or "
                          "too small")
        causes += [f"alpha={self.alpha:g} too strong", "features far from standardised"]
        warn_caller(f"after {self.n_iter_} iterations the fitted model's training loss "
                    f"({fitted:.4g}) is no lower than that of predicting {what} for every row "
                    f"({constant:.4g}): it has learned nothing from X{moved}. Likely causes: "
                    + ", ".join(causes[:-1]) + f", or {causes[-1]}", InputWarning,
                    also=_WRAPPERS)

    def _batch(self, net, data, rows, weight_sum, buffers=None):
        """Loss and gradient of one batch (``weight_sum``: its rows' weights
        summed on the host, or its row count), with scikit-learn's L2 term:
        ``alpha/2 |W|^2 / weight_sum`` in the loss (a 0-d device array),
        ``alpha W / weight_sum`` in the weights' gradient (the grad buffer)."""
        b = net.backend
        full = buffers is not None and int(rows.shape[0]) == int(buffers[1].shape[0])
        Xb, Yb, wb = buffers if full else (None, None, None)  # reused by every full batch
        Xb, Yb = b.take_rows(data.X, rows, out=Xb), b.take_rows(data.Y, rows, out=Yb)
        w = None if data.sw is None else b.take_rows(data.sw, rows, out=wb).reshape(-1, 1)
        return self._loss_and_gradient(net, Xb, Yb, w, weight_sum)

    def _loss_and_gradient(self, net, Xb, Yb, w, weight_sum):
        if weight_sum == 0:  # scikit-learn's np.average says the same
            raise ZeroDivisionError("Weights sum to zero, can't be normalized")
        b, loss = net.backend, net.loss
        loss.weights, loss.weight_sum = w, weight_sum
        value = net.train_step(Xb, Yb)
        if self.alpha:
            # alpha as a Python float: an np.float32 alpha kept the term in float32
            squares, l2 = 0.0, float(self.alpha) / weight_sum
            for layer in net.layers:
                W, gW = next(layer.params()), next(layer.param_grads())
                squares = squares + b.sum_squares(W)
                b.axpy(l2, W, gW)
            value = value + (0.5 * float(self.alpha)) * squares / weight_sum
        return value

    @staticmethod
    def _weight_sums(sw, order, starts):
        """Each batch's sum of sample weights (host numbers), or its row count."""
        if sw is None:
            return np.diff(np.append(starts, order.shape[0])).astype(float)
        return np.add.reduceat(sw[order], starts)

    def _check_continuation(self, data, layer_units, incremental):
        """Refuse a warm start or partial_fit that cannot continue the fitted
        network: another loss's output, other outputs or other layers."""
        anew = "fit a new estimator" if incremental else "set warm_start=False to fit anew"
        if self._out_activation() != self.out_activation_:
            # the network is built from the current loss, predictions use the fitted output
            raise InputValueError(
                f"loss={self.loss!r} gives the network a {self._out_activation()} output, but "
                f"the fitted network has a {self.out_activation_} output (the loss it was "
                "fitted with): a warm start or partial_fit continues the fitted network; "
                + anew)
        shapes = [(a, c) for a, c in zip(layer_units[:-1], layer_units[1:])]
        fitted = [tuple(W.shape) for W in self.coefs_]
        if fitted != shapes:
            if fitted[:-1] == shapes[:-1] and fitted[-1][0] == shapes[-1][0]:
                raise InputValueError(  # only the targets changed, not the layers
                    f"y has {data.n_outputs} output(s) but the fitted network has "
                    f"{fitted[-1][1]}: a warm start or partial_fit continues the fitted "
                    f"network, with its outputs; {anew}")
            raise InputValueError(
                f"hidden_layer_sizes={self.hidden_layer_sizes!r} (layers {shapes}) differs from "
                f"the fitted coefs_ ({fitted}): a warm start or partial_fit continues the "
                f"fitted network; {anew}")

    def _fit_stochastic(self, net, data, incremental):
        b = net.backend
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = _Solver(self, b, int(net.param_buffer.shape[0]))
        self._optimizer.to_backend(b)
        if self.early_stopping and incremental:
            raise InputValueError("partial_fit does not support early_stopping=True")
        train, val = self._split(data)
        n = int(train.shape[0])
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warn_caller("Got `batch_size` less than 1 or larger than sample size. "
                            "It is going to be clipped", UserWarning, also=_WRAPPERS)
            batch_size = int(np.clip(self.batch_size, 1, n))
        sample_idx = np.arange(n, dtype=int)
        order = b.asarray(train, dtype="int64") if not self.shuffle else None
        recorded = self._recorded_steps(net, data, n, batch_size)
        buffers = None if recorded is not None else (
            None if is_sparse(data.X) else b.empty((batch_size, data.n_features)),
            b.empty((batch_size, data.n_outputs)),
            None if data.sw is None else b.empty((batch_size,)))  # sparse rows: a new CSR
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:
                    sample_idx = shuffle(sample_idx, random_state=self._random_state)
                    order = b.asarray(train[sample_idx], dtype="int64")
                if recorded is not None:
                    steps, plan = recorded
                    self._optimizer.epoch_starts(b)
                    total = steps.epoch(data.X, data.Y, order, plan)
                    self._optimizer.read_back(b)
                else:
                    total = None
                    starts = np.arange(0, n, batch_size)
                    sums = self._weight_sums(data.sw_host, train[sample_idx], starts)
                    for lo, weight_sum in zip(starts, sums.tolist()):
                        rows = order[lo:lo + batch_size]
                        value = self._batch(net, data, rows, weight_sum, buffers) \
                            * int(rows.shape[0])
                        total = value if total is None else total + value
                        self._optimizer.step(b, net.param_buffer, net.grad_buffer)
                if self._epoch_ends(net, data, val, float(total) / n, n, incremental):
                    break
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)
        finally:
            if recorded is not None:
                self._optimizer.read_back(b)  # an interrupted epoch took some steps
                recorded[0].close()
        best = self.__dict__.pop("_best_device", None)
        if best is not None:  # the best epoch's weights, kept on the device until now
            b.assign(net.param_buffer, best)
            self._pull(net)
            self._best_coefs, self._best_intercepts = self.coefs_, self.intercepts_
        elif self.early_stopping and getattr(self, "_best_is_live", False):
            # scikit-learn's coefs_ and _best_coefs are the same arrays after an
            # early-stopped fit, so a warm start that never improves trains its
            # "best" weights in place and ends with its last ones: so do we
            self._pull(net)
            self._best_coefs, self._best_intercepts = self.coefs_, self.intercepts_
        self._best_is_live = self.early_stopping

    def _recorded_steps(self, net, data, n, batch_size):
        """On a backend that records graphs (the GPU), without sample weights:
        the trainer's recorded steps, each fetching its batch by a device
        counter and running scikit-learn's step (loss, L2, update) with the
        rate and step count on the device, with its batch plan. Else None:
        the host loop above, which computes the same numbers."""
        from ..backend import Backend
        from ..train.trainer import _Steps, batch_plan
        b = net.backend
        full = n // batch_size
        # recording pays from a few graph launches on: a partial_fit of a small
        # chunk (or sample weights, whose sums come from the host) runs step by step
        if data.sw is not None or type(b).capture is Backend.capture \
                or full < 2 * _Steps.group:
            return None
        self._optimizer.on_device(b)

        def step(xb, yb):
            rows = int(xb.shape[0])
            value = self._loss_and_gradient(net, xb, yb, None, float(rows))
            self._optimizer.device_step(b, net.param_buffer, net.grad_buffer)
            return value * rows
        plan = batch_plan(b, n, data.n_features, data.n_outputs, batch_size)
        return _Steps(net, None, True, batch_size=batch_size, step=step), plan

    def _split(self, data):
        """Row numbers of the training and validation rows (host arrays)."""
        rows = np.arange(data.n_samples)
        if not self.early_stopping:
            return rows, None
        stratify = data.stratify if data.stratify is not None and \
            data.n_outputs == 1 and self._is_classifier() else None
        train, val = train_test_split(rows, random_state=self._random_state,
                                      test_size=self.validation_fraction, stratify=stratify)
        if val.shape[0] < 2:
            raise InputValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")
        return train, val

    def _epoch_ends(self, net, data, val, loss, n, incremental):
        """scikit-learn's end of an epoch: record, check for improvement, maybe
        stop. True to stop."""
        self.n_iter_ += 1
        self.loss_ = loss
        self.t_ += n
        self.loss_curve_.append(loss)
        self._watch_divergence(loss)
        if self.verbose:
            print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
        self._update_no_improvement_count(net, data, val)
        self._optimizer.iteration_ends(self.t_)
        if self._no_improvement_count > self.n_iter_no_change:
            what = ("Validation score" if self.early_stopping else "Training loss")
            msg = (f"{what} did not improve more than tol={self.tol:f} for "
                   f"{self.n_iter_no_change} consecutive epochs.")
            if self._optimizer.trigger_stopping(msg, self.verbose):
                return True
            self._no_improvement_count = 0
        if incremental:
            return True
        if self.n_iter_ == self.max_iter:
            warn_caller(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                        "and the optimization hasn't converged yet.", ConvergenceWarning,
                        also=_WRAPPERS)
        return False

    def _watch_divergence(self, loss):
        """Say once per fit that the loss is diverging (scikit-learn trains on in
        silence, to a loss of 1e139 or to non-finite weights): not finite, or
        100 times the first epoch's."""
        first = self.loss_curve_[-self.n_iter_]
        if getattr(self, "_warned_divergence", False) or (math.isfinite(loss) and
                                                          loss <= 100 * max(first, 1e-12)):
            return
        self._warned_divergence = True
        where = (f"in epoch {self.n_iter_}, up from {first:.4g} in epoch 1"
                 if self.n_iter_ > 1 else "in the first epoch")
        hint = "standardise X and scale y" if is_regressor(self) else "standardise X"
        warn_caller(f"the training loss is {loss:.4g} {where}: "
                    f"training is diverging; lower learning_rate_init (now "
                    f"{self.learning_rate_init:g}) or {hint}", InputWarning, also=_WRAPPERS)

    def _update_no_improvement_count(self, net, data, val):
        if self.early_stopping:
            score = self._validation_score(net, data, val)
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_device = net.backend.copy(net.param_buffer)  # read at the end
            return
        if self.loss_curve_[-1] > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if self.loss_curve_[-1] < self.best_loss_:
            self.best_loss_ = self.loss_curve_[-1]

    def _fit_lbfgs(self, net, data, layer_units):
        b = net.backend
        flat_of_packed = _data.packed_order(layer_units)
        packed_of_flat = np.argsort(flat_of_packed)
        param = net.param_buffer

        weight_sum = float(self._weight_sums(data.sw_host, np.arange(data.n_samples),
                                             np.zeros(1, dtype=int))[0])

        w = None if data.sw is None else data.sw.reshape(-1, 1)

        def loss_grad(packed):
            b.assign(param, b.asarray(packed[flat_of_packed].astype(b.dtype_name)))
            # every row in order is the data as it is (taking them copied all of X
            # at every evaluation, and the last pass's copy stayed beside the next)
            loss = self._loss_and_gradient(net, data.X, data.Y, w, weight_sum)
            return float(loss), b.to_numpy(net.grad_buffer).astype(np.float64)[packed_of_flat]

        packed = b.to_numpy(param).astype(np.float64)[packed_of_flat]
        iprint = 1 if self.verbose is True or self.verbose >= 1 else -1
        options = {"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol,
                   **_get_additional_lbfgs_options_dict("iprint", iprint)}
        res = scipy.optimize.minimize(loss_grad, packed, method="L-BFGS-B", jac=True,
                                      options=options)
        self.n_iter_ = _check_optimize_result("lbfgs", res, self.max_iter)
        self.loss_ = float(res.fun)
        b.assign(param, b.asarray(res.x[flat_of_packed].astype(b.dtype_name)))

    # --------------------------------------------------------- inference
    def _raw(self, X, activation=None):
        """The last layer's raw outputs for ``X`` on the device (or their
        output ``activation``, chunk by chunk), and whether the caller's
        array library is the host's."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        Xd, on_host = _data.prepare_predict(self, X)
        net = self._network([self.n_features_in_] + [c.shape[1] for c in self.coefs_],
                            self._fit_dtype)
        # X passed scikit-learn's check (finite unless assume_finite said not
        # to look): not scanned again by the network's
        X_checked = net.as_input(Xd, convert=False, finite=False)
        each = None if activation is None else \
            (lambda z: activate(net.backend.xp, activation, z))
        return net._predict(X_checked, 4096, each), on_host, net.backend

    def _forward(self, X):
        """Output activations for ``X`` (scikit-learn's ``_forward_pass_fast``),
        made a chunk of rows at a time: the whole set's are held once."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)  # (before out_activation_ is read)
        return self._raw(X, self.out_activation_)

    def to_onnx(self, path, opset=None):
        """Write the fitted network to ``path`` as an ONNX model whose output is
        what ``predict_proba`` (a classifier; its metadata ``classes`` lists
        ``classes_``) or ``predict`` (a regressor, as rows x outputs) gives;
        needs the ``onnx`` extra. See docs/onnx.md."""
        from sklearn.utils.validation import check_is_fitted

        from ..onnx import export_layers

        check_is_fitted(self)
        extra = ({"classes": json.dumps(self.classes_.tolist())}  # JSON: any reader parses it
                 if hasattr(self, "classes_") else None)
        return export_layers(self.coefs_, self.intercepts_, _HIDDEN[self.activation],
                             self._onnx_output(), path, self._fit_dtype, opset=opset,
                             extra=extra)

    def _onnx_output(self):
        """The ONNX export's output transform: what predict_proba (a
        classifier) or predict (a regressor) computes from the raw outputs."""
        output = {"identity": "raw", "logistic": "sigmoid"}.get(self.out_activation_,
                                                                 self.out_activation_)
        return "binary" if output == "sigmoid" and self.n_outputs_ == 1 else output
