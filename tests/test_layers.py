"""Dense layers: finite-difference gradients, lazy set-up, unshared
activations (trap #4), the fused bias and activation, and their arguments."""

import warnings

import numpy as np
import pytest
from gradcheck import assert_grad_close, numeric_grad
from helpers import N_IN, X0

import nnx
from nnx import (
    BiasAdd,
    Dense,
    Dropout,
    LeakyReLU,
    NeuralNetwork,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    WeightMultiply,
)
from nnx.backend import get_backend
from nnx.backend.numpy_backend import NumpyBackend
from nnx.ops import ACTIVATIONS


def check_dense_grads(layer, x, rng):
    """Input grad and W, B grads of ``sum(layer(x) * R)`` against central differences."""
    out = layer.forward(x)
    R = rng.standard_normal(out.shape)
    input_grad = np.array(layer.backward(R), copy=True)
    param_grads = [np.array(g, copy=True) for g in layer.param_grads()]
    params = list(layer.params())
    assert len(params) == len(param_grads) == 2

    def f():
        return float(np.sum(layer.forward(x) * R))

    assert_grad_close(input_grad, numeric_grad(f, x))
    for param, analytic in zip(params, param_grads, strict=True):
        assert_grad_close(analytic, numeric_grad(f, param))


# --------------------------------------------------- finite-difference checks
@pytest.mark.parametrize("activation", ["linear", "sigmoid", "tanh", "relu", "leaky_relu",
                                        "relu6", "gelu", "silu", "elu"])
def test_dense_gradients_match_finite_differences(activation):
    rng = np.random.default_rng(0)
    layer = Dense(3, activation)
    x = rng.standard_normal((5, 4))
    check_dense_grads(layer, x, rng)


def test_dense_with_dropout_gradients_match_finite_differences_with_fixed_mask():
    rng = np.random.default_rng(1)
    layer = Dense(6, "tanh", dropout=0.6)
    x = rng.standard_normal((5, 4))
    layer.forward(x)  # sets the layer up and draws one mask
    dropout = layer.operations[-1]
    assert isinstance(dropout, Dropout)
    mask = dropout.mask
    assert np.any(mask == 0) and np.any(mask != 0)
    dropout._masked = lambda x: (x * mask, mask)
    check_dense_grads(layer, x, rng)


# ---------------------------------------------------------------- lazy set-up
def test_standalone_dense_sets_itself_up_from_the_input():
    layer = Dense(3, "tanh")
    assert not layer.built and list(layer.params()) == []
    out = layer.forward(np.random.default_rng(2).standard_normal((5, 4)))
    assert layer.built and layer.n_in == 4
    W, B = layer.params()
    assert W.shape == (4, 3) and B.shape == (1, 3)
    assert W.dtype == B.dtype == out.dtype == np.float64
    assert out.shape == (5, 3)


def test_standalone_dense_in_float32_stays_float32():
    layer = Dense(3)
    out = layer.forward(np.ones((2, 4), dtype=np.float32))
    assert out.dtype == np.float32
    assert all(p.dtype == np.float32 for p in layer.params())


def test_dense_computes_activation_of_affine_map():
    rng = np.random.default_rng(3)
    layer = Dense(3, "tanh")
    x = rng.standard_normal((5, 4))
    out = layer.forward(x)
    W, B = layer.params()
    np.testing.assert_allclose(out, np.tanh(x @ W + B), rtol=1e-12)


@pytest.mark.parametrize("dropout", [1.0, 0.8])
@pytest.mark.parametrize("backend_kind", ["cpu", "strict"])
def test_dense_operations_in_order(dropout, backend_kind):
    """x @ W, then the bias and the activation: one fused operation where the
    backend fuses them (the CPU, the GPU), two otherwise; then dropout."""
    from nnx.ops import BiasActivation

    backend = get_backend(backend_kind, "float64") if backend_kind == "cpu" else \
        pytest.importorskip("array_api_strict") and get_backend("strict", "float64")
    layer = Dense(3, "relu", dropout=dropout)
    layer.setup(4, backend, backend.host_generator(0))
    ops = layer.operations
    assert isinstance(ops[0], WeightMultiply)
    if backend.fuses_bias_activation:
        assert isinstance(ops[1], BiasActivation) and ops[1].activation is layer.activation
        rest = ops[2:]
    else:
        assert isinstance(ops[1], BiasAdd) and ops[2] is layer.activation
        rest = ops[3:]
    assert isinstance(layer.activation, nnx.ReLU)
    assert len(rest) == (dropout < 1)
    if rest:
        assert isinstance(rest[0], Dropout) and rest[0].keep_prob == 0.8


# ----------------------------------------------- activations are never shared
def test_same_activation_instance_is_not_shared_between_layers():
    """Trap #4: one activation object (with its stored arrays) used by two layers."""
    act = Tanh()
    first, second = Dense(5, act), Dense(5, act)
    assert first.activation is not second.activation
    assert first.activation is not act and second.activation is not act
    assert isinstance(first.activation, Tanh) and isinstance(second.activation, Tanh)


def test_activation_instance_keeps_its_settings():
    layer = Dense(4, LeakyReLU(0.3))
    assert isinstance(layer.activation, LeakyReLU) and layer.activation.alpha == 0.3
    out = layer.forward(-np.ones((1, 1)) * 1e3)
    W, B = layer.params()
    z = -1e3 * W + B
    np.testing.assert_allclose(out, np.where(z > 0, z, 0.3 * z), rtol=1e-12)


def test_default_activation_is_a_fresh_sigmoid_per_layer():
    first, second = Dense(3), Dense(3)
    assert isinstance(first.activation, Sigmoid) and isinstance(second.activation, Sigmoid)
    assert first.activation is not second.activation


def test_activation_none_is_refused_not_read_as_sigmoid():
    """Dense(10, activation=None) was a sigmoid; a Keras user means no activation."""
    with pytest.raises(nnx.InputTypeError, match='activation=None: .*"linear" for none'):
        Dense(10, activation=None)
    assert isinstance(Dense(10).activation, Sigmoid)  # left out: the study's sigmoid


def test_activation_class_gives_a_fresh_instance():
    first, second = Dense(3, Tanh), Dense(3, Tanh)
    assert isinstance(first.activation, Tanh)
    assert first.activation is not second.activation


def make_net(act1, act2, dtype="float32"):
    layers = [Dense(5, act1), Dense(5, act2), Dense(3, "linear")]
    return NeuralNetwork(layers, SoftmaxCrossEntropy(), seed=7, dtype=dtype)


def train_data():
    rng = np.random.default_rng(4)
    return rng.standard_normal((8, 4)), rng.integers(0, 3, 8)


def test_shared_activation_instance_gives_the_same_gradients_as_separate_ones():
    X, y = train_data()
    act = Tanh()
    shared, separate = make_net(act, act), make_net(Tanh(), Tanh())
    loss_shared = float(shared.train_batch(X, y))
    loss_separate = float(separate.train_batch(X, y))
    assert loss_shared == loss_separate
    for g_shared, g_separate in zip(shared.param_grads(), separate.param_grads(), strict=True):
        np.testing.assert_array_equal(g_shared, g_separate)


def test_network_with_shared_activation_matches_finite_differences():
    X, y = train_data()
    act = Tanh()
    net = make_net(act, act, dtype="float64")
    net.train_batch(X, y)
    grads = [np.array(g, copy=True) for g in net.param_grads()]
    target = np.eye(3)[y]

    def f():
        return float(net.loss.forward(net.forward(X), target))

    for param, analytic in zip(net.params(), grads, strict=True):
        assert_grad_close(analytic, numeric_grad(f, param))


# ---------------- the fused bias and activation, where the backend fuses them
def test_fused_bias_activation_structure_matches_separate_ops():
    """Dense's fused BiasActivation (used where the backend fuses) gives the
    same outputs and gradients as BiasAdd + activation, for every activation."""
    fused = NumpyBackend("float64")
    fused.fuses_bias_activation = True
    separate = NumpyBackend("float64")
    separate.fuses_bias_activation = False
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((9, 5)), rng.integers(0, 3, 9)
    for act in [*sorted(nnx.ops.ACTIVATIONS), nnx.LeakyReLU(0.2), nnx.GELU("tanh"),
                nnx.ELU(0.5)]:
        nets = [nnx.NeuralNetwork([nnx.Dense(7, act), nnx.Dense(3, "linear")],
                                  nnx.SoftmaxCrossEntropy(), seed=2, backend=be,
                                  dtype="float64")
                for be in (fused, separate)]
        losses = [float(net.train_batch(X, y)) for net in nets]
        assert type(nets[0].layers[0].operations[1]).__name__ == "BiasActivation"
        assert type(nets[1].layers[0].operations[1]).__name__ == "BiasAdd"
        assert losses[0] == losses[1]
        for g, h in zip(nets[0].param_grads(), nets[1].param_grads()):
            np.testing.assert_allclose(g, h, rtol=1e-12, atol=1e-15)


def test_custom_activations_are_never_fused_and_not_saved(tmp_path):
    """A user's activation (here a Tanh subclass with its own formula) runs as
    written on a fusing backend, and a checkpoint refuses it clearly."""
    class ScaledTanh(nnx.Tanh):
        def _output(self, inference):
            return 2.0 * self.backend.xp.tanh(self.input_)

        def _input_grad(self, output_grad):
            return output_grad * (2.0 - 0.5 * self.output * self.output)

    fused = NumpyBackend("float64")
    fused.fuses_bias_activation = True
    X = np.random.default_rng(0).standard_normal((4, 3))
    nets = [nnx.NeuralNetwork([nnx.Dense(5, ScaledTanh()), nnx.Dense(2, "linear")],
                              "mse", seed=1, backend=be, dtype="float64") for be in (fused, "cpu")]
    np.testing.assert_array_equal(nets[0].forward(X), nets[1].forward(X))
    assert type(nets[0].layers[0].operations[1]).__name__ == "BiasAdd"
    with pytest.raises(TypeError, match="cannot describe ScaledTanh"):
        nets[1].save(tmp_path / "m.npz")


# ------------------------------------------------------------ argument checks
def test_unknown_activation_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="swish") as info:
        Dense(3, "swish")
    for name in ("linear", "sigmoid", "tanh", "relu", "leaky_relu", "relu6"):
        assert repr(name) in str(info.value)


@pytest.mark.parametrize("activation", [3, np.tanh, WeightMultiply(np.ones((2, 2)))])
def test_activation_that_is_not_an_activation_is_rejected(activation):
    with pytest.raises(TypeError, match="activation"):
        Dense(3, activation)


@pytest.mark.parametrize("activation, message", [
    (Dropout(0.5), "activation cannot be Dropout"),
    (Dropout, "activation cannot be Dropout"),
    (ACTIVATIONS["tanh"].__mro__[1], "activation must be a name or an activation operation"),
    (Dense, "activation must be a name or an activation operation"),
])
def test_operations_that_are_not_activations_are_refused(activation, message):
    from nnx import BiasAdd, WeightMultiply
    with pytest.raises(TypeError, match=message):
        Dense(3, activation)
    for cls in (WeightMultiply, BiasAdd):
        with pytest.raises(TypeError, match="activation must be a name"):
            Dense(3, cls)


def test_an_activation_that_overrides_forward_is_still_accepted():
    class Doubler(ACTIVATIONS["linear"].__mro__[1]):
        def forward(self, input_, inference=False):
            self.input_, self.output = input_, 2 * input_
            return self.output

    net = NeuralNetwork([Dense(3, Doubler())], "mse", seed=0)
    net.build(N_IN)
    W, B = list(net.params())
    np.testing.assert_allclose(net.forward(X0), 2 * (X0 @ W + B), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("neurons, error", [(0, ValueError), (-1, ValueError),
                                            (2.5, ValueError), (True, TypeError),
                                            ("3", TypeError)])
def test_dense_rejects_bad_neurons(neurons, error):
    """A value of another type ("3", True) is a TypeError, as SGD("0.1") is."""
    with pytest.raises(error, match="neurons"):
        Dense(neurons)


@pytest.mark.parametrize("dropout", [0, -0.1, 1.5])
def test_dense_rejects_keep_probability_outside_unit_interval(dropout):
    with pytest.raises(ValueError, match="dropout"):
        Dense(3, dropout=dropout)


# ------------------------------------------------------- layers of one's own
class _Residual(Dense):
    """x + act(x W + b): a subclass of Dense with code of its own."""

    def forward(self, x, inference=False):
        return x + super().forward(x, inference)

    def backward(self, g, input_grad=True):
        return g + super().backward(g, True)


def _residual_net():
    return nnx.NeuralNetwork([Dense(4, "tanh"), _Residual(4, "tanh"), Dense(2, "linear")],
                             nnx.SoftmaxCrossEntropy(), seed=0)


def test_a_subclass_of_dense_is_not_saved_as_a_plain_dense(tmp_path):
    """A Dense subclass was described as {"type": "Dense"}: saved and loaded,
    it came back a plain Dense without its own forward pass, and predicted
    other numbers without a word."""
    net = _residual_net()
    X = np.random.default_rng(0).standard_normal((20, 4))
    y = np.arange(20) % 2
    with pytest.raises(nnx.InputError, match="_Residual.*Dense layers only.*subclass of Dense"):
        nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=1, batch_size=10,
                                           checkpoint=tmp_path / "run.npz")
    assert not net.built  # refused before any training
    nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=1, batch_size=10)
    with pytest.raises(nnx.InputError, match="_Residual.*Dense layers only"):
        net.save(tmp_path / "model.npz")
    assert not (tmp_path / "model.npz").exists()


class _Centre(nnx.layers.Layer):
    """A layer of one's own without parameters: x - mean(x) per row."""

    def setup(self, n_in, backend, init_rng, rng=None, alloc=None):
        self.built = True

    def forward(self, x, inference=False):
        return x - x.mean(axis=1, keepdims=True)

    def backward(self, g, input_grad=True):
        return g - g.mean(axis=1, keepdims=True)


class _Scale(nnx.layers.Layer):
    """x * s with a (1, n) parameter s, and no reset_parameters of its own."""

    def param_shapes(self, n_in):
        return [(1, n_in)]

    def setup(self, n_in, backend, init_rng, rng=None, alloc=None):
        from nnx.ops import Operation, ParamOperation

        class Times(ParamOperation):
            def _output(self, inference):
                return self.input_ * self.param

            def _input_grad(self, g):
                return g * self.param

            def _param_grad(self, g):  # a new array, not written into grad_out
                return (g * self.input_).sum(axis=0, keepdims=True)
        assert issubclass(Times, Operation)
        s = alloc((1, n_in)) if alloc else backend.zeros((1, n_in))
        backend.assign(s, 1.0)
        self.operations = [Times(s, backend)]
        self.built = True


def test_a_layer_without_parameters_needs_no_reset_and_counts_none():
    """fit(restart=True) raised AttributeError 'reset_parameters' for a layer
    of one's own, and print(net) counted it width * units + units parameters."""
    net = nnx.NeuralNetwork([Dense(6, "tanh"), _Centre(6), Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0)
    X = np.random.default_rng(0).standard_normal((30, 5))
    y = np.arange(30) % 3
    for _ in range(2):
        nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=1, batch_size=10, restart=True)
    counts = [line.split()[-1] for line in str(net).splitlines() if line[:1].isdigit()]
    assert counts == ["36", "0", "21"]  # 5*6+6, none, 6*3+3


def test_a_parameter_gradient_returned_as_a_new_array_trains():
    """A ParamOperation whose _param_grad returned a new array (the documented
    form for an operation used alone) never trained inside a network: the
    optimiser reads the network's gradient buffer, which stayed zero."""
    net = nnx.NeuralNetwork([_Scale(4), Dense(2, "linear")], nnx.MeanSquaredError(),
                            seed=0, dtype="float64")
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((16, 4)), rng.standard_normal((16, 2))
    net.build(4)
    net.train_step(X, Y)
    scale, n = net.layers[0].operations[0], 4
    assert np.array_equal(net.grad_buffer[:n], np.asarray(scale.param_grad).ravel())
    assert np.abs(net.grad_buffer[:n]).max() > 0
    before = net.param_buffer[:n].copy()
    nnx.Trainer(net, nnx.SGD(0.1)).fit(X, Y, epochs=2, batch_size=8, restart=False)
    assert not np.array_equal(before, net.param_buffer[:n])
    with pytest.raises(NotImplementedError, match="_Scale defines no reset_parameters"):
        net.reset()


def test_param_shapes_that_do_not_match_setup_are_named():
    """alloc() of a shape that param_shapes did not list was a bare AssertionError."""
    class Wrong(_Scale):
        def param_shapes(self, n_in):
            return [(1, n_in + 1)]
    net = nnx.NeuralNetwork([Wrong(4), Dense(2, "linear")], nnx.MeanSquaredError(), seed=0)
    with pytest.raises(nnx.InputError, match=r"shape \(1, 4\).*listed \(1, 5\)"):
        net.build(4)


class _Gain(nnx.ops.ParamOperation):
    """x * g, with g of any shape that broadcasts over a batch's rows."""

    def _output(self, inference):
        return self.input_ * self.param

    def _input_grad(self, g):
        return g * self.param

    def _param_grad(self, g):
        return (g * self.input_).sum(axis=0).reshape(self.param.shape)


class _TwoGains(nnx.layers.Layer):
    """Two gains, allocated a then b and applied ``order`` ('ab' or 'ba');
    ``shape`` of each: (1, n) or (n,)."""

    def __init__(self, neurons, order="ab", one_d=False):
        super().__init__(neurons)
        self.order, self.one_d = order, one_d

    def _shape(self, n_in):
        return (n_in,) if self.one_d else (1, n_in)

    def param_shapes(self, n_in):
        return [self._shape(n_in)] * 2

    def setup(self, n_in, backend, init_rng, rng=None, alloc=None):
        made = {name: alloc(self._shape(n_in)) for name in "ab"}
        backend.assign(made["a"], 2.0)
        backend.assign(made["b"], -1.5)
        self.operations = [_Gain(made[name], backend) for name in self.order]
        self.built = True

    def reset_parameters(self, init_rng):
        pass


@pytest.mark.parametrize("order,one_d", [("ab", False), ("ba", False), ("ab", True)])
def test_each_parameter_gets_its_own_gradient_whatever_the_order_of_the_operations(order,
                                                                                  one_d):
    """The gradients were handed out in the operations' order, the parameters
    in alloc()'s: a layer applying b before a trained each with the other's
    gradient, silently; a parameter of one dimension failed to build (a bare
    'not enough values to unpack')."""
    net = nnx.NeuralNetwork([_TwoGains(3, order, one_d), Dense(2, "linear")], "mse", seed=0,
                            dtype="float64")
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((20, 3)), rng.standard_normal((20, 2))
    net.build(3)
    net.train_batch(X, Y)
    got = net.grad_buffer.copy()
    flat = net.get_parameters()

    def loss():
        net.set_parameters(flat)
        return float(net.loss_on(X, Y))
    want = numeric_grad(loss, flat, eps=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert str(net).splitlines()[3].split()[-1] == "6"  # two gains of 3


def test_a_listed_parameter_not_taken_from_alloc_is_refused():
    """A bias made with backend.zeros instead of alloc(): the layer used an
    array of its own that never trained, and the optimiser trained the
    buffer's slot, which nothing read."""
    class Forgot(_TwoGains):
        def setup(self, n_in, backend, init_rng, rng=None, alloc=None):
            a, b = alloc((1, n_in)), backend.zeros((1, n_in))
            self.operations = [_Gain(a, backend), _Gain(b, backend)]
    net = nnx.NeuralNetwork([Forgot(3), Dense(2, "linear")], "mse", seed=0)
    with pytest.raises(nnx.InputError, match=r"Forgot.setup took 1 parameter\(s\) from alloc\(\),"
                                             r" but its param_shapes\(3\) listed 2"):
        net.build(3)
    assert not net.built


@pytest.mark.parametrize("case", ["copied", "shared"])
def test_an_operation_whose_parameter_is_not_its_slot_is_refused(case):
    class Odd(_TwoGains):
        def setup(self, n_in, backend, init_rng, rng=None, alloc=None):
            a, b = alloc((1, n_in)), alloc((1, n_in))
            self.operations = [_Gain(a, backend), _Gain(a if case == "shared" else b.copy(),
                                                        backend)]
    net = nnx.NeuralNetwork([Odd(3), Dense(2, "linear")], "mse", seed=0)
    expected = ("share one parameter" if case == "shared" else
                "has a parameter that its setup did not take from alloc")
    with pytest.raises(nnx.InputError, match=rf"Odd's _Gain.*{expected}"):
        net.build(3)


def test_a_subclass_of_dense_may_add_a_parameter_after_its_own():
    """Dense.setup unpacked self.param_shapes(n_in) into two: a subclass that
    listed a third parameter could not build (too many values to unpack)."""
    class GainedDense(Dense):
        def param_shapes(self, n_in):
            return super().param_shapes(n_in) + [(1, self.neurons)]

        def setup(self, n_in, backend, init_rng, rng=None, alloc=None):
            super().setup(n_in, backend, init_rng, rng, alloc)
            g = alloc((1, self.neurons))
            backend.assign(g, 1.0)
            self.operations.append(_Gain(g, backend))
    net = nnx.NeuralNetwork([GainedDense(4, "tanh"), Dense(2, "linear")], "mse", seed=0,
                            dtype="float64")
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((10, 3)), rng.standard_normal((10, 2))
    net.build(3)
    net.train_batch(X, Y)
    flat = net.get_parameters()

    def loss():
        net.set_parameters(flat)
        return float(net.loss_on(X, Y))
    np.testing.assert_allclose(net.grad_buffer[:20], numeric_grad(loss, flat, eps=1e-6)[:20],
                               rtol=1e-6, atol=1e-9)


def test_a_layer_that_defines_no_setup_says_so():
    class Bare(nnx.layers.Layer):
        pass
    with pytest.raises(NotImplementedError, match="Bare defines no setup"):
        nnx.NeuralNetwork([Bare(3), Dense(2, "linear")], nnx.MeanSquaredError()).build(4)


def test_a_network_without_parameters_is_refused_by_fit_in_words():
    """fit failed in NumPy: zero-size array to reduction operation minimum."""
    net = nnx.NeuralNetwork([_Centre(3)], nnx.SoftmaxCrossEntropy(), seed=0)
    X = np.random.default_rng(0).standard_normal((30, 3))
    with pytest.raises(nnx.InputError, match="no parameters to train"):
        nnx.Trainer(net, nnx.SGD(0.1)).fit(X, np.arange(30) % 3, epochs=1, batch_size=10)


def test_a_layer_whose_setup_does_not_say_it_is_built_still_trains():
    """Layer.forward set a layer up again on every pass unless its setup set
    self.built: the new operations held arrays of their own, outside the
    network's buffer, and the layer trained nothing."""
    class Forgetful(_Scale):
        def setup(self, n_in, backend, init_rng, rng=None, alloc=None):
            super().setup(n_in, backend, init_rng, rng, alloc)
            self.built = False
    net = nnx.NeuralNetwork([Forgetful(4), Dense(2, "linear")], nnx.MeanSquaredError(),
                            seed=0, dtype="float64")
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((16, 4)), rng.standard_normal((16, 2))
    nnx.Trainer(net, nnx.SGD(0.1)).fit(X, Y, epochs=2, batch_size=8, restart=False)
    scale = net.layers[0].operations[0].param
    assert np.shares_memory(scale, net.param_buffer)
    assert not np.array_equal(net.param_buffer[:4], np.ones(4))


def test_a_thin_subclass_of_dense_is_still_a_dense_in_a_checkpoint(tmp_path):
    """Refusing every subclass of Dense also refused one that only changes
    defaults, so runs checkpointed with one could no longer be resumed."""
    class ReluDense(Dense):
        def __init__(self, neurons, activation="relu", **kw):
            super().__init__(neurons, activation, **kw)
    net = nnx.NeuralNetwork([ReluDense(4), Dense(2, "linear")], nnx.SoftmaxCrossEntropy(),
                            seed=0)
    net.build(3)
    net.save(tmp_path / "m.npz")
    back = nnx.NeuralNetwork.load(tmp_path / "m.npz")
    assert back.describe()["layers"] == net.describe()["layers"]


def test_a_keep_probability_below_one_half_is_warned_of():
    """dropout=0.2, meant as Keras's share to drop, kept 20% of the units and
    trained to 0.91 on digits where 0.96 was expected, silently."""
    with pytest.warns(nnx.InputWarning, match=r"Dense dropout=0.2 keeps only 20% of the units "
                                              r"in training: .*to drop 20%, pass dropout=0.8"):
        nnx.Dense(8, "tanh", dropout=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnx.Dense(8, "tanh", dropout=0.5)
        nnx.Dense(8, "tanh", dropout=0.8)


def test_a_loaded_layer_or_the_command_line_says_dropout_in_its_own_words(tmp_path, capsys):
    """Loading a keep-0.3 model warned of a training choice made long before
    (nnx evaluate and export too), and nnx train --dropout 0.3 was told to
    'pass dropout=0.7'."""
    from nnx.cli import main
    with pytest.warns(nnx.InputWarning):
        net = nnx.NeuralNetwork([nnx.Dense(3, "tanh", dropout=0.3), nnx.Dense(2, "linear")],
                                "mse", seed=0)
    net.build(2)
    net.save(tmp_path / "m.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnx.NeuralNetwork.load(tmp_path / "m.npz")
    assert main(["train", "--epochs", "1", "--quiet", "--dropout", "0.3",
                 "--out", str(tmp_path / "t.npz")]) == 0
    err = capsys.readouterr().err
    assert "nnx train: warning: --dropout 0.3 keeps only 30% of the units" in err
    assert "pass --dropout 0.7" in err
