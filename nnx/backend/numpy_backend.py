"""The CPU backend: NumPy arrays on the host.

Overrides of the reference methods exist only where NumPy can avoid a
temporary (``out=`` buffers) or SciPy has a faster routine (``erf``); results
are identical to the reference, except ``erf`` and Adam's update, which agree
with it to rounding, and the optimiser updates' flushing of subnormal numbers
to zero (``subnormals``), and the ReLU gradient, whose 0/1 mask makes an
infinite or NaN incoming gradient at an inactive unit NaN where the
reference (and PyTorch) give 0 (a select costs 5-10x the product). Where
Numba is installed, the optimiser updates and the tanh, sigmoid and ReLU
gradients of large arrays run as one compiled loop each (``fused``), with the
same results as the passes here, bit for bit.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import fused
from .base import Backend
from .host import is_sparse
from .subnormals import flush_here, flushing

# bytes per array in a block of an optimiser update, so that the four or five
# arrays one block touches stay in a core's L2 cache: 256 KiB blocks measured
# 5-10% faster than 512 KiB ones on 203k and 1.86M parameters on a core with
# 2 MiB of L2 (cores with 512 KiB, as AMD's Zen 2 and 3, keep less of them)
_BLOCK_BYTES = 1 << 18
_PARALLEL = 1 << 18  # from this many parameters, the blocks are shared among threads
_POOL = {}
# the fused loops (``fused``) from this many elements: below it NumPy's passes
# take about as long (a loop's call costs about 5 us), and a small run never
# waits for Numba to load (about 0.5 s, once per process)
_FUSED_MIN = 1 << 15
# the temporaries one thread keeps for reuse (_tmp), by their total size
_SCRATCH_BYTES, _SCRATCH_KEEP = 64 << 20, 8


def _pool():
    """The threads (one per usable core, less the caller) that share a large
    update. NumPy lets go of the GIL inside its loops, so blocks run in parallel."""
    if "pool" not in _POOL:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        workers = min(workers, _POOL.get("limit", workers))
        _POOL["workers"] = workers
        # the threads run nothing but optimiser blocks: flush subnormals for good
        _POOL["pool"] = ThreadPoolExecutor(max(workers - 1, 1), thread_name_prefix="nnx",
                                           initializer=flush_here)
    return _POOL["pool"], _POOL["workers"]


def _forget_pool_after_fork():
    """A process forked from one whose pool had started has the pool object
    but not its threads: its first large update would wait on them forever."""
    _POOL.pop("pool", None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def limit_update_threads(n):
    """At most ``n`` threads (the caller's included) for a large update's
    NumPy passes, as for processes that share the machine's cores."""
    pool = _POOL.pop("pool", None)
    if pool is not None:
        pool.shutdown(wait=True)
    _POOL["limit"] = max(1, int(n))


def _flushing_subnormals(update):
    """An optimiser update with subnormal results and inputs taken as zero in
    the calling thread (``subnormals``: state that decays where the gradient
    is zero would otherwise run several times slower)."""
    @functools.wraps(update)
    def run(self, *args, **kwargs):
        with flushing():
            return update(self, *args, **kwargs)
    return run


class NumpyBackend(Backend):
    name = "cpu"

    def __init__(self, dtype="float32", precision="float32"):
        super().__init__(np, dtype, precision=precision)
        # Reusable temporaries, one per shape and per thread: every network of
        # this dtype shares the backend, and two of them training in two
        # threads (NumPy lets go of the GIL inside its loops) must never write
        # into the same temporary.
        self._local = threading.local()
        self._identities = {}  # (classes, dtype) -> identity matrix (one_hot_rows)

    def _tmp(self, shape):
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = {}
        buf = scratch.pop(shape, None)  # taken out and put back last: the most recent
        if buf is None:
            buf = np.empty(shape, dtype=self.dtype)
            # the shapes of one network are few and reused; a sweep over many
            # networks would keep every shape's buffer: the least recently
            # used go beyond _SCRATCH_BYTES (a caller still using one keeps it)
            # (the most recent _SCRATCH_KEEP stay whatever their size: one
            # larger than the bound would otherwise go at every other call)
            total = buf.nbytes + sum(b.nbytes for b in scratch.values())
            for old in list(scratch):
                if total <= _SCRATCH_BYTES or len(scratch) < _SCRATCH_KEEP:
                    break
                total -= scratch.pop(old).nbytes
        scratch[shape] = buf
        return buf

    def sum_squares(self, x):
        # a dot product of the flat array with itself, as scikit-learn's L2 term takes it
        flat = x.reshape(-1)
        return np.vdot(flat, flat)

    def owns(self, x) -> bool:
        # not an array that says it lives on a GPU (a NumPy subclass standing in for CuPy's)
        return isinstance(x, np.ndarray) and not hasattr(x, "__cuda_array_interface__")

    def copy(self, x):
        return x.copy()

    def generator(self, seed):
        return np.random.default_rng(seed)

    def uniform(self, gen, shape, dtype=None):
        return gen.random(shape, dtype=dtype or self.dtype)

    def permutation(self, gen, n):
        # The reference's stable argsort of the same keys, computed as a radix
        # sort: non-negative floats order like their bit patterns, and NumPy's
        # stable sort of 16-bit integers is a linear-time radix sort. Sorting
        # by the low 16 bits first, then stably by each higher group, gives the
        # identical order (ties keep index order) about 4x faster at 60k rows.
        keys = self.uniform(gen, (n,), "float64")
        bits = keys.view(np.uint32 if keys.itemsize == 4 else np.uint64)
        order = None
        for shift in range(0, 8 * keys.itemsize, 16):
            digit = (bits >> shift).astype(np.uint16)  # the cast keeps the low 16 bits
            if order is None:
                order = np.argsort(digit, kind="stable")
            else:
                order = order[np.argsort(digit[order], kind="stable")]
        return order

    def matmul(self, a, b, out=None):
        if is_sparse(a):  # SciPy sparse input rows into a first layer (or their transpose)
            return self._sparse_matmul(a, b, out)
        if self.precision != "float32":  # emulated: the operands rounded, products in float32
            a, b = self.round_operand(a), self.round_operand(b)
            with np.errstate(invalid="ignore", over="ignore"):  # float16 overflows: see
                return np.matmul(a, b, out=out)                 # LossScaler
        return np.matmul(a, b, out=out)

    def _sparse_matmul(self, a, b, out):
        # SciPy's sparse-times-dense product (what scikit-learn's MLP uses for
        # sparse X), into ``out`` where one is given
        if self.precision != "float32":
            a = a.copy()
            a.data = self.round_operand(a.data)
            b = self.round_operand(b)
        product = np.asarray(a @ b)
        if out is None:
            return product
        out[...] = product
        return out

    def update_unless_skipped(self, scale, arrays, update):
        if not scale < 0:  # on the host, the skip is known at once: no copies
            update()

    def sum_rows(self, g, out=None):
        return np.add.reduce(g, axis=0, keepdims=True, out=out)  # np.sum minus its wrapper

    def _blocks(self, n, run):
        """``run(lo, hi)`` over ``[0, n)`` in cache-sized blocks; large ``n`` on
        several threads, each taking a contiguous share of the blocks."""
        # blocks of equal size near the target (2/3 to 3/2 of it): no small
        # last block, whose numpy calls would cost more than its work saves
        count = round(n / (_BLOCK_BYTES // np.dtype(self.dtype).itemsize))
        if count <= 1:
            run(0, n)
            return
        size = math.ceil(n / count)
        blocks = [(lo, min(lo + size, n)) for lo in range(0, n, size)]

        def share(part):
            for lo, hi in part:
                run(lo, hi)
        pool, workers = _pool() if n >= _PARALLEL else (None, 1)
        if workers < 2:
            share(blocks)
            return
        size = math.ceil(len(blocks) / workers)
        parts = [blocks[i:i + size] for i in range(0, len(blocks), size)]
        futures = [pool.submit(share, part) for part in parts[1:]]
        share(parts[0])
        for f in futures:
            f.result()

    def _fused(self, name, arrays, scalars, flags):
        """Run the compiled loop ``name`` (``fused``) over ``arrays``, with
        ``scalars`` in their dtype; False, having done nothing, where there is
        none or the loop would not compute what NumPy's passes do: arrays that
        are not plain, contiguous, writable, separate and of one shape and
        float dtype, or a scalar of another dtype than theirs, in which NumPy
        would compute (the passes then run, and raise what they raise)."""
        first = arrays[0]
        if getattr(first, "size", 0) < _FUSED_MIN:
            return False
        given = [a for a in arrays if a is not None]  # None: state an option leaves out
        loops = fused.kernels()
        if loops is None or first.dtype not in (np.float32, np.float64) or not all(
                type(a) is np.ndarray and a.dtype == first.dtype and a.shape == first.shape
                and a.flags.c_contiguous and a.flags.writeable for a in given):
            return False
        # NumPy copies an operand that overlaps its output; the loop would not
        if any(np.may_share_memory(a, b) for i, a in enumerate(given) for b in given[i + 1:]):
            return False
        values = []
        for a in scalars:  # Python numbers, or NumPy ones of the arrays' own dtype
            if isinstance(a, (np.ndarray, np.generic)) and (a.dtype != first.dtype or a.ndim):
                return False
            if not isinstance(a, (int, float, np.ndarray, np.generic)):
                return False
            values.append(first.dtype.type(a))
        try:
            none = first[:0].reshape(-1)  # never read: its flag is off
            loops[name](*[none if a is None else a.reshape(-1) for a in arrays], *values, *flags)
        except Exception as e:  # noqa: BLE001 - Numba failed to compile it (before it ran)
            fused.disable(f"{name}: {type(e).__name__}: {e}")
            return False
        return True

    @_flushing_subnormals
    def adam_step(self, param, grad, m, v, lr, t, beta1, beta2, eps, weight_decay,
                  decoupled=False, scale=None, eps_bias_corrected=False):
        # The reference's formula, a cache-sized block at a time, each pass in
        # place through one scratch block. The scalars are read on the host,
        # where these arrays live anyway.
        lr, t = float(lr), int(t)
        step = lr / (1.0 - beta1 ** t)
        root_bc2 = math.sqrt(1.0 - beta2 ** t)
        if eps_bias_corrected:
            eps = eps / root_bc2
        # step * m / (sqrt(v) / root_bc2 + eps) computed as
        # (step * root_bc2) * m / (sqrt(v) + eps * root_bc2): one pass fewer
        # (the same value to a rounding; scikit-learn's Adam is this form)
        eps_scaled, step_scaled = eps * root_bc2, step * root_bc2
        scale = None if scale is None else float(scale)
        l2 = 0.0 if decoupled else weight_decay
        shrink = 1.0 - lr * weight_decay if decoupled and weight_decay else None
        if self._fused("adam", (param, grad, m, v),
                       (beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps_scaled, step_scaled,
                        1.0 if scale is None else scale, l2, 1.0 if shrink is None else shrink),
                       (scale is not None, bool(l2), shrink is not None)):
            return

        def run(lo, hi):
            P, G, M, V = param[lo:hi], grad[lo:hi], m[lo:hi], v[lo:hi]
            a = self._tmp((hi - lo,))
            if scale is not None or l2:
                g = self._tmp((hi - lo, 1))[:, 0]  # a second scratch block
                np.multiply(G, 1.0 if scale is None else scale, out=g)
                if l2:
                    np.multiply(P, l2, out=a)
                    g += a
                G = g
            if shrink is not None:
                P *= shrink
            np.multiply(G, 1.0 - beta1, out=a)
            M *= beta1
            M += a
            np.square(G, out=a)
            a *= 1.0 - beta2
            V *= beta2
            V += a
            np.sqrt(V, out=a)
            a += eps_scaled
            np.divide(M, a, out=a)
            a *= step_scaled
            P -= a
        self._blocks(param.shape[0], run)

    # Dense layers fuse the bias with these activations on the CPU too: the sum
    # and the activation are written over the matrix product (the layer's
    # own fresh array), which saves two arrays of a batch's width per layer
    # and pass; the values are the reference's, operation for operation.
    fuses_bias_activation = True
    _IN_PLACE = frozenset({"linear", "relu", "tanh", "sigmoid"})

    def bias_activation(self, x, bias, name, param=None):
        if name not in self._IN_PLACE or not x.flags.writeable:
            return super().bias_activation(x, bias, name, param)
        np.add(x, bias, out=x)
        if name == "relu":
            np.maximum(x, 0.0, out=x)
        elif name == "tanh":
            np.tanh(x, out=x)
        elif name == "sigmoid":
            z = np.abs(x)
            np.negative(z, out=z)
            np.exp(z, out=z)  # exp(-|x|)
            d = 1.0 + z
            positive = x >= 0
            np.divide(1.0, d, out=x, where=positive)
            np.divide(z, d, out=x, where=~positive)
        return x, (None, x)

    def bias_activation_grad(self, name, param, saved, output_grad):
        if saved[0] is not None:  # the reference's pass saved the sum
            return super().bias_activation_grad(name, param, saved, output_grad)
        out = saved[1]
        # with the loops that a large enough optimiser update loaded: a batch's
        # gradient saves 10-30% of 100-300 us, too little to load Numba for
        if name in ("tanh", "sigmoid", "relu") and out.size >= _FUSED_MIN \
                and fused.loaded() is not None:
            res = np.empty_like(out)
            if self._fused(f"{name}_grad", (output_grad, out, res), (1.0,), ()):
                return res
        if name == "relu":  # out > 0 exactly where the sum was. A product with that
            # mask, not np.where, which branches on each element: 5-10x slower
            # on a batch's mixed signs (a 200x256 batch: 150 us against 25)
            return output_grad * (out > 0)
        # tanh and sigmoid: the reference's products in its order, into one new
        # array (and one scratch block) instead of three temporaries: a
        # 256x1024 float32 tanh gradient took 190 us, now 105. (A gradient of
        # another dtype than the layer's takes the reference's promotion.)
        if name in ("tanh", "sigmoid") and output_grad.dtype != out.dtype:
            return (output_grad * (1.0 - out * out) if name == "tanh"
                    else output_grad * out * (1.0 - out))
        if name == "tanh":
            res = np.square(out)
            np.subtract(1.0, res, out=res)
            return np.multiply(output_grad, res, out=res)
        if name == "sigmoid":
            res = np.multiply(output_grad, out)
            rest = self._tmp(out.shape)
            np.subtract(1.0, out, out=rest)
            return np.multiply(res, rest, out=res)
        return output_grad

    def axpy(self, a, x, y):
        # through a reusable scratch array: no allocation per call. (SciPy's
        # BLAS axpy would make one pass, but SciPy ships its own OpenBLAS,
        # whose threads then spin against NumPy's: a 784x256 axpy took 1.8 ms
        # between NumPy's matrix products, and slowed them too.)
        tmp = self._tmp(tuple(x.shape))
        np.multiply(x, a, out=tmp)
        np.add(y, tmp, out=y)

    def erf(self, x):
        # SciPy's ufunc (SciPy comes with scikit-learn; imported on first use,
        # not with nnx) is about 5x faster than the reference's three rational
        # functions, and as accurate
        from scipy.special import erf

        return erf(x)

    def take_rows(self, x, idx, out=None):
        if is_sparse(x):  # a batch of sparse rows stays sparse (``out`` is for dense rows)
            return x[idx]
        # the indices come from our own permutation; mode="clip" lets NumPy
        # write straight into ``out`` instead of through a bounds-checked buffer
        return x.take(idx, axis=0, out=out, mode="clip")

    def one_hot_rows(self, ids, idx, out):
        classes, picked = out.shape[1], ids.take(idx, mode="clip")
        if classes > 1024:  # a 1 per row, written into zeros
            out.fill(0)
            out[np.arange(out.shape[0]), picked] = 1
            return out
        # rows of the identity (at most 1024 x 1024, made once): as fast as
        # taking stored one-hot rows, where the above takes twice as long
        key = (classes, out.dtype)
        eye = self._identities.get(key)
        if eye is None:
            if len(self._identities) >= 4:  # a sweep over class counts keeps a few at most
                self._identities.clear()
            eye = self._identities[key] = np.eye(classes, dtype=out.dtype)
        return eye.take(picked, axis=0, out=out, mode="clip")

    # The overrides below do the reference arithmetic in the same order (so
    # results are bit-identical to it) with fewer temporaries.
    def softmax_cross_entropy(self, logits, target, eps):
        n = logits.shape[0]
        p = logits - logits.max(axis=1, keepdims=True)
        np.exp(p, out=p)
        p /= p.sum(axis=1, keepdims=True)
        logp = self._tmp(p.shape)
        np.maximum(p, eps, out=logp)  # the clip into [eps, 1 - eps], in two ufuncs
        np.minimum(logp, 1.0 - eps, out=logp)
        np.log(logp, out=logp)
        logp *= target
        loss = np.asarray(-logp.sum() / n)
        p -= target
        p /= n
        return loss, p

    @_flushing_subnormals
    def sgd_step(self, param, grad, lr, weight_decay=0.0, scale=None):
        if self._fused("sgd", (param, grad), (lr, 1.0 if scale is None else scale, weight_decay),
                       (scale is not None, bool(weight_decay))):
            return
        if weight_decay or scale is not None:
            return super().sgd_step(param, grad, lr, weight_decay, scale)

        def run(lo, hi):
            step = self._tmp((hi - lo,))
            np.multiply(grad[lo:hi], lr, out=step)
            param[lo:hi] -= step
        self._blocks(param.shape[0], run)

    @_flushing_subnormals
    def momentum_step(self, param, grad, velocity, lr, momentum, nesterov=False,
                      weight_decay=0.0, scale=None):
        if self._fused("momentum", (param, grad, velocity),
                       (lr, momentum, 1.0 if scale is None else scale, weight_decay),
                       (scale is not None, bool(weight_decay), bool(nesterov))):
            return
        if nesterov or weight_decay or scale is not None:
            return super().momentum_step(param, grad, velocity, lr, momentum, nesterov,
                                         weight_decay, scale)

        def run(lo, hi):  # the reference's passes, a block at a time
            step, v = self._tmp((hi - lo,)), velocity[lo:hi]
            v *= momentum
            np.multiply(grad[lo:hi], lr, out=step)
            v += step
            param[lo:hi] -= v
        self._blocks(param.shape[0], run)

    @_flushing_subnormals
    def rmsprop_step(self, param, grad, square_avg, lr, alpha, eps, weight_decay, momentum,
                     momentum_buffer=None, grad_avg=None, scale=None):
        if self._fused("rmsprop", (param, grad, square_avg, momentum_buffer, grad_avg),
                       (lr, alpha, 1.0 - alpha, eps, momentum, 1.0 if scale is None else scale,
                        weight_decay),
                       (scale is not None, bool(weight_decay), momentum_buffer is not None,
                        grad_avg is not None)):
            return
        return super().rmsprop_step(param, grad, square_avg, lr, alpha, eps, weight_decay,
                                    momentum, momentum_buffer, grad_avg, scale)

    @_flushing_subnormals
    def adagrad_step(self, param, grad, sum_sq, lr, t, lr_decay, eps, weight_decay,
                     scale=None):
        if getattr(param, "size", 0) >= _FUSED_MIN:
            rate = lr / (1.0 + (self._count(t) - 1.0) * lr_decay)  # as the reference has it
            if self._fused("adagrad", (param, grad, sum_sq),
                           (rate, eps, 1.0 if scale is None else scale, weight_decay),
                           (scale is not None, bool(weight_decay))):
                return
        return super().adagrad_step(param, grad, sum_sq, lr, t, lr_decay, eps, weight_decay,
                                    scale)
