"""A stand-in for the ``cupy`` module on the CPU, so the GPU backend's own
Python code (``CupyBackend``, ``cuda_graphs.Graphs``) runs here:

- arrays are NumPy arrays of a subclass whose ``.data.ptr`` is the address,
  as CuPy's are;
- ``ElementwiseKernel`` compiles the kernel body for the host (through
  ``kernel_harness``) and calls it as CuPy does: inputs, then outputs that
  are allocated in the arguments' broadcast shape when not given, and that
  must have that shape when given (CuPy raises ``Out shape is mismatched``);
- ``ReductionKernel`` sums its map expression over all elements (a 0-d array);
- ``ReferenceBlas`` stands in for nnx's cuBLAS handle: it reads the operands
  from the addresses it is given, column-major with their leading
  dimensions and transposes, in float16 or bfloat16 where asked, and writes
  the product, so the row-to-column-major mapping of ``Graphs.gemm`` is
  checked against NumPy's own product.

What it cannot show: CUDA itself (graph capture, streams, the math library).
"""

from __future__ import annotations

import contextlib
import ctypes
import types

import kernel_harness as kh
import numpy as np

# the host values passed to kernels, ufuncs and array functions while a
# strict replay runs (see strict_replay): a list per replay being traced
_TRACE = []


def _log(entry):
    if _TRACE:
        _TRACE[-1].append(entry)


def _scalars(values):
    return tuple(repr(v) for v in values
                 if isinstance(v, (bool, int, float, np.generic)) and not isinstance(v, type))


class DeviceArray(np.ndarray):
    """A NumPy array that answers ``.data.ptr`` like a CuPy array, and whose
    operations give 0-d arrays, not NumPy scalars, as CuPy's do."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)

    @property
    def __cuda_array_interface__(self):
        """As CuPy's arrays say they live on the GPU: so that nnx takes this
        array down its device paths, not its host ones."""
        return {"shape": self.shape, "typestr": self.dtype.str, "version": 3,
                "data": (self.ctypes.data, False),
                "strides": None if self.flags.c_contiguous else self.strides}

    # A value read back to the host inside a recorded step: a real capture
    # refuses it (a device-to-host copy synchronises), so the emulated replay does
    def __float__(self):
        _no_host_read("float()")
        return float(self.view(np.ndarray))

    def __int__(self):
        _no_host_read("int()")
        return int(self.view(np.ndarray))

    def __bool__(self):
        _no_host_read("bool()")
        return bool(self.view(np.ndarray))

    def item(self, *args):
        _no_host_read(".item()")
        return self.view(np.ndarray).item(*args)

    def get(self):
        _no_host_read(".get()")
        return np.array(self)

    def dot(self, other, out=None):
        if _TRACE:
            raise AssertionError("a.dot(b) of a device array inside a recorded step: a real "
                                 "capture refuses CuPy's cuBLAS calls")
        return _dev(np.ndarray.dot(self.view(np.ndarray), other, out=out))

    def __getitem__(self, key):
        if _TRACE and any(getattr(k, "dtype", None) == np.bool_
                          for k in (key if isinstance(key, tuple) else (key,))):
            raise AssertionError("boolean-mask indexing of a device array inside a recorded "
                                 "step: its result's size is read back to the host")
        return super().__getitem__(key)

    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        if _TRACE and ufunc.__name__ == "matmul":
            raise AssertionError("the @ of device arrays inside a recorded step: a real "
                                 "capture refuses CuPy's cuBLAS calls")
        _log(("ufunc", ufunc.__name__, method, _scalars(inputs)))
        plain = tuple(x.view(np.ndarray) if isinstance(x, DeviceArray) else x for x in inputs)
        out = kw.get("out")
        if out is not None:
            kw["out"] = tuple(o.view(np.ndarray) if isinstance(o, DeviceArray) else o
                              for o in out)
        result = getattr(ufunc, method)(*plain, **kw)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _dev(result)


def _no_host_read(what):
    if _TRACE:
        raise AssertionError(f"{what} of a device array inside a recorded step: on a GPU the "
                             "capture is refused (a device-to-host copy synchronises)")


def _dev(x):
    """A result as CuPy would give it: arrays (0-d for scalars) of the device."""
    if isinstance(x, tuple):
        return tuple(_dev(v) for v in x)
    if isinstance(x, np.generic):
        return np.asarray(x).view(DeviceArray)
    return x.view(DeviceArray) if isinstance(x, np.ndarray) else x


def strict_replay(step, graphs=None):
    """A stand-in for a recorded graph: each replay runs ``step`` again, and
    every replay must pass the kernels, ufuncs and array functions the same
    host numbers as the first: a number that changes between steps would be
    frozen into a real graph at its recorded value. With ``graphs`` (the
    backend's ``Graphs``), the step runs as if being recorded: its products
    take the capture's path (nnx's own GEMMs, with their rules)."""
    first = []
    if graphs is not None:
        graphs.handle()  # as Graphs.record makes it: before the capture

    def replay():
        _TRACE.append([])
        if graphs is not None:
            graphs.capturing = types.SimpleNamespace(ptr=0)  # the stream being recorded
        try:
            result = step()
        finally:
            seen = _TRACE.pop()
            if graphs is not None:
                graphs.capturing = None
        if not first:
            first.append(seen)
        elif seen != first[0]:
            diff = [(a, b) for a, b in zip(first[0], seen) if a != b][:3]
            raise AssertionError(f"a replay passed other host values than the recording: "
                                 f"{diff or (len(first[0]), len(seen))}")
        return result
    return replay, None


class _Kernel:
    def __init__(self, host, spec):
        self.host, self.spec = host, spec

    def __call__(self, *args):
        spec = self.spec
        _log(("kernel", spec.name, _scalars(args)))
        n_in = len(spec.inputs)
        params = spec.inputs + spec.outputs
        shapes = [np.shape(a) for a, (raw, _, _) in zip(args, params) if not raw]
        shape = np.broadcast_shapes(*shapes) if shapes else ()
        # the type T: CuPy takes it from the array arguments typed T
        T = next((a.dtype for a, (raw, kind, _) in zip(args, params)
                  if kind == "T" and isinstance(a, np.ndarray)), np.dtype(np.float64))
        # and, as CuPy, refuses an array of another dtype than its parameter's
        for a, (_, kind, name) in zip(args, params):
            want = T if kind == "T" else kh._NUMPY.get(kind)
            if isinstance(a, np.ndarray) and want is not None \
                    and a.dtype != np.dtype(want):
                raise TypeError(f"{spec.name}: Type is mismatched. {name} {a.dtype} {want}")
        outs = list(args[n_in:])
        for k in range(len(outs), len(spec.outputs)):
            raw, kind, _ = spec.outputs[k]
            dtype = T if kind == "T" else kh._NUMPY[kind]
            outs.append(np.empty(shape, dtype=dtype).view(DeviceArray))
        for (raw, _, name), out in zip(spec.outputs, outs):
            if not raw and tuple(out.shape) != tuple(shape):
                raise ValueError(f"{spec.name}: Out shape is mismatched ({name}: "
                                 f"{tuple(out.shape)}, broadcast {tuple(shape)})")
        n = int(np.prod(shape)) if shape else 1
        flat_in = []
        for (raw, _, _), a in zip(spec.inputs, args):
            if raw:
                flat_in.append(np.asarray(a).reshape(-1))
            elif np.ndim(a) and np.size(a) != n:
                flat_in.append(np.broadcast_to(a, shape).reshape(-1))
            else:
                flat_in.append(np.asarray(a).reshape(-1))
        work = [o if o.flags.c_contiguous else np.ascontiguousarray(o) for o in outs]
        self.host(spec.name, *flat_in, *[w.reshape(-1) for w in work],
                  dtype=T if spec.generic else np.float32, size=n)
        for o, w in zip(outs, work):
            if w is not o:
                o[...] = w
        return outs[0] if len(outs) == 1 else tuple(outs)


class _Reduction:
    def __init__(self, map_expr):
        self.map_expr = map_expr

    def __call__(self, x):
        with np.errstate(invalid="ignore"):
            mapped = eval(self.map_expr, {"x": np.asarray(x)})  # noqa: S307 (ours)
        return np.asarray(np.sum(mapped, dtype=x.dtype)).view(DeviceArray)


class _Stream:
    ptr = 0

    def synchronize(self):
        pass


# what CuPy cannot do while a stream is being captured: its cuBLAS calls set
# the handle's stream, which raises during a capture; these read sizes back
_REFUSED_IN_CAPTURE = {
    **dict.fromkeys(("matmul", "dot", "vdot", "inner", "tensordot", "einsum"),
                    "CuPy's cuBLAS calls raise during a stream capture"),
    **dict.fromkeys(("nonzero", "flatnonzero", "argwhere", "unique"),
                    "its output size is read back to the host")}


class FakeCupy(types.ModuleType):
    """The parts of the cupy module the GPU backend uses, on NumPy."""

    def __init__(self, host):
        super().__init__("cupy")
        self._host = host
        self.ndarray = DeviceArray  # what owns() and the 0-d checks test for
        self.random = np.random
        self.cuda = types.SimpleNamespace(
            get_current_stream=lambda: _Stream(),
            memory=types.SimpleNamespace(Memory=lambda size: types.SimpleNamespace(ptr=0)),
            runtime=types.SimpleNamespace(runtimeGetVersion=lambda: 13000,
                                          getDevice=lambda: 0),
            Device=lambda device=None: contextlib.nullcontext(),
            device=types.SimpleNamespace(get_cublas_handle=lambda: None))

    def __getattr__(self, name):  # the rest of the array API: NumPy's, with CuPy's results
        value = getattr(np, name)
        if not callable(value) or isinstance(value, type) or name in ("dtype", "finfo"):
            return value

        def call(*args, **kw):
            if _TRACE and name in _REFUSED_IN_CAPTURE:
                raise AssertionError(f"cupy.{name} inside a recorded step: a real capture "
                                     f"refuses it ({_REFUSED_IN_CAPTURE[name]})")
            _log(("fn", name, _scalars(args), _scalars(kw.values())))
            return _dev(value(*args, **kw))
        return call

    # arrays of this "device"
    def asarray(self, x, dtype=None, order="K"):
        # CuPy's: a device array that already fits is returned as it is (no
        # copy); host data is always copied to the device
        if isinstance(x, DeviceArray):
            return _dev(np.asarray(x, dtype=dtype, order=order))
        return _dev(np.array(x, dtype=dtype, copy=True, order=order))

    def empty(self, shape, dtype=np.float64):
        return _dev(np.empty(shape, dtype))

    def empty_like(self, x, dtype=None):
        return _dev(np.empty_like(x, dtype=dtype))

    def zeros(self, shape, dtype=np.float64):
        return _dev(np.zeros(shape, dtype))

    def ascontiguousarray(self, x):
        return _dev(np.ascontiguousarray(x))

    def asnumpy(self, x):
        if isinstance(x, DeviceArray):
            _no_host_read("cupy.asnumpy")
        return np.array(x)

    def ElementwiseKernel(self, params, outs, body, name, **kw):  # noqa: N802 (CuPy's name)
        return _Kernel(self._host, kh.Spec(params, outs, body, name))

    def ReductionKernel(self, params, outs, map_expr, *rest, **kw):  # noqa: N802
        return _Reduction(map_expr)


class ReferenceBlas:
    """nnx's cuBLAS handle, on NumPy: ``gemm`` reads the column-major
    operands at the addresses given and writes ``C = op(A) op(B)``."""

    OP_N, OP_T = 0, 1

    def __init__(self, cupy, precision="float32"):
        self.precision = precision
        self.calls = []

    def close(self):
        pass

    def _matrix(self, ptr, rows, cols, ld, dtype):
        """The column-major ``rows x cols`` matrix at ``ptr`` with leading
        dimension ``ld`` (element ``(r, c)`` at ``ptr[r + c * ld]``)."""
        count = ld * (cols - 1) + rows
        raw = np.ctypeslib.as_array((ctypes.c_uint8 * (count * np.dtype(dtype).itemsize))
                                    .from_address(ptr)).view(dtype)
        return np.lib.stride_tricks.as_strided(
            raw, (rows, cols), (np.dtype(dtype).itemsize, ld * np.dtype(dtype).itemsize))

    def _operand(self, ptr, op, rows, cols, ld):
        """``op(X)`` of shape ``rows x cols``, as float64."""
        kind = {"float16": np.float16, "bfloat16": np.uint16}.get(self.precision, self._dtype)
        stored = (self._matrix(ptr, rows, cols, ld, kind) if op == self.OP_N
                  else self._matrix(ptr, cols, rows, ld, kind).T)
        if kind is np.uint16:  # bfloat16's bits: the high half of a float32
            stored = (stored.astype(np.uint32) << np.uint32(16)).view(np.float32)
        out = np.asarray(stored, dtype=np.float64)
        if self.precision == "tf32":  # TF32 math: 10 mantissa bits, to nearest even
            m, e = np.frexp(out)
            out = np.ldexp(np.round(m * 2.0 ** 11) / 2.0 ** 11, e)
        return out

    def gemm(self, stream_ptr, dtype_char, op_a, op_b, m, n, k, A, lda, B, ldb, C, ldc):
        self._dtype = np.float32 if dtype_char == "f" else np.float64
        if self.precision in ("float16", "bfloat16"):
            self._dtype = np.float32
        self.calls.append((op_a, op_b, m, n, k, lda, ldb, ldc))
        a = self._operand(A, op_a, m, k, lda)
        b = self._operand(B, op_b, k, n, ldb)
        c = self._matrix(C, m, n, ldc, np.float32 if dtype_char == "f" else np.float64)
        c[...] = a @ b


def cupy_backend(monkeypatch, dtype="float32", precision="float32"):
    """The real ``CupyBackend`` on this stand-in (and ``ReferenceBlas``)."""
    from nnx.backend import cuda_graphs
    from nnx.backend import cupy_backend as cb
    host = kh.HostKernels()
    fake = FakeCupy(host)
    monkeypatch.setattr(cb, "_import_cupy", lambda: fake)
    monkeypatch.setattr(cuda_graphs, "CublasHandle", ReferenceBlas)
    return cb.CupyBackend(dtype, precision)
