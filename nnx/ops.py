"""Operations: the building blocks of a layer.

Each operation keeps what its forward pass saw and returns the gradient with
respect to its input on the way back. Array work goes through ``self.backend``
(NumPy on the CPU, CuPy on the GPU); the formula of each forward pass sits
right above its gradient.
"""

from __future__ import annotations

import math

from . import _checks
from ._checks import InputTypeError, InputValueError
from .backend import backend_of

_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _check_shape(what, got, expected):
    if got.shape != expected.shape:
        raise InputValueError(
            f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        )


class Operation:
    """One step of a network: ``forward(input_)`` then ``backward(output_grad)``.

    Subclasses implement ``_output(inference)`` and ``_input_grad(output_grad)``.
    ``backend`` is set by the layer that owns the operation; an operation used
    on its own computes in the backend and dtype of each input it is given.
    """

    output = None  # what the last forward pass returned
    # arrays a pass leaves behind: copies and pickles keep settings and parameters only
    _pass_state = ("input_", "output", "input_grad")
    # (also for subclasses whose __init__ does not call Operation.__init__)
    backend, _follows_input, _auto_backend = None, True, None

    def __init__(self, backend=None):
        self.backend = backend
        # used on its own, an operation computes in the backend and dtype of
        # each input it is given (unless ``backend`` is set by hand); a layer
        # binds it to the network's backend
        self._follows_input, self._auto_backend = backend is None, None

    def _bind(self, backend):
        self.backend, self._follows_input = backend, False

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in self._pass_state}

    def _check_output_grad(self, output_grad):
        if self.output is None:
            raise RuntimeError(f"{type(self).__name__}.backward() was called before its "
                               "forward(): run a forward pass (e.g. train_batch) first")
        _check_shape("output_grad", output_grad, self.output)

    def forward(self, input_, inference=False):
        if self._follows_input and self.backend is self._auto_backend:
            self.backend = self._auto_backend = backend_of(input_)
        self.input_ = input_
        self.output = self._output(inference)
        return self.output

    def backward(self, output_grad):
        self._check_output_grad(output_grad)
        self.input_grad = self._input_grad(output_grad)
        _check_shape("input_grad", self.input_grad, self.input_)
        return self.input_grad

    def _output(self, inference):
        raise NotImplementedError(f"{type(self).__name__} defines no _output(inference)")

    def _input_grad(self, output_grad):
        raise NotImplementedError(
            f"{type(self).__name__} defines no _input_grad(output_grad), so no gradient can "
            "flow back through it: it serves inference only")


class ParamOperation(Operation):
    """An operation with a parameter array ``param``; ``backward`` also sets
    ``param_grad``. Inside a network it is written into ``grad_out``, a view
    into the network's flat gradient buffer, so the optimiser can update all
    parameters at once; an operation used on its own returns a new array on
    every pass (one kept from an earlier pass is never overwritten)."""

    def __init__(self, param, backend=None):
        super().__init__(backend if backend is not None else backend_of(param))
        self.param = param
        self.param_grad = None
        self.grad_out = None  # set by the network that owns the operation

    def backward(self, output_grad, input_grad=True):
        """``input_grad=False`` skips the input gradient (returns None): the
        network's first operation never needs it, and for ``x @ W`` it costs
        as much as the parameter gradient."""
        if input_grad:
            input_grad = super().backward(output_grad)
        else:
            self._check_output_grad(output_grad)
            input_grad = self.input_grad = None
        grad = self._param_grad(output_grad)
        _check_shape("param_grad", grad, self.param)
        if self.grad_out is not None and grad is not self.grad_out:
            # a _param_grad of one's own may return a new array: the optimiser
            # reads the network's gradient buffer, so the values go there
            self.backend.assign(self.grad_out, grad)
            grad = self.grad_out
        self.param_grad = grad
        return input_grad

    def _param_grad(self, output_grad):
        raise NotImplementedError(
            f"{type(self).__name__} defines no _param_grad(output_grad), the gradient of the "
            "loss with respect to its param")


class WeightMultiply(ParamOperation):
    """``x @ W`` with ``W`` of shape ``(n_in, n_out)``."""

    def _output(self, inference):
        x, w = self.input_, self.param
        if len(x.shape) != 2 or x.shape[1] != w.shape[0]:
            raise InputValueError(f"WeightMultiply: an input of shape {tuple(x.shape)} does not "
                                  f"fit W of shape {tuple(w.shape)}; expected (rows, {w.shape[0]})")
        return self.backend.matmul(x, w)

    def _input_grad(self, output_grad):
        return self.backend.matmul(output_grad, self.param.T)

    def _param_grad(self, output_grad):
        return self.backend.matmul(self.input_.T, output_grad, out=self.grad_out)


class BiasAdd(ParamOperation):
    """``x + B`` with ``B`` of shape ``(1, n)``."""

    def __init__(self, param, backend=None):
        if len(param.shape) != 2 or param.shape[0] != 1:
            raise InputValueError(f"BiasAdd needs a (1, n) bias, got shape {tuple(param.shape)}")
        super().__init__(param, backend)

    def _output(self, inference):
        x, b = self.input_, self.param
        if len(x.shape) != 2 or x.shape[1] != b.shape[1]:
            raise InputValueError(f"BiasAdd: an input of shape {tuple(x.shape)} does not fit B "
                                  f"of shape {tuple(b.shape)}; expected (rows, {b.shape[1]})")
        return x + b

    def _input_grad(self, output_grad):
        return output_grad

    def _param_grad(self, output_grad):
        return self.backend.sum_rows(output_grad, out=self.grad_out)


class BiasActivation(ParamOperation):
    """``activation(x + B)`` as one operation: what ``Dense`` uses in place of
    ``BiasAdd`` + activation on backends that fuse the two into one kernel
    (the GPU). The backend is given the activation's name and setting, and
    hands back, beside the output, what its backward pass needs (``saved``)."""

    saved = None  # the backend's record of the last forward pass, for backward
    _pass_state = ParamOperation._pass_state + ("saved",)

    def __init__(self, param, activation, backend=None):
        super().__init__(param, backend)
        self.activation = activation  # a built-in activation: its name and setting

    def _output(self, inference):
        act = self.activation
        out, self.saved = self.backend.bias_activation(self.input_, self.param, act.name,
                                                       activation_setting(act))
        return out

    def _input_grad(self, output_grad):
        act = self.activation
        return self.backend.bias_activation_grad(act.name, activation_setting(act), self.saved,
                                                 output_grad)

    def backward(self, output_grad, input_grad=True):
        # the bias gradient is the column sum of the input gradient: always needed
        self._check_output_grad(output_grad)
        self.input_grad = self._input_grad(output_grad)
        self.param_grad = self.backend.sum_rows(self.input_grad, out=self.grad_out)
        return self.input_grad


# --------------------------------------------------------------- activations
# A built-in activation has a ``name`` (its key in ACTIVATIONS) and, where one
# constructor argument changes its formula, ``setting``: that argument's name.
# Checkpoints and the fused GPU kernels know an activation by the two.

class Linear(Operation):
    """The identity."""

    name = "linear"

    def _output(self, inference):
        return self.input_

    def _input_grad(self, output_grad):
        return output_grad


class Sigmoid(Operation):
    """``1 / (1 + exp(-x))``, evaluated through ``z = exp(-|x|)`` so that ``exp``
    never overflows and small outputs keep their relative precision."""

    name = "sigmoid"

    def _output(self, inference):
        return self.backend.sigmoid(self.input_)  # the one the sigmoid cross-entropy uses

    def _input_grad(self, output_grad):
        return output_grad * self.output * (1.0 - self.output)


class Tanh(Operation):
    """Hyperbolic tangent."""

    name = "tanh"

    def _output(self, inference):
        return self.backend.xp.tanh(self.input_)

    def _input_grad(self, output_grad):
        return output_grad * (1.0 - self.output * self.output)


class ReLU(Operation):
    """``max(x, 0)``; the gradient at 0 is taken as 0."""

    name = "relu"

    def _output(self, inference):
        return self.backend.xp.maximum(self.input_, 0.0)

    def _input_grad(self, output_grad):
        return self.backend.xp.where(self.input_ > 0, output_grad, 0.0)


class LeakyReLU(Operation):
    """``x`` for ``x > 0``, else ``alpha * x``."""

    name = "leaky_relu"
    setting = "alpha"

    def __init__(self, alpha=0.01, backend=None):
        alpha = _checks.in_range("LeakyReLU alpha", alpha, 0, 1, high_open=True)
        super().__init__(backend)
        self.alpha = alpha

    def _output(self, inference):
        return self.backend.xp.where(self.input_ > 0, self.input_, self.alpha * self.input_)

    def _input_grad(self, output_grad):
        return self.backend.xp.where(self.input_ > 0, output_grad, self.alpha * output_grad)


class ReLU6(Operation):
    """ReLU capped at 6: ``min(max(x, 0), 6)``."""

    name = "relu6"

    def _output(self, inference):
        return self.backend.xp.clip(self.input_, 0.0, 6.0)

    def _input_grad(self, output_grad):
        xp = self.backend.xp
        inside = xp.logical_and(self.input_ > 0, self.input_ < 6)
        return xp.where(inside, output_grad, 0.0)


class GELU(Operation):
    """Gaussian error linear unit, as PyTorch defines it: ``x * Phi(x)`` with
    ``Phi`` the standard normal distribution function (``approximate="none"``),
    or with ``Phi(x)`` replaced by ``(1 + tanh(sqrt(2/pi) (x + 0.044715 x**3))) / 2``
    (``approximate="tanh"``)."""

    name = "gelu"
    setting = "approximate"

    def __init__(self, approximate="none", backend=None):
        approximate = _checks.name_in("GELU approximate", approximate, ("none", "tanh"))
        super().__init__(backend)
        self.approximate = approximate

    def _tanh_form(self):
        """``(tanh(u), c)`` with ``u = sqrt(2/pi) (c + 0.044715 c**3)`` and ``c``
        the input clipped to [-10, 10]: beyond, u > 43 and tanh(u) is +-1 in any
        float, and the clip keeps c**3 finite (and 0 * inf out of the gradient)."""
        xp = self.backend.xp
        c = xp.clip(self.input_, -10.0, 10.0)
        return xp.tanh(_SQRT_2_OVER_PI * (c + 0.044715 * (c * c * c))), c

    def _output(self, inference):
        x = self.input_
        if self.approximate == "tanh":
            return 0.5 * x * (1.0 + self._tanh_form()[0])
        return 0.5 * x * (1.0 + self.backend.erf(x * _SQRT_HALF))

    def _input_grad(self, output_grad):
        xp, x = self.backend.xp, self.input_
        if self.approximate == "tanh":
            t, c = self._tanh_form()
            du = _SQRT_2_OVER_PI * (1.0 + (3 * 0.044715) * (c * c))
            return output_grad * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
        # d/dx x Phi(x) = Phi(x) + x phi(x); phi underflows to 0 well before
        # |x| = 40, and the clip keeps x * x finite for huge inputs
        c = xp.clip(x, -40.0, 40.0)
        pdf = _INV_SQRT_2PI * xp.exp(-0.5 * (c * c))
        return output_grad * (0.5 * (1.0 + self.backend.erf(x * _SQRT_HALF)) + x * pdf)


class SiLU(Operation):
    """``x * sigmoid(x)`` (also called swish); the sigmoid is evaluated through
    ``exp(-|x|)``, as in Sigmoid, so ``exp`` never overflows."""

    name = "silu"

    def _sigmoids(self):
        """``sigmoid(x)`` and ``1 - sigmoid(x)``, each without cancellation."""
        xp, x = self.backend.xp, self.input_
        z = xp.exp(-xp.abs(x))
        r = 1.0 / (1.0 + z)
        positive = x >= 0
        return xp.where(positive, r, z * r), xp.where(positive, z * r, r)

    def _output(self, inference):
        return self.input_ * self._sigmoids()[0]

    def _input_grad(self, output_grad):
        s, one_minus_s = self._sigmoids()
        return output_grad * s * (1.0 + self.input_ * one_minus_s)


class ELU(Operation):
    """``x`` for ``x > 0``, else ``alpha * (exp(x) - 1)``, the latter by
    ``expm1``, which keeps its relative precision near 0. ``alpha`` is at
    least 0, as in the ELU paper (0 gives ReLU)."""

    name = "elu"
    setting = "alpha"

    def __init__(self, alpha=1.0, backend=None):
        alpha = _checks.non_negative("ELU alpha", alpha)
        super().__init__(backend)
        self.alpha = alpha

    # both branches of ``where`` are evaluated: min(x, 0) keeps exp and expm1
    # of large positive inputs from overflowing in the branch not taken
    def _output(self, inference):
        xp, x = self.backend.xp, self.input_
        return xp.where(x > 0, x, self.alpha * xp.expm1(xp.minimum(x, 0.0)))

    def _input_grad(self, output_grad):
        xp, x = self.backend.xp, self.input_
        return xp.where(x > 0, output_grad,
                        output_grad * (self.alpha * xp.exp(xp.minimum(x, 0.0))))


class Dropout(Operation):
    """Inverted dropout: while training, zero each unit with probability
    ``1 - keep_prob`` and scale the survivors by ``1 / keep_prob``; at
    inference, the identity. The expected activation is the same in both.

    The mask is drawn on the device from ``rng`` (the network's generator,
    given by the layer) and reused by ``backward``.
    """

    mask = None  # the mask of the last training pass; None after inference
    _pass_state = Operation._pass_state + ("mask",)

    def __init__(self, keep_prob=0.8, backend=None, rng=None):
        keep_prob = _checks.in_range("Dropout keep_prob", keep_prob, 0, 1, low_open=True)
        super().__init__(backend)
        kind = type(rng)
        if rng is not None and not (kind.__name__ == "Generator" and kind.__module__.split(".")[0]
                                    in ("numpy", "cupy")):
            raise InputTypeError(f"Dropout rng must be a NumPy or CuPy Generator (e.g. "
                                 f"backend.generator(seed)) or None, got {rng!r}")
        self.keep_prob = keep_prob
        self.rng = rng

    def _masked(self, x):
        """``(x * mask, mask)`` with a fresh mask: the backend draws and
        applies it together (one kernel on the GPU)."""
        if self.rng is None:
            self.rng = self.backend.generator(None)
        return self.backend.apply_dropout(self.rng, x, self.keep_prob)

    def _output(self, inference):
        if inference or self.keep_prob == 1.0:
            self.mask = None
            return self.input_
        out, self.mask = self._masked(self.input_)
        return out

    def _input_grad(self, output_grad):
        return output_grad if self.mask is None else output_grad * self.mask


ACTIVATIONS = {
    "linear": Linear,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "relu6": ReLU6,
    "gelu": GELU,
    "silu": SiLU,
    "elu": ELU,
}


def activation_setting(activation):
    """The value of a built-in activation's ``setting`` (LeakyReLU's and ELU's
    ``alpha``, GELU's ``approximate``), or None where it has none."""
    key = getattr(activation, "setting", None)
    return None if key is None else getattr(activation, key)


def make_activation(name, setting=None):
    """A new built-in activation called ``name``, given its ``setting`` (as
    ``activation_setting`` returns it) when not None."""
    cls = ACTIVATIONS[_checks.name_in("activation", name, ACTIVATIONS)]
    key = getattr(cls, "setting", None)
    return cls() if key is None or setting is None else cls(**{key: setting})
