"""The GPU backend: CuPy arrays on the current CUDA device.

This is the only module in nnx that imports CuPy, and it is imported only when
a user asks for ``backend="gpu"``. The overrides below keep work on the device
(no implicit host copies) and fuse elementwise chains into single kernels;
each computes exactly what the reference method in ``base.py`` computes.
"""

from __future__ import annotations

import logging

import numpy as np

from .base import Backend, BackendUnavailableError, CaptureUnavailable

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


class CupyBackend(Backend):
    name = "gpu"
    fuses_bias_activation = True

    def __init__(self, dtype="float32"):
        cupy = _import_cupy()
        super().__init__(cupy, dtype)
        self._kernels = _Kernels(cupy)
        self._capturing = None  # the stream being recorded, while capture() runs
        self._gemm_checked = None
        self._blas = None  # our own cuBLAS handle for recorded GEMMs, made on first capture

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

    def bias_activation(self, x, bias, activation):
        kernel = self._kernels.act_forward.get(activation.name)
        if kernel is None:  # an activation without a fused kernel
            return super().bias_activation(x, bias, activation)
        out = kernel(x, bias, x.dtype.type(getattr(activation, "alpha", 0.0)))
        # the gradient of every fused activation is a function of its output
        activation.input_, activation.output = None, out
        return out

    def bias_activation_grad(self, activation, output_grad):
        kernel = self._kernels.act_backward.get(activation.name)
        if kernel is None or activation.input_ is not None:
            return super().bias_activation_grad(activation, output_grad)
        t = output_grad.dtype.type
        return kernel(activation.output, output_grad, t(getattr(activation, "alpha", 0.0)))

    def matmul(self, a, b, out=None):
        if self._capturing is not None:
            return self._gemm(a, b, out)
        return self.xp.matmul(a, b, out=out)

    def sum_rows(self, g, out=None):
        return self.xp.sum(g, axis=0, keepdims=True, out=out)

    def concat_rows(self, arrays):
        return self.xp.concatenate(arrays, axis=0)

    def softmax_cross_entropy(self, logits, target, eps):
        xp = self.xp
        n = logits.shape[0]
        e = xp.exp(logits - xp.max(logits, axis=1, keepdims=True))
        s = xp.sum(e, axis=1, keepdims=True)
        t = logits.dtype.type
        terms, grad = self._kernels.softmax_ce(e, s, target, t(eps), t(1.0 / n))
        return -xp.sum(terms) / n, grad

    def capture(self, step):
        """Record ``step`` as a CUDA graph on a private stream and memory pool.

        Every array the step allocates comes from a pool that only this graph
        uses, so nothing allocated later can land in memory the graph writes.
        Capture fails on any host synchronisation or device-to-host copy,
        which is the proof that the recorded step makes none. CuPy refuses
        its cuBLAS wrappers while a stream is capturing, so matrix products
        are recorded as direct cuBLAS GEMM calls, after a one-off check that
        those match ``cupy.matmul`` on this device.
        """
        if self._gemm_checked is None:
            self._gemm_checked = self._check_captured_gemm()
        if self._gemm_checked is not True:
            raise CaptureUnavailable(self._gemm_checked)
        return self._record(step)

    def _record(self, step):
        cp = self.xp
        pool = cp.cuda.MemoryPool()
        stream = cp.cuda.Stream(non_blocking=True)
        stream.wait_event(cp.cuda.get_current_stream().record())  # see all queued work
        mode = getattr(cp.cuda.runtime, "streamCaptureModeRelaxed", None)
        try:
            with cp.cuda.using_allocator(pool.malloc), stream:
                stream.begin_capture() if mode is None else stream.begin_capture(mode)
                self._capturing = stream
                try:
                    result = step()
                except Exception as exc:
                    try:
                        stream.end_capture()
                    except Exception:  # the capture was invalidated: nothing to keep
                        pass
                    raise CaptureUnavailable(f"{type(exc).__name__}: {exc}") from exc
                finally:
                    self._capturing = None
                graph = stream.end_capture()
        except CaptureUnavailable:
            raise
        except Exception as exc:  # CUDA refused the capture itself
            raise CaptureUnavailable(f"{type(exc).__name__}: {exc}") from exc

        def replay():
            graph.launch(stream=cp.cuda.get_current_stream())

        replay.keepalive = (graph, pool, stream)
        return replay, result

    def _check_captured_gemm(self):
        """True if captured GEMMs reproduce cupy.matmul, else the reason (str)."""
        cp = self.xp
        rng = np.random.default_rng(0)
        a = self.asarray(rng.standard_normal((7, 5)))
        b = self.asarray(rng.standard_normal((5, 3)))
        c = self.asarray(rng.standard_normal((7, 3)))
        cases = [(a, b), (a.T, c), (c, b.T)]  # x @ W, x.T @ g, g @ W.T
        outs = [self.empty((x.shape[0], y.shape[1])) for x, y in cases]
        try:
            if self._blas is None:
                self._blas = _CapturedBlas(cp)
            replay, _ = self._record(lambda: [self.matmul(x, y, out=o)
                                              for (x, y), o in zip(cases, outs)])
            replay()
            for (x, y), o in zip(cases, outs):
                if not bool(cp.allclose(o, cp.matmul(x, y), rtol=1e-5, atol=1e-6)):
                    return "captured cuBLAS GEMM does not match cupy.matmul on this device"
        except Exception as exc:  # any failure here means: train step by step
            return f"matrix products cannot be recorded: {type(exc).__name__}: {exc}"
        return True

    def _gemm(self, a, b, out):
        """``out = a @ b`` by one cuBLAS GEMM on the capturing stream.

        Row-major ``C = A B`` is column-major ``C^T = B^T A^T``; a C-contiguous
        matrix is its own transpose in column-major terms and needs no
        operation, an F-contiguous one (a ``.T`` view) needs ``T``."""
        m, k = a.shape
        n = b.shape[1]
        if out is None:
            out = self.xp.empty((m, n), dtype=a.dtype)

        def operand(x, cols):
            if x.flags.c_contiguous:
                return _CapturedBlas.OP_N, cols
            if x.flags.f_contiguous:
                return _CapturedBlas.OP_T, x.shape[0]
            raise CaptureUnavailable("a strided matrix cannot be recorded as one GEMM")

        op_b, ld_b = operand(b, n)
        op_a, ld_a = operand(a, k)
        if not out.flags.c_contiguous:
            raise CaptureUnavailable("a GEMM output must be C-contiguous to be recorded")
        self._blas.gemm(self._capturing.ptr, a.dtype.char, op_b, op_a, n, m, k,
                        b.data.ptr, ld_b, a.data.ptr, ld_a, out.data.ptr, n)
        return out


    def _scalar(self, value, like):
        # a 0-d device array stays one (a captured step reads it); numbers become T
        return value if isinstance(value, self.xp.ndarray) else like.dtype.type(value)

    def sgd_step(self, param, grad, lr):
        self._kernels.sgd(grad, self._scalar(lr, param), param)

    def momentum_step(self, param, grad, velocity, lr, momentum):
        self._kernels.momentum(grad, self._scalar(lr, param), self._scalar(momentum, param),
                               param, velocity)

    def take_rows(self, x, idx, out=None):
        return self.xp.take(x, idx, axis=0, out=out)


class _Kernels:
    """Fused elementwise kernels, compiled by CuPy on first use."""

    def __init__(self, cupy):
        ek = cupy.ElementwiseKernel
        self.dropout = ek(
            "float64 u, float64 keep, T scale", "T mask",
            "mask = u < keep ? scale : (T)0",
            "nnx_dropout_mask",
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
        self.sgd = ek("T g, T lr", "T p", "p -= lr * g", "nnx_sgd")
        # bias + activation, forward from the pre-bias input, backward from the
        # output (each activation's derivative is a function of its output)
        fwd = {
            "linear": "y = x + b",
            "sigmoid": "T z = x + b; T e = exp(-fabs(z)); "
                       "y = z >= (T)0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e)",
            "tanh": "y = tanh(x + b)",
            # written so that NaN passes through, as in NumPy (fmax would drop it)
            "relu": "T z = x + b; y = z < (T)0 ? (T)0 : z",
            "leaky_relu": "T z = x + b; y = z > (T)0 ? z : alpha * z",
            "relu6": "T z = x + b; y = z < (T)0 ? (T)0 : (z > (T)6 ? (T)6 : z)",
        }
        bwd = {
            "linear": "gz = g",
            "sigmoid": "gz = g * y * ((T)1 - y)",
            "tanh": "gz = g * ((T)1 - y * y)",
            "relu": "gz = y > (T)0 ? g : (T)0",
            "leaky_relu": "gz = y > (T)0 ? g : alpha * g",
            "relu6": "gz = (y > (T)0 && y < (T)6) ? g : (T)0",
        }
        self.act_forward = {k: ek("T x, T b, T alpha", "T y", v, f"nnx_bias_{k}")
                            for k, v in fwd.items()}
        self.act_backward = {k: ek("T y, T g, T alpha", "T gz", v, f"nnx_{k}_grad")
                             for k, v in bwd.items()}
        self.momentum = ek(
            "T g, T lr, T mom", "T p, T v",
            "v = mom * v + lr * g; p -= v",
            "nnx_momentum",
        )


class _CapturedBlas:
    """A cuBLAS handle of our own, called through ctypes.

    CuPy's cuBLAS wrappers refuse to run while a stream is capturing (its
    ``setStream`` raises), but cuBLAS itself records GEMMs into graphs. This
    handle is used for nothing else: host pointer mode, default math (no
    TF32), and a fixed workspace, so a recorded GEMM allocates nothing.
    """

    OP_N, OP_T = 0, 1
    WORKSPACE = 32 * 2**20

    def __init__(self, cupy):
        import ctypes

        self._ct = ctypes
        major = cupy.cuda.runtime.runtimeGetVersion() // 1000
        cupy.cuda.device.get_cublas_handle()  # makes CuPy load libcublas first
        lib = None
        for name in (f"libcublas.so.{major}", "libcublas.so"):
            try:
                lib = ctypes.CDLL(name)  # the copy CuPy already loaded, by soname
                break
            except OSError:
                continue
        if lib is None:
            lib = ctypes.CDLL(self._loaded_path())
        self._lib = lib
        vp, i = ctypes.c_void_p, ctypes.c_int
        for fn in ("cublasSgemm_v2", "cublasDgemm_v2"):
            getattr(lib, fn).argtypes = [vp, i, i, i, i, i, vp, vp, i, vp, i, vp, vp, i]
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(vp)]
        lib.cublasSetStream_v2.argtypes = [vp, vp]
        lib.cublasSetPointerMode_v2.argtypes = [vp, i]
        lib.cublasSetMathMode.argtypes = [vp, i]
        handle = vp()
        self._check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self.handle = handle
        self._check(lib.cublasSetPointerMode_v2(handle, 0), "cublasSetPointerMode")  # host
        self._check(lib.cublasSetMathMode(handle, 0), "cublasSetMathMode")  # default math
        self.workspace = cupy.empty(self.WORKSPACE, dtype=cupy.uint8)
        # CUDA 11.4+; older cuBLAS manages its own. Set again after every
        # cublasSetStream, which resets the workspace to cuBLAS's default pool
        self._has_workspace = hasattr(lib, "cublasSetWorkspace_v2")
        if self._has_workspace:
            lib.cublasSetWorkspace_v2.argtypes = [vp, vp, ctypes.c_size_t]
        # host scalars for host pointer mode, alive as long as the handle
        self._scalars = {t: (np.ones((), t), np.zeros((), t)) for t in "fd"}

    @staticmethod
    def _loaded_path():
        with open("/proc/self/maps") as maps:
            for line in maps:
                if "libcublas.so" in line and "libcublasLt" not in line:
                    return line.split()[-1]
        raise OSError("libcublas is not loaded in this process")

    @staticmethod
    def _check(status, what):
        if status != 0:
            raise CaptureUnavailable(f"{what} returned cuBLAS status {status}")

    def gemm(self, stream_ptr, dtype_char, op_a, op_b, m, n, k, A, lda, B, ldb, C, ldc):
        """Column-major ``C = op(A) op(B)`` on ``stream_ptr``."""
        lib = self._lib
        self._check(lib.cublasSetStream_v2(self.handle, stream_ptr), "cublasSetStream")
        if self._has_workspace:  # a recorded GEMM must not allocate: our own workspace
            self._check(lib.cublasSetWorkspace_v2(self.handle, self.workspace.data.ptr,
                                                  self.WORKSPACE), "cublasSetWorkspace")
        one, zero = self._scalars[dtype_char]
        fn = lib.cublasSgemm_v2 if dtype_char == "f" else lib.cublasDgemm_v2
        self._check(fn(self.handle, op_a, op_b, m, n, k, one.ctypes.data, A, lda, B, ldb,
                       zero.ctypes.data, C, ldc), "cublas gemm")
