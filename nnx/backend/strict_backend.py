"""A simulated accelerator for CPU-only test runs.

Arrays live on array-api-strict's ``device1``: combining them with host arrays
or converting them to NumPy implicitly raises, just as CuPy arrays do, so a
host/device leak in the training loop fails a CPU test instead of waiting for
a GPU run. Random numbers are drawn by a host generator and uploaded; that is
the simulator's stand-in for a device generator, not a model of its speed.
"""

from __future__ import annotations

import numpy as np

from .base import Backend, BackendUnavailableError


class StrictBackend(Backend):
    name = "strict"

    def __init__(self, dtype="float32", precision="float32"):
        if precision not in (None, "float32"):
            raise BackendUnavailableError(
                f"backend 'strict' has only float32 products, not precision={precision!r} "
                "(the CPU backend emulates the others)")
        try:
            import array_api_strict as xp
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise BackendUnavailableError(
                "backend 'strict' needs the array-api-strict package: "
                "pip install array-api-strict"
            ) from exc
        super().__init__(xp, dtype, device=xp.Device("device1"))
        self._host = xp.Device("CPU_DEVICE")

    def asarray(self, x, dtype=None):
        # an upload to a device always copies; never alias the caller's host array
        dtype = self.dtype if dtype is None else dtype
        if self.owns(x):
            return x if x.dtype == dtype else self.xp.astype(x, dtype)
        return self.xp.asarray(np.array(x, copy=True), dtype=dtype, device=self.device)

    def to_numpy(self, x):
        # the one explicit way off the simulated device
        return np.asarray(x.to_device(self._host))

    def generator(self, seed):
        return np.random.default_rng(seed)

    def uniform(self, gen, shape, dtype=None):
        dtype = dtype or self.dtype_name
        return self.asarray(gen.random(shape, dtype=dtype), dtype=getattr(self.xp, dtype))
