"""The reference backend: every array operation nnx needs, written once
against an array-API namespace ``self.xp``.

Subclasses (NumPy, CuPy, the simulated device) only say where arrays live and
how random numbers are drawn, and may override a method where their library
offers a faster way (``out=`` buffers, fused kernels). The public methods of
this class are the whole contract: a test checks that no subclass adds any.
"""

from __future__ import annotations

import numpy as _np  # host side only: initial weights, labels, read-back

from .._checks import InputValueError

_DTYPES = ("float32", "float64")


def dtype_name(dtype) -> str:
    """``"float32"`` or ``"float64"`` from a name or a NumPy dtype or type
    (``np.float32``); ValueError naming the value otherwise."""
    try:
        name = _np.dtype(dtype).name if dtype is not None else None
    except TypeError:
        name = None
    if name not in _DTYPES:
        raise InputValueError(f"dtype={dtype!r} is not supported; expected one of {_DTYPES}")
    return name


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here; the message says what is missing."""


class CaptureUnavailable(RuntimeError):
    """A training step could not be recorded as a graph; the message says why."""


class Backend:
    """Array operations on one device, in one compute dtype.

    Attributes
    ----------
    name : str
        ``"cpu"``, ``"gpu"`` or ``"strict"`` (the simulated device used in tests).
    xp : module
        The array namespace (``numpy``, ``cupy`` or ``array_api_strict``).
    dtype : dtype object of ``xp``
        The compute dtype: every array the backend creates has it.
    """

    name = "base"
    # True where bias_activation runs as one fused kernel (Dense then uses it)
    fuses_bias_activation = False

    def __init__(self, xp, dtype="float32", device=None):
        dtype = dtype_name(dtype)
        self.xp = xp
        self.dtype_name = dtype
        self.dtype = getattr(xp, dtype)
        self.device = device
        # keyword passed to creation functions so new arrays land on our device
        self._on = {} if device is None else {"device": device}

    def __reduce__(self):
        # pickled (and deep-copied) by name: what comes back is this process's
        # backend of that name and dtype, itself holding the array module
        from . import get_backend
        return (get_backend, (self.name, self.dtype_name))

    def __repr__(self):
        return f"<nnx backend {self.name!r} dtype={self.dtype_name}>"

    # ------------------------------------------------------------------ data
    def owns(self, x) -> bool:
        """True if ``x`` is an array of this backend's namespace and device."""
        return type(x).__module__.split(".")[0] == self.xp.__name__.split(".")[0] and (
            self.device is None or x.device == self.device
        )

    def asarray(self, x, dtype=None):
        """Host (or own-device) data -> array on this device in ``dtype``
        (default: the compute dtype). No copy when nothing has to change."""
        dtype = self.dtype if dtype is None else dtype
        if self.owns(x):
            return x if x.dtype == dtype else self.xp.astype(x, dtype)
        return self.xp.asarray(_np.asarray(x), dtype=dtype, **self._on)

    def to_numpy(self, x):
        """Device -> host copy as a NumPy array (waits for the device)."""
        return _np.asarray(x)

    def to_float(self, x) -> float:
        """Read one device scalar back to the host (a synchronisation point)."""
        return float(self.to_numpy(x))

    def synchronize(self):
        """Wait until queued device work has finished (no-op on the CPU)."""

    def quiet_float_errors(self):
        """A context in which overflow and invalid values raise no NumPy
        warnings: training detects a diverged loss itself and says so once."""
        return _np.errstate(over="ignore", invalid="ignore", divide="ignore")

    def zeros(self, shape):
        return self.xp.zeros(shape, dtype=self.dtype, **self._on)

    def empty(self, shape):
        return self.xp.empty(shape, dtype=self.dtype, **self._on)

    def copy(self, x):
        return self.xp.asarray(x, copy=True)

    def view(self, flat, start, shape):
        """A view of ``flat[start:start+size]`` shaped ``shape``; writes go to ``flat``."""
        size = 1
        for n in shape:
            size *= n
        return self.xp.reshape(flat[start:start + size], shape)

    def assign(self, dst, src):
        """Copy ``src`` (an array of the same shape, or a number) into ``dst``."""
        dst[...] = src

    # ---------------------------------------------------------------- random
    def host_generator(self, seed):
        """A NumPy generator for draws that must match across backends
        (initial weights are drawn on the host in float64, then uploaded)."""
        return _np.random.default_rng(seed)

    def host_normal(self, gen, shape, std=1.0):
        """Normal(0, std**2) draw on the host from ``gen``, uploaded in the compute dtype."""
        return self.asarray(gen.standard_normal(shape) * std)

    def generator(self, seed):
        """A random generator that draws on this device."""
        raise NotImplementedError

    def uniform(self, gen, shape, dtype=None):
        """Uniform [0, 1) numbers in ``dtype`` (default: the compute dtype),
        drawn on the device."""
        raise NotImplementedError

    def generator_state(self, gen):
        """The state of a generator from ``generator()`` as plain (JSON) data,
        or None if it cannot be exported."""
        bit_generator = getattr(gen, "bit_generator", None)
        state = getattr(bit_generator, "state", None)
        return state if isinstance(state, dict) else None

    def set_generator_state(self, gen, state):
        """Restore ``generator_state`` output; returns False if it cannot."""
        try:
            gen.bit_generator.state = state
        except (AttributeError, TypeError, ValueError):
            return False
        return True

    def permutation(self, gen, n):
        """A random permutation of ``range(n)`` as a device index array: a
        stable argsort of uniform keys, which every namespace supports. The
        keys are float64 whatever the compute dtype, so float32 and float64
        runs with one seed visit the rows in the same order; stability makes
        the order the same wherever the keys are, should two ever tie."""
        keys = self.uniform(gen, (n,), "float64")
        return self.xp.argsort(keys, stable=True)

    def epoch_order(self, seed, n):
        """The order in which one epoch visits the ``n`` rows: a permutation
        drawn from ``seed`` on the host (NumPy's generator, float64 keys) and
        uploaded as one index array. Drawn on the host, not the device, so that
        every backend and every dtype visits the rows in the same order for
        one seed: a GPU run without dropout follows the CPU run's trajectory.
        One upload of ``n`` indices per epoch; nothing per batch."""
        from . import get_backend  # the CPU backend; imported here, not at load

        host = get_backend("cpu", "float64")
        order = host.permutation(self.host_generator(seed), n)
        return self.asarray(order, dtype=self.xp.int64)  # no copy on the CPU

    def dropout_mask(self, gen, shape, keep_prob):
        """Inverted-dropout mask: ``1/keep_prob`` where a uniform draw is below
        ``keep_prob``, else 0. One draw, one comparison, one scale. The draw is
        float64 whatever the compute dtype, so float32 and float64 networks
        with one seed drop the same units."""
        keep = self.uniform(gen, shape, "float64") < keep_prob
        return self.xp.astype(keep, self.dtype) * (1.0 / keep_prob)

    # ------------------------------------------------------------ linear algebra
    def matmul(self, a, b, out=None):
        """``a @ b``, written into ``out`` when given."""
        if out is None:
            return a @ b
        out[...] = a @ b
        return out

    def sum_rows(self, g, out=None):
        """Column sums of ``g`` as a ``(1, n)`` row (the bias gradient)."""
        s = self.xp.sum(g, axis=0, keepdims=True)
        if out is None:
            return s
        out[...] = s
        return out

    def max_abs(self, x):
        """``max(|x|)`` as a 0-d array, without an ``|x|`` temporary; NaN if any
        element is NaN."""
        xp = self.xp
        return xp.maximum(-xp.min(x), xp.max(x))

    def stack(self, arrays):
        """0-d (or equal-shape) device arrays -> one array along a new first axis."""
        return self.xp.stack(arrays)

    def concat_rows(self, arrays):
        return self.xp.concat(arrays, axis=0)

    def take_rows(self, x, idx, out=None):
        """Rows ``idx`` of ``x`` (a batch), written into ``out`` when given."""
        rows = self.xp.take(x, idx, axis=0)
        if out is None:
            return rows
        out[...] = rows
        return out

    def bias_activation(self, x, bias, activation):
        """``activation(x + bias)`` for an activation operation; the reference
        runs the operation itself, which keeps what its backward pass needs."""
        return activation.forward(x + bias)

    def bias_activation_grad(self, activation, output_grad):
        """Gradient with respect to ``x + bias`` after ``bias_activation``."""
        return activation.backward(output_grad)

    # ------------------------------------------------------------- graphs
    def capture(self, step):
        """Record ``step()`` (one whole training step) for replay.

        Returns ``(replay, result)``: ``replay()`` runs the recorded work again
        and ``result`` is what ``step`` returned, refreshed by each replay.
        Raises ``CaptureUnavailable`` saying why when this backend cannot.
        """
        raise CaptureUnavailable(f"backend {self.name!r} has no graph capture")

    # ------------------------------------------------------------- losses
    def softmax(self, logits):
        """Row-wise softmax; subtracting the row maximum keeps ``exp`` finite."""
        xp = self.xp
        e = xp.exp(logits - xp.max(logits, axis=1, keepdims=True))
        return e / xp.sum(e, axis=1, keepdims=True)

    def softmax_cross_entropy(self, logits, target, eps):
        """Loss ``-sum(y * log(clip(softmax, eps, 1-eps))) / n`` as a 0-d device
        array, and its gradient ``(softmax - y) / n``, in one pass."""
        xp = self.xp
        n = logits.shape[0]
        p = self.softmax(logits)
        logp = xp.log(xp.clip(p, eps, 1.0 - eps))
        loss = xp.asarray(-xp.sum(target * logp) / n)  # 0-d array, not a NumPy scalar
        return loss, (p - target) / n

    def mean_squared_error(self, pred, target):
        """Loss ``sum((p - y)**2) / n`` and gradient ``2 (p - y) / n``."""
        n = pred.shape[0]
        diff = pred - target
        return self.xp.asarray(self.xp.sum(diff * diff) / n), diff * (2.0 / n)

    def argmax_rows(self, x):
        """Index of the largest entry of each row, as a device integer array."""
        return self.xp.argmax(x, axis=1)

    # ----------------------------------------------------------- optimisers
    def sgd_step(self, param, grad, lr):
        """``param -= lr * grad`` in place (``lr`` a number or a 0-d device array)."""
        param -= lr * grad

    def momentum_step(self, param, grad, velocity, lr, momentum):
        """``v = momentum * v + lr * g``; ``param -= v``, both in place."""
        velocity *= momentum
        velocity += lr * grad
        param -= velocity
