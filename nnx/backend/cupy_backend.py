"""The GPU backend: CuPy arrays on the current CUDA device.

This is the only module in nnx that imports CuPy, and it is imported only when
a user asks for ``backend="gpu"``. The overrides below keep work on the device
(no implicit host copies) and fuse elementwise chains into single kernels;
each computes exactly what the reference method in ``base.py`` computes.
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

import numpy as np

from .base import Backend, BackendUnavailableError
from .cuda_graphs import Graphs

log = logging.getLogger("nnx")

_INSTALL = (
    "install CuPy for your CUDA version: pip install 'nnx-dl[cuda12]' "
    "(CUDA 12) or pip install 'nnx-dl[cuda13]' (CUDA 13)"
)


def _import_cupy():
    """Import CuPy and check that it sees a CUDA device, or say what is missing."""
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend 'gpu' needs CuPy, which is not installed ({exc}); {_INSTALL}"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError, or a missing driver library
        raise BackendUnavailableError(
            f"backend 'gpu': CuPy is installed but cannot reach a CUDA device ({exc})"
        ) from exc
    if count == 0:
        raise BackendUnavailableError("backend 'gpu': CuPy found no CUDA device")
    return cupy


def current_device():
    """The number of the current CUDA device (``get_backend`` keeps one GPU
    backend per device, whose cuBLAS handle and workspace live there)."""
    return int(_import_cupy().cuda.runtime.getDevice())


# up to this many classes, softmax cross-entropy runs one thread per row
_ROW_CLASSES = 256


class CupyBackend(Backend):
    name = "gpu"
    fuses_bias_activation = True
    update_kernels_skip = True

    def __init__(self, dtype="float32", precision="float32"):
        cupy = _import_cupy()
        super().__init__(cupy, dtype, precision=precision)
        self.device = current_device()  # its cuBLAS handle and workspace are made there
        self._kernels = _Kernels(cupy)
        self._optim = _OptimizerKernels(cupy)
        self._graphs = Graphs(self)  # CUDA graphs, and the cuBLAS handle of our own GEMMs
        if self.precision == "float32" and self.dtype_name == "float32" \
                and os.environ.get("CUPY_TF32", "0") not in ("", "0"):
            log.warning("nnx: CUPY_TF32 is set, so CuPy runs float32 matrix products outside "
                        "a recorded step on TF32 tensor cores: this network's products are "
                        "not exact float32; use precision='tf32' to ask for TF32, or unset "
                        "CUPY_TF32")
        if self.precision != "float32":  # said now, not at the first product
            ok = self._graphs.check(recorded=False)
            if ok is not True:
                raise BackendUnavailableError(f"precision={self.precision!r}: {ok}")

    def owns(self, x) -> bool:
        return isinstance(x, self.xp.ndarray)

    def asarray(self, x, dtype=None):
        dtype = self.dtype if dtype is None else dtype
        if self.owns(x):
            return x if x.dtype == dtype else x.astype(dtype)
        return self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, x):
        return self.xp.asnumpy(x)

    def synchronize(self):
        self.xp.cuda.get_current_stream().synchronize()

    def copy(self, x):
        return x.copy()

    def generator(self, seed):
        return self.xp.random.default_rng(seed)

    def uniform(self, gen, shape, dtype=None):
        return gen.random(shape, dtype=dtype or self.dtype)

    def generator_state(self, gen):
        return None  # the XORWOW states live on the device; a resumed run reseeds

    def set_generator_state(self, gen, state):
        return False

    def permutation(self, gen, n):
        # CuPy's argsort is a radix sort, stable by construction
        return self.xp.argsort(self.uniform(gen, (n,), "float64"))

    def dropout_mask(self, gen, shape, keep_prob):
        # the draw and the comparison in float64 whatever the compute dtype, as
        # on the CPU, so float32 and float64 runs with one seed drop the same units
        u = self.uniform(gen, shape, "float64")
        return self._kernels.dropout(u, float(keep_prob), self.dtype(1.0 / keep_prob),
                                     self.empty(shape))

    def apply_dropout(self, gen, x, keep_prob):
        # the draw, then the mask and the product in one kernel (the mask drawn
        # and compared in float64, as dropout_mask does)
        u = self.uniform(gen, tuple(x.shape), "float64")
        T = x.dtype.type
        mask, out = self._kernels.dropout_apply(x, u, float(keep_prob), T(1.0 / keep_prob))
        return out, mask

    def bias_activation(self, x, bias, name, param=None):
        kernel = self._kernels.act_forward.get(name)
        if kernel is None:  # an activation without a fused kernel
            return super().bias_activation(x, bias, name, param)
        out = kernel(x, bias, x.dtype.type(_kernel_number(param)))
        if FUSED_ACTIVATIONS[name].saves == "y":
            return out, out  # its gradient is a function of its output
        return out  # (y, z): the output, and the pre-activation its gradient needs

    def bias_activation_grad(self, name, param, saved, output_grad):
        kernel = self._kernels.act_backward.get(name)
        if kernel is None:
            return super().bias_activation_grad(name, param, saved, output_grad)
        return kernel(saved, output_grad, output_grad.dtype.type(_kernel_number(param)))

    def erf(self, x):
        import cupyx.scipy.special  # one kernel, where the reference launches dozens

        return cupyx.scipy.special.erf(x)

    def matmul(self, a, b, out=None):
        # reduced precisions, and every product inside a capture: our own cuBLAS handle
        if self.precision != "float32" or self._graphs.capturing is not None:
            return self._graphs.gemm(a, b, out)
        return self.xp.matmul(a, b, out=out)

    def round_operand(self, x):
        if self.precision == "float32":
            return x
        if self.precision == "tf32":  # what TF32 tensor cores read of x, as float32
            return self._kernels.round_tf32(x)
        half = self._half_operand(x)
        return half.astype(self.xp.float32) if self.precision == "float16" else \
            self._kernels.bf16_to_float(half)

    def _half_operand(self, x):
        """``x`` as the half-precision operand cuBLAS reads: float16, or
        bfloat16's bits in uint16 (CuPy has no bfloat16 type), same layout."""
        if self.precision == "float16":
            return x.astype(self.xp.float16)
        out = self.xp.empty_like(x, dtype=self.xp.uint16)
        return self._kernels.float_to_bf16(x, out)

    def sum_rows(self, g, out=None):
        return self.xp.sum(g, axis=0, keepdims=True, out=out)

    def concat_rows(self, arrays):
        return self.xp.concatenate(arrays, axis=0)

    def softmax_cross_entropy(self, logits, target, eps):
        xp = self.xp
        n, classes = int(logits.shape[0]), int(logits.shape[1])
        t = logits.dtype.type
        if target.dtype != logits.dtype:  # the kernels take one type T (CuPy checks)
            target = target.astype(logits.dtype)
        if classes <= _ROW_CLASSES and logits.flags.c_contiguous and target.flags.c_contiguous:
            # two kernels (the rows, then their sum) where the general path takes eight
            grad = xp.empty_like(logits)
            terms = xp.empty((n,), dtype=logits.dtype)
            self._kernels.softmax_ce_rows(logits.reshape(-1), target.reshape(-1),
                                          np.int64(classes), t(eps), t(1.0 / n), terms,
                                          grad.reshape(-1))
            return xp.sum(terms), grad
        e = xp.exp(logits - xp.max(logits, axis=1, keepdims=True))
        s = xp.sum(e, axis=1, keepdims=True)
        terms, grad = self._kernels.softmax_ce(e, s, target, t(eps), t(1.0 / n))
        return -xp.sum(terms) / n, grad

    def capture(self, step):
        # see cuda_graphs.Graphs.capture: a private stream and memory pool, and
        # matrix products as cuBLAS calls of our own handle
        return self._graphs.capture(step)

    def _scalar(self, value, like):
        # a 0-d device array stays one (a captured step reads it); numbers become T
        return value if isinstance(value, self.xp.ndarray) else like.dtype.type(value)

    def _update_args(self, param, lr, weight_decay, scale):
        # the rate and the clip factor stay 0-d device arrays (a recorded step
        # reads them); numbers become the compute dtype
        t = param.dtype.type
        one = t(1) if scale is None else scale
        return self._scalar(lr, param), t(weight_decay), one

    def sgd_step(self, param, grad, lr, weight_decay=0.0, scale=None):
        lr, wd, scale = self._update_args(param, lr, weight_decay, scale)
        self._optim.sgd(grad, lr, wd, scale, param)

    def momentum_step(self, param, grad, velocity, lr, momentum, nesterov=False,
                      weight_decay=0.0, scale=None):
        lr, wd, scale = self._update_args(param, lr, weight_decay, scale)
        self._optim.momentum(grad, lr, self._scalar(momentum, param), wd, scale,
                             np.int32(nesterov), param, velocity)

    def tick(self, t, lr=None, rates=None, s=None):
        if rates is None:
            t += 1
        else:
            self._optim.tick(rates, np.int64(rates.shape[0]), lr, s, t)

    def sum_squares(self, x):
        # a reduction kernel: cupy.vdot goes through cuBLAS, which a graph
        # capture refuses (the scikit-learn estimators' recorded step takes it)
        return self._optim.sum_squares(x.reshape(-1))

    def clip_scale(self, grad, max_norm):
        squares = self._optim.sum_squares(grad)
        return self._optim.clip_scale(squares, grad.dtype.type(max_norm))

    def unscale_factor(self, grad, loss_scale, max_norm=None):
        o = self._optim
        bad = o.nonfinite(grad)
        squares = o.sum_squares(grad) if max_norm is not None else bad
        T = grad.dtype.type
        return o.unscale(bad, squares, loss_scale, T(max_norm or 0.0),
                         np.int32(max_norm is not None))

    def update_loss_scale(self, loss_scale, tracker, scale, growth, backoff, interval):
        T = loss_scale.dtype.type
        self._optim.loss_scale(scale, T(growth), T(backoff), np.int64(interval), loss_scale,
                               tracker)

    def adam_step(self, param, grad, m, v, lr, t, beta1, beta2, eps, weight_decay,
                  decoupled=False, scale=None, eps_bias_corrected=False):
        lr, wd, scale = self._update_args(param, lr, weight_decay, scale)
        T = param.dtype.type
        # 1 - beta on the host in double, rounded once, as the reference computes it
        self._optim.adam(grad, lr, t, T(beta1), T(beta2), T(1.0 - beta1), T(1.0 - beta2),
                         T(eps), wd, np.int32(decoupled), scale, np.int32(eps_bias_corrected),
                         param, m, v)

    def rmsprop_step(self, param, grad, square_avg, lr, alpha, eps, weight_decay, momentum,
                     momentum_buffer=None, grad_avg=None, scale=None):
        lr, wd, scale = self._update_args(param, lr, weight_decay, scale)
        T = param.dtype.type
        kernel = self._optim.rmsprop(momentum_buffer is not None, grad_avg is not None)
        extra = [b for b in (momentum_buffer, grad_avg) if b is not None]
        kernel(grad, lr, T(alpha), T(1.0 - alpha), T(eps), wd, T(momentum), scale, param,
               square_avg, *extra)

    def adagrad_step(self, param, grad, sum_sq, lr, t, lr_decay, eps, weight_decay,
                     scale=None):
        lr, wd, scale = self._update_args(param, lr, weight_decay, scale)
        T = param.dtype.type
        self._optim.adagrad(grad, lr, t, T(lr_decay), T(eps), wd, scale, param, sum_sq)

    def take_rows(self, x, idx, out=None):
        return self.xp.take(x, idx, axis=0, out=out)

    def advance(self, position, total, loss):
        # one kernel for both; the 0-d total as a (1,) view, the counter's
        # shape: CuPy wants every output in the arguments' broadcast shape
        # a loss of one's own may come in another dtype: the reference's += casts
        self._kernels.advance(loss.astype(total.dtype, copy=False), position,
                              total.reshape(1))

    def gather_batch(self, x, order, position, stride, offset, out):
        # one kernel: the row index is read from the device counter in place
        if not (x.flags.c_contiguous and out.flags.c_contiguous and x.ndim == 2):
            return super().gather_batch(x, order, position, stride, offset, out)
        width = int(x.shape[1])
        self._kernels.gather(x.reshape(-1), order, position, np.int64(stride),
                             np.int64(offset), np.int64(width), np.int64(order.shape[0]),
                             out.reshape(-1))
        return out

    def one_hot_rows(self, ids, idx, out):
        if not (out.flags.c_contiguous and ids.dtype == self.xp.int32):
            return super().one_hot_rows(ids, idx, out)
        self._kernels.one_hot(ids, idx.astype(self.xp.int64, copy=False),
                              np.int64(out.shape[1]), out.reshape(-1))
        return out

    def gather_one_hot(self, ids, order, position, stride, offset, out):
        # one kernel, as gather_batch: each element finds its row's class id
        if not (out.flags.c_contiguous and ids.dtype == self.xp.int32):
            return super().gather_one_hot(ids, order, position, stride, offset, out)
        self._kernels.gather_one_hot(ids, order, position, np.int64(stride), np.int64(offset),
                                     np.int64(out.shape[1]), np.int64(order.shape[0]),
                                     out.reshape(-1))
        return out


class _Fused(NamedTuple):
    """One activation's fused kernels, as CUDA statements in the kernels' type
    ``T``: ``forward`` sets ``y`` from the pre-activation ``z = x + b``;
    ``backward`` sets ``gz`` (the gradient with respect to ``z``) from the
    output gradient ``g`` and what the forward pass saved: ``saves`` is ``"y"``
    (the output) or ``"z"`` (the pre-activation). ``p`` is the activation's
    setting as a number (see ``_kernel_number``). Comparisons are written so
    that NaN passes through as in NumPy (CUDA's fmax and fmin would drop it)."""

    saves: str
    forward: str
    backward: str


# One entry per name in ops.ACTIVATIONS (a test keeps the two in step), each
# computing what the operation of that name computes on the CPU.
FUSED_ACTIVATIONS = {
    "linear": _Fused("y", "y = z", "gz = g"),
    "sigmoid": _Fused(
        "y",
        "T e = exp(-fabs(z)); y = z >= (T)0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e)",
        "gz = g * y * ((T)1 - y)"),
    "tanh": _Fused("y", "y = tanh(z)", "gz = g * ((T)1 - y * y)"),
    "relu": _Fused("y", "y = z < (T)0 ? (T)0 : z", "gz = y > (T)0 ? g : (T)0"),
    "leaky_relu": _Fused("y", "y = z > (T)0 ? z : p * z", "gz = y > (T)0 ? g : p * g"),
    "relu6": _Fused("y", "y = z < (T)0 ? (T)0 : (z > (T)6 ? (T)6 : z)",
                    "gz = (y > (T)0 && y < (T)6) ? g : (T)0"),
    # p = 1: the tanh approximation (the input clipped as on the CPU, which keeps
    # c**3 finite and 0 * inf out of the gradient); p = 0: x Phi(x) by erf
    "gelu": _Fused(
        "z",
        """
        if (p != (T)0) {
            T c = z < (T)-10 ? (T)-10 : (z > (T)10 ? (T)10 : z);
            T t = tanh((T)0.7978845608028654 * (c + (T)0.044715 * (c * c * c)));
            y = (T)0.5 * z * ((T)1 + t);
        } else {
            y = (T)0.5 * z * ((T)1 + erf(z * (T)0.7071067811865476));
        }
        """,
        """
        if (p != (T)0) {
            T c = z < (T)-10 ? (T)-10 : (z > (T)10 ? (T)10 : z);
            T t = tanh((T)0.7978845608028654 * (c + (T)0.044715 * (c * c * c)));
            T du = (T)0.7978845608028654 * ((T)1 + (T)0.134145 * (c * c));
            gz = g * ((T)0.5 * ((T)1 + t) + (T)0.5 * z * ((T)1 - t * t) * du);
        } else {
            T c = z < (T)-40 ? (T)-40 : (z > (T)40 ? (T)40 : z);
            T pdf = (T)0.3989422804014327 * exp((T)-0.5 * (c * c));
            gz = g * ((T)0.5 * ((T)1 + erf(z * (T)0.7071067811865476)) + z * pdf);
        }
        """),
    "silu": _Fused(
        "z",
        "T e = exp(-fabs(z)); T r = (T)1 / ((T)1 + e); y = z * (z >= (T)0 ? r : e * r)",
        """
        T e = exp(-fabs(z)); T r = (T)1 / ((T)1 + e);
        T s = z >= (T)0 ? r : e * r;
        T one_minus_s = z >= (T)0 ? e * r : r;
        gz = g * s * ((T)1 + z * one_minus_s);
        """),
    # only the branch taken is evaluated: expm1 and exp see z <= 0 alone
    "elu": _Fused("z", "y = z > (T)0 ? z : p * expm1(z)",
                  "gz = z > (T)0 ? g : g * (p * exp(z))"),
}


def _kernel_number(param):
    """An activation's setting as the number ``p`` the fused kernels take:
    alpha itself; for GELU's ``approximate``, 1 for "tanh" and 0 for "none";
    0 where the activation has no setting."""
    if param is None:
        return 0.0
    if isinstance(param, str):
        return 1.0 if param == "tanh" else 0.0
    return float(param)


# the row k of the epoch's order that element i of a fed batch reads: the
# parameters and the first statements of the kernels that gather a batch
_FED = ("raw int64 order, raw int64 position, int64 stride, int64 offset, int64 width, "
        "int64 norder")
_FED_ROW = """
            long long r = i / width;
            long long k = (position[0] * stride + offset + r) % norder;
            """


class _Kernels:
    """Fused elementwise kernels, compiled by CuPy on first use."""

    def __init__(self, cupy):
        ek = cupy.ElementwiseKernel
        self.dropout = ek(
            "float64 u, float64 keep, T scale", "T mask",
            "mask = u < keep ? scale : (T)0",
            "nnx_dropout_mask",
        )
        # out[r, c] = x[order[(position * stride + offset + r) % norder], c],
        # over flat (C-ordered) views of x and out
        self.gather = ek("raw T x, " + _FED, "T out",
                         _FED_ROW + "out = x[order[k] * width + (i - r * width)];",
                         "nnx_gather_batch")
        # out[r, c] = 1 where ids[idx[r]] == c, else 0 (flat views of out)
        self.one_hot = ek(
            "raw int32 ids, raw int64 idx, int64 width", "T out",
            """
            long long r = i / width;
            out = ids[idx[r]] == (int)(i - r * width) ? (T)1 : (T)0;
            """,
            "nnx_one_hot_rows",
        )
        # the same for the row of the epoch's order at the device counter
        self.gather_one_hot = ek(
            "raw int32 ids, " + _FED, "T out",
            _FED_ROW + "out = ids[order[k]] == (int)(i - r * width) ? (T)1 : (T)0;",
            "nnx_gather_one_hot")
        self.dropout_apply = ek(
            "T x, float64 u, float64 keep, T scale", "T mask, T y",
            "mask = u < keep ? scale : (T)0; y = x * mask",
            "nnx_dropout_apply",
        )
        self.advance = ek("T loss", "int64 position, T total",
                          "position = position + 1; total = total + loss", "nnx_advance")
        # round to nearest even on the bits of float32, NaN and infinities kept
        self.float_to_bf16 = ek(
            "float32 x", "uint16 h",
            """
            unsigned int u = __float_as_uint(x);
            if ((u & 0x7F800000u) == 0x7F800000u) {  // inf stays inf, NaN stays NaN
                h = (unsigned short)((u >> 16) | ((u & 0xFFFFu) ? 0x40u : 0u));
            } else {
                h = (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
            }
            """,
            "nnx_float_to_bf16",
        )
        self.bf16_to_float = ek("uint16 h", "float32 x",
                                "x = __uint_as_float(((unsigned int)h) << 16)",
                                "nnx_bf16_to_float")
        self.round_tf32 = ek(
            "float32 x", "float32 r",
            """
            unsigned int u = __float_as_uint(x);
            r = (u & 0x7F800000u) == 0x7F800000u ? x
                : __uint_as_float((u + 0xFFFu + ((u >> 13) & 1u)) & 0xFFFFE000u);
            """,
            "nnx_round_tf32",
        )
        # one thread per row (few classes): the row's maximum, the sum of
        # exponentials, the gradient (softmax - y) / n of each class, and the
        # row's share -sum(y log clip(p)) / n of the loss, in one pass; NaN
        # and infinities propagate as in the reference
        self.softmax_ce_rows = ek(
            "raw T z, raw T y, int64 classes, T eps, T inv_n", "T term, raw T grad",
            """
            const long long row = i * classes;
            T m = z[row];
            for (long long c = 1; c < classes; c++) {
                T v = z[row + c];
                if (v > m || v != v) m = v;
            }
            T s = (T)0;
            for (long long c = 0; c < classes; c++) s += exp(z[row + c] - m);
            T acc = (T)0;
            for (long long c = 0; c < classes; c++) {
                T p = exp(z[row + c] - m) / s;
                T pc = p < eps ? eps : (p > (T)1 - eps ? (T)1 - eps : p);
                acc += y[row + c] * log(pc);
                grad[row + c] = (p - y[row + c]) * inv_n;
            }
            term = -acc * inv_n;
            """,
            "nnx_softmax_ce_rows",
        )
        # per element: the clipped log-probability weighted by the target (summed
        # afterwards), and the gradient (softmax - y) / n
        self.softmax_ce = ek(
            "T e, T s, T y, T eps, T inv_n", "T term, T grad",
            """
            T p = e / s;
            T pc = p < eps ? eps : (p > (T)1 - eps ? (T)1 - eps : p);  // NaN stays NaN
            term = y * log(pc);
            grad = (p - y) * inv_n;
            """,
            "nnx_softmax_ce",
        )
        # bias + activation: the forward kernel computes z = x + b and y from z,
        # and also writes z out where the backward kernel needs it
        self.act_forward, self.act_backward = {}, {}
        for name, k in FUSED_ACTIVATIONS.items():
            if k.saves == "y":
                self.act_forward[name] = ek("T x, T b, T p", "T y",
                                            "T z = x + b; " + k.forward, f"nnx_bias_{name}")
            else:  # the output z_ of the forward kernel is the input z of the backward one
                self.act_forward[name] = ek("T x, T b, T p", "T y, T z_",
                                            "T z = x + b; z_ = z; " + k.forward,
                                            f"nnx_bias_{name}")
            self.act_backward[name] = ek(f"T {k.saves}, T g, T p", "T gz", k.backward,
                                         f"nnx_{name}_grad")


class _OptimizerKernels:
    """One fused elementwise kernel per optimiser update, and the small
    kernels around it (the step count, the per-step rate, the clip factor).
    Each update computes the formula of the reference method in ``base.py``
    (up to the last bit where the compiler contracts a product and a sum into
    one fused multiply-add):
    ``gg`` is the gradient after clipping (``scale``) and L2 decay (``wd``)."""

    _GRAD = "T gg = g * scale; if (wd != (T)0) gg += wd * p;\n"

    def __init__(self, cupy):
        self._ek = cupy.ElementwiseKernel

        def ek(params, outs, body, name):
            # a negative scale (dynamic loss scaling found an overflow) skips
            # the step: nothing is written. NaN is not negative: it propagates
            return self._ek(params, outs, "if (!(scale < (T)0)) {\n" + body + "\n}", name)
        self._update_kernel = ek
        grad = self._GRAD
        self.sgd = ek("T g, T lr, T wd, T scale", "T p", grad + "p -= lr * gg;", "nnx_sgd")
        self.momentum = ek(
            "T g, T lr, T mom, T wd, T scale, int32 nesterov", "T p, T v",
            grad + "v = mom * v + lr * gg; p -= nesterov ? mom * v + lr * gg : v;",
            "nnx_momentum")
        self.adam = ek(
            "T g, T lr, int64 t, T b1, T b2, T omb1, T omb2, T eps, T wd, int32 decoupled, "
            "T scale, int32 ebc",
            "T p, T m, T v",
            """
            T gg = g * scale;
            if (wd != (T)0) { if (decoupled) p *= (T)1 - lr * wd; else gg += wd * p; }
            m = b1 * m + omb1 * gg;
            v = b2 * v + omb2 * (gg * gg);
            // 1 - beta^t as -expm1(t log1p(-(1 - beta))), from 1 - beta rounded
            // once from double: float32's 0.999 is 0.99900001, and 1 - b2^t
            // taken from it would be 1e-5 off (double pow per element would be
            // slow on GPUs of little float64 throughput)
            T bc1 = -expm1((T)t * log1p(-omb1));
            T rbc2 = sqrt(-expm1((T)t * log1p(-omb2)));
            T e = ebc ? eps / rbc2 : eps;  // scikit-learn's Adam: eps bias-corrected too
            p -= (lr / bc1) * m / (sqrt(v) / rbc2 + e);
            """,
            "nnx_adam")
        self.adagrad = ek(
            "T g, T lr, int64 t, T lr_decay, T eps, T wd, T scale", "T p, T s",
            grad + "T rate = lr / ((T)1 + ((T)t - (T)1) * lr_decay);"
                   "s += gg * gg; p -= rate * gg / (sqrt(s) + eps);",
            "nnx_adagrad")
        self._rmsprop = {}
        ek = self._ek  # the small kernels below take no scale
        self.tick = ek("raw T rates, int64 n", "T lr, int64 s, int64 t",
                       "lr = rates[s < n ? s : n - 1]; s = s + 1; t = t + 1;", "nnx_tick")
        self.sum_squares = cupy.ReductionKernel("T x", "T y", "x * x", "a + b", "y = a", "0",
                                                "nnx_sum_squares")
        self.clip_scale = ek("T squares, T max_norm", "T scale",
                             "T c = max_norm / (sqrt(squares) + (T)1e-6);"
                             "scale = c > (T)1 ? (T)1 : c;",  # NaN stays NaN, as in minimum()
                             "nnx_clip_scale")
        # dynamic loss scaling: x - x is 0, or NaN where x is not finite
        self.nonfinite = cupy.ReductionKernel("T x", "T y", "x - x", "a + b", "y = a", "0",
                                              "nnx_nonfinite")
        self.unscale = ek(
            "T bad, T squares, T loss_scale, T max_norm, int32 clip", "T factor",
            """
            T inv = (T)1 / loss_scale;
            T f = inv;
            if (clip) {
                T c = max_norm / (sqrt(squares) * inv + (T)1e-6);
                f = !(c >= (T)1) ? inv * c : inv;  // a NaN c gives NaN, as minimum(1, c)
            }
            factor = bad == (T)0 ? f : (T)-1;
            """,
            "nnx_unscale")
        self.loss_scale = ek(
            "T scale, T growth, T backoff, int64 interval", "T s, int64 k",
            """
            if (scale < (T)0) { s = s * backoff; k = 0; }
            else if (k + 1 >= interval) { T g = s * growth; if (isfinite(g)) s = g; k = 0; }
            else { k = k + 1; }
            """,
            "nnx_loss_scale")

    def rmsprop(self, momentum, centered):
        """The RMSprop kernel for one combination of options (compiled on first use)."""
        key = (momentum, centered)
        if key not in self._rmsprop:
            outs = "T p, T sq" + (", T buf" if momentum else "") + (", T ga" if centered else "")
            body = self._GRAD + "sq = alpha * sq + oma * (gg * gg);\n"
            if centered:
                body += ("ga = alpha * ga + oma * gg;"
                         # the variance estimate: rounding can take it just below 0
                         "T var = sq - ga * ga;"
                         "T avg = sqrt(var < (T)0 ? (T)0 : var) + eps;\n")
            else:
                body += "T avg = sqrt(sq) + eps;\n"
            body += ("buf = mom * buf + gg / avg; p -= lr * buf;" if momentum
                     else "p -= lr * (gg / avg);")
            self._rmsprop[key] = self._update_kernel(
                "T g, T lr, T alpha, T oma, T eps, T wd, T mom, T scale", outs, body,
                f"nnx_rmsprop_{int(momentum)}{int(centered)}")
        return self._rmsprop[key]
