"""Flush-to-zero for the CPU's optimiser updates.

Where a parameter's gradient is exactly zero, batch after batch (the weights
of a pixel that is blank in every image of a batch, a ReLU unit that no
longer fires), its optimiser state only decays: Adam's first moment and the
momentum velocity by 0.9 a step, Adam's second moment by 0.999. After some
hundreds of steps (float32) the values leave the normal range (below
``finfo.tiny``, 1.2e-38) and spend about 150 more steps as subnormal
numbers, on which an x86 core takes a slow microcode path for every
multiply and add. Measured on Fashion-MNIST (pixels / 255, a 784-512-10 ReLU
network, Adam, float32, 3 epochs): a quarter of Adam's first moments were
subnormal, and each optimiser step took 3.7 ms instead of 0.7.

The SSE control register has two bits for this: flush-to-zero (results that
would be subnormal become 0) and denormals-are-zero (subnormal inputs read as
0). ``flushing()`` sets both around a block of work and puts them back as
they were after it; ``flush_here()`` sets them for good in a thread of nnx's
own. (A thread started while they are set starts with them set.) Values
that small are below anything an update can resolve (Adam divides the moment
by ``sqrt(v) + eps``), so flushing them changes no result measurably; it
makes them exact zeros.

Only x86-64 Linux with glibc is handled (its ``fenv_t`` ends with the SSE
register, and ``fesetenv`` loads it whole); elsewhere ``SUPPORTED`` is False
and both functions do nothing: the updates are the same, at the slower speed
while subnormals last. The GPU backend needs none of this (NVIDIA GPUs
handle subnormals at full speed).
"""

from __future__ import annotations

import ctypes
import platform

_FTZ_DAZ = 0x8040  # MXCSR bit 15 (flush to zero) and bit 6 (denormals are zero)


class _Fenv(ctypes.Structure):
    # glibc's x86-64 fenv_t: the x87 environment (28 bytes), then MXCSR
    _fields_ = [("x87", ctypes.c_uint32 * 7), ("mxcsr", ctypes.c_uint32)]


def _libm():
    # a 64-bit process on x86-64 Linux with glibc: a 32-bit Python on an x86-64
    # kernel reports the same machine, but its fenv_t is the x87 part alone
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64") \
            or platform.libc_ver()[0] != "glibc" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:  # glibc's libm by its soname (find_library would run ldconfig first)
        lib = ctypes.CDLL("libm.so.6")
        get, put = lib.fegetenv, lib.fesetenv
        lib.feupdateenv  # noqa: B018 - the third function used, checked here
    except (OSError, AttributeError):
        return None
    for f in (get, put, lib.feupdateenv):
        f.argtypes, f.restype = [ctypes.POINTER(_Fenv)], ctypes.c_int
    env = _Fenv()
    return lib if get(ctypes.byref(env)) == 0 else None


_LIBM = _libm()
SUPPORTED = _LIBM is not None


def flush_here():
    """Set flush-to-zero and denormals-are-zero in the calling thread, for good
    (nnx's own worker threads, which run nothing else)."""
    if _LIBM is not None:
        _set_bits(_FTZ_DAZ)


class flushing:
    """Flush-to-zero and denormals-are-zero in the calling thread inside the
    ``with`` block; after it, the environment as it was before (a caller that
    had set the bits keeps them), with any exception flag the block raised.
    A class, not a generator: it runs around every CPU optimiser update, and
    costs a few microseconds (two C calls in, one out; none where the bits
    are set already, as in nnx's own threads)."""

    __slots__ = ("_saved", "_entered")

    def __enter__(self):
        if getattr(self, "_entered", False):  # its saved state is one thread's, once
            raise RuntimeError("a flushing() is entered once; use a new one for each block")
        self._entered, self._saved = True, None
        saved = _Fenv()
        if _LIBM is None or _LIBM.fegetenv(saved) != 0 or saved.mxcsr & _FTZ_DAZ == _FTZ_DAZ:
            return self
        env = _Fenv.from_buffer_copy(saved)
        env.mxcsr |= _FTZ_DAZ
        self._saved = saved
        try:
            _LIBM.fesetenv(env)
        except BaseException:  # an interrupt right after the call: leave nothing set
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self._saved is not None:  # glibc's feupdateenv: the saved environment,
            _LIBM.feupdateenv(self._saved)  # then the flags raised meanwhile
            self._saved = None
        self._entered = False
        return False


def _set_bits(mxcsr):
    """The calling thread's flush bits as in ``mxcsr``; all else as it is now."""
    env = _Fenv()
    if _LIBM.fegetenv(ctypes.byref(env)) == 0:
        env.mxcsr = (env.mxcsr & ~_FTZ_DAZ) | (mxcsr & _FTZ_DAZ)
        _LIBM.fesetenv(ctypes.byref(env))
