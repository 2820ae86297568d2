"""Learning-rate schedules (nnx.optim.schedules): the study's decays given as
decay_type/final_lr, the schedule classes in closed form, the rate fit uses
at each epoch or step, PyTorch's lr_schedulers where installed, and the
settings they refuse."""

import math
import re

import numpy as np
import pytest
from helpers import (
    batches,
    good_data,
    host_params,
    make_classifier,
    make_data,
    make_net,
    small_net,
    tiny_net,
    torch_or_skip,
)
from reference import (
    RefMLP,
    assert_rel_close,
    one_hot,
    ref_cosine,
    ref_onecycle,
    ref_sgd,
    ref_warmup_then,
)

import nnx
from nnx import SGD, SGDMomentum, Trainer
from nnx.optimizers import DECAY_TYPES


# -------------------------------- the study's decays: decay_type and final_lr
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


def test_exponential_schedule_is_geometric():
    opt = nnx.SGD(0.2, final_lr=0.05, decay_type="exponential")
    opt.setup_decay(11)
    ratios = [opt.lr_at(t + 1) / opt.lr_at(t) for t in range(10)]
    assert ratios == pytest.approx([math.pow(0.25, 0.1)] * 10, rel=1e-12)


def test_no_decay_keeps_lr():
    opt = nnx.SGD(0.25)
    opt.setup_decay(10)
    assert [opt.lr_at(t) for t in range(10)] == [0.25] * 10


def test_setup_decay_restarts_at_first_lr():
    opt = nnx.SGD(0.2, final_lr=0.05, decay_type="linear")
    opt.setup_decay(5)
    for e in range(4):
        opt.decay(e)
    assert opt.lr == 0.05
    opt.setup_decay(5)
    assert opt.lr == 0.2


@pytest.mark.parametrize("decay", ["linear", "exponential"])
def test_a_one_epoch_run_with_decay_keeps_its_rate(decay):
    """With a single epoch there is no schedule to follow: the rate stays lr
    (a 0/0 there would raise ZeroDivisionError)."""
    opt = nnx.SGD(0.1, final_lr=0.01, decay_type=decay)
    opt.setup_decay(1)
    assert opt.lr_at(0) == 0.1
    opt.decay(0)
    assert opt.lr == 0.1


def test_decay_in_a_hand_written_loop_needs_the_run_length():
    """Without setup_decay(epochs), decay() could not follow the schedule and
    used to leave the rate at lr without a word; now it says what to call."""
    opt = nnx.SGD(0.2, final_lr=0.05, decay_type="exponential")
    with pytest.raises(RuntimeError, match=r"call setup_decay\(epochs\) first"):
        opt.decay(0)
    nnx.SGD(0.2).decay(0)  # no schedule: nothing to follow, nothing to refuse


def test_the_study_decays_as_schedule_objects_match_decay_type():
    for cls, kind in ((nnx.LinearDecay, "linear"), (nnx.ExponentialDecay, "exponential")):
        a = nnx.SGD(cls(0.2, 0.05))
        b = nnx.SGD(0.2, final_lr=0.05, decay_type=kind)
        a.start(9)
        b.start(9)
        assert [a.lr_at(t) for t in range(9)] == [b.lr_at(t) for t in range(9)]
        assert a.decay_type == kind and a.final_lr == 0.05


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


def test_a_linear_decay_may_end_at_zero():
    """The setter's first check refused 0, which a linear decay to
    final_lr=0 reaches at its last epoch."""
    X, y = good_data()
    history = Trainer(make_net(), SGD(0.1, final_lr=0, decay_type="linear")).fit(
        X, y, X, y, epochs=5, eval_every=1)
    assert [r["lr"] for r in history.records] == pytest.approx([0.1, 0.075, 0.05, 0.025, 0.0])


# -------------------------------------------- decay_type and final_lr refused
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


@pytest.mark.parametrize("decay", DECAY_TYPES)
def test_decay_type_and_final_lr_come_together(decay):
    """final_lr without a decay type, and a decay type without final_lr."""
    with pytest.raises(ValueError, match=r"final_lr=0\.01 was given without a decay_type.*linear"):
        SGD(0.1, final_lr=0.01)
    with pytest.raises(ValueError, match=rf"decay_type='{decay}' needs a final_lr"):
        SGDMomentum(0.1, decay_type=decay)


def test_linear_decay_may_end_at_zero_and_final_lr_zero_means_none():
    """The study's Optimizer(lr, final_lr=0, decay_type=None) call shape works;
    linear decay to 0 is valid (exponential decay to 0 is not, above)."""
    assert SGD(0.1, final_lr=0, decay_type=None).final_lr is None
    opt = SGD(0.1, final_lr=0, decay_type="linear")
    opt.setup_decay(5)
    assert opt.lr_at(4) == 0.0
    with pytest.raises(ValueError, match="final_lr=-0.1 must be a number >= 0"):
        SGD(0.1, final_lr=-0.1, decay_type="linear")


# ---------------------------------------- the schedule classes in closed form
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


# ----------------------------------- per-step and per-evaluation rates in fit
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


def _plateau_rule(losses, lr, factor, patience=0, threshold=1e-4):
    """The rates ReduceLROnPlateau's rule gives after each loss, written out here."""
    out, current, best, bad = [], lr, math.inf, 0
    for loss in losses:
        if loss < best * (1 - threshold):
            best, bad = loss, 0
        else:
            bad += 1
        if bad > patience:
            current, bad = current * factor, 0
        out.append(current)
    return out


def test_reduce_on_plateau_goes_on_across_fits_that_do_not_restart():
    """Each fit restarted the plateau (rate, best loss, counts): a loop of
    one-epoch fit(restart=False), which api.md suggests, never cut the rate."""
    X, y = batches(1, rows=40)[0]
    net = small_net()
    s = nnx.ReduceOnPlateau(1.0, factor=0.5, patience=0, threshold=0.5)
    trainer, rates, losses = nnx.Trainer(net, nnx.SGD(s)), [], []
    for i in range(6):
        h = trainer.fit(X, y, X, y, epochs=1, batch_size=40, seed=i, patience=None,
                        restart=(i == 0))
        rates.append(h.records[0]["lr"])
        losses.append(h.records[0]["loss"])
    assert rates == [1.0] + _plateau_rule(losses, 1.0, 0.5, threshold=0.5)[:-1]
    assert rates[-1] < 1.0
    trainer.fit(X, y, X, y, epochs=1, batch_size=40, patience=None, restart=True)
    assert trainer.optim.lr == 1.0  # a new run starts the plateau afresh


def test_reduce_on_plateau_counts_nan_and_inf_as_no_improvement():
    """A hand loop's NaN or infinite evaluation loss was skipped; PyTorch's
    rule counts it as a bad evaluation."""
    s = nnx.ReduceOnPlateau(0.1, factor=0.5, patience=0)
    assert plateau_run(s, [1.0, math.nan, math.inf]) == [0.1, 0.05, 0.025]
    s = nnx.ReduceOnPlateau(0.1, factor=0.5, patience=0)  # a first loss that is NaN
    assert plateau_run(s, [math.nan, 1.0]) == [0.05, 0.05]


def test_reduce_on_plateau_refuses_a_relative_threshold_no_loss_could_beat():
    with pytest.raises(ValueError, match=r"threshold=1\.0 must be below 1 with "
                                         r"threshold_mode='rel'"):
        nnx.ReduceOnPlateau(0.1, threshold=1.0)
    assert nnx.ReduceOnPlateau(0.1, threshold=2.0, threshold_mode="abs").threshold == 2.0


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


# ------------------------------------------ PyTorch's lr_schedulers, the peer
def test_schedules_match_torch_lr_schedulers():
    t = torch_or_skip()
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
    t = torch_or_skip()
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


@pytest.mark.parametrize("name, kwargs, message", [
    ("constant", {"step_size": 2}, "step_size=2 applies only when schedule is 'step', "
                                   "not 'constant'"),
    ("cosine", {"gamma": 0.5}, "gamma=0.5 applies only when schedule is 'step' or "
                               "'plateau', not 'cosine'"),
    ("step", {"final_lr": 0.01}, "final_lr=0.01 applies only when schedule is 'linear', "
                                 "'exponential' or 'cosine', not 'step'"),
    ("plateau", {"gamma": 5.0}, r"gamma=5.0 must be in \(0, 1\)"),
])
def test_make_schedule_refuses_a_setting_its_schedule_does_not_use(name, kwargs, message):
    """They were ignored (step_size, gamma), or named the schedule's own
    argument (ReduceOnPlateau's factor) instead of the one given."""
    with pytest.raises(nnx.InputError, match=message):
        nnx.optim.make_schedule(name, 0.1, epochs=6, **kwargs)


def test_make_schedule_takes_gamma_and_step_size_where_they_belong():
    step = nnx.optim.make_schedule("step", 0.1, step_size=2, gamma=0.5)
    assert (step.step_size, step.gamma) == (2, 0.5)
    assert nnx.optim.make_schedule("plateau", 0.1, gamma=0.5).factor == 0.5
    assert nnx.optim.make_schedule("step", 0.1, epochs=6).gamma == 0.1  # the default


@pytest.mark.parametrize("lr", [lambda: nnx.LinearDecay(0.1, 0.01), lambda: nnx.Cosine(0.1),
                                lambda: nnx.StepDecay(0.1, 1), lambda: nnx.Constant(0.1, warmup=1)])
def test_a_hand_loop_that_never_planned_its_schedule_is_told_at_the_first_step(lr):
    """Without optim.start(epochs), every step used the schedule's first rate:
    0.1, 0.1, 0.1 where the decay meant 0.1, 0.055, 0.01, with no word."""
    net = nnx.NeuralNetwork([nnx.Dense(3, "tanh"), nnx.Dense(2, "linear")],
                            "softmax_cross_entropy", seed=0)
    X, y = np.random.default_rng(0).standard_normal((6, 4)), np.array([0, 1] * 3)
    optim = nnx.SGD(lr())
    optim.attach(net)
    net.train_batch(X, y)
    with pytest.raises(RuntimeError, match=r"changes the rate with the epoch: call "
                                           r"optim.start\(epochs\)"):
        optim.step()
    optim.start(3)  # planned, the decay is followed
    rates = []
    for epoch in range(3):
        optim.start_epoch(epoch)
        net.train_batch(X, y)
        optim.step()
        rates.append(optim.lr)
    assert rates == [optim.lr_at(e) for e in range(3)] and len(set(rates)) > 1


def test_constant_rates_and_plateau_cuts_need_no_plan():
    net = nnx.NeuralNetwork([nnx.Dense(3, "tanh"), nnx.Dense(2, "linear")],
                            "softmax_cross_entropy", seed=0)
    X, y = np.random.default_rng(0).standard_normal((6, 4)), np.array([0, 1] * 3)
    for lr in (0.1, nnx.Constant(0.1), nnx.ReduceOnPlateau(0.1)):
        optim = nnx.SGD(lr)
        optim.attach(net)
        net.train_batch(X, y)
        optim.step()  # no start() needed


def test_a_hand_loop_taking_more_steps_than_planned_is_told_once():
    """optim.start(3, 10) with 30 batches an epoch: the 20 further steps of
    each epoch silently got the epoch's last rate (0.0 at the end of a
    one-epoch plan). The planned count, and Trainer.fit, stay silent."""
    import warnings

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((300, 5)), rng.integers(0, 3, 300)

    def hand_loop(steps_per_epoch):
        net = nnx.NeuralNetwork([nnx.Dense(8, "tanh"), nnx.Dense(3, "linear")],
                                nnx.SoftmaxCrossEntropy(), seed=0)
        net.build(5)
        optim = nnx.Adam(nnx.Cosine(0.01, per="step"))
        optim.attach(net)
        Xd, yd = net.as_input(X), net.as_target(y, 300)
        optim.start(2, steps_per_epoch)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            for epoch in range(2):
                optim.start_epoch(epoch)
                for i in range(0, 300, 10):
                    net.train_step(Xd[i:i + 10], yd[i:i + 10])
                    optim.step()
        return [str(w.message) for w in seen]
    told = hand_loop(10)
    assert len(told) == 1 and "more than the 10 steps that optim.start(epochs, " \
                              "steps_per_epoch) planned" in told[0]
    assert hand_loop(30) == []
    net = nnx.NeuralNetwork([nnx.Dense(8, "tanh"), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnx.Trainer(net, nnx.Adam(nnx.Cosine(0.01, per="step"))).fit(X, y, epochs=2,
                                                                     batch_size=10)


def test_a_per_step_schedule_of_ones_own_is_refused_a_negative_or_nan_rate():
    """A per-step schedule's table was uploaded unchecked (only each epoch's
    first rate was): a schedule of one's own giving -lr on later steps made
    fit climb the loss, while records and warnings reported the rate +lr."""
    class Flipping(nnx.Schedule):
        def _rate(self, t, total):
            return self.lr if t % 10 == 0 else self.bad

    X, y, Xv, yv = make_data()
    for bad, shown in ((-0.05, "-0.05"), (math.nan, "nan")):
        sched = Flipping(0.05, per="step")
        sched.bad = bad
        net = make_classifier()
        with pytest.raises(nnx.InputError, match=rf"gave step 1 .* the rate {shown}; a "
                                                 r"learning rate must be a number >= 0"):
            Trainer(net, SGD(sched)).fit(X, y, Xv, yv, epochs=2, batch_size=20)
        fresh = make_classifier()
        fresh.build(X.shape[1])
        assert np.array_equal(net.param_buffer, fresh.param_buffer)  # before the first step


def test_a_per_epoch_schedule_of_ones_own_giving_a_negative_rate_is_named():
    """The per-step table named the schedule and the step; a per-epoch
    schedule's bad rate was a bare 'lr=-0.1 must be a number >= 0'."""
    class Sinking(nnx.Schedule):
        def _rate(self, t, total):
            return self.lr - 0.1 * t

    X, y, Xv, yv = make_data()
    net = make_classifier()
    with pytest.raises(nnx.InputError, match=r"Sinking\(.*\) gave epoch 2 \(0-based, of 4\) "
                                             r"the rate -0.1.*; a learning rate must be"):
        Trainer(net, SGD(Sinking(0.1))).fit(X, y, Xv, yv, epochs=4, batch_size=20)


def test_a_plateau_cut_applies_at_once_in_a_hand_loop():
    """optim.evaluated(loss) cut ReduceOnPlateau's rate, but a hand loop (no
    start_epoch calls) kept stepping at the first rate: optim.lr and the
    device rate stayed at 0.1 while the schedule fell to 0.0125."""
    net = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(3, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0, dtype="float64")
    net.build(5)
    optim = SGD(nnx.ReduceOnPlateau(0.1, factor=0.5, patience=0))
    optim.attach(net)
    X = np.random.default_rng(0).standard_normal((8, 5))
    y = np.arange(8) % 3
    seen = []
    for _ in range(3):
        net.train_batch(X, y)
        before = net.param_buffer.copy()
        grad = net.grad_buffer.copy()
        optim.step()
        seen.append(float(np.median((before - net.param_buffer)[grad != 0]
                                    / grad[grad != 0])))
        optim.evaluated(1.0)
    assert seen == pytest.approx([0.1, 0.1, 0.05], rel=1e-12)  # the first loss is a best
    assert optim.lr == 0.025


def test_the_rate_shown_before_a_run_is_planned_is_the_first_one():
    """nnx.Adam(nnx.OneCycle(0.1)).lr said 4e-07, the rate the one-cycle
    schedule ends at (a one-unit run), not the 0.004 it starts with."""
    assert nnx.Adam(nnx.OneCycle(0.1)).lr == pytest.approx(0.1 / 25, rel=1e-12)
    assert nnx.SGD(nnx.Cosine(0.1, warmup=3)).lr == pytest.approx(0.1 / 4)
    assert nnx.SGD(nnx.LinearDecay(0.1, 0.01)).lr == 0.1


@pytest.mark.parametrize("epoch,error", [("2", nnx.InputTypeError), (None, nnx.InputTypeError),
                                         (1.5, nnx.InputValueError), (-1, nnx.InputValueError)])
def test_start_epoch_refuses_what_is_no_epoch(epoch, error):
    """'2' and None failed inside the schedule ('<' not supported); -1 set a
    per-epoch cosine's rate to 0 and 1.5 one between two epochs, silently."""
    optim = nnx.SGD(nnx.Cosine(0.1))
    optim.start(10, 4)
    with pytest.raises(error, match=rf"epoch={re.escape(repr(epoch))} must be a non-negative "
                                    "integer"):
        optim.start_epoch(epoch)


@pytest.mark.parametrize("loss", ["x", np.array([1.0, 2.0]), True])
def test_evaluated_refuses_what_is_no_loss(loss):
    optim = nnx.SGD(nnx.ReduceOnPlateau(0.1))
    with pytest.raises(nnx.InputTypeError, match=r"evaluated\(loss=.*must be one number"):
        optim.evaluated(loss)
    optim.evaluated(np.float32(1.0))
    optim.evaluated(np.array(2.0))
    optim.evaluated(None)
