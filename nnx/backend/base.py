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
# the matrix products' precision: exact float32, TF32 tensor-core math, or
# half-precision operands (float32 accumulation and output)
PRECISIONS = ("float32", "tf32", "bfloat16", "float16")

# Coefficients of W. J. Cody's rational Chebyshev approximations to erf and
# erfc ("Rational Chebyshev approximations for the error function", Math.
# Comp. 23 (1969) 631-638), as in his SPECFUN routine CALERF (netlib.org/
# specfun/erf), which approximate to at least 18 significant digits:
# A/B for erf on |x| <= 0.46875, C/D for erfc on (0.46875, 4], P/Q for erfc beyond.
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
          3.20937758913846947e03, 1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
          2.84423683343917062e03)
_ERF_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
          2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
          2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_ERF_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
          1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
          3.43936767414372164e03, 1.23033935480374942e03)
_ERF_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
          1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_ERF_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
          6.05183413124413191e-2, 2.33520497626869185e-3)
_INV_SQRT_PI = 5.6418958354775628695e-1


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


def precision_name(precision, dtype) -> str:
    """A checked matrix-product precision for a network of ``dtype``."""
    if precision is None:
        return "float32"
    if precision not in PRECISIONS:
        raise InputValueError(f"precision={precision!r} is not supported; expected one of "
                              f"{PRECISIONS}")
    if precision != "float32" and dtype != "float32":
        raise InputValueError(f"precision={precision!r} applies to float32 networks, but "
                              f"dtype={dtype!r}: a {dtype} network's products are {dtype}")
    return precision


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
    precision : str
        The matrix products' precision (``PRECISIONS``): ``"float32"`` exact;
        ``"tf32"`` operands rounded to 10 mantissa bits (TF32 tensor cores);
        ``"bfloat16"``/``"float16"`` operands rounded to that format, products
        accumulated and returned in float32. Only for float32 backends. The
        GPU runs these on tensor cores; the CPU emulates them (rounds the
        operands, then multiplies in float32) to test their numerics.
    xp : module
        The array namespace (``numpy``, ``cupy`` or ``array_api_strict``).
    dtype : dtype object of ``xp``
        The compute dtype: every array the backend creates has it.
    """

    name = "base"
    # True where bias_activation runs as one fused kernel (Dense then uses it)
    fuses_bias_activation = False
    # True where every *_step update kernel skips the step itself when its
    # scale is negative (see update_unless_skipped)
    update_kernels_skip = False

    def __init__(self, xp, dtype="float32", device=None, precision="float32"):
        dtype = dtype_name(dtype)
        self.precision = precision_name(precision, dtype)
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
        return (get_backend, (self.name, self.dtype_name, self.precision))

    def __repr__(self):
        extra = "" if self.precision == "float32" else f" precision={self.precision}"
        return f"<nnx backend {self.name!r} dtype={self.dtype_name}{extra}>"

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
            return x if x.dtype == dtype else self.astype(x, dtype)
        return self.xp.asarray(_np.asarray(x), dtype=dtype, **self._on)

    def rows_contiguous(self, x):
        """``x`` with C-contiguous rows, for data whose rows are gathered into
        batches: a strided view or a Fortran-ordered array is copied once
        (NumPy's ``take`` would copy it whole at every batch); a sparse
        matrix, or one that is contiguous already, is returned as it is."""
        if getattr(getattr(x, "flags", None), "c_contiguous", True):
            return x
        convert = getattr(self.xp, "ascontiguousarray", None)
        return convert(x) if convert is not None else self.xp.asarray(x, copy=True)

    def astype(self, x, dtype):
        """``x`` converted to ``dtype`` (a copy). The array API's ``xp.astype``,
        or the array's own method where the namespace has none (CuPy before 14)."""
        convert = getattr(self.xp, "astype", None)
        return convert(x, dtype) if convert is not None else x.astype(dtype)

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

    def empty(self, shape, dtype=None):
        """An uninitialised array on this device, of the compute dtype unless ``dtype``."""
        return self.xp.empty(shape, dtype=self.dtype if dtype is None else dtype, **self._on)

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
        """Restore ``generator_state`` output; returns False if this kind of
        generator cannot be restored, or the state is of another kind (another
        bit generator's). A state of its own kind that it refuses raises
        (TypeError, ValueError...): the state is damaged, not the backend."""
        bit_generator = getattr(gen, "bit_generator", None)
        if bit_generator is None or not hasattr(type(bit_generator), "state"):
            return False
        if not isinstance(state, dict) or "bit_generator" not in state:
            raise InputValueError(
                f"a generator state names its bit generator; got {state!r:.80}")
        if state["bit_generator"] != type(bit_generator).__name__:
            return False
        bit_generator.state = state
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
        return self.astype(keep, self.dtype) * (1.0 / keep_prob)

    def apply_dropout(self, gen, x, keep_prob):
        """``(x * mask, mask)`` with a fresh ``dropout_mask`` of ``x``'s shape."""
        mask = self.dropout_mask(gen, tuple(x.shape), keep_prob)
        return x * mask, mask

    # ------------------------------------------------------------ linear algebra
    def matmul(self, a, b, out=None):
        """``a @ b``, written into ``out`` when given; in the backend's
        ``precision`` (the operands rounded first, unless float32)."""
        if self.precision != "float32":
            a, b = self.round_operand(a), self.round_operand(b)
        if out is None:
            return a @ b
        out[...] = a @ b
        return out

    def round_operand(self, x):
        """``x`` rounded (to nearest, ties to even) to the precision of this
        backend's matrix products and returned in float32: what tensor cores
        take as an operand. The reference works on the bits of float32
        (``"tf32"``: 10 mantissa bits, ``"bfloat16"``: 7) or through
        float16; NaN and infinities stay as they are, and float16 overflows
        to infinity beyond 65504, as the hardware's conversion does."""
        xp = self.xp
        if self.precision == "float32":
            return x
        if self.precision == "float16":
            with _np.errstate(over="ignore"):  # beyond 65504: infinity, as intended
                return self.astype(self.astype(x, xp.float16), xp.float32)
        drop = 13 if self.precision == "tf32" else 16  # mantissa bits cut off
        bits = _np.ascontiguousarray(self.to_numpy(x), dtype=_np.float32).view(_np.uint32)
        half = _np.uint32((1 << (drop - 1)) - 1)
        rounded = (bits + half + ((bits >> _np.uint32(drop)) & _np.uint32(1))) \
            & _np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
        special = (bits & _np.uint32(0x7F800000)) == _np.uint32(0x7F800000)  # inf, NaN
        out = _np.where(special, bits, rounded).view(_np.float32)
        return self.asarray(out, dtype=xp.float32)

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

    def gather_batch(self, x, order, position, stride, offset, out):
        """Rows ``order[position * stride + offset + i]`` of ``x`` into ``out``,
        for ``i`` below ``out``'s row count: the batch at ``position`` of an
        epoch's ``order``. ``position`` is a ``(1,)`` int64 device array (a
        batch counter), read on the device: one recorded step fetches every
        batch of the epoch, with no row index from the host per batch.
        Positions past the end of ``order`` wrap around to its start, so a
        step replayed too often reads rows of ``x``, never other memory."""
        return self.take_rows(x, self._fed_rows(order, position, stride, offset, out), out=out)

    def row_range(self, lo, hi):
        """The row numbers ``lo`` to ``hi - 1`` (int64, on the device)."""
        return self.xp.arange(lo, hi, dtype=self.xp.int64, **self._on)

    def _fed_rows(self, order, position, stride, offset, out):
        """The rows of ``order`` that ``gather_batch`` fetches into ``out``."""
        pos = (self.row_range(0, out.shape[0]) + (position * stride + offset)) % order.shape[0]
        return self.xp.take(order, pos, axis=0)

    def one_hot_rows(self, ids, idx, out):
        """The one-hot rows of the class ids ``ids[idx]`` written into ``out``
        (rows, classes): a batch of targets kept as class ids (1-D integers
        below ``out``'s column count), as ``take_rows`` takes one of rows."""
        xp = self.xp
        picked = xp.take(ids, idx, axis=0)
        classes = xp.arange(out.shape[1], dtype=picked.dtype, **self._on)
        out[...] = self.astype(picked[:, None] == classes, out.dtype)
        return out

    def gather_one_hot(self, ids, order, position, stride, offset, out):
        """``gather_batch`` of targets kept as class ids: the one-hot rows of
        ``ids[order[position * stride + offset + i]]`` into ``out``."""
        return self.one_hot_rows(ids, self._fed_rows(order, position, stride, offset, out), out)

    def advance(self, position, total, loss):
        """After a fed step: ``position += 1`` (the batch counter, ``(1,)``
        int64) and ``total += loss`` (0-d), on the device."""
        position += 1
        total += loss

    def bias_activation(self, x, bias, name, param=None):
        """``(out, saved)``: the built-in activation ``name`` (with its setting
        ``param``: alpha, GELU's approximate, or None) of ``x + bias``, and what
        ``bias_activation_grad`` needs from this pass. The reference runs nnx's
        activation of that name on the sum, so its results are exactly those of
        ``BiasAdd`` followed by the activation; it saves the sum and the output.
        ``x`` (a layer's fresh matrix product) may be overwritten: the CPU
        writes the result over it."""
        act = self._activation(name, param)
        z = x + bias
        out = act.forward(z)
        return out, (z, out)

    def bias_activation_grad(self, name, param, saved, output_grad):
        """Gradient with respect to ``x + bias``, from the ``saved`` of the
        ``bias_activation`` pass with the same ``name`` and ``param``."""
        act = self._activation(name, param)
        act.input_, act.output = saved
        return act.backward(output_grad)

    def _activation(self, name, param):
        from ..ops import make_activation  # imported here: ops imports the backend

        act = make_activation(name, param)
        act._bind(self)
        return act

    # ------------------------------------------------------ elementwise math
    def erf(self, x):
        """The error function, elementwise, in the dtype of ``x``.

        W. J. Cody's rational Chebyshev approximations on three intervals of
        ``|x|`` (erf itself up to 0.46875, erfc beyond), evaluated for every
        element with its argument clipped into each interval (so nothing
        overflows), then the right one picked. Within a few float64 roundings
        of the true value; NaN stays NaN."""
        xp = self.xp
        y = xp.abs(x)
        # |x| <= 0.46875: erf(x) = x R(x**2)
        s = xp.clip(x, -0.46875, 0.46875)
        t = s * s
        num, den = _ERF_A[4] * t, t
        for a, b in zip(_ERF_A[:3], _ERF_B[:3]):
            num, den = (num + a) * t, (den + b) * t
        small = s * (num + _ERF_A[3]) / (den + _ERF_B[3])
        # 0.46875 < |x| <= 4: erfc(|x|) = exp(-x**2) R(|x|)
        m = xp.clip(y, 0.46875, 4.0)
        num, den = _ERF_C[8] * m, m
        for c, d in zip(_ERF_C[:7], _ERF_D[:7]):
            num, den = (num + c) * m, (den + d) * m
        middle = (num + _ERF_C[7]) / (den + _ERF_D[7])
        # |x| > 4: erfc(|x|) = exp(-x**2) / |x| (1/sqrt(pi) + R(1/x**2) / x**2);
        # beyond 6, erf(x) rounds to +-1 even in float64: clipping changes nothing
        g = xp.clip(y, 4.0, 6.0)
        t = 1.0 / (g * g)
        num, den = _ERF_P[5] * t, t
        for p, q in zip(_ERF_P[:4], _ERF_Q[:4]):
            num, den = (num + p) * t, (den + q) * t
        large = (_INV_SQRT_PI - t * (num + _ERF_P[4]) / (den + _ERF_Q[4])) / g
        # exp(-w**2) as exp(-u**2) exp(-(w - u)(w + u)) with u = w cut to 1/16ths:
        # u**2 is exact, so the rounding of w**2 never reaches the exponent
        inner = y <= 4.0
        w = xp.where(inner, m, g)
        u = xp.trunc(w * 16.0) / 16.0
        erfc = xp.exp(-(u * u)) * xp.exp(-((w - u) * (w + u))) * xp.where(inner, middle, large)
        outer = (0.5 - erfc) + 0.5
        return xp.where(y <= 0.46875, small, xp.where(x < 0, -outer, outer))

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

    def sigmoid(self, x):
        """``1 / (1 + exp(-x))`` through ``exp(-|x|)``: no overflow, and small
        probabilities keep their relative precision."""
        xp = self.xp
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def sigmoid_cross_entropy(self, logits, target):
        """Loss ``sum(max(z, 0) - z y + log1p(exp(-|z|))) / n`` (the binary
        cross-entropy of ``sigmoid(z)``, stable for any ``z``) as a 0-d device
        array, and its gradient ``(sigmoid(z) - y) / n``."""
        xp = self.xp
        n = logits.shape[0]
        per = xp.maximum(logits, 0.0) - logits * target + xp.log1p(xp.exp(-xp.abs(logits)))
        return xp.asarray(xp.sum(per) / n), (self.sigmoid(logits) - target) / n

    def mean_squared_error(self, pred, target):
        """Loss ``sum((p - y)**2) / n`` and gradient ``2 (p - y) / n``."""
        n = pred.shape[0]
        diff = pred - target
        return self.xp.asarray(self.xp.sum(diff * diff) / n), diff * (2.0 / n)

    def argmax_rows(self, x):
        """Index of the largest entry of each row, as a device integer array."""
        return self.xp.argmax(x, axis=1)

    # ----------------------------------------------------------- optimisers
    # Each update takes the rate ``lr`` (a 0-d device array, or a number) and,
    # where the formula needs it, the step count ``t`` (a 0-d int64 device
    # array, counted from 1); ``scale`` (a 0-d array from ``clip_scale``, or
    # None) multiplies the gradient first, ``weight_decay`` then adds
    # ``weight_decay * param`` to it. All updates are in place.
    def zeros_int(self, shape):
        """An int64 array of zeros on this device (step counters)."""
        return self.xp.zeros(shape, dtype=self.xp.int64, **self._on)

    def tick(self, t, lr=None, rates=None, s=None):
        """One step's bookkeeping: ``t += 1`` and, given an epoch's table of
        ``rates``, ``lr = rates[s]`` (the last entry once ``s`` runs past it),
        ``s += 1``. Everything stays on the device."""
        xp = self.xp
        t += 1
        if rates is not None:
            i = xp.minimum(s, rates.shape[0] - 1)
            lr[...] = xp.reshape(xp.take(rates, xp.reshape(i, (1,)), axis=0), ())
            s += 1

    def axpy(self, a, x, y):
        """``y += a * x`` in place (``a`` a number)."""
        y += a * x

    # Dynamic loss scaling (float16 products): the loss's gradient is
    # multiplied by ``loss_scale`` before the backward pass; the update then
    # multiplies the gradient by ``unscale_factor``, which is negative when
    # the scaled gradient overflowed: that step is skipped.
    def unscale_factor(self, grad, loss_scale, max_norm=None):
        """``1 / loss_scale`` (times the clip factor of the unscaled gradient,
        given ``max_norm``) as a 0-d device array, or -1 if any element of
        ``grad`` is NaN or infinite."""
        xp = self.xp
        inv = 1.0 / loss_scale
        with _np.errstate(invalid="ignore"):  # inf - inf: the NaN that says so
            bad = xp.sum(grad - grad)  # 0, or NaN when an element is not finite
        factor = inv
        if max_norm is not None:
            norm = xp.sqrt(xp.sum(grad * grad)) * inv
            factor = inv * xp.minimum(xp.asarray(1.0, dtype=self.dtype, **self._on),
                                      max_norm / (norm + 1e-6))
        return xp.where(bad == 0, factor, xp.asarray(-1.0, dtype=self.dtype, **self._on))

    def update_unless_skipped(self, scale, arrays, update):
        """Run ``update()``, which writes ``arrays`` in place, except when the
        0-d ``scale`` is negative (a skipped step): then every array keeps
        its values. The reference keeps copies and puts them back on the
        device; the GPU's update kernels skip by themselves."""
        xp = self.xp
        old = [self.copy(a) for a in arrays]
        update()
        skip = scale < 0
        for a, o in zip(arrays, old):
            a[...] = xp.where(skip, o, a)

    def uncount_skipped(self, t, scale):
        """``t -= 1`` when the step of 0-d ``scale`` was skipped (negative): a
        skipped step does not count for the bias corrections."""
        t -= self.astype(scale < 0, self.xp.int64)

    def update_loss_scale(self, loss_scale, tracker, scale, growth, backoff, interval):
        """After a step with unscale factor ``scale``: a skipped step
        multiplies ``loss_scale`` by ``backoff`` and zeroes ``tracker``; else
        ``tracker`` counts the step, and at ``interval`` steps in a row
        ``loss_scale`` grows by ``growth`` (if that stays finite) and the count
        starts again. PyTorch's GradScaler rule; in place, on the device."""
        xp = self.xp
        skipped = scale < 0
        counted = tracker + 1
        with _np.errstate(over="ignore"):  # a scale grown past float32's range is not taken
            grown = loss_scale * growth
        grow = xp.logical_and(xp.logical_not(skipped),
                              xp.logical_and(counted >= interval, xp.isfinite(grown)))
        restart = xp.logical_or(skipped, counted >= interval)
        loss_scale[...] = xp.where(skipped, loss_scale * backoff,
                                   xp.where(grow, grown, loss_scale))
        tracker[...] = xp.where(restart, xp.zeros_like(tracker), counted)

    def sum_squares(self, x):
        """The sum of the squares of ``x``'s entries, as a 0-d device array."""
        return self.xp.sum(x * x)

    def clip_scale(self, grad, max_norm):
        """``min(1, max_norm / (||grad|| + 1e-6))`` as a 0-d device array: the
        factor that clips the gradient to a global norm of ``max_norm``."""
        xp = self.xp
        norm = xp.sqrt(xp.sum(grad * grad))
        return xp.minimum(xp.asarray(1.0, dtype=self.dtype, **self._on),
                          max_norm / (norm + 1e-6))

    def _decayed(self, grad, param, weight_decay, scale):
        """The gradient after clipping and L2 weight decay (a new array only if
        either applies)."""
        g = grad if scale is None else grad * scale
        return g + weight_decay * param if weight_decay else g

    def sgd_step(self, param, grad, lr, weight_decay=0.0, scale=None):
        """``param -= lr * g``."""
        param -= lr * self._decayed(grad, param, weight_decay, scale)

    def momentum_step(self, param, grad, velocity, lr, momentum, nesterov=False,
                      weight_decay=0.0, scale=None):
        """``v = momentum * v + lr * g``; ``param -= v``, or with ``nesterov``
        ``param -= momentum * v + lr * g``."""
        g = self._decayed(grad, param, weight_decay, scale)
        velocity *= momentum
        velocity += lr * g
        if nesterov:
            param -= momentum * velocity + lr * g
        else:
            param -= velocity

    def _count(self, t):
        return self.astype(t, self.dtype)  # the step count in the compute dtype

    def adam_step(self, param, grad, m, v, lr, t, beta1, beta2, eps, weight_decay,
                  decoupled=False, scale=None, eps_bias_corrected=False):
        """Adam, or AdamW with ``decoupled`` (see ``nnx.optim.Adam`` for the
        formulas). ``eps_bias_corrected`` divides ``eps`` by ``sqrt(1 -
        beta2**t)`` too, which is scikit-learn's Adam in this form."""
        xp = self.xp
        g = self._decayed(grad, param, 0.0 if decoupled else weight_decay, scale)
        if decoupled and weight_decay:
            param *= 1.0 - lr * weight_decay
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        # the bias corrections in float64, rounded once to the compute dtype:
        # float32's beta2 = 0.999 is 0.99900001, and 1 - beta2**t would be
        # off by 1e-5 relative (the CPU's override computes them in double too)
        tf = self.astype(t, xp.float64)
        bc1 = self.astype(1.0 - beta1 ** tf, self.dtype)
        root_bc2 = self.astype(xp.sqrt(1.0 - beta2 ** tf), self.dtype)
        if eps_bias_corrected:
            eps = eps / root_bc2
        param -= (lr / bc1) * m / (xp.sqrt(v) / root_bc2 + eps)

    def rmsprop_step(self, param, grad, square_avg, lr, alpha, eps, weight_decay, momentum,
                     momentum_buffer=None, grad_avg=None, scale=None):
        """RMSprop, centred when ``grad_avg`` is given, with momentum when
        ``momentum_buffer`` is (see ``nnx.optim.RMSprop``)."""
        xp = self.xp
        g = self._decayed(grad, param, weight_decay, scale)
        square_avg *= alpha
        square_avg += (1.0 - alpha) * (g * g)
        if grad_avg is not None:
            grad_avg *= alpha
            grad_avg += (1.0 - alpha) * g
            # the variance estimate; rounding can take it just below 0 (a NaN from sqrt)
            avg = xp.sqrt(xp.maximum(square_avg - grad_avg * grad_avg, 0.0)) + eps
        else:
            avg = xp.sqrt(square_avg) + eps
        if momentum_buffer is not None:
            momentum_buffer *= momentum
            momentum_buffer += g / avg
            param -= lr * momentum_buffer
        else:
            param -= lr * (g / avg)

    def adagrad_step(self, param, grad, sum_sq, lr, t, lr_decay, eps, weight_decay,
                     scale=None):
        """Adagrad (see ``nnx.optim.Adagrad``)."""
        g = self._decayed(grad, param, weight_decay, scale)
        rate = lr / (1.0 + (self._count(t) - 1.0) * lr_decay)
        sum_sq += g * g
        param -= rate * g / (self.xp.sqrt(sum_sq) + eps)
