"""Optimisers: momentum recursion, learning-rate schedules (closed forms) and argument checks."""

import math
import re

import numpy as np
import pytest
from reference import RefMLP, assert_rel_close, one_hot

import nnx


def tiny_net(seed=0):
    net = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=seed, dtype="float64")
    net.build(5)
    return net


@pytest.mark.parametrize("momentum", [0.5, 0.9])
def test_momentum_velocity_closed_form_with_constant_gradient(momentum):
    net = tiny_net()
    optim = nnx.SGDMomentum(lr=0.05, momentum=momentum)
    optim.attach(net)
    rng = np.random.default_rng(1)
    g = [rng.standard_normal(p.shape) for p in net.params()]
    for buf, value in zip(net.param_grads(), g, strict=True):
        buf[...] = value  # the gradient stays constant: nothing recomputes it
    p0 = [np.array(p) for p in net.params()]
    lr, m = 0.05, momentum
    prev = p0
    for k in range(1, 16):
        optim.step()
        now = [np.array(p) for p in net.params()]
        v_k = lr * (1 - m**k) / (1 - m)
        total = lr / (1 - m) * (k - m * (1 - m**k) / (1 - m))  # sum of v_1..v_k
        for i in range(len(g)):
            assert_rel_close(prev[i] - now[i], v_k * g[i], 1e-12, f"velocity step {k}")
            assert_rel_close(p0[i] - now[i], total * g[i], 1e-12, f"params step {k}")
        prev = now


def test_plain_sgd_step_is_lr_times_gradient():
    net = tiny_net()
    optim = nnx.SGD(0.3)
    optim.attach(net)
    p0 = [np.array(p) for p in net.params()]
    for buf in net.param_grads():
        buf[...] = 2.0
    optim.step()
    optim.step()
    for a, b in zip(p0, net.params(), strict=True):
        assert_rel_close(a - b, np.full(a.shape, 2 * 0.3 * 2.0), 1e-12, "sgd")


def linear_formula(lr, end, t, n):
    return lr - (lr - end) * t / (n - 1)


def exponential_formula(lr, end, t, n):
    return lr * (end / lr) ** (t / (n - 1))


FORMULAS = {"linear": linear_formula, "exponential": exponential_formula}


@pytest.mark.parametrize("decay", ["linear", "exponential"])
@pytest.mark.parametrize("lr,end,n", [(0.15, 0.05, 50), (0.2, 0.05, 7), (0.1, 0.3, 2),
                                      (0.7, 0.013, 13), (0.1, 0.007, 9)])
def test_schedule_ends_exact_and_formula_between(decay, lr, end, n):
    opt = nnx.SGDMomentum(lr, final_lr=end, decay_type=decay)
    opt.setup_decay(n)
    assert opt.lr == lr
    assert opt.lr_at(0) == lr
    assert opt.lr_at(n - 1) == end
    for t in range(n):
        assert opt.lr_at(t) == pytest.approx(FORMULAS[decay](lr, end, t, n), rel=1e-12, abs=0)
    values = [opt.lr_at(t) for t in range(n)]
    assert all(min(lr, end) <= v <= max(lr, end) for v in values)
    assert values == sorted(values, reverse=end < lr)


def test_no_decay_keeps_lr():
    opt = nnx.SGD(0.25)
    opt.setup_decay(10)
    assert [opt.lr_at(t) for t in range(10)] == [0.25] * 10


@pytest.mark.parametrize("decay", ["linear", "exponential"])
def test_fit_applies_the_schedule_once_per_epoch(decay):
    """One full batch per epoch: each epoch is one SGD step with that epoch's rate,
    so the float64 reference reproduces the weights only if the schedule is right."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((20, 5))
    ids = rng.integers(0, 3, size=20)
    net = tiny_net(seed=4)
    N, lr, end = 9, 0.4, 0.02
    opt = nnx.SGD(lr, final_lr=end, decay_type=decay)
    seen = []
    hist = nnx.Trainer(net, opt).fit(X, ids, epochs=N, eval_every=N, batch_size=32, seed=3,
                                     callback=lambda epoch, rec: seen.append((epoch, opt.lr)))
    expected = [FORMULAS[decay](lr, end, t, N) for t in range(N)]
    assert [e for e, _ in seen] == list(range(1, N + 1))
    for (_, got), want in zip(seen, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-12, abs=0)
    assert seen[0][1] == lr and seen[-1][1] == end
    assert len(hist.records) == 1 and hist.records[0]["lr"] == end
    assert opt.lr == end

    # the same run in the reference, from the same restarted initial weights
    net2 = tiny_net(seed=4)
    net2.reset()
    ps = [np.array(p) for p in net2.params()]
    ref = RefMLP(ps[0::2], ps[1::2], ["tanh", "linear"], loss="ce")
    for t in range(N):
        _, _, grads = ref.loss_and_grads(X, one_hot(ids, 3))
        ref.sgd_step(grads, expected[t])
    for i, (p, rp) in enumerate(zip(net.params(), ref.params(), strict=True)):
        assert_rel_close(p, rp, 1e-10, f"param {i}")


def test_setup_decay_restarts_at_first_lr():
    opt = nnx.SGD(0.2, final_lr=0.05, decay_type="linear")
    opt.setup_decay(5)
    for e in range(4):
        opt.decay(e)
    assert opt.lr == 0.05
    opt.setup_decay(5)
    assert opt.lr == 0.2


@pytest.mark.parametrize("cls", [nnx.SGD, nnx.SGDMomentum])
@pytest.mark.parametrize("lr", [0, -0.1, 0.0])
def test_non_positive_lr_raises_naming_it(cls, lr):
    with pytest.raises(ValueError, match=re.escape(f"lr={lr!r}")):
        cls(lr)


@pytest.mark.parametrize("momentum", [1.0, -0.1, 1.5])
def test_momentum_outside_unit_interval_raises(momentum):
    with pytest.raises(ValueError, match=re.escape(f"momentum={momentum!r}")):
        nnx.SGDMomentum(0.1, momentum=momentum)


def test_momentum_zero_is_allowed_and_plain_sgd():
    assert nnx.SGDMomentum(0.1, momentum=0.0).momentum == 0.0


def test_unknown_decay_type_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        nnx.SGD(0.1, final_lr=0.01, decay_type="cosine")
    msg = str(info.value)
    assert "cosine" in msg and "linear" in msg and "exponential" in msg


def test_final_lr_without_decay_type_raises():
    with pytest.raises(ValueError, match="final_lr"):
        nnx.SGDMomentum(0.1, final_lr=0.01)


def test_decay_type_without_final_lr_raises():
    with pytest.raises(ValueError, match="final_lr"):
        nnx.SGD(0.1, decay_type="linear")


@pytest.mark.parametrize("final_lr", [0, -0.01])
def test_non_positive_final_lr_raises(final_lr):
    with pytest.raises(ValueError, match=re.escape(f"final_lr={final_lr!r}")):
        nnx.SGD(0.1, final_lr=final_lr, decay_type="exponential")


def test_step_without_network_raises():
    with pytest.raises(RuntimeError):
        nnx.SGD(0.1).step()


def test_exponential_schedule_is_geometric():
    opt = nnx.SGD(0.2, final_lr=0.05, decay_type="exponential")
    opt.setup_decay(11)
    ratios = [opt.lr_at(t + 1) / opt.lr_at(t) for t in range(10)]
    assert ratios == pytest.approx([math.pow(0.25, 0.1)] * 10, rel=1e-12)


def test_decay_in_a_hand_written_loop_needs_the_run_length():
    """Without setup_decay(epochs), decay() could not follow the schedule and
    used to leave the rate at lr without a word; now it says what to call."""
    opt = nnx.SGD(0.2, final_lr=0.05, decay_type="exponential")
    with pytest.raises(RuntimeError, match=r"call setup_decay\(epochs\) first"):
        opt.decay(0)
    nnx.SGD(0.2).decay(0)  # no schedule: nothing to follow, nothing to refuse


# ------------------------------------------------ found by mutation testing
@pytest.mark.parametrize("decay", ["linear", "exponential"])
def test_a_one_epoch_run_with_decay_keeps_its_rate(decay):
    """With a single epoch there is no schedule to follow: the rate stays lr
    (a 0/0 there would raise ZeroDivisionError)."""
    opt = nnx.SGD(0.1, final_lr=0.01, decay_type=decay)
    opt.setup_decay(1)
    assert opt.lr_at(0) == 0.1
    opt.decay(0)
    assert opt.lr == 0.1


def test_plain_sgd_keeps_no_velocity():
    net = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "mse", seed=0)
    opt = nnx.SGD(0.1)
    opt.attach(net)
    net.train_batch(np.ones((4, 2)), np.zeros((4, 3)))
    opt.step()
    assert opt.velocity is None


def test_the_velocity_starts_afresh_when_the_network_is_rebuilt_wider():
    """The optimiser stays attached while build() gives the network buffers of
    another size: the old velocity must not be reused."""
    net = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "mse", seed=0)
    opt = nnx.SGDMomentum(0.1)
    opt.attach(net)
    net.train_batch(np.ones((4, 2)), np.zeros((4, 3)))
    opt.step()
    net.build(5)
    net.train_batch(np.ones((4, 5)), np.zeros((4, 3)))
    before = net.get_parameters()
    opt.step()  # a velocity of the old size would not even broadcast
    assert opt.velocity.shape == before.shape
    grads = np.concatenate([g.ravel() for g in net.param_grads()])
    np.testing.assert_allclose(net.get_parameters(), before - 0.1 * grads, rtol=1e-6)


def test_step_names_the_network_it_updates_when_that_one_is_not_built():
    """One optimiser given to two Trainers updates the second network; when
    that one was not built, step() said only 'the network has no parameters'
    while the user's own network plainly had them."""
    mine = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "mse", seed=0)
    other = nnx.NeuralNetwork([nnx.Dense(3, "linear")], "mse", seed=0)
    optim = nnx.SGD(0.1)
    nnx.Trainer(mine, optim)
    nnx.Trainer(other, optim)
    mine.train_batch(np.ones((4, 2)), np.zeros((4, 3)))
    with pytest.raises(RuntimeError, match=re.escape(
            "the network this optimiser updates (the one last given to Trainer(net, optim) or "
            "optim.attach(net)) has no parameters yet")):
        optim.step()
