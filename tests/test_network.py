"""NeuralNetwork: passes, gradients and updates against the float64
reference in reference.py; building, parameters and the constructor's
arguments; and the data it takes or refuses at forward, predict, train_batch
and fit (checked on the host by nnx.backend.host, on the device by the
network)."""

import copy
import math
import re
import warnings

import numpy as np
import pytest
from gradcheck import numeric_grad
from helpers import (
    BAD_DATA,
    N_IN,
    N_OUT,
    N_ROWS,
    NAN,
    X0,
    X_ONLY,
    Y0,
    assert_usable,
    good_data,
    make_net,
    on_device1,
    params,
    strict_xp,
    with_value,
)
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import RefMLP, assert_rel_close, one_hot
from reference import softmax as ref_softmax
from strategies import SMALL, dims, features, finite, not_finite

import nnx
from nnx import SGD, Dense, NeuralNetwork, Trainer

# ---- against the float64 reference: a 12-7-5-3 network (make_mlp) and RefMLP
MLP_IN, N_CLASSES, MLP_ROWS = 12, 3, 16
ACTS = ["tanh", "sigmoid", "linear"]
RTOL = 1e-10


def make_data(seed=0, n=MLP_ROWS):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, MLP_IN))
    ids = rng.integers(0, N_CLASSES, size=n)
    return X, ids


def make_mlp(loss="ce", dtype="float64", seed=7, acts=ACTS, dropout=1.0):
    layers = [nnx.Dense(7, acts[0], dropout=dropout), nnx.Dense(5, acts[1], dropout=dropout),
              nnx.Dense(N_CLASSES, acts[2])]
    loss_obj = nnx.SoftmaxCrossEntropy() if loss == "ce" else nnx.MeanSquaredError()
    return nnx.NeuralNetwork(layers, loss_obj, seed=seed, dtype=dtype)


def reference_of(net, loss, acts=ACTS):
    ps = [np.array(p, dtype=np.float64) for p in net.params()]
    return RefMLP(ps[0::2], ps[1::2], acts, loss=loss)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_loss_output_and_gradients_match_reference(loss):
    X, ids = make_data()
    net = make_mlp(loss)
    net.build(MLP_IN)
    ref = reference_of(net, loss)
    y = one_hot(ids, N_CLASSES)  # MSE regresses onto one-hot rows

    got_loss = float(net.train_batch(X, y))
    ref_loss, ref_out, ref_grads = ref.loss_and_grads(X, y)

    assert got_loss == pytest.approx(ref_loss, rel=RTOL, abs=0)
    assert_rel_close(net.layers[-1].output, ref_out, RTOL, "train forward output")
    assert_rel_close(net.forward(X), ref_out, RTOL, "forward output")
    grads = list(net.param_grads())
    assert len(grads) == len(ref_grads) == 6
    for i, (g, rg) in enumerate(zip(grads, ref_grads, strict=True)):
        assert_rel_close(g, rg, RTOL, f"gradient {i}")


@pytest.mark.parametrize("acts", [["relu", "tanh", "linear"], ["sigmoid", "relu", "sigmoid"],
                                  ["gelu", "silu", "elu"], ["elu", "gelu", "silu"]])
def test_other_activations_match_reference(acts):
    X, ids = make_data(seed=3)
    net = make_mlp("mse", acts=acts)
    net.build(MLP_IN)
    ref = reference_of(net, "mse", acts)
    y = one_hot(ids, N_CLASSES)
    got = float(net.train_batch(X, y))
    ref_loss, _, ref_grads = ref.loss_and_grads(X, y)
    assert got == pytest.approx(ref_loss, rel=RTOL, abs=0)
    for i, (g, rg) in enumerate(zip(net.param_grads(), ref_grads, strict=True)):
        assert_rel_close(g, rg, RTOL, f"gradient {i}")


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_twenty_optimizer_steps_match_reference(loss, momentum):
    X, ids = make_data(seed=1, n=24)
    y = one_hot(ids, N_CLASSES)
    net = make_mlp(loss)
    net.build(MLP_IN)
    ref = reference_of(net, loss)
    lr = 0.05
    optim = nnx.SGD(lr) if momentum == 0.0 else nnx.SGDMomentum(lr, momentum=momentum)
    nnx.Trainer(net, optim)
    velocity = [np.zeros_like(p) for p in ref.params()]
    for step in range(20):
        # a different slice each step, as mini-batches would be
        rows = slice((step * 5) % 16, (step * 5) % 16 + 8)
        got = float(net.train_batch(X[rows], y[rows]))
        ref_loss, _, grads = ref.loss_and_grads(X[rows], y[rows])
        assert got == pytest.approx(ref_loss, rel=RTOL, abs=0), f"loss at step {step}"
        optim.step()
        if momentum == 0.0:
            ref.sgd_step(grads, lr)
        else:
            ref.momentum_step(grads, velocity, lr, momentum)
    for i, (p, rp) in enumerate(zip(net.params(), ref.params(), strict=True)):
        assert_rel_close(p, rp, RTOL, f"param {i} after 20 steps")


def test_optim_attach_works_without_trainer():
    X, ids = make_data(seed=2)
    y = one_hot(ids, N_CLASSES)
    net = make_mlp("ce")
    net.build(MLP_IN)
    ref = reference_of(net, "ce")
    optim = nnx.SGD(0.1)
    optim.attach(net)
    for _ in range(3):
        net.train_batch(X, y)
        optim.step()
        _, _, grads = ref.loss_and_grads(X, y)
        ref.sgd_step(grads, 0.1)
    for p, rp in zip(net.params(), ref.params(), strict=True):
        assert_rel_close(p, rp, RTOL, "param")


def test_finite_difference_gradients_with_fixed_dropout_masks():
    X, ids = make_data(seed=5, n=10)
    y = one_hot(ids, N_CLASSES)
    net = make_mlp("ce", dropout=0.8, seed=11)
    net.train_batch(X, y)  # draws masks once
    dropouts = [op for layer in net.layers for op in layer.operations
                if isinstance(op, nnx.Dropout)]
    assert len(dropouts) == 2
    for op in dropouts:
        assert op.mask is not None and np.any(np.asarray(op.mask) == 0), "mask should drop units"
        op._masked = lambda x, m=op.mask: (x * m, m)
    net.train_batch(X, y)
    analytic = [np.array(g) for g in net.param_grads()]

    def loss_now():
        return float(net.loss.forward(net.forward(X), net.as_target(y, X.shape[0])))

    for k, p in enumerate(net.params()):  # each p is a view: perturbing it moves the net
        assert_rel_close(analytic[k], numeric_grad(loss_now, p), 1e-6, f"param {k}")


def test_dropout_gradients_match_reference_with_same_masks():
    X, ids = make_data(seed=6, n=10)
    y = one_hot(ids, N_CLASSES)
    net = make_mlp("ce", dropout=0.8, seed=13)
    net.build(MLP_IN)
    ref = reference_of(net, "ce")
    got = float(net.train_batch(X, y))
    masks = [np.array(op.mask) for layer in net.layers for op in layer.operations
             if isinstance(op, nnx.Dropout)]
    ref.masks = masks + [None]
    ref_loss, _, ref_grads = ref.loss_and_grads(X, y)
    # inverted dropout: the mask holds 0 or 1/keep_prob
    assert set(np.unique(np.concatenate([m.ravel() for m in masks]))) == {0.0, 1.0 / 0.8}
    assert got == pytest.approx(ref_loss, rel=RTOL, abs=0)
    for i, (g, rg) in enumerate(zip(net.param_grads(), ref_grads, strict=True)):
        assert_rel_close(g, rg, RTOL, f"gradient {i}")
    # inference: dropout is the identity
    ref.masks = [None] * 3
    assert_rel_close(net.forward(X, inference=True), ref.forward(X), RTOL, "inference output")


def test_integer_labels_and_one_hot_rows_give_the_same_loss():
    X, ids = make_data(seed=4)
    net = make_mlp("ce")
    net.build(MLP_IN)
    loss_ids = float(net.train_batch(X, ids))
    g_ids = [np.array(g) for g in net.param_grads()]
    loss_hot = float(net.train_batch(X, one_hot(ids, N_CLASSES)))
    assert loss_ids == loss_hot
    for a, b in zip(g_ids, net.param_grads(), strict=True):
        np.testing.assert_array_equal(a, b)
    ref_loss, _, _ = reference_of(net, "ce").loss_and_grads(X, one_hot(ids, N_CLASSES))
    assert loss_ids == pytest.approx(ref_loss, rel=RTOL, abs=0)


def test_train_batch_skips_only_the_unused_input_gradient():
    """train_batch leaves out the first layer's input gradient (nobody reads
    it); the parameter gradients equal those of a full backward pass."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((8, 5)), rng.integers(0, 3, 8)
    net = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=1, dtype="float64")
    net.train_batch(X, y)
    assert net.layers[0].operations[0].input_grad is None
    skipped = [g.copy() for g in net.param_grads()]
    pred = net.forward(X)
    net.loss.forward(pred, np.eye(3)[y])
    dx = net.backward(net.loss.backward())
    assert dx.shape == X.shape
    for a, b in zip(skipped, net.param_grads()):
        np.testing.assert_array_equal(a, b)


def test_a_shallow_copy_of_a_layer_gets_its_own_activation():
    """copy.copy(layer) shared the activation object, which keeps what its last
    pass saw: two layers of one network wrote into one activation and the
    first layer's gradients came out wrong."""
    import copy
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 5))
    first = nnx.Dense(5, "tanh")
    net = nnx.NeuralNetwork([first, copy.copy(first)], "mse", seed=1, dtype="float64")
    net.train_batch(X, y)
    assert net.layers[0].activation is not net.layers[1].activation
    W = net.layers[0].operations[0].param
    analytic = np.array(net.layers[0].operations[0].param_grad)

    def loss():
        return float(net.loss.forward(net.forward(X), net.as_target(y, 6)))
    np.testing.assert_allclose(analytic, numeric_grad(loss, W), rtol=1e-6, atol=1e-9)


# -------------------- building: parameters, their order, dtype and first draw
def test_params_order_and_shapes():
    net = nnx.NeuralNetwork([nnx.Dense(7, "tanh"), nnx.Dense(5), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0)
    net.build(MLP_IN)
    shapes = [tuple(p.shape) for p in net.params()]
    assert shapes == [(12, 7), (1, 7), (7, 5), (1, 5), (5, 3), (1, 3)]
    # the i-th param is the one the layers' operations use, in order
    ops = [op for layer in net.layers for op in layer.operations if hasattr(op, "param")]
    bias = "BiasActivation" if net.backend.fuses_bias_activation else "BiasAdd"
    assert [type(op).__name__ for op in ops] == ["WeightMultiply", bias] * 3
    for p, op in zip(net.params(), ops, strict=True):
        assert p is op.param
    # W1 really multiplies the input: zero it and the first layer sees only B1
    W1, B1 = list(net.params())[:2]
    W1[...] = 0
    X, _ = make_data()
    net.forward(X)
    np.testing.assert_allclose(net.layers[0].output, np.tanh(np.broadcast_to(B1, (MLP_ROWS, 7))),
                               rtol=1e-6)
    net.train_batch(X, np.zeros(MLP_ROWS, dtype=int))
    assert [tuple(g.shape) for g in net.param_grads()] == shapes


@pytest.mark.parametrize("dtype", [None, "float32", "float64"])
def test_dtype_of_every_param_and_grad(dtype):
    kwargs = {} if dtype is None else {"dtype": dtype}
    want = np.float64 if dtype == "float64" else np.float32
    net = nnx.NeuralNetwork([nnx.Dense(4, "tanh", dropout=0.5), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0, **kwargs)
    X, ids = make_data()  # float64 host input
    loss = net.train_batch(X, ids)
    assert np.asarray(loss).dtype == want
    assert net.forward(X).dtype == want
    assert all(p.dtype == want for p in net.params())
    assert all(g.dtype == want for g in net.param_grads())
    optim = nnx.SGDMomentum(0.1, final_lr=0.01, decay_type="exponential")
    nnx.Trainer(net, optim).fit(X, ids, X, ids, epochs=2, eval_every=1, batch_size=8)
    assert all(p.dtype == want for p in net.params())
    assert net.get_parameters().dtype == want


def test_layers_of_equal_shape_start_different():
    # trap 5: one generator per network, not a reseed per layer
    net = nnx.NeuralNetwork([nnx.Dense(6, "tanh"), nnx.Dense(6, "tanh"), nnx.Dense(6, "tanh")],
                            nnx.MeanSquaredError(), seed=3, dtype="float64")
    net.build(6)
    W = [np.array(p) for p in net.params()][0::2]
    assert not np.array_equal(W[1], W[2])
    assert not np.array_equal(W[0], W[1])


def test_a_generator_state_of_another_kind_reseeds_instead_of_failing():
    """A state from another bit generator (MT19937) raised ValueError from
    NumPy instead of falling back to a fresh reproducible stream."""
    net = nnx.NeuralNetwork([nnx.Dense(3, "tanh", dropout=0.5), nnx.Dense(2, "linear")],
                            "softmax_cross_entropy", seed=4)
    net.build(2)
    assert net.restore_generator(np.random.MT19937(0).state, 2) is False
    again = nnx.NeuralNetwork([nnx.Dense(3, "tanh", dropout=0.5), nnx.Dense(2, "linear")],
                              "softmax_cross_entropy", seed=4)
    again.build(2)
    again.restore_generator(None, 2)  # the same fresh stream as with no state at all
    X = np.ones((6, 2))
    np.testing.assert_array_equal(net.forward(X), again.forward(X))


def test_set_parameters_takes_a_list_and_checks_its_length():
    net = make_net()
    net.build(N_IN)
    n = params(net).size
    net.set_parameters([0.5] * n)
    assert (params(net) == 0.5).all()
    with pytest.raises(ValueError, match=rf"parameters have shape \(2,\), expected \({n},\)"):
        net.set_parameters([1.0, 2.0])


def test_a_network_too_large_to_allocate_is_refused_and_left_as_it_was(monkeypatch):
    """Dense(10**19) failed in NumPy with 'Maximum allowed dimension exceeded';
    and a MemoryError part-way through a build (NumPy's calloc succeeds for
    buffers that do not fit, the float64 weight draw then fails) left the
    network half-built: 'built', but with no input width, saving a checkpoint
    that would not load."""
    net = make_net()
    net.build(N_IN)
    before, ops = net.get_parameters(), [list(la.operations) for la in net.layers]
    with pytest.raises(nnx.InputValueError, match=r"widths \[4, 10000000000000000000, 3\] has "
                                                  r".* parameters, more than any array"):
        NeuralNetwork([Dense(10**19), Dense(N_OUT)], "mse").build(N_IN)
    calls = []
    real = net.backend.host_normal

    def fails_on_the_second_layer(*args):
        calls.append(args)
        if len(calls) == 3:  # W1, B1, then W2
            raise MemoryError("Unable to allocate 26.8 GiB")
        return real(*args)

    monkeypatch.setattr(net.backend, "host_normal", fails_on_the_second_layer)
    with pytest.raises(nnx.InputValueError, match=r"widths \[6, 5, 3\] has 53 parameters: "
                                                  r"too many to allocate in float32 \(MemoryError"):
        net.build(N_IN + 2)
    monkeypatch.undo()
    # as it was: input width, parameters, operations, and the weight generator
    assert net.n_in == N_IN
    np.testing.assert_array_equal(net.get_parameters(), before)
    assert [list(la.operations) for la in net.layers] == ops
    Trainer(net, SGD(0.1)).fit(*good_data(), epochs=1, restart=False)
    fresh = make_net()
    fresh.build(N_IN)
    net.build(N_IN + 2)
    fresh.build(N_IN + 2)  # the same draws: the failed build consumed none of them
    np.testing.assert_array_equal(net.get_parameters(), fresh.get_parameters())


# --------------- the constructor's arguments: layers, loss, dtype and backend
@pytest.mark.parametrize("layers", [Dense(3), None, "Dense"])
def test_layers_that_are_not_a_list_are_named(layers):
    with pytest.raises(TypeError, match="layers must be a list of Layer objects"):
        NeuralNetwork(layers, "mse")


def test_the_same_layer_twice_is_refused():
    """One Dense object twice gave a buffer with slots for two layers and the
    operations of one: silently wrong weights."""
    d = Dense(3, "tanh")
    with pytest.raises(nnx.InputValueError, match="the same Layer object appears twice"):
        NeuralNetwork([d, d, Dense(2)], "mse")


def test_a_layer_belongs_to_one_network_at_a_time():
    """A second network built from the first one's layers would point them at
    its own parameters behind the first one's back: refused, naming the
    layer. Once the first network is gone, its layers may be used again."""
    import gc
    layers = [nnx.Dense(7, "tanh"), nnx.Dense(N_CLASSES, "linear")]
    first = nnx.NeuralNetwork(layers, "softmax_cross_entropy", seed=1)
    first.build(MLP_IN)
    with pytest.raises(ValueError, match=r"layers\[0\] \(Dense\(7, Tanh.*already belongs to "
                                         "another NeuralNetwork"):
        nnx.NeuralNetwork(layers, "softmax_cross_entropy", seed=2)
    with pytest.raises(ValueError, match=r"layers\[1\]"):
        nnx.NeuralNetwork([nnx.Dense(7, "tanh"), layers[1]], "softmax_cross_entropy")
    X, _ = make_data()
    before = first.forward(X)
    assert np.array_equal(first.forward(X), before)  # the first network is untouched
    del first
    gc.collect()
    second = nnx.NeuralNetwork(layers, "softmax_cross_entropy", seed=2)
    assert second.forward(X).shape == (MLP_ROWS, N_CLASSES)


def test_a_loss_object_given_to_two_networks_serves_each_on_its_own():
    """Each network computes with its own copy of the loss: a float32 network
    given the same loss object later does not turn the first one's loss to float32."""
    X, ids = make_data()
    loss = nnx.SoftmaxCrossEntropy()
    layers64 = [nnx.Dense(7, "tanh"), nnx.Dense(N_CLASSES, "linear")]
    net64 = nnx.NeuralNetwork(layers64, loss, seed=3, dtype="float64")
    alone = nnx.NeuralNetwork([nnx.Dense(7, "tanh"), nnx.Dense(N_CLASSES, "linear")],
                              nnx.SoftmaxCrossEntropy(), seed=3, dtype="float64")
    nnx.NeuralNetwork([nnx.Dense(7, "tanh"), nnx.Dense(N_CLASSES, "linear")], loss, seed=4,
                      dtype="float32")
    got = net64.train_batch(X, ids)
    assert got.dtype == np.float64
    assert float(got) == float(alone.train_batch(X, ids))


def test_a_one_output_softmax_network_is_refused():
    """Its loss is 0 with no gradient whatever the data: it 'trained' silently."""
    with pytest.raises(ValueError, match="needs one output per class, but the last layer has 1"):
        NeuralNetwork([Dense(1, "linear")], "softmax_cross_entropy")
    NeuralNetwork([Dense(1, "linear")], "mse")  # one output is fine for regression


def test_unknown_dtype_lists_the_supported_ones():
    with pytest.raises(ValueError, match=r"dtype='int8' is not supported.*float32.*float64"):
        NeuralNetwork([Dense(3)], "mse", dtype="int8")


@pytest.mark.parametrize("dtype", ["foo", "float16", 3])
def test_a_dtype_numpy_does_not_know_is_refused_by_name(dtype):
    """NumPy's own 'data type not understood' TypeError could escape."""
    with pytest.raises(nnx.InputValueError, match=re.escape(f"dtype={dtype!r} is not supported")):
        NeuralNetwork([Dense(2)], "mse", dtype=dtype)


def test_dtype_and_a_backend_object_must_agree():
    """dtype was ignored without a word when backend was a Backend object."""
    from nnx import get_backend
    b64 = get_backend("cpu", "float64")
    layers = lambda: [Dense(N_OUT, "linear")]  # noqa: E731
    with pytest.raises(ValueError, match="dtype='float32' differs from the dtype of backend"):
        NeuralNetwork(layers(), "mse", backend=b64, dtype="float32")
    assert NeuralNetwork(layers(), "mse", backend=b64).backend is b64
    assert NeuralNetwork(layers(), "mse", backend=b64, dtype=np.float64).backend is b64
    assert NeuralNetwork(layers(), "mse", dtype=np.float64).backend is b64
    assert NeuralNetwork(layers(), "mse").backend.dtype_name == "float32"
    assert get_backend(b64) is b64  # no dtype given: the object as it is
    from nnx.study import LADDER
    assert LADDER[4].build(N_IN, N_OUT, backend=b64)[0].backend is b64


# -------------------------------------------------- passes in the wrong order
def test_backward_before_any_forward_is_a_clear_error():
    net = make_mlp()
    net.build(MLP_IN)
    with pytest.raises(RuntimeError, match=r"backward\(\) was called before its forward\(\)"):
        net.backward(np.zeros((4, N_CLASSES)))
    with pytest.raises(RuntimeError, match=r"SoftmaxCrossEntropy.backward\(\) was called "
                                           r"before its forward"):
        nnx.SoftmaxCrossEntropy().backward()


def test_backward_before_forward_is_a_clear_error():
    net = nnx.NeuralNetwork([nnx.Dense(3)], "mse")
    with pytest.raises(RuntimeError, match="no parameters yet"):
        net.backward(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="before any forward"):
        nnx.Dense(3).backward(np.ones((2, 3)))


def test_train_step_and_mean_loss_build_an_unbuilt_network_as_train_batch_does():
    """train_step (the per-batch path on device arrays) ran the forward pass
    through layers that made weights of their own, then refused its backward
    pass: 'no parameters yet: call ... forward() first', which it had just done."""
    X, ids = make_data()
    want = make_mlp()
    want_loss = float(want.train_batch(X, ids))
    net = make_mlp()
    loss = net.train_step(net.as_input(X), net.as_target(ids, X.shape[0]))
    assert net.built and float(loss) == want_loss
    np.testing.assert_array_equal(net.grad_buffer, want.grad_buffer)
    np.testing.assert_array_equal(net.param_buffer, want.param_buffer)
    fresh = make_mlp()
    got = float(fresh.mean_loss(fresh.as_input(X), fresh.as_target(ids, X.shape[0])))
    assert fresh.built and got == float(make_mlp().loss_on(X, ids))


def test_predict_on_an_unbuilt_network_is_refused():
    """predict() built the network with random weights and answered from them."""
    net = make_net()
    with pytest.raises(RuntimeError, match="predict: the network has no parameters yet"):
        net.predict(X0)
    assert not net.built


# -------------------------- predict and loss_on: in chunks of batch_size rows
def test_loss_on_returns_a_0d_device_array():
    X, ids = make_data()
    loss = make_mlp().loss_on(X, ids, batch_size=5)
    assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == np.float64


@pytest.mark.parametrize("chunk", [1, 7, 16, 1000])
def test_predictions_and_losses_in_chunks_equal_the_whole(chunk):
    """predict and loss_on work in chunks of batch_size rows: chunks put back
    in another order, or a mean of chunk losses not weighted by their sizes
    (7 does not divide 23), was not caught."""
    net = make_mlp(dtype="float64")
    X, ids = make_data(n=23)
    net.build(MLP_IN)
    whole = net.predict(X, batch_size=10_000)
    np.testing.assert_allclose(net.predict(X, batch_size=chunk), whole, rtol=1e-14)
    ref = RefMLP([np.array(p) for p in list(net.params())[0::2]],
                 [np.array(p) for p in list(net.params())[1::2]], ACTS)
    expected = ref.loss_and_grads(X, one_hot(ids, N_CLASSES))[0]
    assert float(net.loss_on(X, ids, batch_size=chunk)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("method", ["predict", "loss_on"])
@pytest.mark.parametrize("bad", [0, -1, 2.5, "10"])
def test_inference_batch_size_must_be_a_positive_integer(trained, method, bad):
    """predict / loss_on chunk sizes are checked like fit's batch_size."""
    net, _, X, y = trained
    args = (X,) if method == "predict" else (X, y)
    with pytest.raises((ValueError, TypeError),
                       match=re.escape(f"batch_size={bad!r}") + ".*positive integer"):
        getattr(net, method)(*args, batch_size=bad)


# ----------------------------------- features and targets at the entry points
def test_forward_with_wrong_feature_count_raises():
    net = make_mlp("ce")
    X, ids = make_data()
    net.forward(X)
    with pytest.raises(ValueError, match="features"):
        net.forward(X[:, :-1])
    with pytest.raises(ValueError):
        net.train_batch(np.ones((4, MLP_IN + 1)), np.zeros(4, dtype=int))
    built = make_mlp("ce")
    built.build(MLP_IN)
    with pytest.raises(ValueError):
        built.forward(np.ones((3, 5)))


@pytest.mark.parametrize("entry", ["fit", "train_batch"])
@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_rejected_before_training(trained, case, entry):
    """Bad X/y in fit and train_batch: a clear error, weights untouched."""
    net, trainer, X, y = trained
    bad_X, bad_y, exc, pattern = BAD_DATA[case]
    bad_y = Y0[: len(bad_X)] if bad_y is None else bad_y
    before = params(net)
    with pytest.raises(exc, match=pattern) as info:
        if entry == "fit":
            trainer.fit(bad_X, bad_y, epochs=2, eval_every=1)
        else:
            net.train_batch(bad_X, bad_y)
    assert isinstance(info.value, nnx.InputError)  # a refusal, not an accident
    assert_usable(net, trainer, X, y, before)


@pytest.mark.parametrize("case", X_ONLY)
def test_bad_features_are_rejected_by_forward_and_predict(trained, case):
    """forward/predict check X exactly like fit does."""
    net, _, _, _ = trained
    bad_X, _, exc, pattern = BAD_DATA[case]
    with pytest.raises(exc, match=pattern):
        net.forward(bad_X)
    with pytest.raises(exc, match=pattern):
        net.predict(bad_X)


def test_huge_finite_data_whose_sum_overflows_is_accepted():
    """The finite check sums the data first; a sum that overflows although
    every value is finite must not be taken for an infinity."""
    net = make_net()
    X, y = good_data()
    X = np.full_like(X, 3e38, dtype=np.float32)
    X[::2] = -3e38
    X[0, 0] = 3e38  # the columns no longer cancel: the float32 sum overflows
    with np.errstate(all="ignore"):
        assert not np.isfinite(X.sum())
    with np.errstate(all="ignore"):  # the products overflow: the data is valid all the same
        net.train_batch(X, y)


def test_mse_targets_with_nan_or_float32_overflow_are_rejected():
    """Regression targets (MSE): NaN rows and values beyond the compute dtype."""
    net = make_net("mse")
    X, _ = good_data()
    with pytest.raises(ValueError, match=r"y contains NaN or infinite"):
        net.train_batch(X, with_value(np.full((N_ROWS, N_OUT), 0.5), (3, 1), NAN))
    with pytest.raises(ValueError, match=r"y.*(float32|range|infinite)"):
        net.train_batch(X, with_value(np.full((N_ROWS, N_OUT), 0.5), (3, 1), 1e39))


def test_a_non_integer_class_id_is_shown_as_it_is():
    """The message showed the first label rather than the offending one."""
    X, _ = good_data(3)
    with pytest.raises(nnx.InputValueError, match=r"got 1\.5 \(row 1; 1 non-integer"):
        Trainer(make_net(), SGD(0.1)).fit(X, np.array([0.0, 1.5, 1.0]), epochs=1)


def test_one_hot_rows_must_sum_to_one_within_a_millionth():
    X, _ = good_data(2)
    near = np.array([[0.5, 0.5000004, 0.0], [0.0, 1.0, 0.0]])  # within 1e-6: taken
    Trainer(make_net(), SGD(0.1)).fit(X, near, epochs=1)
    off = np.array([[0.5, 0.500002, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(nnx.InputValueError, match="row 0 sums to 1"):
        Trainer(make_net(), SGD(0.1)).fit(X, off, epochs=1)


def test_python_lists_are_host_data_not_a_foreign_device(trained):
    """Nested lists are host data: accepted or rejected as data, never 'not on this device'."""
    net, _, X, y = trained
    out = net.forward(X.tolist())
    assert out.shape == (N_ROWS, N_OUT)
    loss = net.train_batch(X.tolist(), y.tolist())
    assert math.isfinite(float(loss))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself
def test_matrix_input_is_element_wise_and_masked_input_refused():
    """np.matrix passed through: dropout's ``input_ * mask`` became a matrix
    product, and a later evaluation failed deep inside NumPy. A masked array's
    mask was dropped, so a NaN under it reached training."""
    X, y = good_data()
    nets = [NeuralNetwork([Dense(5, "tanh", dropout=0.5), Dense(N_OUT, "linear")],
                          "softmax_cross_entropy", seed=3) for _ in range(2)]
    a, b = nets[0].forward(np.asmatrix(X), inference=False), nets[1].forward(X, inference=False)
    assert type(a) is np.ndarray
    np.testing.assert_array_equal(a, b)
    history = Trainer(nets[0], SGD(0.1)).fit(np.asmatrix(X), y, np.asmatrix(X), y, epochs=2,
                                             eval_every=1)
    assert history.records[-1]["loss"] is not None
    masked = np.ma.masked_array(np.where(X > 1.5, np.nan, X), mask=X > 1.5)
    with pytest.raises(TypeError, match="X_train is a masked array"):
        Trainer(make_net(), SGD(0.1)).fit(masked, y, epochs=1)


def test_a_numpy_scalar_is_refused_as_not_2d():
    """A NumPy scalar was reported as an array of another device."""
    with pytest.raises(ValueError, match=r"X must be 2-D \(rows, features\), got shape \(\)"):
        make_net().forward(np.float64(1.0))


# ------------------------------------- as_input and as_target, property-based
def _prop_net():
    net = make_net()
    net.build(N_IN)
    return net


@SMALL
@given(rows=dims, data=st.data())
def test_as_input_uploads_valid_features_in_the_network_dtype(rows, data):
    net = _prop_net()
    X = data.draw(hnp.arrays(np.float64, (rows, N_IN), elements=finite))
    out = net.as_input(X)
    assert net.backend.owns(out) and out.shape == (rows, N_IN) and out.dtype == np.float32
    np.testing.assert_array_equal(out, X.astype(np.float32))


@SMALL
@given(X=hnp.arrays(np.float64, st.tuples(dims, st.just(N_IN)),
                    elements=st.floats(allow_nan=False, allow_infinity=False)))
@example(X=np.full((1, N_IN), 1e39))
def test_as_input_never_returns_non_finite_values(X):
    """Finite float64 input either fits the network's float32 or is rejected."""
    net = _prop_net()
    try:
        out = net.as_input(X)
    except ValueError:
        return
    assert np.isfinite(out).all(), f"as_input turned finite {X} into {out}"


@SMALL
@given(X=features(), data=st.data())
def test_as_input_rejects_nan_inf_and_other_widths(X, data):
    net = _prop_net()
    if X.shape[1] != N_IN:
        with pytest.raises(ValueError, match=rf"X has {X.shape[1]} features"):
            net.as_input(X)
        return
    X[data.draw(st.integers(0, X.shape[0] - 1)), data.draw(st.integers(0, N_IN - 1))] = \
        data.draw(not_finite)
    with pytest.raises(ValueError, match=r"NaN or infinite"):
        net.as_input(X)


@SMALL
@given(ids=hnp.arrays(np.int64, st.integers(1, 8), elements=st.integers(0, N_OUT - 1)),
       data=st.data())
def test_as_target_valid_ids_and_rejections(ids, data):
    net = _prop_net()
    n = len(ids)
    out = net.as_target(ids, n)
    assert net.backend.owns(out) and out.shape == (n, N_OUT) and out.dtype == np.float32
    np.testing.assert_array_equal(out.argmax(axis=1), ids)
    with pytest.raises(ValueError, match=rf"y has {n} rows but X has {n + 1}"):
        net.as_target(ids, n + 1)
    bad = ids.copy()
    bad[data.draw(st.integers(0, n - 1))] = data.draw(
        st.one_of(st.integers(-50, -1), st.integers(N_OUT, 50)))
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 2\]"):
        net.as_target(bad, n)
    floats = ids.astype(float)
    floats[data.draw(st.integers(0, n - 1))] = data.draw(not_finite)
    with pytest.raises(ValueError, match=r"y"):
        net.as_target(floats, n)


# --------------------------------------------------- arrays on another device
def test_array_on_another_device_is_rejected_by_forward_train_batch_fit(trained):
    """An array-api-strict array on device1 given to a CPU network, at every entry point."""
    net, trainer, X, y = trained
    before = params(net)
    Xd, yd = on_device1(X), on_device1(y)
    device = r"not on this network's device \(cpu\)"
    with pytest.raises(ValueError, match=r"X is .*array_api_strict.* " + device):
        net.forward(Xd)
    with pytest.raises(ValueError, match=r"X is .*array_api_strict.* " + device):
        net.predict(Xd)
    with pytest.raises(ValueError, match=r"X is .*array_api_strict.* " + device):
        net.train_batch(Xd, y)
    with pytest.raises(ValueError, match=r"y is .*array_api_strict.* " + device):
        net.train_batch(X, yd)
    with pytest.raises(ValueError, match=r"X_train is .*array_api_strict.* " + device):
        trainer.fit(Xd, y, epochs=2, eval_every=1)
    with pytest.raises(ValueError, match=r"y_train is .*array_api_strict.* " + device):
        trainer.fit(X, yd, epochs=2, eval_every=1)
    with pytest.raises(ValueError, match=r"X_val is .*array_api_strict.* " + device):
        trainer.fit(X, y, epochs=2, eval_every=1, validation=(Xd, y))
    assert_usable(net, trainer, X, y, before)


def test_simulated_device_network_rejects_an_array_on_the_host_device():
    """On the simulated device, an array-api-strict array on CPU_DEVICE is foreign too."""
    xp_strict = strict_xp()
    net = make_net(backend="strict")
    host_side = xp_strict.asarray(np.ones((3, N_IN)), device=xp_strict.Device("CPU_DEVICE"))
    with pytest.raises(ValueError, match=r"not on this network's device \(strict\)"):
        net.forward(host_side)
    assert net.forward(np.ones((3, N_IN))).shape == (3, N_OUT)  # host NumPy is uploaded


def test_empty_device_arrays_are_refused_before_training():
    """Arrays already on the device skipped the empty check: a 0-row set
    trained a whole epoch of nothing and failed with ZeroDivisionError."""
    strict_xp()
    net = make_net(backend="strict")
    b = net.backend
    X, y = good_data()
    Y = b.asarray(np.eye(N_OUT)[y])
    for Xd, Yd in [(b.asarray(X[:0]), Y[:0, :]), (b.asarray(X[:, :0]), Y)]:
        with pytest.raises(ValueError, match=r"X_train has shape .*neither of them 0"):
            Trainer(net, SGD(0.1)).fit(Xd, Yd, epochs=2)


def test_device_targets_of_the_wrong_shape_are_named():
    """Without the check the loss failed later with 'target has shape ...'."""
    pytest.importorskip("array_api_strict")
    net = make_net(backend="strict")
    X, _ = good_data(4)
    Xd, yd = net.backend.asarray(X), net.backend.asarray(np.zeros((4, 2)))
    with pytest.raises(nnx.InputValueError, match=r"y_train on the device must have shape "
                                                  r"\(4, 3\), or \(4,\) of integer class ids, "
                                                  r"got \(4, 2\)"):
        Trainer(net, SGD(0.1)).fit(Xd, yd, epochs=1)


# ------------------------------------------------------ what a newcomer meets
def _squash_net(output="linear"):
    return nnx.NeuralNetwork([nnx.Dense(6, "tanh"), nnx.Dense(2, output)],
                             nnx.SoftmaxCrossEntropy(), seed=0)


def _summary_net(seed=0, **kw):
    return nnx.NeuralNetwork([nnx.Dense(7, "tanh", dropout=0.8), nnx.Dense(3, "linear")],
                             nnx.SoftmaxCrossEntropy(), seed=seed, **kw)


@pytest.mark.parametrize("output", ["sigmoid", "tanh", "relu"])
def test_a_squashing_output_before_softmax_cross_entropy_warns(output):
    with pytest.warns(nnx.InputWarning, match="give the last layer a linear activation"):
        _squash_net(output)


def test_a_linear_output_or_a_sigmoid_with_mse_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _squash_net("linear")
        nnx.NeuralNetwork([nnx.Dense(6, "tanh"), nnx.Dense(2, "sigmoid")], "mse", seed=0)



def test_summary_lists_layers_shapes_and_parameter_counts():
    net = _summary_net()
    text = net.summary()
    assert "not built yet" in text and "input: (rows, ?)" in text
    net.build(5)
    text = str(net)  # print(net) shows the summary
    assert text == net.summary()
    assert "input: (rows, 5)" in text
    assert re.search(r"1 Dense\s+7\s+Tanh\s+keep 0.8\s+\(rows, 7\)\s+42\b", text)
    assert re.search(r"2 Dense\s+3\s+Linear\s+-\s+\(rows, 3\)\s+24\b", text)
    total = sum(int(np.prod(p.shape)) for p in net.params())
    assert f"parameters: {total:,}" in text and total == 66
    assert repr(net).startswith("NeuralNetwork([Dense(7")  # repr stays the constructor call


def test_predict_proba_is_the_softmax_of_the_outputs():
    net = _summary_net(dtype="float64")
    X = np.random.default_rng(0).standard_normal((11, 5))
    net.build(5)
    proba = net.predict_proba(X)
    np.testing.assert_allclose(proba, ref_softmax(net.predict(X)), rtol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert (proba.argmax(axis=1) == nnx.predict_classes(net, X)).all()


def test_predict_proba_of_a_one_output_network_and_its_refusal():
    one = nnx.NeuralNetwork([nnx.Dense(1, "sigmoid")], "mse", seed=0, dtype="float64")
    X = np.random.default_rng(1).standard_normal((6, 4))
    one.build(4)
    p = one.predict(X)[:, 0]
    np.testing.assert_allclose(one.predict_proba(X), np.stack([1 - p, p], axis=1), rtol=1e-12)
    two = nnx.NeuralNetwork([nnx.Dense(2, "linear")], "mse", seed=0)
    two.build(4)
    with pytest.raises(ValueError, match="predict_proba needs a classification loss"):
        two.predict_proba(X)


@pytest.mark.parametrize("what", ["predict_proba", "predict_classes"])
def test_a_regression_read_as_probabilities_says_so(what):
    """A linear output trained with MSE on values of -3 to 9 gave predict_proba
    [[0, 1], ...] and class 1 everywhere, silently (nnx.accuracy refused it).
    A linear output trained on 0/1 targets (a linear probability model) stays
    quiet."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    values = X @ np.array([3.0, -2.0, 1.0]) + 3
    for y, warns in ((values, True), ((values > 3).astype(float), False)):
        net = nnx.NeuralNetwork([nnx.Dense(8, "tanh"), nnx.Dense(1, "linear")], "mse", seed=0)
        nnx.Trainer(net, nnx.SGD(0.05)).fit(X, y, epochs=30, batch_size=20)
        call = net.predict_proba if what == "predict_proba" else \
            (lambda X, net=net: nnx.predict_classes(net, X, batch_size=16))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call(X)
        said = [str(w.message) for w in caught if issubclass(w.category, nnx.InputWarning)]
        if warns:
            assert len(said) == 1 and re.match(
                rf"{what}: this network's one output ranges from -?[0-9.]+ to [0-9.]+, far "
                r"outside \[0, 1\], .* a MeanSquaredError network of values \(a regression\) "
                r"has no classes; use predict\(\)", said[0]), said
            assert caught[0].filename == __file__
        else:
            assert said == []


@pytest.mark.parametrize("rows", [1, 5, 6, 17])
def test_predict_and_predict_proba_in_chunks_give_the_whole_sets_numbers(rows):
    """The chunks now go into one array made at the first (a list of chunks,
    their concatenation and a whole-set softmax held the outputs three times)."""
    X = np.random.default_rng(2).standard_normal((rows, 4))
    for net in (nnx.NeuralNetwork([nnx.Dense(5, "tanh"), nnx.Dense(3, "linear")],
                                  nnx.SoftmaxCrossEntropy(), seed=1, dtype="float64"),
                nnx.NeuralNetwork([nnx.Dense(1, "linear")], nnx.SigmoidCrossEntropy(), seed=1,
                                  dtype="float64")):
        net.build(4)
        whole = net.predict(X, batch_size=rows)
        np.testing.assert_allclose(net.predict(X, batch_size=5), whole, rtol=1e-12, atol=1e-15)
        z = whole - whole.max(axis=1, keepdims=True)
        want = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True) if net.n_out > 1 else \
            np.hstack([1 - 1 / (1 + np.exp(-whole)), 1 / (1 + np.exp(-whole))])
        np.testing.assert_allclose(net.predict_proba(X, batch_size=5), want, rtol=1e-12)



# ------------------------------------------------- a sigmoid cross-entropy
def _logistic_data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    p = 1.0 / (1.0 + np.exp(-(X @ np.array([1.5, -2.0, 0.5]) + 0.3)))
    return X, (rng.uniform(size=n) < p).astype(np.int64)  # noisy: not separable


def test_one_sigmoid_cross_entropy_output_trains_to_scikit_learns_logistic_regression():
    """No hidden layer and full-batch descent to convergence: the maximum
    likelihood logistic regression, which scikit-learn finds by its own means."""
    from sklearn.linear_model import LogisticRegression
    X, y = _logistic_data()
    net = NeuralNetwork([Dense(1, "linear")], nnx.SigmoidCrossEntropy(), seed=0,
                        dtype="float64")
    Trainer(net, SGD(2.0)).fit(X, y, epochs=3000, eval_every=3000, batch_size=len(y),
                               patience=None)
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(X, y)
    W, B = (net.backend.to_numpy(p) for p in net.params())
    np.testing.assert_allclose(W[:, 0], ref.coef_[0], rtol=1e-6)
    np.testing.assert_allclose(B[0], ref.intercept_, rtol=1e-6)
    np.testing.assert_allclose(net.predict_proba(X), ref.predict_proba(X), atol=1e-8)
    assert (nnx.predict_classes(net, X) == ref.predict(X)).all()  # the logit's sign
    assert nnx.accuracy(net, X, y) == pytest.approx(ref.score(X, y))


def test_a_binary_fit_reports_its_accuracy_and_stops_by_it():
    X, y = _logistic_data(seed=1)
    net = NeuralNetwork([Dense(6, "tanh"), Dense(1, "linear")], "sigmoid_cross_entropy",
                        seed=0, dtype="float64")
    history = Trainer(net, nnx.Adam(0.05)).fit(X[:200], y[:200], validation=(X[200:], y[200:]),
                                               epochs=20, eval_every=5, monitor="accuracy")
    assert all(r["accuracy"] is not None for r in history.records)
    # the parameters kept are those of the most accurate evaluation, measured alike
    best = max(history.records, key=lambda r: r["accuracy"])
    assert history.best_epoch == best["epoch"]
    assert best["accuracy"] == pytest.approx(nnx.accuracy(net, X[200:], y[200:]))


def test_several_sigmoid_outputs_are_labels_of_their_own():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((50, 4))
    Y = (X[:, :3] > 0).astype(float)  # three independent 0/1 labels per row
    net = NeuralNetwork([Dense(3, "linear")], nnx.SigmoidCrossEntropy(), seed=0, dtype="float64")
    history = Trainer(net, nnx.Adam(0.1)).fit(X, Y, X, Y, epochs=30, eval_every=10)
    assert history.records[-1]["accuracy"] is None  # no one accuracy describes several labels
    z = net.predict(X)
    np.testing.assert_allclose(net.predict_proba(X), 1 / (1 + np.exp(-z)), rtol=1e-12)
    assert ((net.predict_proba(X) > 0.5) == Y).mean() > 0.9
    with pytest.raises(ValueError, match="monitor='accuracy': a SigmoidCrossEntropy network of "
                                         "3 outputs scores an accuracy .* against one class "
                                         "per row alone"):
        Trainer(net, nnx.Adam(0.1)).fit(X, Y, X, Y, epochs=2, monitor="accuracy", restart=True)


@pytest.mark.parametrize("y, n_out, pattern", [
    (np.array([0, 1, 2, 1]), 1, r"holds values from 0 to 2.*one output takes 0/1 class ids"),
    (np.array([[0.0, 1.5], [1, 0], [0, 1], [1, 1]]), 2, r"holds values from 0 to 1.5"),
    (np.array([[-0.1, 1.0], [1, 0], [0, 1], [1, 1]]), 2, r"holds values from -0.1 to 1"),
])
def test_sigmoid_cross_entropy_targets_outside_zero_one_are_refused(y, n_out, pattern):
    net = NeuralNetwork([Dense(n_out, "linear")], "sigmoid_cross_entropy", seed=0)
    with pytest.raises(ValueError, match=pattern):
        Trainer(net, SGD(0.1)).fit(np.zeros((4, 2)), y, epochs=1)


def test_a_squashed_output_before_a_sigmoid_cross_entropy_warns():
    with pytest.warns(nnx.InputWarning, match="applies its own sigmoid"):
        NeuralNetwork([Dense(1, "sigmoid")], "sigmoid_cross_entropy", seed=0)


def test_a_sigmoid_cross_entropy_network_saves_and_loads(tmp_path):
    X, y = _logistic_data(40)
    net = NeuralNetwork([Dense(1, "linear")], nnx.SigmoidCrossEntropy(), seed=0)
    Trainer(net, SGD(0.5)).fit(X, y, epochs=3)
    back = NeuralNetwork.load(net.save(tmp_path / "m.npz"))
    assert isinstance(back.loss, nnx.SigmoidCrossEntropy)
    np.testing.assert_array_equal(back.predict_proba(X), net.predict_proba(X))

# ------------------------------------------------------------ sparse input
def _sparse_net(dtype="float64", backend="cpu", first=None):
    layers = [first or nnx.Dense(6, "tanh"), nnx.Dense(3, "linear")]
    return NeuralNetwork(layers, nnx.SoftmaxCrossEntropy(), seed=0, dtype=dtype,
                         backend=backend)


def test_sparse_rows_predict_and_train_as_their_dense_values():
    """SciPy sparse X into a Dense first layer (on the CPU): outputs and every
    gradient equal those of the same values densified."""
    import scipy.sparse
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 9)) * (rng.random((40, 9)) < 0.3)
    y = rng.integers(0, 3, 40)
    for fmt in ("csr", "csc", "coo"):
        Xs = scipy.sparse.csr_matrix(X).asformat(fmt)
        dense, sparse = _sparse_net(), _sparse_net()
        np.testing.assert_allclose(sparse.forward(Xs), dense.forward(X), rtol=1e-12)
        dense.train_batch(X, y)
        sparse.train_batch(Xs, y)
        for a, b in zip(sparse.param_grads(), dense.param_grads()):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(sparse.predict(Xs, batch_size=16), dense.predict(X),
                                   rtol=1e-12)


def test_sparse_input_where_it_cannot_go_is_refused_by_name():
    import scipy.sparse
    X = scipy.sparse.random(10, 4, density=0.5, format="csr", random_state=0)
    y = np.arange(10) % 3
    with pytest.raises(nnx.InputTypeError, match="CPU backend only .* 'strict'"):
        _sparse_net(backend="strict").forward(X)
    class Custom(nnx.layers.Layer):  # a layer of the user's own
        pass
    with pytest.raises(nnx.InputTypeError, match="only a Dense first layer .* is Custom"):
        _sparse_net(first=Custom(6)).forward(X)
    with pytest.raises(nnx.InputTypeError, match="X_train is a SciPy sparse matrix: sparse "
                                                 "input .* CPU backend only"):
        Trainer(_sparse_net(backend="strict"), SGD(0.1)).fit(X, y, epochs=1)
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(nnx.InputValueError, match="X's values contains 1 NaN"):
        _sparse_net().forward(bad)
    with pytest.raises(nnx.InputValueError, match="X has 4 features, but the network was "
                                                  "built for 9"):
        net = _sparse_net()
        net.build(9)
        net.predict(X)


@pytest.mark.parametrize("evaluation", [True, False])
def test_a_fit_on_sparse_rows_is_the_fit_on_their_dense_values(tmp_path, evaluation):
    """Trainer.fit takes SciPy sparse X (CPU): each batch is a CSR matrix of
    its rows, nothing is densified, and the run (losses, evaluations, the
    divergence check on the last batch without an evaluation set, a
    checkpoint and an exact resume) is that of the same values dense."""
    import scipy.sparse

    from nnx.backend import numpy_backend
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 40)) * (rng.random((300, 40)) < 0.15)
    y = rng.integers(0, 3, 300)
    Xs = scipy.sparse.csr_matrix(X)
    runs = []
    for data in (X, Xs.tocoo()):  # (COO cannot be sliced: the trainer takes CSR rows)
        net = _sparse_net()
        rows = Xs[:60].tocoo() if scipy.sparse.issparse(data) else data[:60]
        ev = (rows, y[:60]) if evaluation else (None, None)
        hist = Trainer(net, nnx.SGDMomentum(0.1, momentum=0.9)).fit(
            data, y, *ev, epochs=4, batch_size=32, seed=2)
        runs.append((net.get_parameters(), hist.records))
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)
    for a, b in zip(runs[0][1], runs[1][1]):
        for key in ("train_loss", "loss", "accuracy"):
            assert (a[key] is None) == (b[key] is None)
            if a[key] is not None:
                assert b[key] == pytest.approx(a[key], rel=1e-12)
    # stopped after epoch 2 with a checkpoint each epoch, resumed: the whole run's weights
    path, kw = tmp_path / "ck.npz", dict(epochs=4, batch_size=32, seed=2, checkpoint_every=1)

    class Stop(Exception):
        pass

    def stop_at_3(epoch, record):
        if epoch == 3:
            raise Stop
    with pytest.raises(Stop):
        Trainer(_sparse_net(), nnx.SGDMomentum(0.1, momentum=0.9)).fit(
            Xs, y, checkpoint=path, callback=stop_at_3, **kw)
    again = _sparse_net()
    Trainer(again, nnx.SGDMomentum(0.1, momentum=0.9)).fit(Xs, y, checkpoint=path,
                                                           resume=path, **kw)
    straight = _sparse_net()
    Trainer(straight, nnx.SGDMomentum(0.1, momentum=0.9)).fit(Xs, y, checkpoint=tmp_path / "s",
                                                              **kw)
    for a, b in zip(again.get_parameters(), straight.get_parameters()):
        np.testing.assert_array_equal(a, b)
    # one sparse copy of X, and the batches are sparse
    seen = []
    real = numpy_backend.NumpyBackend.take_rows

    def take_rows(self, x, idx, out=None):
        result = real(self, x, idx, out)
        if scipy.sparse.issparse(x):
            seen.append(result)
        return result
    numpy_backend.NumpyBackend.take_rows = take_rows
    try:
        Trainer(_sparse_net(), SGD(0.1)).fit(Xs, y, epochs=1, batch_size=32)
    finally:
        numpy_backend.NumpyBackend.take_rows = real
    assert len(seen) == 10 and all(scipy.sparse.issparse(b) for b in seen)


@pytest.mark.parametrize("change", ["append", "replace"])
def test_changing_the_layers_of_a_built_network_is_refused_by_name(change):
    """An appended layer failed deep inside with an IndexError; a replaced one
    with a shape error about WeightMultiply, while print(net) showed it."""
    X = np.random.default_rng(0).standard_normal((40, 4))
    y = np.arange(40) % 3
    net = NeuralNetwork([Dense(8, "tanh"), Dense(3, "linear")], "softmax_cross_entropy", seed=0)
    trainer = nnx.Trainer(net, nnx.SGD(0.1))
    trainer.fit(X, y, epochs=1)
    if change == "append":
        net.layers.append(Dense(3, "linear"))
    else:
        net.layers[0] = Dense(16, "tanh")
    for attempt in (lambda: trainer.fit(X, y, epochs=1), lambda: net.predict(X)):
        with pytest.raises(nnx.InputError, match="net.layers was changed after the network "
                                                 "was built"):
            attempt()


def test_train_step_with_class_ids_says_what_it_takes_and_summary_counts_right():
    """train_step (the fast path, on device rows) with class ids said only
    "target has shape (4,), expected (4, 3)"; summary() said "1 layers"."""
    net = NeuralNetwork([Dense(3, "linear")], "softmax_cross_entropy", seed=0)
    net.build(2)
    X = net.as_input(np.zeros((4, 2)))
    with pytest.raises(nnx.InputError, match=r"expected \(4, 3\): one row of targets per "
                                             r"sample \(net.as_target"):
        net.train_step(X, np.array([0, 1, 2, 0]))
    net.train_step(X, net.as_target(np.array([0, 1, 2, 0]), 4))  # as it says
    assert "NeuralNetwork: 1 layer," in str(net)


def test_an_optimiser_attached_to_something_else_is_refused_at_once():
    with pytest.raises(nnx.InputError, match="attach\\(net\\): net must be a NeuralNetwork, "
                                             "got str"):
        nnx.SGD(0.1).attach("x")


# -------------------------------------------- pandas inputs (a newcomer's first hour)
def test_dataframes_of_nullable_numbers_train_and_other_columns_are_named():
    """A DataFrame of pandas' nullable Float64 (or a Series of Int64) became
    an object array: "X_train must hold numbers, got dtype object"; a
    category or string column got the same words, naming no column."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((60, 3)), columns=["a", "b", "c"])
    y = pd.Series(np.arange(60) % 3)
    plain = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(3, "linear")],
                              "softmax_cross_entropy", seed=0)
    nullable = copy.deepcopy(plain)
    nnx.Trainer(plain, nnx.SGD(0.1)).fit(X.to_numpy(), y.to_numpy(), epochs=2)
    nnx.Trainer(nullable, nnx.SGD(0.1)).fit(X.astype("Float64"), y.astype("Int64"), epochs=2)
    np.testing.assert_array_equal(nullable.get_parameters(), plain.get_parameters())
    with_na = X.astype("Float64")
    with_na.iloc[4, 1] = pd.NA
    with pytest.raises(nnx.InputValueError, match=r"X contains 1 NaN"):
        plain.predict(with_na)
    words = X.assign(kind=pd.Categorical(["x", "y"] * 30), note="n")
    with pytest.raises(nnx.InputTypeError, match=r"X has columns of a non-numeric dtype: 'kind' "
                                                 r"\(category\), 'note' \(.*\); convert"):
        plain.predict(words)
    mixed = X.assign(up=X["a"] > 0)  # a NumPy bool column beside floats: objects to NumPy
    np.testing.assert_array_equal(plain.predict(mixed.drop(columns="up")), plain.predict(X))
    assert nnx.NeuralNetwork([nnx.Dense(3, "linear")], "softmax_cross_entropy",
                             seed=0).forward(mixed).shape == (60, 3)
    flags = X.assign(flag=pd.array([True, False] * 30, dtype="boolean"))
    net = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "softmax_cross_entropy", seed=0)
    net.build(4)
    assert net.predict(flags).shape == (60, 3)


def test_loss_on_converts_host_rows_a_chunk_at_a_time():
    """loss_on copied all of a float64 X into the float32 network's dtype
    first (as much memory as X in float32); predict and accuracy did not."""
    import tracemalloc
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20_000, 300)), np.arange(20_000) % 3
    net = nnx.NeuralNetwork([nnx.Dense(8, "relu"), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0)
    net.build(300)
    want = float(net.mean_loss(net.as_input(X), net.as_target(y, 20_000)))
    tracemalloc.start()
    try:
        got = float(net.loss_on(X, y))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == want
    assert peak < X.size * 4 / 4


def test_regression_targets_whose_squared_errors_overflow_are_refused():
    """y = 1e20 into a float32 network: loss_on and train_batch gave inf with
    NumPy's overflow warning, and fit blamed the learning rate (TrainingDiverged)."""
    X = np.random.default_rng(0).standard_normal((60, 4))
    net = nnx.NeuralNetwork([nnx.Dense(8, "tanh"), nnx.Dense(1, "linear")], "mse", seed=0)
    for call in (lambda: net.loss_on(X, np.full(60, 1e20)),
                 lambda: net.train_batch(X, np.full(60, 1e20)),
                 lambda: nnx.Trainer(net, nnx.SGD(1e-3)).fit(X, np.full(60, 1e19), epochs=1,
                                                               batch_size=20)):
        with pytest.raises(nnx.InputValueError, match=r"y(_train)? holds values up to 1e\+(19|20)"
                                                      r": the squared errors of .* overflow "
                                                      "float32"):
            call()
    assert np.isfinite(float(net.loss_on(X, np.full(60, 1e15))))
    net64 = nnx.NeuralNetwork([nnx.Dense(1, "linear")], "mse", seed=0, dtype="float64")
    assert np.isfinite(float(net64.loss_on(X, np.full(60, 1e20))))


def test_a_torch_tensor_is_refused_with_the_call_that_converts_it():
    """A CPU tensor got 'not on this network's device (cpu)', which it is, and
    no word of what to pass instead."""
    torch = pytest.importorskip("torch")
    net = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "mse", seed=0)
    with pytest.raises(nnx.InputValueError, match=r"X is an array of torch.*takes NumPy arrays "
                                                  r".*pass X\.numpy\(\) \(on the CPU\)"):
        net.forward(torch.ones(2, 4))


def test_sparse_one_hot_rows_as_onehotencoder_gives_them_train_and_score():
    """OneHotEncoder's default (sparse) rows, as the study encodes its labels,
    were refused as 'dtype object: class labels such as these are encoded as
    ids first'."""
    from sklearn.preprocessing import OneHotEncoder
    rng = np.random.default_rng(0)
    X, ids = rng.standard_normal((60, 4)), np.arange(60) % 3
    rows = OneHotEncoder().fit_transform(ids.reshape(-1, 1))
    assert hasattr(rows, "toarray")  # sparse, as by default
    nets = [nnx.NeuralNetwork([nnx.Dense(5, "tanh"), nnx.Dense(3, "linear")],
                              nnx.SoftmaxCrossEntropy(), seed=0) for _ in range(2)]
    for net, y in zip(nets, (rows, ids)):
        nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=2, batch_size=20)
    np.testing.assert_array_equal(nets[0].param_buffer, nets[1].param_buffer)
    assert nnx.accuracy(nets[0], X, rows) == nnx.accuracy(nets[0], X, ids)


def test_sparse_one_hot_rows_take_a_validation_split():
    from sklearn.preprocessing import OneHotEncoder
    rng = np.random.default_rng(0)
    X, ids = rng.standard_normal((60, 4)), rng.permutation(np.arange(60) % 3)
    rows = OneHotEncoder().fit_transform(ids.reshape(-1, 1))
    net = nnx.NeuralNetwork([nnx.Dense(3, "linear")], nnx.SoftmaxCrossEntropy(), seed=0)
    nnx.Trainer(net, nnx.SGD(0.1)).fit(X, rows, epochs=1, batch_size=20, validation_split=0.2)


def test_a_dataframe_of_other_columns_is_refused_not_predicted(tmp_path):
    """A network trained on a DataFrame predicted from one whose columns came
    in another order (or other columns) without a word: wrong outputs."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((60, 3)), columns=["a", "b", "c"])
    y = np.arange(60) % 3
    net = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(3, "linear")],
                            "softmax_cross_entropy", seed=0)
    nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=2)
    assert net.feature_names == ("a", "b", "c")
    np.testing.assert_array_equal(net.predict(X[["a", "b", "c"]]), net.predict(X.to_numpy()))
    with pytest.raises(nnx.InputValueError, match=r"X is a DataFrame of other columns than the "
                       r"network was trained on: its columns are in another order \(column 0 "
                       r"is 'b', where the network has 'a'\); .*X\[list\(net.feature_names\)\]"):
        net.predict(X[["b", "a", "c"]])
    with pytest.raises(nnx.InputValueError, match=r"it lacks 'c'; it has 'd', unknown"):
        nnx.accuracy(net, X.rename(columns={"c": "d"}), y)
    trained = net.get_parameters()
    with pytest.raises(nnx.InputValueError, match=r"X_train is a DataFrame of other columns.*"
                                                  r"or pass restart=True"):
        nnx.Trainer(net, nnx.SGD(0.1)).fit(X[["c", "b", "a"]], y, epochs=1, restart=False)
    np.testing.assert_array_equal(net.get_parameters(), trained)
    nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, epochs=1, restart=False)  # the same: goes on
    again = copy.deepcopy(net)  # new weights learn the new frame's columns
    nnx.Trainer(again, nnx.SGD(0.1)).fit(X[["c", "b", "a"]], y, epochs=1, restart=True)
    assert again.feature_names == ("c", "b", "a")
    # a validation frame is held to the training frame's columns, before any step
    fresh = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "softmax_cross_entropy", seed=0)
    with pytest.raises(nnx.InputValueError, match=r"X_test is a DataFrame of other columns "
                       r"than X_train has: .*list\(X_train.columns\)"):
        nnx.Trainer(fresh, nnx.SGD(0.1)).fit(X, y, X[["c", "b", "a"]], y, epochs=1)
    assert not fresh.built and fresh.feature_names is None
    # the names travel with the network: a checkpoint, a copy; fresh weights forget them
    net.save(tmp_path / "n.nnx")
    back = nnx.NeuralNetwork.load(tmp_path / "n.nnx")
    assert back.feature_names == net.feature_names == copy.deepcopy(net).feature_names
    with pytest.raises(nnx.InputValueError, match="other order"):
        back.predict(X[["a", "c", "b"]])
    back.reset()
    assert back.feature_names is None
    # unnamed columns (pandas' 0, 1, 2) and NumPy rows are not checked or recorded
    plain = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "softmax_cross_entropy", seed=0)
    nnx.Trainer(plain, nnx.SGD(0.1)).fit(pd.DataFrame(X.to_numpy()), y, epochs=1)
    assert plain.feature_names is None
    assert plain.predict(X[["c", "b", "a"]]).shape == (60, 3)


def test_column_names_on_resume_on_duplicates_and_beside_unnamed_training_rows(tmp_path):
    """From a review: a resumed run ignored the checkpoint's column names
    (resumed from NumPy rows it forgot them, from renamed columns it took the
    new names); a frame naming a column twice raised a bare StopIteration; a
    validation frame beside NumPy training rows was held to the network's
    old names; a refused fit(restart=False) had restarted the schedule."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((60, 3)), columns=["a", "b", "c"])
    y = np.arange(60) % 3

    def net():
        return nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(3, "linear")],
                                 "softmax_cross_entropy", seed=0)

    run = tmp_path / "run.npz"
    nnx.Trainer(net(), nnx.SGD(0.1)).fit(X, y, epochs=2, checkpoint=run)
    again = net()
    nnx.Trainer(again, nnx.SGD(0.1)).fit(X.to_numpy(), y, epochs=2, resume=run)
    assert again.feature_names == ("a", "b", "c")
    with pytest.raises(nnx.InputValueError, match=r"resume=.*X_train is a DataFrame of other "
                       r"columns than the saved run trained on: it lacks 'a', 'b', 'c'"):
        nnx.Trainer(net(), nnx.SGD(0.1)).fit(X.set_axis(["x", "y", "z"], axis=1), y, epochs=2,
                                            resume=run)
    with pytest.raises(nnx.InputValueError, match=r"it has 4 columns where the network has 3 "
                                                  r"\('a' more than once\)"):
        again.predict(pd.concat([X, X[["a"]]], axis=1))
    fresh = net()
    nnx.Trainer(fresh, nnx.SGD(0.1)).fit(X.to_numpy(), y, X.set_axis(["x", "y", "z"], axis=1),
                                        y, epochs=1)  # nothing to hold the frame to
    assert fresh.feature_names is None
    optim = nnx.SGD(0.2, final_lr=0.05, decay_type="linear")
    trainer = nnx.Trainer(again, optim)
    trainer.fit(X, y, epochs=3, restart=False)
    rate = float(optim.lr)
    with pytest.raises(nnx.InputValueError, match="X_train is a DataFrame of other columns"):
        trainer.fit(X[["c", "a", "b"]], y, epochs=3, restart=False)
    assert float(optim.lr) == rate


def test_a_subclass_evaluating_with_a_mean_loss_of_its_own_gets_target_rows():
    """Targets kept as class ids reached a subclass's own mean_loss (label
    smoothing, say), written for target rows: TypeError from fit and
    loss_on (found by a review)."""
    class Smoothed(nnx.NeuralNetwork):
        def mean_loss(self, X, y, batch_size=1024, accuracy=False):
            return super().mean_loss(X, y * 0.9 + 0.1 / self.n_out, batch_size, accuracy)

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 4)), np.arange(60) % 3
    net = Smoothed([nnx.Dense(5, "tanh"), nnx.Dense(3, "linear")], "softmax_cross_entropy",
                   seed=0)
    hist = nnx.Trainer(net, nnx.SGD(0.1)).fit(X, y, X, y, epochs=2, eval_every=1)
    assert hist.records[-1]["accuracy"] is not None
    assert float(net.loss_on(X, y)) > 0


def test_an_evaluation_frame_beside_numpy_rows_is_held_to_the_trained_columns():
    """fit(restart=False) with NumPy training rows and a validation frame of
    reordered columns evaluated it as it came (accuracy 0.37 for 0.86) and
    chose the best weights by it, while predict refused the same frame."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((60, 3)), columns=["a", "b", "c"])
    y = np.arange(60) % 3
    net = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "softmax_cross_entropy", seed=0)
    trainer = nnx.Trainer(net, nnx.SGD(0.1))
    trainer.fit(X, y, epochs=1)
    with pytest.raises(nnx.InputValueError, match=r"the evaluation set is a DataFrame of other "
                                                  r"columns than the network was trained on"):
        trainer.fit(X.to_numpy(), y, epochs=1, restart=False, validation=(X[["c", "b", "a"]], y))
    trainer.fit(X.to_numpy(), y, epochs=1, restart=False, validation=(X, y))  # its own: fine


def test_feature_names_set_by_hand_are_checked_and_kept_as_a_tuple(tmp_path):
    """net.feature_names = list(df.columns) then refused the same frame ("64
    columns where the network has 64 ( more than once)"); a pandas Index
    raised a bare ValueError; names of the wrong count were saved into a
    checkpoint that load then called damaged."""
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(np.random.default_rng(0).standard_normal((10, 3)), columns=["a", "b", "c"])
    net = nnx.NeuralNetwork([nnx.Dense(2, "linear")], "softmax_cross_entropy", seed=0)
    net.build(3)
    for names in (list(X.columns), X.columns):
        net.feature_names = names
        assert net.feature_names == ("a", "b", "c") and net.predict(X).shape == (10, 2)
    for bad in (("a",), [1, 2, 3], "abc"):
        with pytest.raises(nnx.InputValueError, match="feature_names must be None or 3 column "
                                                      "names"):
            net.feature_names = bad
    net.save(tmp_path / "n.npz")
    assert nnx.NeuralNetwork.load(tmp_path / "n.npz").feature_names == ("a", "b", "c")


def test_class_ids_already_on_the_device_train_and_score_as_host_ones():
    """Integer class ids on the network's device were refused by fit, loss_on
    and train_batch ("must have shape (60, 3)"), though nnx.accuracy took
    them; now they train as host ids do, checked in range by one read."""
    pytest.importorskip("array_api_strict")
    b = nnx.get_backend("strict", "float64")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 4)), np.arange(60) % 3
    Xd, yd = b.asarray(X), b.asarray(y, dtype=b.xp.int64)
    nets = [nnx.NeuralNetwork([nnx.Dense(3, "linear")], "softmax_cross_entropy", seed=0,
                              backend=b) for _ in range(2)]
    on_device = nnx.Trainer(nets[0], nnx.SGD(0.1)).fit(Xd, yd, Xd, yd, epochs=2, eval_every=1)
    on_host = nnx.Trainer(nets[1], nnx.SGD(0.1)).fit(X, y, X, y, epochs=2, eval_every=1)
    assert on_device.records == on_host.records
    assert float(nets[0].loss_on(Xd, yd)) == float(nets[1].loss_on(X, y))
    assert float(nets[0].train_batch(Xd, yd)) == float(nets[1].train_batch(X, y))
    with pytest.raises(nnx.InputValueError, match=r"y: class ids must be in \[0, 2\] for a "
                                                  r"network with 3 outputs, got values from 5"):
        nets[0].loss_on(Xd, b.asarray(y + 5, dtype=b.xp.int64))


@pytest.mark.parametrize("what", ["predict", "predict_proba"])
def test_predict_holds_the_whole_sets_outputs_once(what):
    """predict kept a list of its chunks' outputs and then their concatenation
    (twice the outputs at the peak), predict_proba a whole-set softmax's two
    temporaries besides (three times)."""
    import tracemalloc
    net = nnx.NeuralNetwork([nnx.Dense(500, "linear")], nnx.SoftmaxCrossEntropy(), seed=0)
    net.build(2)
    X = np.random.default_rng(0).standard_normal((20000, 2)).astype(np.float32)
    call = getattr(net, what)
    call(X[:2048])  # (first-use allocations out of the count)
    tracemalloc.start()
    try:
        out = call(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (20000, 500) and out.dtype == np.float32
    assert peak < out.nbytes + 8 * 2**20, (peak, out.nbytes)  # a chunk's outputs: 2 MiB


def test_a_frame_of_several_number_dtypes_is_converted_once_in_the_compute_dtype():
    """A float32 frame with one float64 column (or a nullable Int64 one) went
    through a whole float64 copy first: fit held 3x the float32 data at the
    peak, predict 2x of what a chunk needs. The values, a range check and
    the NaN check stay as before."""
    import tracemalloc
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    n = 20000
    df = pd.DataFrame(rng.standard_normal((n, 50)).astype(np.float32),
                      columns=[f"c{i}" for i in range(50)])
    df["c0"] = df["c0"].astype(np.float64) * 1.5
    df["c1"] = (df["c1"] > 0).astype("Int64")
    want = df.to_numpy(dtype=np.float64, na_value=np.nan).astype(np.float32)
    net = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0)
    nnx.Trainer(net, nnx.SGD(0.01)).fit(df[:100], np.arange(100) % 3, epochs=1)
    np.testing.assert_array_equal(net.as_input(df), want)
    data = n * 50 * 4
    tracemalloc.start()
    try:
        nnx.Trainer(net, nnx.SGD(0.01)).fit(df, np.arange(n) % 3, epochs=1, restart=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * data, (peak, data)  # one float32 copy (and a column at a time)
    big = df.copy()
    big.iloc[3, 0] = 1e300
    with pytest.raises(nnx.InputValueError, match=r"X has magnitudes up to 1e\+300, beyond the "
                                                  r"range of float32"):
        net.predict(big)
    big.iloc[3, 0] = np.inf
    big.iloc[4, 1] = pd.NA
    with pytest.raises(nnx.InputValueError, match=r"X contains 2 NaN or infinite value"):
        net.predict(big)
