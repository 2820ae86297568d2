"""CUDA graphs and the cuBLAS handle that records matrix products into them:
the GPU backend's one place for both (it passes in the ``cupy`` module; this
module imports nothing of CuPy itself).

``Graphs`` serves one ``CupyBackend``: ``capture(step)`` records a training
step on a private stream and memory pool, and ``gemm`` runs ``a @ b`` as one
cuBLAS call of its own handle, on the capturing stream or the current one.
CuPy refuses its cuBLAS wrappers while a stream is capturing, but cuBLAS
itself records GEMMs into graphs; the same handle runs the products of the
reduced precisions (TF32 math, or half-precision operands through
``cublasGemmEx``), eager or recorded.
"""

from __future__ import annotations

import ctypes
import threading
import weakref

import numpy as np

from .._checks import InputValueError
from .base import CaptureUnavailable


class CublasError(RuntimeError):
    """A cuBLAS call returned an error status."""


# Captures in progress in this process, and the handles closed meanwhile:
# cublasDestroy synchronises the device and freeing the workspace is a
# cudaFree, either of which would invalidate a capture on another stream (a
# backend dropped by one thread, or collected, while another records)
_CAPTURES = {"active": 0, "deferred": []}
_CAPTURES_LOCK = threading.RLock()  # RLock: a collection inside the lock may close a handle


def _capture_starts():
    with _CAPTURES_LOCK:
        _CAPTURES["active"] += 1


def _capture_ends():
    """One capture fewer; with none left, destroy the handles closed meanwhile."""
    with _CAPTURES_LOCK:  # held throughout: no capture may begin while one is destroyed
        _CAPTURES["active"] -= 1
        if not _CAPTURES["active"]:
            pending, _CAPTURES["deferred"] = _CAPTURES["deferred"], []
            for lib, handle, _workspace in pending:
                lib.cublasDestroy_v2(handle)
            del pending  # the workspaces are freed here, under the lock too


class CublasHandle:
    """A cuBLAS handle of our own, called through ctypes: host pointer mode,
    a fixed workspace of raw device memory (so that a recorded GEMM allocates
    nothing, and no memory pool can take the workspace back), and the math of
    one ``precision``: default math (no TF32) for float32, TF32 tensor-op
    math for "tf32", and for "float16"/"bfloat16" ``cublasGemmEx`` with
    half-precision operands, float32 output and float32 accumulation
    (``CUBLAS_COMPUTE_32F``). ``close()`` (or garbage collection) destroys
    the handle; recorded graphs keep the handle alive while they exist.
    """

    OP_N, OP_T = 0, 1
    WORKSPACE = 32 * 2**20
    # cudaDataType_t and cublasComputeType_t values (library_types.h, cublas_api.h)
    R_32F, R_16F, R_16BF, COMPUTE_32F, GEMM_DEFAULT = 0, 2, 14, 68, -1
    TF32_TENSOR_OP_MATH = 3

    def __init__(self, cupy, precision="float32"):
        self.handle = None
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
        lib.cublasGemmEx.argtypes = [vp, i, i, i, i, i, vp, vp, i, i, vp, i, i, vp, vp, i, i,
                                     i, i]
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(vp)]
        lib.cublasDestroy_v2.argtypes = [vp]
        lib.cublasSetStream_v2.argtypes = [vp, vp]
        lib.cublasSetPointerMode_v2.argtypes = [vp, i]
        lib.cublasSetMathMode.argtypes = [vp, i]
        self.precision = precision
        # the workspace first, as raw memory outside every pool: no pool that is
        # dropped later (a capture's) can free it under the handle
        self._workspace = cupy.cuda.memory.Memory(self.WORKSPACE)
        handle = vp()
        self._check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self.handle = handle
        self._check(lib.cublasSetPointerMode_v2(handle, 0), "cublasSetPointerMode")  # host
        math = self.TF32_TENSOR_OP_MATH if precision == "tf32" else 0  # else default math
        self._check(lib.cublasSetMathMode(handle, math), "cublasSetMathMode")
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
            raise CublasError(f"{what} returned cuBLAS status {status}")

    def close(self):
        """Destroy the handle (its workspace goes with this object); while any
        capture is in progress, once the last one ends."""
        if self.handle is None:
            return
        handle, self.handle = self.handle, None
        with _CAPTURES_LOCK:  # no capture may begin while it is destroyed
            workspace, self._workspace = self.__dict__.get("_workspace"), None
            if _CAPTURES["active"]:
                _CAPTURES["deferred"].append((self._lib, handle, workspace))
                return
            self._lib.cublasDestroy_v2(handle)
            del workspace  # freed here (a cudaFree), under the lock too

    def __del__(self):
        try:
            self.close()
        except Exception:  # at interpreter exit the library may be gone already
            pass

    def gemm(self, stream_ptr, dtype_char, op_a, op_b, m, n, k, A, lda, B, ldb, C, ldc):
        """Column-major ``C = op(A) op(B)`` on ``stream_ptr``."""
        lib = self._lib
        self._check(lib.cublasSetStream_v2(self.handle, stream_ptr), "cublasSetStream")
        if self._has_workspace:  # a recorded GEMM must not allocate: our own workspace
            self._check(lib.cublasSetWorkspace_v2(self.handle, self._workspace.ptr,
                                                  self.WORKSPACE), "cublasSetWorkspace")
        if self.precision in ("float16", "bfloat16"):  # half operands, float32 out
            kind = self.R_16F if self.precision == "float16" else self.R_16BF
            one, zero = self._scalars["f"]
            self._check(lib.cublasGemmEx(self.handle, op_a, op_b, m, n, k, one.ctypes.data,
                                         A, kind, lda, B, kind, ldb, zero.ctypes.data, C,
                                         self.R_32F, ldc, self.COMPUTE_32F, self.GEMM_DEFAULT),
                        "cublasGemmEx")
            return
        one, zero = self._scalars[dtype_char]
        fn = lib.cublasSgemm_v2 if dtype_char == "f" else lib.cublasDgemm_v2
        self._check(fn(self.handle, op_a, op_b, m, n, k, one.ctypes.data, A, lda, B, ldb,
                       zero.ctypes.data, C, ldc), "cublas gemm")


class Graphs:
    """Graph capture and our own GEMMs for one GPU backend (``backend``:
    its ``xp`` is CuPy, its ``precision`` picks the handle's math, and its
    ``round_operand``/``_half_operand`` give the operands of reduced
    precision). One capture at a time per backend; a thread's products go
    onto the stream it is recording, if any, and the handle serves one call
    at a time."""

    def __init__(self, backend):
        # a weak reference: the backend owns this object, and a cycle would leave
        # a dropped backend's handle to the cycle collector, to be destroyed at
        # any moment (in the middle of another backend's capture, say)
        self._backend, self.cp = weakref.ref(backend), backend.xp
        self._thread = threading.local()  # each thread's stream being recorded, if any
        self._handle_lock = threading.Lock()  # one cuBLAS call at a time on the handle
        self._record_lock = threading.Lock()  # one capture at a time
        self.blas = None  # made on first use, never inside a capture
        self.checked = {}  # "eager" / "captured" -> True, or why our GEMMs cannot be used

    @property
    def b(self):
        return self._backend()

    @property
    def capturing(self):
        """The stream this thread is recording, or None: another thread's
        capture does not redirect this thread's products."""
        return getattr(self._thread, "stream", None)

    @capturing.setter
    def capturing(self, stream):
        self._thread.stream = stream

    def handle(self):
        if self.blas is None:
            if self.capturing is not None:  # its allocations would come from the capture
                raise CaptureUnavailable("the cuBLAS handle must be made before a capture")
            # on the backend's device, whichever is current now
            with self.cp.cuda.Device(getattr(self.b, "device", None)):
                self.blas = CublasHandle(self.cp, self.b.precision)
        return self.blas

    # --------------------------------------------------------------- checks
    def check(self, recorded):
        """True if our GEMMs reproduce ``cupy.matmul`` on this device (of the
        rounded operands, in a reduced precision), eagerly or recorded in a
        graph; else the reason (str). Checked once each."""
        key = "captured" if recorded else "eager"
        if key in self.checked:
            return self.checked[key]
        result = self._check(recorded)
        if not (isinstance(result, str) and "MemoryError" in result):  # a moment's shortage
            self.checked[key] = result
        return result

    def _check(self, recorded):
        cp, b = self.cp, self.b
        rng = np.random.default_rng(0)
        x = b.asarray(rng.standard_normal((7, 5)))
        w = b.asarray(rng.standard_normal((5, 3)))
        g = b.asarray(rng.standard_normal((7, 3)))
        cases = [(x, w), (x.T, g), (g, w.T)]  # x @ W, x.T @ g, g @ W.T
        outs = [b.empty((p.shape[0], q.shape[1])) for p, q in cases]
        try:
            self.handle()
            products = lambda: [self.gemm(p, q, o) for (p, q), o in zip(cases, outs)]  # noqa: E731
            if recorded:
                replay, _ = self.record(products)
                replay()
            else:
                products()
            # (TF32 may be off whatever the handle asks: NVIDIA_TF32_OVERRIDE=0)
            tol = {"float32": 1e-5, "tf32": 5e-3}.get(b.precision, 1e-4)
            for (p, q), o in zip(cases, outs):
                # the reference in float64: CuPy's own float32 products are TF32
                # where CUPY_TF32=1 is set, which must not fail the check
                want = cp.matmul(b.round_operand(p).astype(cp.float64),
                                 b.round_operand(q).astype(cp.float64))
                if not bool(cp.allclose(o, want, rtol=tol, atol=tol)):
                    return ("cuBLAS GEMM " + ("recorded in a graph " if recorded else "")
                            + "does not match cupy.matmul on this device")
        # CUDA, cuBLAS or capture refused, the workspace's memory short
        # (CuPy's OutOfMemoryError), another CuPy's API: do without
        except Exception as exc:  # noqa: BLE001
            what = "recorded" if recorded else "run through nnx's cuBLAS handle"
            return f"matrix products cannot be {what}: {type(exc).__name__}: {exc}"
        return True

    # -------------------------------------------------------------- capture
    def capture(self, step):
        """Record ``step`` as a CUDA graph on a private stream and memory pool.

        Every array the step allocates comes from a pool that only this graph
        uses, so nothing allocated later can land in memory the graph writes.
        Capture fails on any host synchronisation or device-to-host copy,
        which is the proof that the recorded step makes none. Matrix products
        are recorded as direct cuBLAS GEMM calls, after a one-off check that
        those match ``cupy.matmul`` on this device.
        """
        # eagerly first: the handle's first GEMMs (and any lazy set-up of cuBLAS's
        # kernels) happen outside a capture
        ok = self.check(recorded=False)
        if ok is True:
            ok = self.check(recorded=True)
        if ok is not True:
            raise CaptureUnavailable(ok)
        return self.record(step)

    def record(self, step):
        cp = self.cp
        blas = self.handle()  # made now, outside the capture
        pool = cp.cuda.MemoryPool()
        stream = cp.cuda.Stream(non_blocking=True)
        stream.wait_event(cp.cuda.get_current_stream().record())  # see all queued work
        mode = getattr(cp.cuda.runtime, "streamCaptureModeRelaxed", None)
        try:
            with self._record_lock, cp.cuda.using_allocator(pool.malloc), stream:
                _capture_starts()
                try:
                    result, graph = self._captured(stream, mode, step)
                finally:
                    _capture_ends()
        except CaptureUnavailable:
            raise
        except Exception as exc:  # CUDA refused the capture itself
            raise CaptureUnavailable(f"{type(exc).__name__}: {exc}") from exc

        def replay():
            graph.launch(stream=cp.cuda.get_current_stream())

        # the graph writes into the pool's memory and cuBLAS's workspace
        replay.keepalive = (graph, pool, stream, blas)
        return replay, result

    def _captured(self, stream, mode, step):
        """``(step's result, its graph)``, recorded on ``stream``."""
        stream.begin_capture() if mode is None else stream.begin_capture(mode)
        self.capturing = stream
        try:
            result = step()
        except BaseException as exc:  # an interrupt too: never leave it capturing
            try:
                stream.end_capture()
            except Exception:  # the capture was invalidated: nothing to keep
                pass
            if not isinstance(exc, Exception):
                raise
            raise CaptureUnavailable(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.capturing = None
        return result, stream.end_capture()

    # ----------------------------------------------------------------- GEMM
    def gemm(self, a, b, out=None):
        """``out = a @ b`` by one cuBLAS GEMM of our handle, on the capturing
        stream (or, outside a capture, the current one); in a reduced
        precision, the operands are converted first.

        Row-major ``C = A B`` is column-major ``C^T = B^T A^T``; a C-contiguous
        matrix is its own transpose in column-major terms and needs no
        operation, an F-contiguous one (a ``.T`` view) needs ``T``."""
        cp, recording = self.cp, self.capturing is not None
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise InputValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} "
                                  "do not multiply (expected (m, k) and (k, n))")
        m, k = a.shape
        n = b.shape[1]
        if a.dtype != b.dtype or a.dtype.char not in "fd":
            raise InputValueError(f"matmul: operands of dtype {a.dtype} and {b.dtype}; "
                                  "expected float32 or float64, both alike")
        target = out
        if out is None:
            out = target = cp.empty((m, n), dtype=a.dtype)
        elif tuple(out.shape) != (m, n) or out.dtype != a.dtype:
            raise InputValueError(f"matmul: out has shape {tuple(out.shape)} and dtype "
                                  f"{out.dtype}; expected {(m, n)} and {a.dtype}")
        elif not out.flags.c_contiguous:
            if recording:
                raise CaptureUnavailable("a GEMM output must be C-contiguous to be recorded")
            out = cp.empty((m, n), dtype=a.dtype)  # eagerly: written here, copied back
        if self.b.precision in ("float16", "bfloat16"):
            a, b = self.b._half_operand(a), self.b._half_operand(b)

        def operand(x, cols):
            if x.flags.c_contiguous:
                return CublasHandle.OP_N, cols
            if x.flags.f_contiguous:
                return CublasHandle.OP_T, x.shape[0]
            raise CaptureUnavailable("a strided matrix cannot be recorded as one GEMM")

        if not recording:  # eager: a strided operand is copied, not refused
            a, b = (x if x.flags.c_contiguous or x.flags.f_contiguous
                    else cp.ascontiguousarray(x) for x in (a, b))
        op_b, ld_b = operand(b, n)
        op_a, ld_a = operand(a, k)
        stream = self.capturing if recording else cp.cuda.get_current_stream()
        handle = self.handle()
        with self._handle_lock:  # its stream and workspace are set per call
            handle.gemm(stream.ptr, out.dtype.char, op_b, op_a, n, m, k,
                        b.data.ptr, ld_b, a.data.ptr, ld_a, out.data.ptr, n)
        if target is not out:
            target[...] = out
        return target
