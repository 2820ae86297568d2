"""Fused optimiser updates for the CPU, compiled by Numba where it is installed.

The NumPy backend's updates are a handful of whole-array passes (Adam: twelve
NumPy calls per block). Each call costs a Python round trip, and the arrays
cross the memory bus once per pass unless a block stays in cache. A loop that
reads each element's parameter, gradient and state once, updates them in
registers and writes them back does the same work in one pass: measured on a
2-core Xeon (AVX-512) VM, Adam over 1.86M float32 parameters took 1.0 ms on one
core against 2.6 ms for the blocked NumPy passes on two, and SGD with momentum
0.75 ms against 1.1.

The loops below are plain Python, readable as they are; ``kernels()``
compiles them with ``numba.njit`` on first use (about a second per dtype,
then cached on disk beside this file, or in Numba's cache folder where this
one is read-only). They do the NumPy backend's operations in its order, in
the arrays' dtype: Numba's default floating point neither fuses a multiply
and an add nor reorders sums, so the results are bit for bit the NumPy
passes' (tested; only where two NaNs meet can the sign bit of the NaN that
comes out differ). ``error_model="numpy"`` gives division by zero NumPy's
answer (inf or nan) instead of Python's exception, which is also what lets
LLVM vectorise the loops.

Numba is the optional extra ``fast`` (``pip install 'nnx-dl[fast]'``).
Without it, or with the environment variable ``NNX_NUMBA=0`` (or ``false``,
``off``, ``no``), the backend runs its NumPy passes; ``status()`` says which.
"""

from __future__ import annotations

import os
import re
import threading

import numpy as np

_STATE = {}
_LOCK = threading.Lock()  # one compilation, whichever threads ask at once


def _new_lock_after_fork():
    """A child forked while another thread compiled would inherit the lock
    held, by a thread it does not have."""
    global _LOCK
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


def _gradient(g, p, scale, wd, has_scale, has_wd):
    """One element's gradient after clipping (``scale``) and L2 weight decay,
    as the reference's ``_decayed``: ``g * scale + wd * p``. Compiled to be
    inlined into each loop (``_compile``)."""
    if has_scale:
        g = g * scale
    if has_wd:
        g = g + wd * p
    return g


def _sgd(p, g, lr, scale, wd, has_scale, has_wd):
    for i in range(p.size):
        gi = _gradient(g[i], p[i], scale, wd, has_scale, has_wd)
        p[i] = p[i] - lr * gi


def _momentum(p, g, vel, lr, mu, scale, wd, has_scale, has_wd, nesterov):
    for i in range(p.size):
        gi = _gradient(g[i], p[i], scale, wd, has_scale, has_wd)
        step = lr * gi
        v = vel[i] * mu + step
        vel[i] = v
        if nesterov:
            p[i] = p[i] - (mu * v + step)
        else:
            p[i] = p[i] - v


def _adam(p, g, m, v, b1, c1, b2, c2, eps, step, scale, l2, shrink, has_scale, has_l2,
          has_shrink):
    # the NumPy backend's fold of Adam's bias corrections (see adam_step):
    # p -= step * m / (sqrt(v) + eps), step and eps scaled by sqrt(1 - b2**t)
    for i in range(p.size):
        gi = _gradient(g[i], p[i], scale, l2, has_scale, has_l2)
        pi = p[i]
        if has_shrink:  # AdamW's decoupled weight decay
            pi = pi * shrink
        mi = m[i] * b1 + gi * c1
        vi = v[i] * b2 + (gi * gi) * c2
        m[i] = mi
        v[i] = vi
        p[i] = pi - (mi / (np.sqrt(vi) + eps)) * step


def _rmsprop(p, g, sq, buf, avg_g, lr, alpha, c, eps, mu, scale, wd, has_scale, has_wd,
             has_momentum, centred):
    # the reference's RMSprop (nnx/backend/base.py), c = 1 - alpha; buf and
    # avg_g are read only with momentum and when centred
    for i in range(p.size):
        gi = _gradient(g[i], p[i], scale, wd, has_scale, has_wd)
        s = sq[i] * alpha + c * (gi * gi)
        sq[i] = s
        if centred:
            a = avg_g[i] * alpha + c * gi
            avg_g[i] = a
            v = s - a * a
            if v < 0:  # rounding below 0 (NumPy's maximum(v, 0); a NaN stays)
                v = c - c  # a zero of the arrays' dtype (v - v: NaN for -inf)
            d = np.sqrt(v) + eps
        else:
            d = np.sqrt(s) + eps
        if has_momentum:
            b = buf[i] * mu + gi / d
            buf[i] = b
            p[i] = p[i] - lr * b
        else:
            p[i] = p[i] - lr * (gi / d)


def _adagrad(p, g, sum_sq, rate, eps, scale, wd, has_scale, has_wd):
    # the reference's Adagrad; rate = lr / (1 + (t - 1) lr_decay), computed as it does
    for i in range(p.size):
        gi = _gradient(g[i], p[i], scale, wd, has_scale, has_wd)
        s = sum_sq[i] + gi * gi
        sum_sq[i] = s
        p[i] = p[i] - (rate * gi) / (np.sqrt(s) + eps)


# activation gradients from the activation's output y, into a new array: the
# NumPy backend's products in its order (tanh: g * (1 - y*y); sigmoid:
# (g * y) * (1 - y); relu: g times 1 or 0, as NumPy multiplies by the mask)
def _tanh_grad(g, y, out, one):
    for i in range(y.size):
        yi = y[i]
        out[i] = g[i] * (one - yi * yi)


def _sigmoid_grad(g, y, out, one):
    for i in range(y.size):
        yi = y[i]
        out[i] = (g[i] * yi) * (one - yi)


def _relu_grad(g, y, out, one):
    zero = one - one
    for i in range(y.size):
        out[i] = g[i] * (one if y[i] > zero else zero)


_LOOPS = {"sgd": _sgd, "momentum": _momentum, "adam": _adam, "rmsprop": _rmsprop,
          "adagrad": _adagrad, "tanh_grad": _tanh_grad,
          "sigmoid_grad": _sigmoid_grad, "relu_grad": _relu_grad}


def kernels():
    """The compiled loops by name (``sgd``, ``momentum``, ``adam``,
    ``rmsprop``, ``adagrad``, and
    ``tanh_grad``, ``sigmoid_grad``, ``relu_grad``), or None
    where Numba is missing, fails to import, or ``NNX_NUMBA=0`` is set."""
    if "kernels" not in _STATE:
        with _LOCK:  # two threads compiling at once wrapped a jitted function again
            if "kernels" not in _STATE:
                _STATE["kernels"], _STATE["why"] = _compile()
    return _STATE["kernels"]


def loaded():
    """The compiled loops if they are loaded already, else None: for work
    too small to be worth loading Numba for (about 0.5 s a process)."""
    return _STATE.get("kernels")


def status():
    """One line for reports: what runs the CPU's optimiser updates. (It does
    not load Numba: a run too small to load it stays so.)"""
    if _STATE.get("kernels") is not None:
        return f"fused loops (Numba {_STATE['version']})"
    if "kernels" in _STATE:
        return f"NumPy passes ({_STATE['why']})"
    why = _off()
    if why:
        return f"NumPy passes ({why})"
    from .numpy_backend import _FUSED_MIN
    return (f"fused loops from {_FUSED_MIN:,} elements (Numba {_STATE['version']}, "
            "loaded at the first such update)")


def _off():
    """Why the loops cannot run here, or "" (without importing Numba)."""
    if os.environ.get("NNX_NUMBA", "1").strip().lower() in ("0", "false", "off", "no"):
        return f"NNX_NUMBA={os.environ['NNX_NUMBA']}"
    import importlib.metadata
    import importlib.util
    try:
        if importlib.util.find_spec("numba") is None:
            return "Numba not installed"
        _STATE["version"] = importlib.metadata.version("numba")
    except (ImportError, ValueError, importlib.metadata.PackageNotFoundError) as e:
        return _one_line(f"Numba not available: {type(e).__name__}: {e}")
    if os.environ.get("NUMBA_DISABLE_JIT", "0").strip() not in ("", "0"):
        return "NUMBA_DISABLE_JIT is set: the loops would run as Python"
    return ""


def _compile():
    why = _off()
    if why:
        return None, why
    try:
        import numba
    except Exception as e:  # noqa: BLE001 - not installed, or broken: NumPy passes
        return None, _one_line(f"Numba not available: {type(e).__name__}: {e}")
    _STATE["version"] = numba.__version__
    if numba.config.DISABLE_JIT:
        return None, "NUMBA_DISABLE_JIT is set: the loops would run as Python"
    # the loops call the module's _gradient: compiled, it is inlined into each
    global _gradient
    if not hasattr(_gradient, "py_func"):  # not compiled yet in this process
        _gradient = numba.njit(inline="always", error_model="numpy")(_gradient)
    try:
        jit = numba.njit(nogil=True, cache=True, error_model="numpy")
        return {name: jit(loop) for name, loop in _LOOPS.items()}, ""
    except RuntimeError:  # no writable folder for the cache: compile in every process
        jit = numba.njit(nogil=True, error_model="numpy")
        return {name: jit(loop) for name, loop in _LOOPS.items()}, ""


def _one_line(text):
    """A message's first line, without the terminal's colour codes (Numba's have them)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(text)).split("\n")[0]


def disable(why):
    """The NumPy passes from now on in this process (a loop that Numba
    could not compile here), with a warning that says why."""
    import warnings
    why = _one_line(why)
    _STATE["kernels"], _STATE["why"] = None, why
    warnings.warn(f"nnx: the CPU's fused loops are off, the NumPy passes run instead: {why}",
                  RuntimeWarning, stacklevel=3)

