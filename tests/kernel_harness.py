"""The GPU backend's CUDA kernels, without a GPU.

``specs()`` builds the GPU backend's kernel tables with a stand-in for CuPy
that only records each ``ElementwiseKernel`` (its parameters, outputs, body
and name). From those records this module writes

- a C++ library (``HostKernels``), each body inside a loop over the
  elements, as CuPy's generated kernel runs it per thread, compiled by g++
  and called through ctypes on NumPy arrays: the kernels' arithmetic can be
  checked against the reference backend on any machine with a compiler;
- a CUDA source for ``nvcc --ptx``, where nvcc is installed, which checks
  that every body compiles as device code.

What this cannot show is CuPy's own part (its indexing, broadcasting and
launch) and the device's math library: ``pytest -m gpu`` covers those.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

_TYPES = {"float64": "double", "float32": "float", "int64": "long long", "int32": "int",
          "uint16": "unsigned short"}
_NUMPY = {"double": np.float64, "float": np.float32, "long long": np.int64, "int": np.int32,
          "unsigned short": np.uint16}


class Spec:
    def __init__(self, params, outs, body, name):
        self.params, self.outs, self.body, self.name = params, outs, body, name
        self.inputs = [_param(p) for p in params.split(",") if p.strip()]
        self.outputs = [_param(p) for p in outs.split(",") if p.strip()]

    @property
    def generic(self):
        return any(t == "T" for _, t, _ in self.inputs + self.outputs)


def _param(text):
    words = text.split()
    raw = words[0] == "raw"
    if raw:
        words = words[1:]
    kind, name = words
    return raw, ("T" if kind == "T" else _TYPES[kind]), name


class _Recorder:
    """Stands in for the cupy module: records kernels instead of compiling them."""

    def __init__(self):
        self.kernels = {}

    def ElementwiseKernel(self, params, outs, body, name, **kw):  # noqa: N802 (CuPy's name)
        spec = Spec(params, outs, body, name)
        self.kernels[name] = spec
        return spec

    def ReductionKernel(self, *args, **kw):  # noqa: N802
        return None  # reductions are CuPy's own machinery: tested on the device


def specs():
    """Every elementwise kernel of the GPU backend, by name."""
    from nnx.backend import cupy_backend as cb
    rec = _Recorder()
    cb._Kernels(rec)
    optim = cb._OptimizerKernels(rec)
    for momentum in (False, True):
        for centered in (False, True):
            optim.rmsprop(momentum, centered)
    return rec.kernels


_PRELUDE_HOST = r"""
#include <cmath>
#include <cstring>
using namespace std;
static inline unsigned int __float_as_uint(float x) { unsigned int u; memcpy(&u, &x, 4); return u; }
static inline float __uint_as_float(unsigned int u) { float x; memcpy(&x, &u, 4); return x; }
"""


def _kernel_cpp(spec, T, device=False):
    """One kernel as a C++ (or CUDA) function of ``(n, args, strides)``."""
    lines, args = [], spec.inputs + spec.outputs
    for k, (raw, kind, name) in enumerate(args):
        ctype = T if kind == "T" else kind
        if raw:
            lines.append(f"    {ctype}* {name} = ({ctype}*)_a[{k}];")
    body = spec.body
    inner = []
    for k, (raw, kind, name) in enumerate(args):
        ctype = T if kind == "T" else kind
        if raw:
            continue
        if k < len(spec.inputs):
            inner.append(f"        const {ctype} {name} = (({ctype}*)_a[{k}])[i * _s[{k}]];")
        else:
            inner.append(f"        {ctype}& {name} = (({ctype}*)_a[{k}])[i * _s[{k}]];")
    fn = f"{spec.name}_{'f' if T == 'float' else 'd'}"
    # the names CuPy reserves (i, and a leading underscore) hold the loop's own
    head = (f'extern "C" __global__ void {fn}(long long _n, void** _a, long long* _s)'
            if device else f'extern "C" void {fn}(long long _n, void** _a, long long* _s)')
    loop = ("    for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < _n;"
            " i += (long long)blockDim.x * gridDim.x) {" if device
            else "    for (long long i = 0; i < _n; i++) {")
    # CuPy ends the operation with a semicolon of its own
    return "\n".join([head + " {", "    typedef " + T + " T;", *lines, loop, *inner,
                      "        " + body.replace("\n", "\n        ") + ";", "    }", "}"])


def source(device=False):
    parts = [] if device else [_PRELUDE_HOST]
    for spec in specs().values():
        for T in (("float", "double") if spec.generic else ("float",)):
            parts.append(_kernel_cpp(spec, T, device))
    return "\n\n".join(parts) + "\n"


def _cache_dir():
    return os.path.join(tempfile.gettempdir(), "nnx-kernel-harness")


class HostKernels:
    """The kernels compiled for the host by g++ (None where there is no g++)."""

    def __init__(self):
        cxx = shutil.which("g++") or shutil.which("c++")
        if cxx is None:
            raise RuntimeError("no C++ compiler (g++) on this machine")
        src = source()
        tag = hashlib.sha256(src.encode()).hexdigest()[:16]
        folder = _cache_dir()
        os.makedirs(folder, exist_ok=True)
        lib = os.path.join(folder, f"kernels-{tag}.so")
        if not os.path.exists(lib):
            path = os.path.join(folder, f"kernels-{tag}.cpp")
            with open(path, "w") as f:
                f.write(src)
            # -ffp-contract=off: a product and a sum stay two roundings, as NumPy's are
            tmp = lib + f".{os.getpid()}"
            subprocess.run([cxx, "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o", tmp,
                            path], check=True, capture_output=True, text=True)
            os.replace(tmp, lib)
        self.lib = ctypes.CDLL(lib)
        self.specs = specs()

    def __call__(self, name, *arrays, dtype=np.float64, size=None):
        """Run kernel ``name`` over its outputs' elements: inputs and outputs
        in the kernel's order, NumPy arrays (outputs written in place) or
        numbers; a one-element array or a number is broadcast."""
        spec = self.specs[name]
        T = "float" if np.dtype(dtype) == np.float32 or not spec.generic else "double"
        args = spec.inputs + spec.outputs
        if len(arrays) != len(args):
            raise TypeError(f"{name} takes {len(args)} arrays, got {len(arrays)}")
        keep, ptrs, strides = [], [], []
        # as in CuPy, the elements are those of the arrays that are not raw
        n = size if size is not None else \
            max(np.asarray(arrays[k]).size for k in range(len(args)) if not args[k][0])
        for k, ((raw, kind, pname), value) in enumerate(zip(args, arrays)):
            ctype = T if kind == "T" else kind
            want = _NUMPY[ctype]
            if k >= len(spec.inputs):  # outputs: written in place
                if not (isinstance(value, np.ndarray) and value.dtype == want
                        and value.flags.c_contiguous):
                    raise TypeError(f"{name}: output {pname} must be a C-contiguous "
                                    f"{np.dtype(want).name} array")
                arr = value
            else:
                arr = np.ascontiguousarray(np.asarray(value, dtype=want))
            keep.append(arr)
            ptrs.append(arr.ctypes.data)
            strides.append(0 if arr.size == 1 and not raw else 1)
        fn = getattr(self.lib, f"{name}_{'f' if T == 'float' else 'd'}")
        fn.argtypes = [ctypes.c_longlong, ctypes.POINTER(ctypes.c_void_p),
                       ctypes.POINTER(ctypes.c_longlong)]
        fn(n, (ctypes.c_void_p * len(ptrs))(*ptrs), (ctypes.c_longlong * len(strides))(*strides))
        return keep[len(spec.inputs):]


def nvcc_check():
    """``(ok, output)`` of compiling every kernel for the device with nvcc."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise RuntimeError("nvcc is not installed")
    folder = tempfile.mkdtemp(prefix="nnx-nvcc-")
    path = os.path.join(folder, "kernels.cu")
    with open(path, "w") as f:
        f.write(source(device=True))
    r = subprocess.run([nvcc, "--ptx", "-arch=sm_90", "-o", os.path.join(folder, "k.ptx"), path],
                       capture_output=True, text=True)
    shutil.rmtree(folder, ignore_errors=True)
    return r.returncode == 0, re.sub(r"\S*kernels\.cu", "kernels.cu", r.stdout + r.stderr)
