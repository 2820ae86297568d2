"""Layers: a weight multiply, a bias add, an activation and optional dropout."""

from __future__ import annotations

import contextvars
import copy

from . import _checks
from ._checks import InputTypeError, InputValueError
from .backend import backend_of
from .init import INITIALIZERS
from .ops import (
    ACTIVATIONS,
    BiasActivation,
    BiasAdd,
    Dropout,
    Operation,
    ParamOperation,
    WeightMultiply,
    activation_setting,
    make_activation,
)

# set while layers are rebuilt from a checkpoint or made by an estimator from its
# own dropout: a keep probability below one half is then no user's slip to warn of
QUIET_DROPOUT = contextvars.ContextVar("nnx_quiet_dropout", default=False)


def _activation(spec):
    """An activation operation from an instance or a name; a fresh object
    every time, so no two layers ever share one (and its stored arrays)."""
    if spec is None:  # Keras reads None as no activation, the study's default was sigmoid
        raise InputTypeError('activation=None: name the activation, "linear" for none (what '
                             'Keras means by None) or "sigmoid" (the default when left out)')
    if isinstance(spec, str):
        return ACTIVATIONS[_checks.name_in("activation", spec, ACTIVATIONS)]()
    cls = spec if isinstance(spec, type) else type(spec)
    if issubclass(cls, Dropout):
        raise InputTypeError("activation cannot be Dropout; use Dense(..., dropout=keep_prob)")
    # an element-wise operation with its own forward pass and no parameter
    if (issubclass(cls, Operation) and not issubclass(cls, ParamOperation)
            and (cls._output is not Operation._output or cls.forward is not Operation.forward)):
        return spec() if isinstance(spec, type) else copy.copy(spec)
    raise InputTypeError(f"activation must be a name or an activation operation (an Operation "
                         f"subclass with its own _output, and _input_grad to train), got {spec!r}")


class Layer:
    """A list of operations run in order. Parameters are created on the first
    forward pass, when the input width is known."""

    _owner = None  # a weak reference to the network the layer belongs to

    def __init__(self, neurons):
        self.neurons = _checks.integer("neurons", neurons)
        self.operations: list[Operation] = []
        self.built = False
        self.n_in = None

    def __getstate__(self):
        # a copy (or a pickle) belongs to no network; a built layer's deep copy
        # keeps its parameters as arrays of its own (a shallow one shares them)
        return {k: v for k, v in self.__dict__.items() if k not in ("_owner", "output")}

    def _settings_copy(self):
        """The layer as constructed: same settings, no parameters, no network."""
        new = copy.copy(self)
        new.operations, new.built, new.n_in = [], False, None
        return new

    # The network calls setup(); a layer used on its own sets itself up.
    def setup(self, n_in, backend, init_rng, rng=None, alloc=None):
        """Create the operations for inputs of width ``n_in``.

        ``init_rng`` is the host generator for the initial weights, ``rng`` the
        device generator for dropout, ``alloc(shape)`` returns storage for a
        parameter (a view into the network's flat buffer) or None for a new array.
        """
        raise NotImplementedError(
            f"{type(self).__name__} defines no setup(n_in, backend, init_rng, rng, alloc), "
            "which makes the layer's operations (see Dense.setup)")

    def param_shapes(self, n_in):
        return []

    def reset_parameters(self, init_rng):
        """Draw the parameters afresh from ``init_rng`` (``net.reset()``,
        ``fit(restart=True)``); a layer without parameters has nothing to draw."""
        if any(True for _ in self.params()):
            raise NotImplementedError(
                f"{type(self).__name__} defines no reset_parameters(init_rng), which draws its "
                "parameters afresh (net.reset(), fit(restart=True)) into the existing arrays")

    def describe(self) -> dict:
        """The layer as plain data (checkpoints): Dense layers only."""
        raise InputTypeError(f"cannot describe {type(self).__name__}: checkpoints hold Dense "
                             "layers only (a layer of one's own, or a subclass of Dense with "
                             "passes of its own, is not saved); save its parameters with "
                             "net.get_parameters() and rebuild the network in code")

    def forward(self, input_, inference=False):
        if not self.built:
            backend = backend_of(input_)
            self.setup(input_.shape[1], backend, backend.host_generator(None))
            self.built = True
        x = input_
        for op in self.operations:
            x = op.forward(x, inference)
        self.output = x
        return x

    def backward(self, output_grad, input_grad=True):
        """Gradient with respect to the layer's input (None with
        ``input_grad=False``, which saves the first operation's input gradient)."""
        if not self.operations:
            raise RuntimeError("backward() was called before any forward() of this layer")
        g = output_grad
        ops = self.operations
        for op in reversed(ops[1:]):
            g = op.backward(g)
        first = ops[0]
        return first.backward(g, input_grad) if hasattr(first, "param") else first.backward(g)

    def params(self):
        return (op.param for op in self.operations if hasattr(op, "param"))

    def param_grads(self):
        return (op.param_grad for op in self.operations if hasattr(op, "param"))


_PASSES = ("setup", "param_shapes", "forward", "backward", "reset_parameters", "params",
           "param_grads")


def _passes_of_its_own(cls):
    """Whether a subclass of Dense computes anything differently (a thin one,
    say with other defaults, is a Dense: saved and loaded as one)."""
    for klass in cls.__mro__:
        if klass is Dense:
            return False
        if any(name in klass.__dict__ for name in _PASSES):
            return True
    return True


class Dense(Layer):
    """A fully connected layer: ``activation(x @ W + B)``, then dropout when
    ``dropout < 1`` (``dropout`` is the keep probability).

    ``activation`` is a name ("tanh", "relu", ...) or an activation object
    (copied, never shared); the default is a sigmoid, as in the study.
    ``weight_init`` is "glorot" (default), "he" or "standard".
    """

    def __init__(self, neurons, activation="sigmoid", dropout=1.0, weight_init="glorot"):
        super().__init__(neurons)
        self.activation = _activation(activation)
        # dropout is the keep probability, as in the study
        self.dropout = _checks.in_range("Dense dropout", dropout, 0, 1, low_open=True,
                                        hint=" (it is the keep probability)")
        if self.dropout < 0.5 and not QUIET_DROPOUT.get():  # likely the share to drop, as
            # Keras and PyTorch take it (not said of a layer rebuilt from a file, or made
            # by an estimator from its own dropout)
            _checks.warn_caller(
                f"Dense dropout={self.dropout:g} keeps only {self.dropout:.0%} of the units in "
                f"training: nnx's dropout is the probability of keeping a unit (the study's); "
                f"to drop {self.dropout:.0%}, pass dropout={1 - self.dropout:g}",
                _checks.InputWarning)
        self.weight_init = _checks.name_in("weight_init", weight_init, INITIALIZERS)

    def __repr__(self):
        return (f"Dense({self.neurons}, {type(self.activation).__name__}, "
                f"dropout={self.dropout}, weight_init={self.weight_init!r})")

    def param_shapes(self, n_in):
        return [(n_in, self.neurons), (1, self.neurons)]

    def _settings_copy(self):
        new = super()._settings_copy()
        new.activation = _activation(self.activation)  # never shared
        return new

    def setup(self, n_in, backend, init_rng, rng=None, alloc=None):
        self.n_in = n_in
        # an activation keeps what its last pass saw, so every built layer has
        # one of its own, even a copy.copy of another layer
        self.activation = _activation(self.activation)
        self.activation._bind(backend)
        # Dense's own two: a subclass may list more after them, and take them itself
        w_shape, b_shape = Dense.param_shapes(self, n_in)
        W = backend.zeros(w_shape) if alloc is None else alloc(w_shape)
        B = backend.zeros(b_shape) if alloc is None else alloc(b_shape)
        if backend.fuses_bias_activation and type(self.activation) in ACTIVATIONS.values():
            bias_act = [BiasActivation(B, self.activation, backend)]
        else:
            bias_act = [BiasAdd(B, backend), self.activation]
        self.operations = [WeightMultiply(W, backend), *bias_act]
        if self.dropout < 1.0:
            self.operations.append(Dropout(self.dropout, backend, rng))
        self.reset_parameters(init_rng)
        self.built = True

    def describe(self) -> dict:
        if _passes_of_its_own(type(self)):  # it would load as a Dense, without its code
            return super().describe()
        act = self.activation
        if type(act) not in ACTIVATIONS.values():
            raise InputTypeError(f"cannot describe {type(act).__name__}: checkpoints hold the "
                                 f"built-in activations only ({sorted(ACTIVATIONS)})")
        desc = {"type": "Dense", "neurons": self.neurons, "activation": act.name,
                "alpha": getattr(act, "alpha", None), "dropout": self.dropout,
                "weight_init": self.weight_init}
        if getattr(act, "setting", None) is not None:  # alpha again, or GELU's approximate
            desc[act.setting] = activation_setting(act)
        return desc

    def reset_parameters(self, init_rng):
        """Draw fresh weights and biases from ``init_rng`` into the existing arrays.
        The bias is drawn with the weights' scale, as in the study."""
        W, B = self.operations[0].param, self.operations[1].param
        backend = self.operations[0].backend
        std = INITIALIZERS[self.weight_init](*W.shape)
        backend.assign(W, backend.host_normal(init_rng, tuple(W.shape), std))
        backend.assign(B, backend.host_normal(init_rng, tuple(B.shape), std))


def layer_from_description(d) -> Layer:
    """Rebuild a layer from ``Layer.describe()`` output (checkpoints)."""
    if not isinstance(d, dict) or d.get("type") != "Dense":
        raise InputValueError(f"unknown layer type {d.get('type')!r}")
    key = getattr(ACTIVATIONS.get(d["activation"]), "setting", None)
    act = make_activation(d["activation"], None if key is None else d.get(key))
    return Dense(d["neurons"], act, dropout=d["dropout"], weight_init=d["weight_init"])
