"""ONNX export: a network of Dense layers as an ONNX model that onnxruntime (or
any ONNX runtime) runs without nnx.

Each layer becomes a ``Gemm`` (``x @ W + B``) and its activation in plain ONNX
operators: Sigmoid, Tanh, Relu, LeakyRelu, Clip (ReLU6), Elu, GELU from Erf or
from the tanh formula, SiLU as ``x * Sigmoid(x)``. Dropout is the identity at
inference and leaves nothing in the graph. After the last layer comes the
``output`` transform: "raw" (the outputs, as ``predict``), "softmax" (as
``predict_proba`` of a softmax cross-entropy network), "sigmoid" or "exp".
The "sigmoid" transform is written out as nnx's Sigmoid evaluates it, so that
small probabilities keep their relative precision (onnxruntime's Sigmoid
kernel rounds them to 0); activations use the Sigmoid operator.

The input is ``(N, n_in)`` with a dynamic batch dimension ``N``, in the
network's dtype (float32 or float64); the default opset is 17. onnxruntime has
no float64 kernel for Erf or Elu, so a float64 model writes them out in
elementary operators: Erf as W. J. Cody's rational approximation (the one
nnx's reference backend evaluates), ``exp(x) - 1`` in ELU by Kahan's expm1
(``(u - 1) x / log(u)`` with ``u = exp(x)``), which keeps its precision near 0.
ONNX attributes are float32, so a float64 model also writes LeakyReLU out
(``Where(x > 0, x, alpha x)``) to keep alpha in float64. float64 models then
match nnx to float64 rounding in onnxruntime.

The model is checked with ``onnx.checker`` and written atomically. It needs
the optional ``onnx`` extra (``pip install 'nnx-dl[onnx]'``).
"""

from __future__ import annotations

import math
import os

from . import _checks
from ._checks import InputTypeError, InputValueError, InputWarning
from ._files import atomic_write
from .backend import base as _base
from .backend import host
from .ops import ACTIVATIONS, activation_setting, make_activation

OUTPUTS = ("raw", "softmax", "sigmoid", "binary", "exp")
DEFAULT_OPSET = 17
MIN_OPSET = 13  # Softmax over one axis (13); Clip with min/max as inputs (11)
_OUTPUT_NAMES = {"raw": "Y", "softmax": "probabilities", "sigmoid": "probabilities",
                 "binary": "probabilities", "exp": "Y"}
_PROTOBUF_LIMIT = 2**31  # one ONNX file holds at most 2 GiB


def _require_onnx():
    """The ``onnx`` module, or ImportError saying how to install it."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("ONNX export needs the onnx package, which is not installed: "
                          "pip install 'nnx-dl[onnx]'") from exc
    return onnx


class _Graph:
    """The nodes and initializers of a graph under construction, in one dtype."""

    def __init__(self, onnx, dtype):
        self.onnx, self.dtype = onnx, dtype
        self.elem = {"float32": onnx.TensorProto.FLOAT,
                     "float64": onnx.TensorProto.DOUBLE}[dtype]
        self.nodes, self.initializers, self._consts = [], [], {}
        self.scope = "graph"

    def op(self, op_type, *inputs, **attrs):
        """Append one node; returns the name of its output."""
        out = f"{self.scope}/{op_type}_{len(self.nodes)}"
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out],
                                                     name=out, **attrs))
        return out

    def const(self, value):
        """A scalar initializer holding ``value`` (one per distinct value)."""
        value = float(value)
        if value not in self._consts:
            name = f"const/{len(self._consts)}"
            self.initializers.append(self.onnx.helper.make_tensor(name, self.elem, [], [value]))
            self._consts[value] = name
        return self._consts[value]

    def tensor(self, name, array):
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name=name))
        return name


# --------------------------------------------------------------- activations
# One emitter per built-in activation: ``(graph, x, setting) -> output name``,
# the formula of the matching class in nnx.ops.

def _gelu(g, x, approximate):
    if approximate == "tanh":
        c = g.op("Clip", x, g.const(-10.0), g.const(10.0))
        cube = g.op("Mul", g.op("Mul", c, c), c)
        u = g.op("Mul", g.const(math.sqrt(2.0 / math.pi)),
                 g.op("Add", c, g.op("Mul", g.const(0.044715), cube)))
        twice_phi = g.op("Add", g.const(1.0), g.op("Tanh", u))
    else:
        twice_phi = g.op("Add", g.const(1.0), _erf(g, g.op("Mul", x, g.const(math.sqrt(0.5)))))
    return g.op("Mul", g.op("Mul", g.const(0.5), x), twice_phi)


def _leaky_relu(g, x, alpha):
    if g.dtype == "float32":
        return g.op("LeakyRelu", x, alpha=float(alpha))
    # attributes are float32: in float64, alpha goes in as a tensor
    return g.op("Where", g.op("Greater", x, g.const(0.0)), x, g.op("Mul", g.const(alpha), x))


def _elu(g, x, alpha):
    if g.dtype == "float32":
        return g.op("Elu", x, alpha=float(alpha))
    # below -40, expm1 is -1 in float64; the clip keeps exp(m) above 0 for the log
    m = g.op("Clip", x, g.const(-40.0), g.const(0.0))
    negative = g.op("Mul", g.const(alpha), _expm1(g, m))
    return g.op("Where", g.op("Greater", x, g.const(0.0)), x, negative)


_EMITTERS = {
    "linear": lambda g, x, _: x,
    "sigmoid": lambda g, x, _: g.op("Sigmoid", x),
    "tanh": lambda g, x, _: g.op("Tanh", x),
    "relu": lambda g, x, _: g.op("Relu", x),
    "leaky_relu": _leaky_relu,
    "relu6": lambda g, x, _: g.op("Clip", x, g.const(0.0), g.const(6.0)),
    "gelu": _gelu,
    "silu": lambda g, x, _: g.op("Mul", x, g.op("Sigmoid", x)),
    "elu": _elu,
}

_TRANSFORMS = {
    "raw": lambda g, x: x,
    "softmax": lambda g, x: g.op("Softmax", x, axis=1),
    "sigmoid": lambda g, x: _stable_sigmoid(g, x),
    # one logistic output -> the two columns [1 - p, p] (a binary classifier's
    # predict_proba)
    "binary": lambda g, x: _binary(g, _stable_sigmoid(g, x)),
    "exp": lambda g, x: g.op("Exp", x),
}


def _binary(g, p):
    return g.op("Concat", g.op("Sub", g.const(1.0), p), p, axis=1)


def _stable_sigmoid(g, x):
    """``1 / (1 + exp(-x))`` through ``z = exp(-|x|)``, as nnx's Sigmoid: small
    probabilities keep their relative precision, which onnxruntime's Sigmoid
    kernel loses (it returns 0 below about -17 in float32, -37 in float64)."""
    z = g.op("Exp", g.op("Neg", g.op("Abs", x)))
    d = g.op("Add", g.const(1.0), z)
    return g.op("Where", g.op("GreaterOrEqual", x, g.const(0.0)), g.op("Div", g.const(1.0), d),
                g.op("Div", z, d))


def _expm1(g, m):
    """``exp(m) - 1`` for ``-40 <= m <= 0`` to a few roundings (Kahan)."""
    u = g.op("Exp", m)
    ratio = g.op("Div", g.op("Mul", g.op("Sub", u, g.const(1.0)), m), g.op("Log", u))
    return g.op("Where", g.op("Equal", u, g.const(1.0)), m, ratio)


def _erf(g, x):
    """The error function: onnxruntime's Erf in float32, Cody's approximation
    in elementary operators in float64 (step by step as ``Backend.erf``)."""
    if g.dtype == "float32":
        return g.op("Erf", x)
    y = g.op("Abs", x)
    # |x| <= 0.46875: erf(x) = x R(x**2)
    s = g.op("Clip", x, g.const(-0.46875), g.const(0.46875))
    num, den = _rational(g, g.op("Mul", s, s), _base._ERF_A, _base._ERF_B, 3)
    small = g.op("Div", g.op("Mul", s, num), den)
    # 0.46875 < |x| <= 4: erfc(|x|) = exp(-x**2) R(|x|)
    m = g.op("Clip", y, g.const(0.46875), g.const(4.0))
    middle = g.op("Div", *_rational(g, m, _base._ERF_C, _base._ERF_D, 7))
    # |x| > 4: erfc(|x|) = exp(-x**2) / |x| (1/sqrt(pi) + R(1/x**2) / x**2)
    c = g.op("Clip", y, g.const(4.0), g.const(6.0))
    t = g.op("Div", g.const(1.0), g.op("Mul", c, c))
    num, den = _rational(g, t, _base._ERF_P, _base._ERF_Q, 4)
    large = g.op("Div", g.op("Sub", g.const(_base._INV_SQRT_PI),
                             g.op("Div", g.op("Mul", t, num), den)), c)
    # exp(-w**2) as exp(-u**2) exp(-(w - u)(w + u)) with u = w cut to 1/16ths
    inner = g.op("LessOrEqual", y, g.const(4.0))
    w = g.op("Where", inner, m, c)
    u = g.op("Div", g.op("Floor", g.op("Mul", w, g.const(16.0))), g.const(16.0))
    decay = g.op("Mul", g.op("Exp", g.op("Neg", g.op("Mul", u, u))),
                 g.op("Exp", g.op("Neg", g.op("Mul", g.op("Sub", w, u), g.op("Add", w, u)))))
    erfc = g.op("Mul", decay, g.op("Where", inner, middle, large))
    outer = g.op("Add", g.op("Sub", g.const(0.5), erfc), g.const(0.5))
    signed = g.op("Where", g.op("Less", x, g.const(0.0)), g.op("Neg", outer), outer)
    return g.op("Where", g.op("LessOrEqual", y, g.const(0.46875)), small, signed)


def _rational(g, t, num_c, den_c, n):
    """Numerator and denominator of one of Cody's rational functions in ``t``,
    by Horner's rule as ``Backend.erf`` evaluates them."""
    num, den = g.op("Mul", g.const(num_c[n + 1]), t), t
    for a, b in zip(num_c[:n], den_c[:n]):
        num = g.op("Mul", g.op("Add", num, g.const(a)), t)
        den = g.op("Mul", g.op("Add", den, g.const(b)), t)
    return g.op("Add", num, g.const(num_c[n])), g.op("Add", den, g.const(den_c[n]))


# ------------------------------------------------------------------ checks
def _activation_spec(act, where):
    """``(name, setting)`` of a built-in activation given by name or object."""
    if isinstance(act, str):
        act = make_activation(_checks.name_in(where, act, ACTIVATIONS))
    if type(act) not in ACTIVATIONS.values() or act.name not in _EMITTERS:
        raise InputTypeError(f"{where} is {act!r}: ONNX export knows the built-in "
                             f"activations only ({sorted(_EMITTERS)})")
    return act.name, activation_setting(act)


def _activations(hidden_activation, n_layers):
    """One ``(name, setting)`` per layer: a single activation for every layer
    but the last (which is linear), or a list with one per layer."""
    if isinstance(hidden_activation, (list, tuple)):
        if len(hidden_activation) != n_layers:
            raise InputValueError(f"hidden_activation lists {len(hidden_activation)} "
                                  f"activations for {n_layers} layers; give one per layer, "
                                  "or one name for every layer but the last")
        return [_activation_spec(a, f"hidden_activation[{i}]")
                for i, a in enumerate(hidden_activation)]
    hidden = _activation_spec(hidden_activation, "hidden_activation")
    return [hidden] * (n_layers - 1) + [("linear", None)]


def _parameters(weights, biases, dtype):
    """The layers' weights ``(n_in, n_out)`` and biases ``(n_out,)`` as finite
    host arrays in ``dtype``, each layer fitting the one before."""
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__") or not weights:
        raise InputTypeError("weights must be a non-empty list of 2-D arrays, one per layer")
    if not hasattr(biases, "__len__") or len(biases) != len(weights):
        raise InputValueError(f"biases must be a list of {len(weights)} arrays, one per "
                              f"layer, like weights")
    ws, bs, width = [], [], None
    for i, (w, b) in enumerate(zip(weights, biases)):
        w = host.plain(w, f"weights[{i}]", "an array").astype(dtype)
        b = host.plain(b, f"biases[{i}]", "an array").astype(dtype)
        if w.ndim != 2 or 0 in w.shape or (width is not None and w.shape[0] != width):
            raise InputValueError(f"weights[{i}] has shape {w.shape}; expected "
                                  f"({width if width is not None else 'n_in'}, n_out), "
                                  "neither 0")
        if b.ndim > 2 or b.size != w.shape[1] or (b.ndim == 2 and b.shape[0] != 1):
            raise InputValueError(f"biases[{i}] has shape {b.shape}; expected "
                                  f"({w.shape[1]},) to fit weights[{i}] of shape {w.shape}")
        for name, a in ((f"weights[{i}]", w), (f"biases[{i}]", b)):
            if not host.all_finite(a):
                raise InputValueError(f"{name} holds NaN or infinite values in {dtype}")
        ws.append(w)
        bs.append(b.reshape(-1))
        width = w.shape[1]
    return ws, bs


def _opset(onnx, opset):
    if opset is None:
        return DEFAULT_OPSET
    newest = onnx.defs.onnx_opset_version()
    opset = _checks.integer("opset", opset, minimum=MIN_OPSET)
    if opset > newest:
        raise InputValueError(f"opset={opset} is newer than this onnx package knows "
                              f"({newest}); pick one from {MIN_OPSET} to {newest}")
    return opset


# ------------------------------------------------------------------ export
def export_layers(weights, biases, hidden_activation, output, path, dtype, opset=None,
                  input_name="X", extra=None, output_name=None, logistic=True,
                  standardize=None):
    """Write the ONNX model of a stack of dense layers to ``path``; returns ``path``.

    ``weights[i]`` has shape ``(n_in, n_out)`` and ``biases[i]`` ``(n_out,)``
    (NumPy arrays). ``hidden_activation`` is an activation (a name of
    ``nnx.ops.ACTIVATIONS`` or a built-in activation object such as
    ``nnx.LeakyReLU(0.2)``) applied by every layer but the last, which is
    linear; or a list of them, one per layer. ``output`` is the transform after
    the last layer: "raw", "softmax", "sigmoid" or "exp". ``dtype`` is
    "float32" or "float64"; ``opset`` defaults to 17. ``extra`` (str -> str)
    goes into the model's ``metadata_props``, e.g. a classifier's class labels.
    The input is named ``input_name``, the output ``output_name`` (default "Y",
    or "probabilities" for "softmax" and "sigmoid"). "binary" gives the two
    columns ``[1 - p, p]`` of a one-output model: ``p`` the logistic of the
    output (a scikit-learn estimator's logit), or with ``logistic=False`` the
    output itself clipped into [0, 1] (an nnx network's ``predict_proba``).
    ``standardize=(mean, std)`` (``n_in`` values each) makes the model take
    raw features: it computes ``(x - mean) / std`` first, in ``dtype``, the
    two roundings ``nnx.data.standardize_with`` makes.
    """
    onnx = _require_onnx()
    target = _check_path(path)
    model = layers_model(weights, biases, hidden_activation, output, dtype, opset=opset,
                         input_name=input_name, extra=extra, output_name=output_name,
                         logistic=logistic, standardize=standardize)
    _write(onnx, model, target)
    return path


def layers_model(weights, biases, hidden_activation, output, dtype, opset=None,
                 input_name="X", extra=None, output_name=None, logistic=True,
                 standardize=None):
    """The ``onnx.ModelProto`` that ``export_layers`` writes, in memory (for
    converters that splice it into a larger graph, such as skl2onnx's)."""
    onnx = _require_onnx()
    dtype = _base.dtype_name(dtype)
    output = _checks.name_in("output", output, OUTPUTS)
    opset = _opset(onnx, opset)
    weights, biases = _parameters(weights, biases, dtype)
    activations = _activations(hidden_activation, len(weights))
    g = _Graph(onnx, dtype)
    x = input_name
    if standardize is not None:
        mean, std = _statistics(standardize, weights[0].shape[0], dtype)
        g.scope = "standardize"
        x = g.op("Div", g.op("Sub", x, g.tensor("standardize/mean", mean)),
                 g.tensor("standardize/std", std))
    for i, (w, b, (name, setting)) in enumerate(zip(weights, biases, activations), 1):
        g.scope = f"layer{i}"
        x = g.op("Gemm", x, g.tensor(f"layer{i}/W", w), g.tensor(f"layer{i}/B", b))
        if name == "sigmoid" and i == len(weights):
            # the network's outputs (a sigmoid output layer, as MSE training has):
            # onnxruntime's Sigmoid returns 0 for every small output, and the
            # classes the outputs rank would tie
            x = _stable_sigmoid(g, x)
        else:
            x = _EMITTERS[name](g, x, setting)
    g.scope = "output"
    if output == "binary" and not logistic:
        # Max and Min, not Clip: onnxruntime's optimiser fails to load a float64
        # Clip after a Relu (it fuses the two and expects float32 bounds)
        x = _binary(g, g.op("Min", g.op("Max", x, g.const(0.0)), g.const(1.0)))
    else:
        x = _TRANSFORMS[output](g, x)
    output_name = _OUTPUT_NAMES[output] if output_name is None else output_name
    width = weights[-1].shape[1]
    if output == "binary":
        if width != 1:
            raise InputValueError(f'output="binary" turns one output into the two columns '
                                  f"[1 - p, p]; this model has {width} outputs")
        width = 2
    extra = _metadata(extra)
    _refuse_own_keys(extra, "extra", ("nnx.output",))
    return _model(g, x, input_name, output_name, (weights[0].shape[0], width),
                  opset, {"nnx.output": output, **extra})


def _metadata(extra, name="extra"):
    if extra is None:
        return {}
    if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in extra.items()):
        raise InputTypeError(f"{name} must be a dict of str to str (model metadata), got "
                             f"{extra!r}")
    return extra


def _model(g, x, input_name, output_name, widths, opset, metadata):
    """The ModelProto: the graph's last node renamed to write ``output_name``."""
    helper = g.onnx.helper
    taken = {t.name for t in g.initializers} | {o for n in g.nodes for o in n.output}
    for what, name in (("input_name", input_name), ("output_name", output_name)):
        if not isinstance(name, str) or not name or name in taken:
            raise InputValueError(f"{what}={name!r} must be a non-empty string that names no "
                                  "other tensor of the graph")
    if input_name == output_name:
        raise InputValueError(f"input_name and output_name are both {input_name!r}")
    for node in g.nodes:  # nothing reads the last tensor: renaming it is safe
        node.output[:] = [output_name if o == x else o for o in node.output]
    graph = helper.make_graph(
        g.nodes, "nnx", [helper.make_tensor_value_info(input_name, g.elem, ["N", widths[0]])],
        [helper.make_tensor_value_info(output_name, g.elem, ["N", widths[1]])],
        initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    from . import __version__
    model = helper.make_model(graph, opset_imports=opsets, producer_name="nnx",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(model, metadata)
    return model


def _check_path(path):
    """Refuse, before any work, a path the model could not be written to; its
    folder may still be missing (``_write`` makes it). Returns the file the
    model goes to: a symbolic link's target (the link stays), as checkpoints."""
    from .checkpoint import folder_problem

    try:
        text = os.fsdecode(os.fspath(path))
    except TypeError:
        raise InputTypeError(f"path must be a file path (str or os.PathLike), got "
                             f"{type(path).__name__}") from None
    real = os.path.realpath(text) if text else text  # written through a symbolic link
    if not text or text.endswith(("/", os.sep)) or os.path.isdir(real):
        raise InputValueError(f"path={text!r} names a folder; expected a file path like "
                              "model.onnx")
    if os.path.lexists(real) and not os.path.isfile(real):
        raise InputValueError(f"path={text!r} exists and is not a regular file (a device, "
                              "pipe or socket); expected a file path like model.onnx")
    problem = folder_problem(os.path.dirname(real))
    if problem:
        raise InputValueError(f"path={text!r}: {problem}")
    return real


def _write(onnx, model, path):
    """Check ``model`` and write it to ``path`` all at once (its folder made
    if missing, as for checkpoints)."""
    size = model.ByteSize()
    if size >= _PROTOBUF_LIMIT:
        raise InputValueError(f"the model takes {size:,} bytes, more than the 2 GiB one "
                              "ONNX file can hold")
    onnx.checker.check_model(model, full_check=True)
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    with atomic_write(path) as f:
        f.write(model.SerializeToString())


def export_network(net, path, *, output="raw", opset=None, input_name="X", output_name=None,
                   standardize=None, metadata=None):
    """Write a built ``NeuralNetwork`` as an ONNX model to ``path``; returns ``path``.

    The model computes ``net.predict`` ("raw"), or its softmax, sigmoid or exp
    (``output``), or for a one-output network ``net.predict_proba``'s two
    columns ("binary"), for inputs of shape ``(N, net.n_in)`` in the network's
    dtype.
    Dropout is left out (inference). ``standardize=(mean, std)`` (arrays of
    ``n_in`` values, e.g. a checkpoint's ``x_mean`` and ``x_std``) makes the
    model take raw features: it computes ``(x - mean) / std`` before the first
    layer, as ``nnx.data.standardize_with`` does. A network whose products
    run in TF32, bfloat16 or float16 (``precision=``) is exported with float32
    products, with a warning. ``metadata`` (str -> str) goes into the model's
    ``metadata_props``, as ``nnx export`` writes a model's class names there.
    See ``export_layers`` for the rest.
    """
    from .layers import Dense, _passes_of_its_own

    _checks.network(net)
    _require_onnx()
    net.require_built("ONNX export")
    for i, layer in enumerate(net.layers):
        if not isinstance(layer, Dense) or _passes_of_its_own(type(layer)):
            raise InputTypeError(f"layers[{i}] is {type(layer).__name__}: ONNX export knows "
                                 "Dense layers only")
        act = layer.activation
        if type(act) not in ACTIVATIONS.values() or act.name not in _EMITTERS:
            raise InputTypeError(f"layers[{i}]'s activation is {type(act).__name__}, one of "
                                 "your own: ONNX export knows the built-in activations only "
                                 f"({sorted(_EMITTERS)})")
    output = _checks.name_in("output", output, OUTPUTS)
    if output == "binary" and net.n_out != 1:  # refused before the warning below
        raise InputValueError(f'output="binary" turns one output into the two columns '
                              f"[1 - p, p]; this model has {net.n_out} outputs")
    proba = net.probability_output
    if output not in ("raw", proba) and proba != "raw":  # a classifier's, but not its own
        _checks.warn_caller(
            f"output={output!r}: this network's probabilities (predict_proba) are its "
            f"{proba!r} output, as its loss {type(net.loss).__name__} trained them; the model "
            f"will not return them (output={proba!r} does, output='raw' the plain outputs)",
            InputWarning)
    last = getattr(type(net.layers[-1].activation), "name", None)
    if output == "sigmoid" and last == "sigmoid" and not net.loss.binary:
        # (a sigmoid cross-entropy takes a sigmoid of its outputs, whatever
        # the last layer did: predict_proba's too)
        raise InputValueError('output="sigmoid": the last layer is a sigmoid already, so its '
                              'outputs are the probabilities; a second sigmoid would squeeze '
                              'every one into [0.5, 0.73]. Use output="raw" (or "binary" for '
                              'the two columns [1 - p, p] of one output)')
    params = [net.backend.to_numpy(p) for p in net.params()]
    precision = getattr(net.backend, "precision", "float32")
    if precision != "float32":
        _checks.warn_caller(
            f"the network computes its matrix products in {precision}; the ONNX model "
            "computes them in float32 with the same (float32) weights, so its outputs differ "
            "from net.predict's by that rounding (loaded with precision='float32', or "
            "scored by nnx evaluate --precision float32, the network predicts as the ONNX "
            "model does)", InputWarning)
    # "binary" is predict_proba's [1 - p, p]: p the sigmoid of the logit for a
    # sigmoid cross-entropy network, else the output clipped into [0, 1] (no
    # sigmoid of its own: the network's last layer has applied its own)
    return export_layers(params[0::2], params[1::2], [la.activation for la in net.layers],
                         output, path, net.backend.dtype_name, opset=opset,
                         input_name=input_name, output_name=output_name,
                         logistic=net.loss.binary,
                         standardize=standardize,
                         extra={**_users_metadata(metadata),
                                "nnx.trained_precision": precision})


def _users_metadata(metadata):
    """``metadata=`` of ``export_network``: str -> str, none of nnx's own keys."""
    metadata = _metadata(metadata, "metadata")
    _refuse_own_keys(metadata, "metadata", ("nnx.output", "nnx.trained_precision"))
    return metadata


def _refuse_own_keys(metadata, name, keys):
    """Refuse metadata that would replace what nnx records under ``keys``."""
    own = sorted(k for k in metadata if k in keys)
    if own:
        raise InputValueError(f"{name} keys {own} are what nnx itself records about the "
                              "model; give yours other names")


def _statistics(standardize, n_in, dtype):
    """``(mean, std)`` of ``standardize``, ``n_in`` finite values each (std
    above zero), in ``dtype``."""
    if isinstance(standardize, (str, bytes)) or not hasattr(standardize, "__len__") \
            or len(standardize) != 2:
        raise InputTypeError("standardize must be a pair (mean, std) of arrays, one value "
                             "per input")
    mean, std = (host.plain(a, name, "an array of one value per input").astype(dtype)
                 for a, name in zip(standardize, ("mean", "std")))
    if mean.shape != (n_in,) or std.shape != (n_in,):
        raise InputValueError(f"standardize needs mean and std of shape ({n_in},), got "
                              f"{mean.shape} and {std.shape}")
    if not (host.all_finite(mean) and host.all_finite(std)) or (std <= 0).any():
        raise InputValueError(f"standardize: mean and std must be finite in {dtype}, std "
                              "above zero")
    return mean, std
