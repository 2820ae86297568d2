"""The trainer's captured-step path, on the CPU: a backend whose "graph"
re-runs the recorded step on the same buffers, with the generator and
learning-rate array it was recorded with (as a CUDA graph would), must train
exactly like the step-by-step loop, and fall back cleanly (with a log line)
when capture is refused."""

import logging

import numpy as np
import pytest

import nnx
from nnx.backend import CaptureUnavailable
from nnx.backend.numpy_backend import NumpyBackend


class ReplayBackend(NumpyBackend):
    """Stands in for CUDA graphs: capture runs nothing; replay calls the step
    again on the same buffers, with the dropout generator and learning-rate
    array that were live at capture: a graph keeps the memory it recorded,
    whatever Python has swapped in since."""

    def __init__(self, dtype="float32", refuse=None, exports_generator=True):
        super().__init__(dtype)
        self.refuse = refuse
        self.exports_generator = exports_generator
        self.captures = 0
        self.replays = 0
        self.net = self.optim = None  # set by the test

    def set_generator_state(self, gen, state):
        return self.exports_generator and super().set_generator_state(gen, state)

    def capture(self, step):
        if self.refuse:
            raise CaptureUnavailable(self.refuse)
        self.captures += 1
        net, optim = self.net, self.optim
        rng, scalars = net.rng, dict(optim._device)  # the arrays a recorded step would read
        result = np.zeros((), dtype=self.dtype)

        def replay():
            self.replays += 1
            live = net.rng, optim._device
            net._use_generator(rng)
            optim._device = scalars
            try:
                result[...] = step()
            finally:
                net._use_generator(live[0])
                optim._device = live[1]
        return replay, result


def _fit(backend, dropout=1.0, decay=True, make_opt=None, **kw):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((250, 12)), rng.integers(0, 4, 250)
    net = nnx.NeuralNetwork([nnx.Dense(16, "tanh", dropout=dropout), nnx.Dense(4, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=3, backend=backend)
    if make_opt is not None:
        opt = make_opt()
    else:
        opt = (nnx.SGDMomentum(0.1, final_lr=0.02, decay_type="exponential") if decay
               else nnx.SGDMomentum(0.1))
    if isinstance(backend, ReplayBackend):
        backend.net, backend.optim = net, opt
    hist = nnx.Trainer(net, opt).fit(X, y, X[:50], y[:50], epochs=6, eval_every=2,
                                     batch_size=32, seed=4, patience=5, **kw)
    return net, hist


@pytest.mark.parametrize("decay", [True, False])
@pytest.mark.parametrize("dropout", [1.0, 0.8])
def test_replayed_steps_train_exactly_like_the_loop(dropout, decay):
    fake = ReplayBackend()
    net_g, hist_g = _fit(fake, dropout, decay)
    net_e, hist_e = _fit("cpu", dropout, decay)
    assert hist_g.graph and not hist_e.graph
    assert fake.captures == 1  # the decaying rate is updated in place, not re-recorded
    # 250 rows / 32 = 7 full batches + 1 short one per epoch; the first full
    # batch of the run is eager, the short ones are always eager
    assert fake.replays == 6 * 7 - 1
    assert hist_g.records == hist_e.records
    for p, q in zip(net_g.params(), net_e.params()):
        np.testing.assert_array_equal(p, q)


OPTIMISERS = {
    "adam-onecycle-clipped": lambda: nnx.Adam(nnx.OneCycle(0.01), clip_norm=0.5),
    "adamw-cosine-per-step": lambda: nnx.AdamW(nnx.Cosine(0.01, warmup=3, per="step")),
    "rmsprop-centred": lambda: nnx.RMSprop(0.001, momentum=0.5, centered=True,
                                           weight_decay=0.01),
    "adagrad-plateau": lambda: nnx.Adagrad(nnx.ReduceOnPlateau(0.05, patience=0),
                                           lr_decay=0.01),
    "nesterov-step": lambda: nnx.SGDMomentum(nnx.StepDecay(0.1, 2), nesterov=True),
}


@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_one_recorded_step_serves_every_optimiser_and_schedule(name):
    """The rate, the per-step table and the step count live in device arrays
    that the optimiser writes in place: one capture serves the whole run,
    and the replayed run equals the step-by-step one."""
    fake = ReplayBackend()
    net_g, hist_g = _fit(fake, make_opt=OPTIMISERS[name])
    net_e, hist_e = _fit("cpu", make_opt=OPTIMISERS[name])
    assert hist_g.graph and fake.captures == 1 and fake.replays == 6 * 7 - 1
    assert hist_g.records == hist_e.records
    for p, q in zip(net_g.params(), net_e.params()):
        np.testing.assert_array_equal(p, q)


def test_refused_capture_falls_back_with_a_log_line(caplog):
    fake = ReplayBackend(refuse="cuBLAS refused the capture")
    with caplog.at_level(logging.WARNING, logger="nnx"):
        net_f, hist_f = _fit(fake)
    assert "graph capture unavailable" in caplog.text and "cuBLAS refused" in caplog.text
    assert not hist_f.graph and hist_f.graph_note == "cuBLAS refused the capture"
    net_e, hist_e = _fit("cpu")
    assert hist_f.records == hist_e.records


def test_graph_off_and_cpu_never_capture(caplog):
    fake = ReplayBackend()
    with caplog.at_level(logging.WARNING, logger="nnx"):
        _, hist = _fit(fake, graph=False)
        _, hist_cpu = _fit("cpu")
    assert fake.captures == 0 and not hist.graph and not hist_cpu.graph
    assert caplog.text == ""  # nothing to report where capture was never tried


@pytest.mark.parametrize("exports", [True, False])
def test_resumed_captured_run_matches_a_resumed_loop(tmp_path, exports):
    """After a resume, a backend that cannot restore its generator (like CuPy)
    gets a new one: the trainer must record the step again with it."""
    runs = []
    for graph in (True, False):
        backend = ReplayBackend(exports_generator=exports)
        path = tmp_path / f"{graph}.npz"

        def stop(epoch, record):
            if epoch == 3:
                raise KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            _fit(backend, 0.8, graph=graph, checkpoint=path, checkpoint_every=1, callback=stop)
        runs.append(_fit(backend, 0.8, graph=graph, resume=path))
    (net_g, hist_g), (net_e, hist_e) = runs
    assert hist_g.graph and hist_g.records == hist_e.records
    for p, q in zip(net_g.params(), net_e.params()):
        np.testing.assert_array_equal(p, q)


def test_a_generator_swapped_mid_run_is_recorded_again():
    """A graph keeps the generator it was recorded with; when the network's
    generator is replaced between epochs, the step must be recorded again."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((250, 12)), rng.integers(0, 4, 250)
    runs = []
    for backend in (ReplayBackend(), "cpu"):
        net = nnx.NeuralNetwork([nnx.Dense(16, "tanh", dropout=0.8), nnx.Dense(4, "linear")],
                                nnx.SoftmaxCrossEntropy(), seed=3, backend=backend)
        opt = nnx.SGDMomentum(0.1)
        if isinstance(backend, ReplayBackend):
            backend.net, backend.optim = net, opt

        def swap(epoch, record, net=net):
            if epoch == 3:
                net._use_generator(net.backend.generator(123))
        runs.append(nnx.Trainer(net, opt).fit(X, y, X[:50], y[:50], epochs=6, eval_every=2,
                                              batch_size=32, seed=4, patience=5,
                                              callback=swap))
    assert runs[0].records == runs[1].records


@pytest.mark.parametrize("group, replays", [(4, 3 + 5 * 4), (7, 6 + 5 * 1), (2, 3 + 5 * 4)])
def test_graphs_of_several_steps_train_exactly_like_the_loop(monkeypatch, group, replays):
    """Each recorded step fetches its batch by the device counter, so a graph
    of ``group`` steps replays that many batches at once; the rest of an
    epoch goes through the graph of one step. 7 full batches an epoch, the
    first of the run eager: with groups of 4, epoch 1 is 4 + 1 + 1 and the
    others 4 + 1 + 1 + 1 launches."""
    from nnx.train import trainer
    monkeypatch.setattr(trainer._Steps, "group", group)
    fake = ReplayBackend()
    net_g, hist_g = _fit(fake, 0.8)
    net_e, hist_e = _fit("cpu", 0.8)
    assert hist_g.graph and fake.captures == 2  # one graph of `group` steps, one of one
    assert fake.replays == replays
    assert hist_g.records == hist_e.records
    for p, q in zip(net_g.params(), net_e.params()):
        np.testing.assert_array_equal(p, q)


def test_recorded_steps_read_nothing_from_the_host(monkeypatch):
    """The fed step (counter, gather, step, total) on the simulated device,
    whose arrays refuse to become host arrays: a recorded step holds no
    host read and no host-made index."""
    from nnx.backend.strict_backend import StrictBackend
    from nnx.train import trainer
    pytest.importorskip("array_api_strict")

    class StrictReplay(StrictBackend):
        captures = 0

        def capture(self, step):
            StrictReplay.captures += 1
            return step, None  # "replay" runs the recorded Python again

    monkeypatch.setattr(trainer._Steps, "group", 3)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((250, 12)), rng.integers(0, 4, 250)
    results = []
    for backend in (StrictReplay("float64"), get_cpu("float64")):
        net = nnx.NeuralNetwork([nnx.Dense(16, "tanh"), nnx.Dense(4, "linear")],
                                nnx.SoftmaxCrossEntropy(), seed=3, backend=backend)
        hist = nnx.Trainer(net, nnx.Adam(0.01)).fit(X, y, X[:50], y[:50], epochs=3,
                                                    batch_size=32, seed=4)
        results.append((hist, [net.backend.to_numpy(p) for p in net.params()]))
    (hist_s, params_s), (hist_c, params_c) = results
    assert hist_s.graph and StrictReplay.captures == 2
    for rs, rc in zip(hist_s.records, hist_c.records):
        assert rs["loss"] == pytest.approx(rc["loss"], rel=1e-12)
    for p, q in zip(params_s, params_c):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)


def get_cpu(dtype):
    from nnx.backend import get_backend
    return get_backend("cpu", dtype)


@pytest.mark.parametrize("size, rank", [(1, 0), (2, 0), (2, 1), (3, 2)])
def test_the_device_counter_finds_each_ranks_rows(size, rank):
    """A recorded step reads full batch s at ``s * stride + offset`` of the
    order; that must be where the trainer's batch plan puts this rank's share."""
    from types import SimpleNamespace

    from nnx.train.trainer import _Data, _Steps
    comm = SimpleNamespace(size=size, rank=rank, engine="fake")
    b = get_cpu("float64")
    data = SimpleNamespace(n=250, X=np.zeros((250, 3)), y=np.zeros((250, 2)))
    batches = _Data.batches(data, b, 16, comm)
    steps = _Steps.__new__(_Steps)
    _Steps.__init__(steps, SimpleNamespace(backend=b), None, True, comm, 16)
    full = [bt for bt in batches if bt[4]]
    assert full and all(not bt[4] for bt in batches[len(full):])
    for s, (lo, hi, *_rest) in enumerate(full):
        assert (lo, hi) == (s * steps.stride + steps.offset, s * steps.stride + steps.offset + 16)


def test_a_later_refusal_keeps_the_record_of_replayed_steps(monkeypatch):
    """When the graph of several steps replayed and the later graph of one
    was refused, the fit still trained exactly, but history.graph said no
    step had been replayed (found by a review)."""
    from nnx.train import trainer
    monkeypatch.setattr(trainer._Steps, "group", 4)

    class RefuseSecond(ReplayBackend):
        def capture(self, step):
            if self.captures == 1:
                raise CaptureUnavailable("second capture refused")
            return super().capture(step)
    fake = RefuseSecond()
    net_g, hist_g = _fit(fake, 0.8)
    net_e, hist_e = _fit("cpu", 0.8)
    assert hist_g.graph and hist_g.graph_note == "second capture refused"
    assert fake.replays == 1  # the graph of four, once; everything after eagerly
    assert hist_g.records == hist_e.records
    for p, q in zip(net_g.params(), net_e.params()):
        np.testing.assert_array_equal(p, q)
    assert net_g.layers[0].operations[0].output is None  # the graphs' arrays let go


def test_a_network_with_parts_of_ones_own_keeps_the_graphs_memory():
    """forget_pass knows nnx's own layers, operations and losses by name; a
    part of the user's own may keep arrays under other names, which live in
    the graphs' memory: such a network keeps the graphs until its next fit
    (found by a review)."""
    class MyTanh(nnx.Tanh):
        def _output(self, inference):
            self.kept = super()._output(inference)  # an array under a name of its own
            return self.kept

    runs = {}
    for act in ("tanh", MyTanh()):
        fake = ReplayBackend()
        X, y = np.random.default_rng(0).standard_normal((250, 12)), np.arange(250) % 4
        net = nnx.NeuralNetwork([nnx.Dense(16, act), nnx.Dense(4, "linear")],
                                nnx.SoftmaxCrossEntropy(), seed=3, backend=fake)
        opt = nnx.SGDMomentum(0.1)
        fake.net, fake.optim = net, opt
        hist = nnx.Trainer(net, opt).fit(X, y, epochs=2, batch_size=32)
        assert hist.graph
        runs[type(act).__name__] = net
    own, builtin = runs["MyTanh"], runs["str"]
    assert builtin._graph_memory is None and builtin.layers[0].operations[0].output is None
    # (its arrays of a pass, built-in names included, were let go by the last
    # evaluation, which forgets its pass; its own names may still point anywhere)
    assert own._graph_memory
    assert any(getattr(op, "kept", None) is not None for op in own.layers[0].operations)


class FrozenReplayBackend(ReplayBackend):
    """ReplayBackend whose replays also run with the optimiser's settings and
    the operations' (a Dropout's keep_prob, an activation's alpha) as they
    were at capture: a CUDA graph holds its kernels' host arguments at their
    recorded values."""

    def capture(self, step):
        replay, result = super().capture(step)
        net, optim = self.net, self.optim

        def held():  # (object, attribute, value) of every host setting
            ops = [op for layer in net.layers for op in layer.operations]
            parts = [optim] + ops + [op.activation for op in ops if hasattr(op, "activation")]
            return [(p, k, getattr(p, k)) for p in parts
                    for k in ("weight_decay", "momentum", "clip_norm", "keep_prob", "alpha")
                    if k in vars(p)]
        recorded = held()

        def frozen():
            live = held()
            for p, k, v in recorded:
                setattr(p, k, v)
            try:
                replay()
            finally:
                for p, k, v in live:
                    setattr(p, k, v)
        return frozen, result


@pytest.mark.parametrize("change", ["weight_decay", "momentum", "clip_norm", "keep_prob",
                                    "alpha"])
def test_settings_changed_between_epochs_are_recorded_again(change, caplog):
    """A recorded step holds the weight decay, momentum, clipping, dropout
    and activation settings it was recorded with; a callback that changed
    one between epochs was ignored by the replayed steps on the GPU (found
    by a review of the GPU path), where the CPU applied it."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((250, 12)), rng.integers(0, 4, 250)
    runs = []
    for backend in (FrozenReplayBackend(), "cpu"):
        net = nnx.NeuralNetwork([nnx.Dense(16, "leaky_relu", dropout=0.8),
                                 nnx.Dense(4, "linear")],
                                nnx.SoftmaxCrossEntropy(), seed=3, backend=backend)
        opt = nnx.SGDMomentum(0.1, momentum=0.5)
        if isinstance(backend, ReplayBackend):
            backend.net, backend.optim = net, opt

        def tweak(epoch, record, net=net, opt=opt):
            if epoch == 3:
                ops = net.layers[0].operations
                if change == "keep_prob":
                    ops[-1].keep_prob = 0.5
                elif change == "alpha":
                    ops[1].activation.alpha = 0.3
                else:
                    setattr(opt, change, {"weight_decay": 0.5, "momentum": 0.9,
                                          "clip_norm": 0.01}[change])
        with caplog.at_level(logging.INFO, logger="nnx"):
            hist = nnx.Trainer(net, opt).fit(X, y, X[:50], y[:50], epochs=6, eval_every=2,
                                             batch_size=32, seed=4, patience=None,
                                             callback=tweak)
        runs.append((hist, net.get_parameters()))
    assert runs[0][0].graph
    assert runs[0][0].records == runs[1][0].records
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert "recording the training step again: a setting it holds changed" in caplog.text
    assert change in caplog.text
