"""The backend shim: the one place where nnx names NumPy or CuPy.

``get_backend("cpu")`` gives NumPy on the host, ``get_backend("gpu")`` CuPy on
the current CUDA device, and ``get_backend("strict")`` array-api-strict's
simulated device (for tests that must catch host/device leaks without a GPU).
CuPy is imported only when the GPU backend is first asked for.
"""

from __future__ import annotations

from .._checks import InputTypeError, InputValueError, did_you_mean
from .base import (
    PRECISIONS,
    Backend,
    BackendUnavailableError,
    CaptureUnavailable,
    dtype_name,
    precision_name,
)

BACKENDS = ("cpu", "gpu", "strict")

_cache: dict = {}


def get_backend(name="cpu", dtype=None, precision=None) -> Backend:
    """The backend called ``name`` ("cpu", "gpu" or "strict") computing in ``dtype``
    (a name, or a NumPy dtype or type; float32 when not given), its matrix
    products in ``precision`` (``PRECISIONS``; float32 when not given).

    A ``Backend`` instance is returned unchanged; a ``dtype`` or ``precision``
    other than its own is refused. Raises ``ValueError`` for an unknown name,
    dtype or precision and ``BackendUnavailableError`` when the backend cannot
    run on this machine.
    """
    if isinstance(name, Backend):
        if dtype is not None and dtype_name(dtype) != name.dtype_name:
            raise InputValueError(f"dtype={dtype_name(dtype)!r} differs from the dtype of "
                                  f"backend={name!r}; pass one or the other")
        if precision is not None and precision != name.precision:
            raise InputValueError(f"precision={precision!r} differs from the precision of "
                                  f"backend={name!r}; pass one or the other")
        return name
    if name not in BACKENDS:
        raise InputValueError(f"backend={name!r} is not known{did_you_mean(name, BACKENDS)}; "
                              f"expected one of {BACKENDS}")
    dtype = dtype_name("float32" if dtype is None else dtype)
    precision = precision_name(precision, dtype)
    key = (name, dtype, precision)
    if name == "gpu":  # one per device: its cuBLAS handle and workspace live there
        from .cupy_backend import current_device
        key = (*key, current_device())
    if key not in _cache:
        if name == "cpu":
            from .numpy_backend import NumpyBackend as cls
        elif name == "gpu":
            from .cupy_backend import CupyBackend as cls
        else:
            from .strict_backend import StrictBackend as cls
        _cache[key] = cls(dtype) if precision == "float32" else cls(dtype, precision)
    return _cache[key]


def gpu_available() -> tuple[bool, str]:
    """``(True, "")`` if the GPU backend can run here, else ``(False, reason)``."""
    try:
        get_backend("gpu")
    except BackendUnavailableError as exc:
        return False, str(exc)
    return True, ""


def backend_of(x, dtype=None) -> Backend:
    """The backend whose arrays ``x`` is, computing in ``dtype`` (default: x's own
    floating dtype, else float32). Used by operations built outside a network."""
    kind = {"numpy": "cpu", "cupy": "gpu", "array_api_strict": "strict"}.get(
        type(x).__module__.split(".")[0]
    )
    if kind is None:
        raise InputTypeError(
            f"expected a NumPy, CuPy or array-api-strict array, got {type(x).__name__}"
        )
    if dtype is None:
        dtype = str(x.dtype).replace("array_api_strict.", "")
        dtype = dtype if dtype in ("float32", "float64") else "float32"
    device = getattr(x, "device", None) if kind == "gpu" else None
    if hasattr(device, "__enter__"):  # a CuPy array: the backend of its own device
        with device:
            return get_backend(kind, dtype)
    return get_backend(kind, dtype)


__all__ = ["Backend", "BackendUnavailableError", "CaptureUnavailable", "BACKENDS", "PRECISIONS",
           "get_backend", "gpu_available", "backend_of"]
