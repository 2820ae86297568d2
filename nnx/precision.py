"""Reduced-precision matrix products and the dynamic loss scaling that
float16 needs.

``NeuralNetwork(..., precision=...)`` chooses how the network's matrix
products run; everything else (parameters, gradients, optimiser state, the
elementwise passes and the loss) stays float32:

- ``"float32"`` (default): exact float32 products;
- ``"tf32"``: the operands rounded to 10 mantissa bits (TF32 tensor cores);
- ``"bfloat16"``: operands in bfloat16 (8 exponent bits, as float32, and 7
  mantissa bits), products accumulated and returned in float32;
- ``"float16"``: operands in float16 (5 exponent bits, 10 mantissa bits),
  accumulated in float32; its narrow range needs loss scaling (below).

On the GPU these run on tensor cores (cuBLAS TF32 math, or ``cublasGemmEx``
with half-precision operands); the float32 parameters are the master
weights, cast to the operand format at each product. On the CPU the
operands are rounded the same way and multiplied in float32: no faster, but
the numbers (and the loss scaling) can be tried and tested anywhere.
"""

from __future__ import annotations

from . import _checks
from .backend import PRECISIONS

__all__ = ["PRECISIONS", "LossScaler"]


class LossScaler:
    """Dynamic loss scaling, PyTorch's ``GradScaler`` rule, on the device.

    The loss's gradient is multiplied by the scale ``S`` before the backward
    pass, so that small gradients survive float16 operands; the optimiser
    multiplies the gradient by ``1/S`` again. When any gradient element is
    NaN or infinite (the scaled values overflowed float16), the step is
    skipped (parameters, optimiser state and step count unchanged) and ``S``
    is multiplied by ``backoff_factor``; after ``growth_interval`` good steps
    in a row, ``S`` is multiplied by ``growth_factor``. Gradient clipping
    (``clip_norm``) sees the unscaled gradient. The scale and the count live
    in device arrays, so a recorded step carries the rule with it.

    A float16 network gets one with PyTorch's defaults (``net.loss_scaler``);
    replace it before training to change them.
    """

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000):
        self.init_scale = _checks.number("init_scale", init_scale)
        # the scale is a float32, and 1/scale undoes it: both must be normal numbers
        tiny, big = 2.0 ** -126, 2.0 ** 126
        if not tiny <= self.init_scale <= big:
            raise _checks.InputValueError(
                f"init_scale={init_scale!r} must be from 2**-126 to 2**126 ({tiny:.3g} to "
                f"{big:.3g}): the scale is a float32, and so is 1/scale, which undoes it (1e39 "
                "would be infinite, every step skipped; 1e-46 zero)")
        self.growth_factor = _checks.number("growth_factor", growth_factor)
        if self.growth_factor <= 1.0:
            raise _checks.InputValueError(f"growth_factor={growth_factor!r} must be above 1")
        self.backoff_factor = _checks.in_range("backoff_factor", backoff_factor, 0, 1,
                                               low_open=True, high_open=True)
        self.growth_interval = _checks.integer("growth_interval", growth_interval, minimum=1)
        self._device = None  # (scale, good steps in a row) on the network's device
        self._start = (self.init_scale, 0)  # where the device arrays begin

    def __getstate__(self):
        # a copy goes on from this scaler's current scale and count
        state = dict(self.__dict__)
        if self._device is not None:
            state["_start"] = self.state(self._backend)
        state["_device"] = None
        state.pop("_backend", None)
        return state

    def __repr__(self):
        return (f"LossScaler(init_scale={self.init_scale}, growth_factor={self.growth_factor}, "
                f"backoff_factor={self.backoff_factor}, "
                f"growth_interval={self.growth_interval})")

    def arrays(self, backend):
        """The device scale and count, made at the first use (at ``init_scale``)."""
        if self._device is None:
            scale, good = self._start
            self._device = (backend.asarray(scale), backend.zeros_int(()))
            backend.assign(self._device[1], good)
            self._backend = backend
        return self._device

    def scale_of(self, backend):
        """The current scale as a 0-d device array."""
        return self.arrays(backend)[0]

    def after_step(self, backend, factor):
        """Update the scale from a step's unscale ``factor`` (negative: skipped)."""
        scale, good = self.arrays(backend)
        backend.update_loss_scale(scale, good, factor, self.growth_factor,
                                  self.backoff_factor, self.growth_interval)

    def state(self, backend):
        """``(scale, good steps)`` as host numbers (for checkpoints)."""
        scale, good = self.arrays(backend)
        return float(backend.to_numpy(scale)), int(backend.to_numpy(good))

    def load_state(self, backend, scale, good):
        s, g = self.arrays(backend)
        backend.assign(s, float(scale))
        backend.assign(g, int(good))

    def reset(self):
        """Back to ``init_scale`` (a new run)."""
        self._device, self._start = None, (self.init_scale, 0)
