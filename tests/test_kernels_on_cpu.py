"""The GPU backend's CUDA kernels checked on the CPU (see kernel_harness):
every body compiles as device code (nvcc, where installed), and, compiled
for the host by g++, computes what the reference backend computes: the
fused activations, dropout, softmax cross-entropy, the batch gather, the
bfloat16/TF32 roundings, every optimiser update (with a skipped step and
NaN), the step tick, the clip factor and the loss-scaling kernels."""

import numpy as np
import pytest

from nnx.backend import Backend, get_backend
from nnx.backend.cupy_backend import FUSED_ACTIVATIONS, _kernel_number

kh = pytest.importorskip("kernel_harness")

ACTS = [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
        ("leaky_relu", 0.2), ("relu6", None), ("gelu", "none"), ("gelu", "tanh"),
        ("silu", None), ("elu", 1.3)]
RTOL = {np.float32: 2e-6, np.float64: 1e-14}


@pytest.fixture(scope="module")
def K():
    try:
        return kh.HostKernels()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot build the host kernels: {exc}")


def _close(a, b, dtype):
    np.testing.assert_allclose(a, b, rtol=RTOL[dtype], atol=RTOL[dtype] * 10)


def test_every_kernel_compiles_for_the_device():
    """Kernels are compiled by NVRTC only when a GPU first runs them: a
    typo would show on the next device session. nvcc finds it here."""
    try:
        ok, out = kh.nvcc_check()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    assert ok, out


def test_the_harness_sees_every_activation_and_optimiser_kernel(K):
    names = set(K.specs)
    assert {f"nnx_bias_{a}" for a in FUSED_ACTIVATIONS} <= names
    assert {f"nnx_{a}_grad" for a in FUSED_ACTIVATIONS} <= names
    assert {"nnx_sgd", "nnx_momentum", "nnx_adam", "nnx_adagrad", "nnx_rmsprop_00",
            "nnx_rmsprop_11", "nnx_tick", "nnx_gather_batch", "nnx_loss_scale",
            "nnx_one_hot_rows", "nnx_gather_one_hot"} <= names


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ACTS, ids=[f"{a}-{p}" for a, p in ACTS])
def test_fused_activation_kernels_compute_the_reference(K, act, dtype):
    name, param = act
    b = get_backend("cpu", np.dtype(dtype).name)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((40, 7)) * 4).astype(dtype)
    x[0, :3] = [0.0, -50.0, 50.0]
    bias = rng.standard_normal((1, 7)).astype(dtype)
    g = rng.standard_normal((40, 7)).astype(dtype)
    p = _kernel_number(param)
    want_y, saved = Backend.bias_activation(b, x.copy(), bias, name, param)
    want_gz = Backend.bias_activation_grad(b, name, param, saved, g)
    full_b = np.broadcast_to(bias, x.shape).ravel()
    y = np.empty(x.size, dtype)
    if FUSED_ACTIVATIONS[name].saves == "y":
        K(f"nnx_bias_{name}", x.ravel(), full_b, p, y, dtype=dtype)
        kept = y
    else:
        kept = np.empty(x.size, dtype)
        K(f"nnx_bias_{name}", x.ravel(), full_b, p, y, kept, dtype=dtype)
        _close(kept, (x + bias).ravel(), dtype)
    _close(y, want_y.ravel(), dtype)
    gz = np.empty(x.size, dtype)
    K(f"nnx_{name}_grad", kept, g.ravel(), p, gz, dtype=dtype)
    _close(gz, want_gz.ravel(), dtype)


def test_dropout_and_softmax_cross_entropy_kernels(K):
    u = np.random.default_rng(1).random(1000)
    mask = np.empty(1000, np.float32)
    K("nnx_dropout_mask", u, 0.8, 1.25, mask, dtype=np.float32)
    np.testing.assert_array_equal(mask, np.where(u < 0.8, 1.25, 0.0).astype(np.float32))
    b = get_backend("cpu", "float64")
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((6, 4)) * 30
    y = np.eye(4)[rng.integers(0, 4, 6)]
    loss, grad = Backend.softmax_cross_entropy(b, logits, y, 1e-7)
    e = np.exp(logits - logits.max(1, keepdims=True))
    s = np.broadcast_to(e.sum(1, keepdims=True), e.shape)
    term, kgrad = np.empty(24), np.empty(24)
    K("nnx_softmax_ce", e.ravel(), s.ravel(), y.ravel(), 1e-7, 1 / 6, term, kgrad)
    _close(-term.sum() / 6, float(loss), np.float64)
    _close(kgrad, grad.ravel(), np.float64)


def test_the_gather_kernel_fetches_the_reference_batch(K):
    b = get_backend("cpu", "float64")
    X = np.arange(60.0).reshape(12, 5)
    order = np.random.default_rng(3).permutation(12)
    for position in range(4):  # the last ones wrap around the order
        out = np.empty(15)
        K("nnx_gather_batch", X.ravel(), order, np.array([position]), 6, 3, 5, 12, out)
        want = b.gather_batch(X, order, np.array([position]), 6, 3, np.empty((3, 5)))
        np.testing.assert_array_equal(out, want.ravel())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_one_hot_kernels_make_the_reference_rows(K, dtype):
    b = get_backend("cpu", np.dtype(dtype).name)
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 4, 12).astype(np.int32)
    order = rng.permutation(12)
    idx = order[3:8]
    out = np.full(20, 9, dtype)
    K("nnx_one_hot_rows", ids, idx, 4, out, dtype=dtype)
    np.testing.assert_array_equal(out, b.one_hot_rows(ids, idx, np.empty((5, 4), dtype)).ravel())
    for position in range(4):  # the last ones wrap around the order
        out = np.full(12, 9, dtype)
        K("nnx_gather_one_hot", ids, order, np.array([position]), 5, 2, 4, 12, out,
          dtype=dtype)
        want = b.gather_one_hot(ids, order, np.array([position]), 5, 2, np.empty((3, 4), dtype))
        np.testing.assert_array_equal(out, want.ravel())


def test_bfloat16_and_tf32_kernels_round_as_the_cpu_emulation(K):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(5000) * np.exp(rng.uniform(-30, 30, 5000))).astype(np.float32)
    x = np.concatenate([x, np.float32([np.inf, -np.inf, 3.4028235e38, 0.0, 1 + 2 ** -8])])
    half, back = np.empty(x.size, np.uint16), np.empty(x.size, np.float32)
    K("nnx_float_to_bf16", x, half)
    K("nnx_bf16_to_float", half, back)
    np.testing.assert_array_equal(back, get_backend("cpu", "float32", "bfloat16").round_operand(x))
    r = np.empty(x.size, np.float32)
    K("nnx_round_tf32", x, r)
    np.testing.assert_array_equal(r, get_backend("cpu", "float32", "tf32").round_operand(x))
    K("nnx_float_to_bf16", np.float32([np.nan]), half[:1])
    K("nnx_bf16_to_float", half[:1], back[:1])
    assert np.isnan(back[0])


def _state(n, rng, dtype):
    return [(rng.standard_normal(n) * s).astype(dtype) for s in (1.0, 0.1, 0.1, 0.1, 0.1)]


UPDATES = ["sgd", "momentum", "nesterov", "adam", "adamw", "adam-sk", "adagrad", "rmsprop_00",
           "rmsprop_01", "rmsprop_10", "rmsprop_11"]


def _run_update(K, which, param, grad, states, lr, scale, dtype, t=3):
    """The kernel and the reference method for one update; returns both results."""
    b = get_backend("cpu", np.dtype(dtype).name)
    T = dtype
    # a centred RMSprop's square average is never below its squared mean
    m, v, extra = states[1].copy(), np.abs(states[2]) + states[1] ** 2, states[3].copy()
    ref = [param.copy(), m.copy(), v.copy(), extra.copy()]
    ker = [param.copy(), m.copy(), v.copy(), extra.copy()]
    sc = None if scale is None else np.asarray(T(scale))
    k_scale = T(1) if scale is None else T(scale)
    wd = 0.01
    if which == "sgd":
        Backend.sgd_step(b, ref[0], grad, lr, wd, sc)
        K("nnx_sgd", grad, lr, wd, k_scale, ker[0], dtype=T)
    elif which in ("momentum", "nesterov"):
        nest = which == "nesterov"
        Backend.momentum_step(b, ref[0], grad, ref[1], lr, 0.9, nest, wd, sc)
        K("nnx_momentum", grad, lr, 0.9, wd, k_scale, int(nest), ker[0], ker[1], dtype=T)
    elif which in ("adam", "adamw", "adam-sk"):
        dec = which == "adamw"
        ebc = which == "adam-sk"  # scikit-learn's Adam: eps bias-corrected too
        Backend.adam_step(b, ref[0], grad, ref[1], ref[2], lr, np.asarray(t), 0.9, 0.999, 1e-3,
                          wd, dec, sc, eps_bias_corrected=ebc)
        K("nnx_adam", grad, lr, t, 0.9, 0.999, T(1 - 0.9), T(1 - 0.999), 1e-3, wd, int(dec),
          k_scale, int(ebc), ker[0], ker[1], ker[2], dtype=T)
    elif which == "adagrad":
        Backend.adagrad_step(b, ref[0], grad, ref[2], lr, np.asarray(t), 0.01, 1e-10, wd, sc)
        K("nnx_adagrad", grad, lr, t, 0.01, 1e-10, wd, k_scale, ker[0], ker[2], dtype=T)
    else:
        mom, cen = which[-2] == "1", which[-1] == "1"
        Backend.rmsprop_step(b, ref[0], grad, ref[2], lr, 0.99, 1e-8, wd, 0.5 if mom else 0.0,
                             ref[3] if mom else None, ref[1] if cen else None, sc)
        outs = [ker[0], ker[2]] + ([ker[3]] if mom else []) + ([ker[1]] if cen else [])
        K(f"nnx_{which}", grad, lr, 0.99, T(1 - 0.99), 1e-8, wd, 0.5 if mom else 0.0, k_scale,
          *outs, dtype=T)
    return ref, ker


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which", UPDATES)
def test_update_kernels_compute_the_reference(K, which, dtype):
    rng = np.random.default_rng(5)
    param, grad, *rest = _state(500, rng, dtype)
    for scale in (None, 0.5):
        ref, ker = _run_update(K, which, param, grad, [param] + rest, 0.01, scale, dtype)
        for r, k in zip(ref, ker):
            # the kernels may contract a product and a sum into one rounding
            np.testing.assert_allclose(k, r, rtol=RTOL[dtype] * 50, atol=RTOL[dtype] * 50)


@pytest.mark.parametrize("which", UPDATES)
def test_a_negative_scale_skips_the_update_and_nan_still_propagates(K, which):
    rng = np.random.default_rng(6)
    param, grad, *rest = _state(50, rng, np.float32)
    _, ker = _run_update(K, which, param, grad, [param] + rest, 0.01, -1.0, np.float32)
    start = [param, rest[0], np.abs(rest[1]) + rest[0] ** 2, rest[2]]
    for k, s in zip(ker, start):
        np.testing.assert_array_equal(k, s)  # nothing written
    _, ker = _run_update(K, which, param, grad, [param] + rest, 0.01, np.nan, np.float32)
    assert np.isnan(ker[0]).all()  # a NaN clip factor still shows as divergence


def test_tick_clip_unscale_and_loss_scale_kernels(K):
    b = get_backend("cpu", "float32")
    rates = np.float32([0.1, 0.2, 0.3])
    lr, s, t = np.zeros(1, np.float32), np.zeros(1, np.int64), np.zeros(1, np.int64)
    for step in range(5):
        K("nnx_tick", rates, 3, lr, s, t, dtype=np.float32)
        assert (lr[0], s[0], t[0]) == (rates[min(step, 2)], step + 1, step + 1)
    g = np.float32([3.0, 4.0, -12.0]) * 8
    squares = np.float32((g.astype(np.float64) ** 2).sum())
    out = np.empty(1, np.float32)
    K("nnx_clip_scale", squares, 2.0, out, dtype=np.float32)
    _close(out[0], float(b.clip_scale(g, 2.0)), np.float32)
    for max_norm, clip in ((None, 0), (1.0, 1), (1e9, 1)):
        K("nnx_unscale", 0.0, squares, 8.0, max_norm or 0.0, clip, out, dtype=np.float32)
        _close(out[0], float(b.unscale_factor(g, np.float32(8.0), max_norm)), np.float32)
    K("nnx_unscale", np.nan, squares, 8.0, 1.0, 1, out, dtype=np.float32)
    assert out[0] == -1.0
    # a zero gradient under a loss scale so small that 1/scale is infinite:
    # the clip factor is 0 * inf, NaN, and so is the reference's (minimum(1,
    # NaN)); `c < 1 ? ... : inv` gave inf
    tiny, zero = np.float32(1e-45), np.zeros(3, np.float32)
    K("nnx_unscale", 0.0, np.float32(0.0), tiny, 1.0, 1, out, dtype=np.float32)
    with np.errstate(all="ignore"):
        want = float(b.unscale_factor(zero, tiny, 1.0))
    assert np.isnan(want) and np.isnan(out[0])
    scale_k, good_k = np.float32([2.0 ** 120]), np.zeros(1, np.int64)
    scale_r, good_r = np.asarray(np.float32(2.0 ** 120)), np.zeros((), np.int64)
    for skipped in [True, False, False, False, True] + [False] * 30:
        f = np.float32(-1.0 if skipped else 0.5)
        K("nnx_loss_scale", f, 2.0, 0.5, 3, scale_k, good_k, dtype=np.float32)
        b.update_loss_scale(scale_r, good_r, f, 2.0, 0.5, 3)
        assert (scale_k[0], good_k[0]) == (scale_r, good_r)
    assert scale_k[0] == np.float32(2.0 ** 127)  # stops short of infinity


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_row_kernel_of_softmax_cross_entropy_computes_the_reference(K, dtype):
    """One thread per row: the loss's per-row shares sum to the reference
    loss and the gradient is the reference's; NaN and infinite logits give a
    NaN loss, as in the reference."""
    b = get_backend("cpu", np.dtype(dtype).name)
    rng = np.random.default_rng(7)
    n, c = 9, 10
    logits = (rng.standard_normal((n, c)) * 20).astype(dtype)
    logits[0, 3] = 80.0  # a clipped probability
    y = np.eye(c, dtype=dtype)[rng.integers(0, c, n)]
    loss, grad = Backend.softmax_cross_entropy(b, logits, y, 1e-7)
    terms, kgrad = np.empty(n, dtype), np.empty(n * c, dtype)
    K("nnx_softmax_ce_rows", logits.ravel(), y.ravel(), c, 1e-7, 1 / n, terms, kgrad,
      dtype=dtype)
    _close(terms.sum(), float(loss), dtype)
    _close(kgrad, grad.ravel(), dtype)
    for bad in (np.nan, np.inf):
        z = logits.copy()
        z[4, 2] = bad
        with np.errstate(all="ignore"):
            K("nnx_softmax_ce_rows", z.ravel(), y.ravel(), c, 1e-7, 1 / n, terms, kgrad,
              dtype=dtype)
            ref, _ = Backend.softmax_cross_entropy(b, z, y, 1e-7)
        assert np.isnan(terms.sum()) and np.isnan(float(ref))


def test_the_advance_kernel_counts_the_batch_and_adds_the_loss(K):
    b = get_backend("cpu", "float32")
    pos_k, total_k = np.array([3], np.int64), np.float32([1.5])
    pos_r, total_r = np.array([3], np.int64), np.full((), 1.5, np.float32)
    for loss in (0.25, 2.0, np.nan):
        K("nnx_advance", np.float32(loss), pos_k, total_k, dtype=np.float32)
        b.advance(pos_r, total_r, np.asarray(np.float32(loss)))
        assert pos_k[0] == pos_r[0]
        np.testing.assert_array_equal(total_k[0], total_r)


def test_the_dropout_apply_kernel_masks_and_multiplies_in_one_pass(K):
    rng = np.random.default_rng(9)
    u, x = rng.random(1000), rng.standard_normal(1000).astype(np.float32)
    mask, y = np.empty(1000, np.float32), np.empty(1000, np.float32)
    K("nnx_dropout_apply", x, u, 0.7, np.float32(1 / 0.7), mask, y, dtype=np.float32)
    want = np.where(u < 0.7, np.float32(1 / 0.7), np.float32(0))
    np.testing.assert_array_equal(mask, want)
    np.testing.assert_array_equal(y, x * want)
