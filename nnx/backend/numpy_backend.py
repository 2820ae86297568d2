"""The CPU backend: NumPy arrays on the host.

Overrides of the reference methods exist only where NumPy can avoid a
temporary (``out=`` buffers); results are identical to the reference.
"""

from __future__ import annotations

import numpy as np

from .base import Backend


class NumpyBackend(Backend):
    name = "cpu"

    def __init__(self, dtype="float32"):
        super().__init__(np, dtype)

    def owns(self, x) -> bool:
        return isinstance(x, np.ndarray)

    def copy(self, x):
        return x.copy()

    def generator(self, seed):
        return np.random.default_rng(seed)

    def uniform(self, gen, shape):
        return gen.random(shape, dtype=self.dtype)

    def matmul(self, a, b, out=None):
        return np.matmul(a, b, out=out)

    def sum_rows(self, g, out=None):
        return np.sum(g, axis=0, keepdims=True, out=out)

    def take_rows(self, x, idx):
        return np.take(x, idx, axis=0)
