"""The optimiser family and the schedules against independent references:
the float64 formulas of tests/reference.py (which import nothing from nnx),
closed forms, and PyTorch's own optimisers and schedulers where installed."""

import math
import re

import numpy as np
import pytest
from reference import (
    RefMLP,
    assert_rel_close,
    clip_grads,
    one_hot,
    ref_adagrad,
    ref_adam,
    ref_cosine,
    ref_onecycle,
    ref_rmsprop,
    ref_sgd,
    ref_warmup_then,
)

import nnx
from nnx.optim import OPTIMIZERS

# (nnx optimiser, reference step, keyword arguments shared by both)
CASES = {
    "sgd": (nnx.SGD, ref_sgd, {}),
    "momentum": (nnx.SGDMomentum, ref_sgd, {"momentum": 0.9}),
    "nesterov": (nnx.SGDMomentum, ref_sgd, {"momentum": 0.8, "nesterov": True}),
    "adam": (nnx.Adam, ref_adam, {"betas": (0.8, 0.95), "eps": 1e-6}),
    "adamw": (nnx.AdamW, ref_adam, {}),
    "rmsprop": (nnx.RMSprop, ref_rmsprop, {}),
    "rmsprop-centred-momentum": (nnx.RMSprop, ref_rmsprop,
                                 {"momentum": 0.7, "centered": True, "alpha": 0.9}),
    "adagrad": (nnx.Adagrad, ref_adagrad, {"lr_decay": 0.05}),
}
LR = {"sgd": 0.3, "momentum": 0.1, "nesterov": 0.1, "adam": 0.01, "adamw": 0.02,
      "rmsprop": 0.005, "rmsprop-centred-momentum": 0.002, "adagrad": 0.2}


def small_net(backend="cpu", dtype="float64", seed=3):
    net = nnx.NeuralNetwork([nnx.Dense(6, "tanh"), nnx.Dense(4, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=seed, backend=backend, dtype=dtype)
    net.build(5)
    return net


def batches(n_steps, rows=9, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((rows, 5)), rng.integers(0, 4, rows)) for _ in range(n_steps)]


def host_params(net):
    return [net.backend.to_numpy(p).astype(np.float64) for p in net.params()]


def run_both(name, backend="cpu", dtype="float64", steps=6, weight_decay=0.0, clip_norm=None,
             lr=None):
    """Train the same network ``steps`` steps in nnx and in the reference
    (which computes its own gradients from its own parameters); yields both
    parameter lists after every step."""
    cls, ref_step, kw = CASES[name]
    lr = LR[name] if lr is None else lr
    net = small_net(backend, dtype)
    ps = host_params(net)
    ref = RefMLP(ps[0::2], ps[1::2], ["tanh", "linear"])
    extra = {"decoupled": True} if cls is nnx.AdamW else {}
    wd = weight_decay if weight_decay or cls is not nnx.AdamW else 0.0
    optim = cls(lr, weight_decay=wd, clip_norm=clip_norm, **kw)
    optim.attach(net)
    state = {}
    for t, (X, y) in enumerate(batches(steps), 1):
        net.train_batch(X, y)
        optim.step()
        _, _, grads = ref.loss_and_grads(X, one_hot(y, 4))
        if clip_norm is not None:
            grads = clip_grads(grads, clip_norm)
        ref_step(ref.params(), grads, state, lr, t, weight_decay=wd, **kw, **extra)
        yield host_params(net), ref.params()


@pytest.mark.parametrize("clip_norm", [None, 0.05])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("name", list(CASES))
def test_every_optimiser_follows_the_reference_formulas(name, weight_decay, clip_norm):
    """1e-10 relative in float64, after every one of 6 steps (clipping with a
    norm small enough that every step clips)."""
    for step, (mine, ref) in enumerate(run_both(name, weight_decay=weight_decay,
                                                clip_norm=clip_norm), 1):
        for i, (a, b) in enumerate(zip(mine, ref, strict=True)):
            assert_rel_close(a, b, 1e-10, f"{name} step {step} param {i}")


@pytest.mark.parametrize("name", ["adam", "rmsprop-centred-momentum", "adagrad", "nesterov"])
def test_every_backend_follows_the_reference(backend_name, name):
    """The simulated device (and the GPU) run the same formulas."""
    for mine, ref in run_both(name, backend=backend_name, weight_decay=0.05, clip_norm=0.1):
        for a, b in zip(mine, ref, strict=True):
            assert_rel_close(a, b, 1e-10, f"{name} on {backend_name}")


@pytest.mark.parametrize("name", list(CASES))
def test_float32_stays_within_float32_rounding_of_the_reference(name):
    for mine, ref in run_both(name, dtype="float32", weight_decay=0.01, clip_norm=0.5):
        for a, b in zip(mine, ref, strict=True):
            assert_rel_close(a, b, 2e-5, name)


def test_clipping_leaves_a_small_gradient_alone_and_scales_a_large_one():
    b = nnx.get_backend("cpu", "float64")
    g = b.asarray(np.array([3.0, 4.0]))  # norm 5
    assert float(b.clip_scale(g, 10.0)) == 1.0
    assert float(b.clip_scale(g, 1.0)) == pytest.approx(1.0 / (5.0 + 1e-6), rel=1e-15)


def test_adam_first_step_moves_every_parameter_by_about_lr():
    """Adam's bias correction makes the first step ``lr * g / (|g| + eps')``:
    about ``lr`` for every parameter whose gradient is not tiny."""
    net = small_net()
    optim = nnx.Adam(0.01)
    optim.attach(net)
    X, y = batches(1)[0]
    before = net.get_parameters().copy()
    net.train_batch(X, y)
    grad = net.grad_buffer.copy()
    optim.step()
    moved = before - net.get_parameters()
    big = np.abs(grad) > 1e-3
    np.testing.assert_allclose(moved[big], 0.01 * np.sign(grad[big]), rtol=1e-4)


# ------------------------------------------------------------- schedules
def rates_of(schedule, total):
    return [schedule.rate(t, total) for t in range(total)]


def test_cosine_with_warm_up_is_the_closed_form():
    s = nnx.Cosine(0.1, final_lr=0.001, warmup=3)
    T = 20
    want = [ref_warmup_then(0.1, 3, t, T, lambda u, n: ref_cosine(0.1, 0.001, u, n))
            for t in range(T)]
    assert rates_of(s, T) == pytest.approx(want, rel=1e-14)
    assert s.rate(3, T) == 0.1 and s.rate(T - 1, T) == pytest.approx(0.001, rel=1e-15)


def test_one_cycle_is_the_closed_form():
    s = nnx.OneCycle(0.5, pct_start=0.25, div_factor=10, final_div_factor=100)
    T = 37
    want = [ref_onecycle(0.5, t, T, 0.25, 10, 100) for t in range(T)]
    assert rates_of(s, T) == pytest.approx(want, rel=1e-13)
    assert max(rates_of(s, T)) == pytest.approx(0.5, rel=2e-3)  # the peak falls between steps


def test_step_decay_and_constant():
    s = nnx.StepDecay(1.0, step_size=3, gamma=0.5)
    assert rates_of(s, 8) == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert rates_of(nnx.Constant(0.3, warmup=2), 4) == pytest.approx([0.1, 0.2, 0.3, 0.3])


def test_the_study_decays_as_schedule_objects_match_decay_type():
    for cls, kind in ((nnx.LinearDecay, "linear"), (nnx.ExponentialDecay, "exponential")):
        a = nnx.SGD(cls(0.2, 0.05))
        b = nnx.SGD(0.2, final_lr=0.05, decay_type=kind)
        a.start(9)
        b.start(9)
        assert [a.lr_at(t) for t in range(9)] == [b.lr_at(t) for t in range(9)]
        assert a.decay_type == kind and a.final_lr == 0.05


def plateau_run(schedule, losses):
    out = []
    for loss in losses:
        schedule.evaluated(loss)
        out.append(schedule.rate(0, 1))
    return out


def test_reduce_on_plateau_cuts_after_patience_bad_evaluations_then_cools_down():
    s = nnx.ReduceOnPlateau(1.0, factor=0.5, patience=1, cooldown=1, min_lr=0.2)
    losses = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]
    assert plateau_run(s, losses) == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]


# ------------------------------------------------------- per-step rates in fit
def test_a_per_step_schedule_moves_the_rate_every_step_of_fit():
    """Plain SGD with a per-step cosine: the reference, stepping the same
    batches with the closed-form rate of each step, gives the same weights."""
    X, y = batches(1, rows=30)[0]
    net = small_net(seed=5)
    epochs, bs = 3, 8
    steps = math.ceil(30 / bs)
    s = nnx.Cosine(0.5, final_lr=0.01, warmup=2, per="step")
    nnx.Trainer(net, nnx.SGD(s)).fit(X, y, epochs=epochs, batch_size=bs, seed=4,
                                     restart=False, patience=None)
    # the reference visits the batches in fit's order (checked by the trainer tests)
    from nnx.backend import host
    twin = small_net(seed=5)
    ps = host_params(twin)
    ref = RefMLP(ps[0::2], ps[1::2], ["tanh", "linear"])
    T = epochs * steps
    t = 0
    for epoch in range(epochs):
        order = np.asarray(twin.backend.epoch_order(host.derive_seed(4, 0, epoch), 30))
        for start in range(0, 30, bs):
            idx = order[start:start + bs]
            _, _, grads = ref.loss_and_grads(X[idx], one_hot(y[idx], 4))
            rate = ref_warmup_then(0.5, 2, t, T, lambda u, n: ref_cosine(0.5, 0.01, u, n))
            ref_sgd(ref.params(), grads, {}, rate, t + 1)
            t += 1
    for a, b in zip(host_params(net), ref.params(), strict=True):
        assert_rel_close(a, b, 1e-10, "per-step cosine")


def test_reduce_on_plateau_in_fit_lowers_the_rate_of_the_following_epochs():
    X, y = batches(1, rows=40)[0]
    net = small_net()
    s = nnx.ReduceOnPlateau(0.5, factor=0.5, patience=0)
    shown = []
    history = nnx.Trainer(net, nnx.SGD(s)).fit(
        X, y, X, y, epochs=8, eval_every=1, batch_size=40, patience=None,
        callback=lambda e, r: shown.append(r["loss"]))
    rates = [r["lr"] for r in history.records]
    want, current, best = [], 0.5, math.inf
    for loss in shown:  # the rule, from the losses fit saw
        want.append(current)
        if loss < best * (1 - 1e-4):
            best = loss
        else:
            current *= 0.5
    assert rates == want


# ------------------------------------------------------------ arguments
@pytest.mark.parametrize("make,message", [
    (lambda: nnx.Adam(0.01, betas=(1.0, 0.9)), "beta1=1.0"),
    (lambda: nnx.Adam(0.01, betas=0.9), "betas must be a pair"),
    (lambda: nnx.Adam(0.01, eps=0), "eps=0"),
    (lambda: nnx.Adam(0.01, weight_decay=-1), "weight_decay=-1"),
    (lambda: nnx.SGD(0.1, clip_norm=0), "clip_norm=0"),
    (lambda: nnx.SGDMomentum(0.1, momentum=0, nesterov=True), "nesterov=True needs"),
    (lambda: nnx.RMSprop(0.1, centered="yes"), "centered must be"),
    (lambda: nnx.Adagrad(0.1, lr_decay=-0.1), "lr_decay=-0.1"),
    (lambda: nnx.SGD(nnx.Cosine(0.1), final_lr=0.01, decay_type="linear"), "is a schedule"),
    (lambda: nnx.SGD(nnx.Cosine), "is a class"),
    (lambda: nnx.Cosine(0.1, per="batch"), "per='batch'"),
    (lambda: nnx.Cosine(0.1, warmup=-1), "warmup=-1"),
    (lambda: nnx.StepDecay(0.1, step_size=0), "step_size=0"),
    (lambda: nnx.OneCycle(0.1, pct_start=1.0), "pct_start=1.0"),
    (lambda: nnx.ReduceOnPlateau(0.1, factor=1.0), "factor=1.0"),
])
def test_bad_settings_are_refused_by_name(make, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        make()


def test_a_warm_up_as_long_as_the_run_is_refused_before_training():
    X, y = batches(1)[0]
    with pytest.raises(ValueError, match="warmup=5 epochs is not shorter than the run"):
        nnx.Trainer(small_net(), nnx.SGD(nnx.Cosine(0.1, warmup=5))).fit(X, y, epochs=5)


def test_a_per_step_schedule_in_a_hand_written_loop_says_what_to_call():
    net = small_net()
    optim = nnx.SGD(nnx.OneCycle(0.1))
    optim.attach(net)
    X, y = batches(1)[0]
    net.train_batch(X, y)
    with pytest.raises(RuntimeError, match=re.escape("optim.start(epochs, steps_per_epoch)")):
        optim.step()
    optim.start(2, steps_per_epoch=5)
    optim.step()  # now it knows the run


def test_every_optimiser_has_a_name_for_the_command_line():
    assert set(OPTIMIZERS) == {"sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"}


# ------------------------------------------------------- PyTorch, the peer
def _torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed")


TORCH = {
    "sgd": lambda t, ps, lr: t.optim.SGD(ps, lr=lr, weight_decay=0.1),
    "momentum": lambda t, ps, lr: t.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=0.1),
    "nesterov": lambda t, ps, lr: t.optim.SGD(ps, lr=lr, momentum=0.8, nesterov=True,
                                             weight_decay=0.1),
    "adam": lambda t, ps, lr: t.optim.Adam(ps, lr=lr, betas=(0.8, 0.95), eps=1e-6,
                                           weight_decay=0.1),
    "adamw": lambda t, ps, lr: t.optim.AdamW(ps, lr=lr, weight_decay=0.1),
    "rmsprop": lambda t, ps, lr: t.optim.RMSprop(ps, lr=lr, weight_decay=0.1),
    "rmsprop-centred-momentum": lambda t, ps, lr: t.optim.RMSprop(
        ps, lr=lr, alpha=0.9, momentum=0.7, centered=True, weight_decay=0.1),
    "adagrad": lambda t, ps, lr: t.optim.Adagrad(ps, lr=lr, lr_decay=0.05, weight_decay=0.1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_optimiser_matches_torch_optim(name):
    """The same network, weights, batches, clipping and weight decay in
    PyTorch (float64): the parameters agree after each of 6 steps."""
    t = _torch()
    net = small_net()
    ws = host_params(net)
    tparams = [t.tensor(w, requires_grad=True) for w in ws]
    topt = TORCH[name](t, tparams, LR[name])
    cls, _, kw = CASES[name]
    optim = cls(LR[name], weight_decay=0.1, clip_norm=0.05, **kw)
    optim.attach(net)
    for step, (X, y) in enumerate(batches(6), 1):
        net.train_batch(X, y)
        optim.step()
        topt.zero_grad()
        a = t.tensor(X)
        for i in range(0, len(tparams), 2):
            a = a @ tparams[i] + tparams[i + 1]
            if i + 2 < len(tparams):
                a = t.tanh(a)
        t.nn.functional.cross_entropy(a, t.tensor(y)).backward()
        t.nn.utils.clip_grad_norm_(tparams, 0.05)
        topt.step()
        for i, (mine, theirs) in enumerate(zip(host_params(net), tparams, strict=True)):
            assert_rel_close(mine, theirs.detach().numpy(), 1e-10,
                             f"{name} step {step} param {i}")


def test_schedules_match_torch_lr_schedulers():
    t = _torch()
    sched = t.optim.lr_scheduler

    def torch_rates(make, T, lr):
        opt = t.optim.SGD([t.zeros(1, requires_grad=True)], lr=lr)
        s = make(opt)
        out = []
        for _ in range(T):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            s.step()
        return out

    T = 23
    assert rates_of(nnx.Cosine(0.3, final_lr=0.01), T) == pytest.approx(
        torch_rates(lambda o: sched.CosineAnnealingLR(o, T_max=T - 1, eta_min=0.01), T, 0.3),
        rel=1e-12)
    assert rates_of(nnx.StepDecay(0.3, 4, 0.5), T) == pytest.approx(
        torch_rates(lambda o: sched.StepLR(o, 4, 0.5), T, 0.3), rel=1e-12)
    assert rates_of(nnx.OneCycle(0.3), T) == pytest.approx(
        torch_rates(lambda o: sched.OneCycleLR(o, max_lr=0.3, total_steps=T,
                                               cycle_momentum=False), T, 0.3), rel=1e-12)


def test_reduce_on_plateau_matches_torch():
    t = _torch()
    opt = t.optim.SGD([t.zeros(1, requires_grad=True)], lr=1.0)
    theirs = t.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1,
                                                    threshold=0.01, min_lr=0.05)
    mine = nnx.ReduceOnPlateau(1.0, factor=0.5, patience=2, cooldown=1, threshold=0.01,
                               min_lr=0.05)
    rng = np.random.default_rng(0)
    losses = list(np.cumsum(rng.standard_normal(60) * 0.1) + 5)
    for loss in losses:
        theirs.step(loss)
        mine.evaluated(loss)
        assert mine.rate(0, 1) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
