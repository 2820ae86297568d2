"""The trainer's captured-step path, on the CPU: a backend whose "graph"
re-runs the recorded step on the same buffers when replayed must train
exactly like the step-by-step loop, recapture when the learning rate moves,
and fall back cleanly (with a log line) when capture is refused."""

import logging

import numpy as np
import pytest

import nnx
from nnx.backend import CaptureUnavailable
from nnx.backend.numpy_backend import NumpyBackend


class ReplayBackend(NumpyBackend):
    """Stands in for CUDA graphs: capture records nothing runs; replay calls
    the step again, reading the same fixed input buffers."""

    def __init__(self, dtype="float32", refuse=None):
        super().__init__(dtype)
        self.refuse = refuse
        self.captures = 0
        self.replays = 0

    def capture(self, step):
        if self.refuse:
            raise CaptureUnavailable(self.refuse)
        self.captures += 1
        result = np.zeros((), dtype=self.dtype)

        def replay():
            self.replays += 1
            result[...] = step()
        return replay, result


def _fit(backend, dropout=1.0, **kw):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((250, 12)), rng.integers(0, 4, 250)
    net = nnx.NeuralNetwork([nnx.Dense(16, "tanh", dropout=dropout), nnx.Dense(4, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=3, backend=backend)
    opt = nnx.SGDMomentum(0.1, final_lr=0.02, decay_type="exponential")
    hist = nnx.Trainer(net, opt).fit(X, y, X[:50], y[:50], epochs=6, eval_every=2,
                                     batch_size=32, seed=4, patience=5, **kw)
    return net, hist


@pytest.mark.parametrize("dropout", [1.0, 0.8])
def test_replayed_steps_train_exactly_like_the_loop(dropout):
    fake = ReplayBackend()
    net_g, hist_g = _fit(fake, dropout)
    net_e, hist_e = _fit("cpu", dropout)
    assert hist_g.graph and not hist_e.graph
    assert fake.captures == 6  # one per epoch: the learning rate changes every epoch
    # 250 rows / 32 = 7 full batches + 1 short one per epoch; the first full
    # batch of the run is eager, the short ones are always eager
    assert fake.replays == 6 * 7 - 1
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


def test_fused_bias_activation_structure_matches_separate_ops():
    """Dense's fused BiasActivation (used where the backend fuses) gives the
    same outputs and gradients as BiasAdd + activation, for every activation."""
    fused = NumpyBackend("float64")
    fused.fuses_bias_activation = True
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((9, 5)), rng.integers(0, 3, 9)
    for act in ["linear", "sigmoid", "tanh", "relu", "leaky_relu", "relu6"]:
        nets = [nnx.NeuralNetwork([nnx.Dense(7, act), nnx.Dense(3, "linear")],
                                  nnx.SoftmaxCrossEntropy(), seed=2, backend=be,
                                  dtype="float64")
                for be in (fused, "cpu")]
        losses = [float(net.train_batch(X, y)) for net in nets]
        assert type(nets[0].layers[0].operations[1]).__name__ == "BiasActivation"
        assert type(nets[1].layers[0].operations[1]).__name__ == "BiasAdd"
        assert losses[0] == losses[1]
        for g, h in zip(nets[0].param_grads(), nets[1].param_grads()):
            np.testing.assert_allclose(g, h, rtol=1e-12, atol=1e-15)
