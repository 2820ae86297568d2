"""NeuralNetwork passes, gradients and updates against the float64 reference in reference.py."""

import numpy as np
import pytest
from gradcheck import numeric_grad
from reference import RefMLP, assert_rel_close, one_hot

import nnx

N_IN, N_CLASSES, N_ROWS = 12, 3, 16
ACTS = ["tanh", "sigmoid", "linear"]
RTOL = 1e-10


def make_data(seed=0, n=N_ROWS):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N_IN))
    ids = rng.integers(0, N_CLASSES, size=n)
    return X, ids


def make_net(loss="ce", dtype="float64", seed=7, acts=ACTS, dropout=1.0):
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
    net = make_net(loss)
    net.build(N_IN)
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
    net = make_net("mse", acts=acts)
    net.build(N_IN)
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
    net = make_net(loss)
    net.build(N_IN)
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
    net = make_net("ce")
    net.build(N_IN)
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
    net = make_net("ce", dropout=0.8, seed=11)
    net.train_batch(X, y)  # draws masks once
    dropouts = [op for layer in net.layers for op in layer.operations
                if isinstance(op, nnx.Dropout)]
    assert len(dropouts) == 2
    for op in dropouts:
        assert op.mask is not None and np.any(np.asarray(op.mask) == 0), "mask should drop units"
        op._draw_mask = lambda shape, m=op.mask: m
    net.train_batch(X, y)
    analytic = [np.array(g) for g in net.param_grads()]

    def loss_now():
        return float(net.loss.forward(net.forward(X), net.as_target(y, X.shape[0])))

    for k, p in enumerate(net.params()):  # each p is a view: perturbing it moves the net
        assert_rel_close(analytic[k], numeric_grad(loss_now, p), 1e-6, f"param {k}")


def test_dropout_gradients_match_reference_with_same_masks():
    X, ids = make_data(seed=6, n=10)
    y = one_hot(ids, N_CLASSES)
    net = make_net("ce", dropout=0.8, seed=13)
    net.build(N_IN)
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
    net = make_net("ce")
    net.build(N_IN)
    loss_ids = float(net.train_batch(X, ids))
    g_ids = [np.array(g) for g in net.param_grads()]
    loss_hot = float(net.train_batch(X, one_hot(ids, N_CLASSES)))
    assert loss_ids == loss_hot
    for a, b in zip(g_ids, net.param_grads(), strict=True):
        np.testing.assert_array_equal(a, b)
    ref_loss, _, _ = reference_of(net, "ce").loss_and_grads(X, one_hot(ids, N_CLASSES))
    assert loss_ids == pytest.approx(ref_loss, rel=RTOL, abs=0)


def test_params_order_and_shapes():
    net = nnx.NeuralNetwork([nnx.Dense(7, "tanh"), nnx.Dense(5), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0)
    net.build(N_IN)
    shapes = [tuple(p.shape) for p in net.params()]
    assert shapes == [(12, 7), (1, 7), (7, 5), (1, 5), (5, 3), (1, 3)]
    # the i-th param is the one the layers' operations use, in order
    ops = [op for layer in net.layers for op in layer.operations if hasattr(op, "param")]
    assert [type(op).__name__ for op in ops] == ["WeightMultiply", "BiasAdd"] * 3
    for p, op in zip(net.params(), ops, strict=True):
        assert p is op.param
    # W1 really multiplies the input: zero it and the first layer sees only B1
    W1, B1 = list(net.params())[:2]
    W1[...] = 0
    X, _ = make_data()
    net.forward(X)
    np.testing.assert_allclose(net.layers[0].output, np.tanh(np.broadcast_to(B1, (N_ROWS, 7))),
                               rtol=1e-6)
    net.train_batch(X, np.zeros(N_ROWS, dtype=int))
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


def test_forward_with_wrong_feature_count_raises():
    net = make_net("ce")
    X, ids = make_data()
    net.forward(X)
    with pytest.raises(ValueError, match="features"):
        net.forward(X[:, :-1])
    with pytest.raises(ValueError):
        net.train_batch(np.ones((4, N_IN + 1)), np.zeros(4, dtype=int))
    built = make_net("ce")
    built.build(N_IN)
    with pytest.raises(ValueError):
        built.forward(np.ones((3, 5)))


def test_layers_of_equal_shape_start_different():
    # trap 5: one generator per network, not a reseed per layer
    net = nnx.NeuralNetwork([nnx.Dense(6, "tanh"), nnx.Dense(6, "tanh"), nnx.Dense(6, "tanh")],
                            nnx.MeanSquaredError(), seed=3, dtype="float64")
    net.build(6)
    W = [np.array(p) for p in net.params()][0::2]
    assert not np.array_equal(W[1], W[2])
    assert not np.array_equal(W[0], W[1])


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


def test_a_layer_belongs_to_one_network_at_a_time():
    """A second network built from the first one's layers would point them at
    its own parameters behind the first one's back: refused, naming the
    layer. Once the first network is gone, its layers may be used again."""
    import gc
    layers = [nnx.Dense(7, "tanh"), nnx.Dense(N_CLASSES, "linear")]
    first = nnx.NeuralNetwork(layers, "softmax_cross_entropy", seed=1)
    first.build(N_IN)
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
    assert second.forward(X).shape == (N_ROWS, N_CLASSES)


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


def test_backward_before_any_forward_is_a_clear_error():
    net = make_net()
    net.build(N_IN)
    with pytest.raises(RuntimeError, match=r"backward\(\) was called before its forward\(\)"):
        net.backward(np.zeros((4, N_CLASSES)))
    with pytest.raises(RuntimeError, match=r"SoftmaxCrossEntropy.backward\(\) was called "
                                           r"before its forward"):
        nnx.SoftmaxCrossEntropy().backward()


def test_loss_on_returns_a_0d_device_array():
    X, ids = make_data()
    loss = make_net().loss_on(X, ids, batch_size=5)
    assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == np.float64


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


@pytest.mark.parametrize("chunk", [1, 7, 16, 1000])
def test_predictions_and_losses_in_chunks_equal_the_whole(chunk):
    """predict and loss_on work in chunks of batch_size rows: chunks put back
    in another order, or a mean of chunk losses not weighted by their sizes
    (7 does not divide 23), was not caught."""
    net = make_net(dtype="float64")
    X, ids = make_data(n=23)
    net.build(N_IN)
    whole = net.predict(X, batch_size=10_000)
    np.testing.assert_allclose(net.predict(X, batch_size=chunk), whole, rtol=1e-14)
    ref = RefMLP([np.array(p) for p in list(net.params())[0::2]],
                 [np.array(p) for p in list(net.params())[1::2]], ACTS)
    expected = ref.loss_and_grads(X, one_hot(ids, N_CLASSES))[0]
    assert float(net.loss_on(X, ids, batch_size=chunk)) == pytest.approx(expected, rel=1e-12)


def _binary_net(backend="cpu"):
    """A one-output sigmoid network with known weights: output = sigmoid(x0 - x1)."""
    net = nnx.NeuralNetwork([nnx.Dense(1, "sigmoid")], "mse", seed=0, backend=backend)
    net.build(2)
    net.set_parameters([1.0, -1.0, 0.0])  # W = (1, -1), B = 0
    return net


@pytest.mark.parametrize("backend", ["cpu", "strict"])
def test_a_one_output_network_predicts_class_one_above_one_half(backend):
    """predict_classes took the argmax of a single column, so a one-output
    network predicted class 0 for every row, and accuracy refused 0/1 labels."""
    net = _binary_net(backend)
    X = np.array([[2.0, 0.0], [0.0, 2.0], [0.5, 0.4], [0.4, 0.5], [0.3, 0.3]])
    # outputs sigmoid(2), sigmoid(-2), sigmoid(0.1), sigmoid(-0.1), sigmoid(0) = 0.5
    np.testing.assert_array_equal(nnx.predict_classes(net, X), [1, 0, 1, 0, 0])
    assert nnx.accuracy(net, X, np.array([1, 0, 1, 1, 0])) == pytest.approx(0.8)
    assert nnx.accuracy(net, X, np.array([[1], [0], [0], [0], [0]])) == pytest.approx(0.8)
    with pytest.raises(nnx.InputValueError, match=r"y holds values from 0 to 2.*0/1 labels"):
        nnx.accuracy(net, X, np.array([0, 1, 2, 0, 1]))
