"""The full training loop on array-api-strict's simulated device, with host syncs made fatal."""

import numpy as np
import pytest

import nnx

try:  # part of the test extra; skipped test by test (not as a module) where it is missing,
    import array_api_strict as xps  # so that `pytest -m gpu` reports no skip for this file
except ImportError:  # pragma: no cover
    xps = None
pytestmark = pytest.mark.skipif(xps is None, reason="array-api-strict missing")

if xps is not None:
    Array = type(xps.asarray(0.0))  # array_api_strict._array_object.Array
    DEVICE1 = xps.Device("device1")
    CPU_DEVICE = xps.Device("CPU_DEVICE")
    SYNC_METHODS = [m for m in ("__float__", "__bool__", "__int__", "__index__", "__complex__")
                    if hasattr(Array, m)]


class HostSync(AssertionError):
    """A device1 array was read back to the host implicitly."""


@pytest.fixture
def no_host_sync(monkeypatch):
    """float(x), int(x), bool(x) (``if x:``) and index use of a device1 array raise;
    arrays on CPU_DEVICE (after an explicit ``to_device``) still convert."""
    for name in SYNC_METHODS:
        original = getattr(Array, name)

        def guarded(self, *args, _name=name, _original=original):
            if self.device == DEVICE1:
                raise HostSync(f"{_name} on a device1 array: a silent host sync")
            return _original(self, *args)

        monkeypatch.setattr(Array, name, guarded)


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 3))
    X = rng.standard_normal((150, 8))
    Xv = rng.standard_normal((60, 8))
    return X, (X @ w).argmax(1), Xv, (Xv @ w).argmax(1)


def train(backend, X, y, Xv, yv):
    net = nnx.NeuralNetwork([nnx.Dense(16, "tanh", dropout=0.8), nnx.Dense(8, "relu", dropout=0.9),
                             nnx.Dense(3, "linear")], nnx.SoftmaxCrossEntropy(), seed=3,
                            backend=backend)
    opt = nnx.SGDMomentum(0.1, momentum=0.9, final_lr=0.01, decay_type="exponential")
    hist = nnx.Trainer(net, opt).fit(X, y, Xv, yv, epochs=12, eval_every=3, batch_size=32,
                                     seed=4, patience=2)
    return net, hist


def test_guard_catches_implicit_reads(no_host_sync):
    assert {"__float__", "__bool__", "__int__", "__index__"} <= set(SYNC_METHODS)
    b = nnx.get_backend("strict")
    x = b.asarray(np.array([1.5, -2.0]))
    assert x.device == DEVICE1
    s = xps.sum(x)
    with pytest.raises(HostSync):
        float(s)
    with pytest.raises(HostSync):
        if s > 0:
            pass
    with pytest.raises(HostSync):
        int(xps.astype(s, xps.int64))
    with pytest.raises((RuntimeError, TypeError)):
        np.asarray(x)  # the simulator itself refuses implicit conversion
    with pytest.raises(ValueError):
        x + xps.asarray([1.0, 2.0], dtype=xps.float32, device=CPU_DEVICE)  # mixing devices
    # the explicit read-back goes through to_device(CPU_DEVICE) and is allowed
    assert b.to_float(s) == -0.5
    np.testing.assert_array_equal(b.to_numpy(x), [1.5, -2.0])


def test_training_loop_runs_on_the_device_without_host_syncs(no_host_sync):
    X, y, Xv, yv = make_data()
    net, hist = train("strict", X, y, Xv, yv)
    assert net.backend.name == "strict"
    assert all(p.device == DEVICE1 for p in net.params())
    assert all(g.device == DEVICE1 for g in net.param_grads())
    assert hist.epochs == [3, 6, 9, 12]
    assert all(isinstance(r["loss"], float) and isinstance(r["train_loss"], float)
               for r in hist.records)
    assert hist.losses[-1] < hist.losses[0]
    assert nnx.accuracy(net, Xv, yv) > 0.6
    out = net.predict(Xv)
    assert out.device == DEVICE1 and tuple(out.shape) == (60, 3)


def test_device_resident_data_passes_through(no_host_sync):
    X, y, Xv, yv = make_data()
    b = nnx.get_backend("strict")
    eye = np.eye(3)
    Xd, yd, Xvd, yvd = b.asarray(X), b.asarray(eye[y]), b.asarray(Xv), b.asarray(eye[yv])
    net_dev, hist_dev = train("strict", Xd, yd, Xvd, yvd)
    assert nnx.accuracy(net_dev, Xvd, yvd) > 0.6
    net_host, hist_host = train("strict", X, y, Xv, yv)
    assert hist_dev.records == hist_host.records
    np.testing.assert_array_equal(b.to_numpy(net_dev.get_parameters()),
                                  b.to_numpy(net_host.get_parameters()))


def test_strict_run_matches_the_cpu_run_exactly():
    """Same seeds, same NumPy generators and float32 arithmetic underneath: bit-identical."""
    X, y, Xv, yv = make_data()
    cpu_net, cpu_hist = train("cpu", X, y, Xv, yv)
    dev_net, dev_hist = train("strict", X, y, Xv, yv)
    assert cpu_hist.records == dev_hist.records
    assert cpu_hist.best_epoch == dev_hist.best_epoch
    p_cpu = cpu_net.get_parameters()
    p_dev = dev_net.backend.to_numpy(dev_net.get_parameters())
    assert p_cpu.dtype == p_dev.dtype == np.float32
    np.testing.assert_array_equal(p_cpu, p_dev)
    np.testing.assert_array_equal(nnx.predict_classes(cpu_net, Xv),
                                  nnx.predict_classes(dev_net, Xv))


def test_numpy_input_is_host_data_for_a_strict_network():
    net = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(2, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0, backend="strict")
    out = net.forward(np.ones((5, 3)))
    assert type(out) is Array and out.device == DEVICE1
    loss = net.train_batch(np.ones((5, 3)), np.array([0, 1, 0, 1, 1]))
    assert loss.device == DEVICE1


def test_device_array_into_a_cpu_network_raises_naming_the_device():
    b = nnx.get_backend("strict")
    net = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(2, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0)
    X = np.ones((5, 3))
    with pytest.raises(ValueError, match="device"):
        net.forward(b.asarray(X))
    with pytest.raises(ValueError, match="device"):
        net.train_batch(X, b.asarray(np.eye(2)[[0, 1, 0, 1, 1]]))
    with pytest.raises(ValueError, match="device"):
        nnx.Trainer(net, nnx.SGD(0.1)).fit(b.asarray(X), np.zeros(5, dtype=int), epochs=1,
                                           eval_every=1)


def test_cpu_device_strict_array_into_a_strict_network_raises():
    net = nnx.NeuralNetwork([nnx.Dense(4, "tanh"), nnx.Dense(2, "linear")],
                            nnx.SoftmaxCrossEntropy(), seed=0, backend="strict")
    host_side = xps.asarray(np.ones((5, 3)), dtype=xps.float32, device=CPU_DEVICE)
    with pytest.raises(ValueError, match="device"):
        net.forward(host_side)


def test_explicit_reads_depend_on_evaluations_not_on_batches(no_host_sync, monkeypatch):
    """Even explicit read-backs (to_numpy) happen only at evaluations: the
    count is the same for 5 and for 20 batches per epoch."""
    from nnx.backend.strict_backend import StrictBackend

    reads = {"n": 0}
    real = StrictBackend.to_numpy

    def counting(self, x):
        reads["n"] += 1
        return real(self, x)
    monkeypatch.setattr(StrictBackend, "to_numpy", counting)
    seen = []
    for rows in (150, 600):
        X, y, Xv, yv = make_data()
        X = np.tile(X, (rows // 150, 1))
        y = np.tile(y, rows // 150)
        reads["n"] = 0
        train("strict", X, y, Xv, yv)
        seen.append(reads["n"])
    # 4 evaluations: epoch losses, evaluation loss, the parameters' finite check
    assert seen[0] == seen[1] == 4 * 3
