"""Independent plain-NumPy float64 reference MLP, written from the formulas (no nnx import)."""

from __future__ import annotations

import numpy as np


def act_forward(name, z):
    """The activation ``name`` applied to the pre-activation ``z``."""
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "linear":
        return z.copy()
    if name == "gelu":  # x Phi(x), Phi by math.erf
        import math
        return 0.5 * z * (1.0 + np.vectorize(math.erf, otypes=[float])(z / math.sqrt(2.0)))
    if name == "silu":  # x sigmoid(x), the sigmoid as (1 + tanh(x / 2)) / 2
        return 0.5 * z * (1.0 + np.tanh(0.5 * z))
    if name == "elu":  # alpha = 1
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0.0)))
    raise ValueError(name)


def act_derivative(name, z, a):
    """d act / d z at pre-activation ``z`` (with ``a = act(z)``)."""
    if name == "tanh":
        return 1.0 - a**2
    if name == "sigmoid":
        return a * (1.0 - a)
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "linear":
        return np.ones_like(z)
    if name == "gelu":  # Phi(x) + x phi(x), Phi by math.erf
        import math
        return (0.5 * (1.0 + np.vectorize(math.erf, otypes=[float])(z / math.sqrt(2.0)))
                + z * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi))
    if name == "silu":  # s + x s (1 - s)
        s = 0.5 * (1.0 + np.tanh(0.5 * z))
        return s * (1.0 + z * (1.0 - s))
    if name == "elu":
        return np.where(z > 0, 1.0, np.exp(np.minimum(z, 0.0)))
    raise ValueError(name)


def one_hot(ids, n_classes):
    out = np.zeros((len(ids), n_classes))
    out[np.arange(len(ids)), np.asarray(ids)] = 1.0
    return out


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_ce(logits, y):
    """Loss ``-sum(y log softmax) / n`` and its gradient ``(softmax - y) / n``."""
    n = logits.shape[0]
    p = softmax(logits)
    return -np.sum(y * np.log(p)) / n, (p - y) / n


def mse(pred, y):
    """Loss ``sum((p - y)**2) / n`` and its gradient ``2 (p - y) / n``."""
    n = pred.shape[0]
    d = pred - y
    return np.sum(d * d) / n, 2.0 * d / n


LOSSES = {"ce": softmax_ce, "mse": mse}


class RefMLP:
    """Dense layers ``a = act(x @ W + B)`` with optional fixed dropout masks.

    ``weights`` and ``biases`` are float64 copies; ``masks[i]`` (or None) is the
    multiplicative dropout mask applied after layer ``i``'s activation.
    """

    def __init__(self, weights, biases, activations, loss="ce", masks=None):
        self.W = [np.array(w, dtype=np.float64) for w in weights]
        self.B = [np.array(b, dtype=np.float64).reshape(1, -1) for b in biases]
        self.acts = list(activations)
        self.loss_fn = LOSSES[loss]
        self.masks = masks or [None] * len(self.W)

    def params(self):
        out = []
        for w, b in zip(self.W, self.B, strict=True):
            out += [w, b]
        return out

    def forward(self, X):
        self.cache = []
        a = np.asarray(X, dtype=np.float64)
        for W, B, act, mask in zip(self.W, self.B, self.acts, self.masks, strict=True):
            z = a @ W + B
            out = act_forward(act, z)
            if mask is not None:
                out = out * mask
            self.cache.append((a, z, act_forward(act, z)))
            a = out
        return a

    def loss_and_grads(self, X, y):
        """Loss, output and the gradients ``[dW1, dB1, dW2, dB2, ...]``."""
        out = self.forward(X)
        loss, g = self.loss_fn(out, y)
        grads = []
        for i in reversed(range(len(self.W))):
            a_in, z, a = self.cache[i]
            if self.masks[i] is not None:
                g = g * self.masks[i]
            gz = g * act_derivative(self.acts[i], z, a)
            grads = [a_in.T @ gz, gz.sum(axis=0, keepdims=True)] + grads
            g = gz @ self.W[i].T
        return loss, out, grads

    def sgd_step(self, grads, lr):
        for p, g in zip(self.params(), grads, strict=True):
            p -= lr * g

    def momentum_step(self, grads, velocity, lr, momentum):
        """``v = momentum * v + lr * g``; ``p -= v`` (velocity updated in place)."""
        for p, g, v in zip(self.params(), grads, velocity, strict=True):
            v *= momentum
            v += lr * g
            p -= v


def assert_rel_close(actual, expected, rtol, what=""):
    """``|actual - expected| <= rtol * max|expected|`` (relative to the array's scale)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected))), 1e-300)
    err = float(np.max(np.abs(actual - expected)))
    assert err <= rtol * scale, f"{what}: max abs error {err:.3e} > {rtol:g} * {scale:.3e}"


# --------------------------------------------------------------- optimisers
# One step of each optimiser on lists of float64 arrays, written from the
# formulas in PyTorch's documentation (``torch.optim``), independently of nnx.
# ``params`` and the state lists are updated in place; ``t`` counts from 1.

def clip_grads(grads, max_norm):
    """``torch.nn.utils.clip_grad_norm_``: scale every gradient by
    ``min(1, max_norm / (total_norm + 1e-6))``."""
    total = float(np.sqrt(sum(float(np.sum(g * g)) for g in grads)))
    coef = min(1.0, max_norm / (total + 1e-6))
    return [g * coef for g in grads]


def ref_sgd(params, grads, state, lr, t, momentum=0.0, nesterov=False, weight_decay=0.0):
    """SGD; with momentum in the study's form ``v = m v + lr g``, ``p -= v``
    (Nesterov: ``p -= m v + lr g``)."""
    if momentum and "v" not in state:
        state["v"] = [np.zeros_like(p) for p in params]
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        g = g + weight_decay * p
        if not momentum:
            p -= lr * g
            continue
        v = state["v"][i]
        v[...] = momentum * v + lr * g
        p -= momentum * v + lr * g if nesterov else v


def ref_adam(params, grads, state, lr, t, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
             decoupled=False):
    """Adam (``decoupled=False``, L2 in the gradient) or AdamW."""
    b1, b2 = betas
    state.setdefault("m", [np.zeros_like(p) for p in params])
    state.setdefault("v", [np.zeros_like(p) for p in params])
    for p, g, m, v in zip(params, grads, state["m"], state["v"], strict=True):
        if decoupled:
            p *= 1.0 - lr * weight_decay
        else:
            g = g + weight_decay * p
        m[...] = b1 * m + (1 - b1) * g
        v[...] = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p -= lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_rmsprop(params, grads, state, lr, t, alpha=0.99, eps=1e-8, weight_decay=0.0,
                momentum=0.0, centered=False):
    for k in ("sq", "buf", "ga"):
        state.setdefault(k, [np.zeros_like(p) for p in params])
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        g = g + weight_decay * p
        sq, buf, ga = state["sq"][i], state["buf"][i], state["ga"][i]
        sq[...] = alpha * sq + (1 - alpha) * g * g
        if centered:
            ga[...] = alpha * ga + (1 - alpha) * g
            avg = np.sqrt(sq - ga * ga) + eps
        else:
            avg = np.sqrt(sq) + eps
        if momentum:
            buf[...] = momentum * buf + g / avg
            p -= lr * buf
        else:
            p -= lr * g / avg


def ref_adagrad(params, grads, state, lr, t, lr_decay=0.0, eps=1e-10, weight_decay=0.0):
    state.setdefault("sum", [np.zeros_like(p) for p in params])
    clr = lr / (1 + (t - 1) * lr_decay)
    for p, g, s in zip(params, grads, state["sum"], strict=True):
        g = g + weight_decay * p
        s += g * g
        p -= clr * g / (np.sqrt(s) + eps)


# ---------------------------------------------------------------- schedules
# The rate of unit t (0-based) in a run of T units, from the closed forms.

def ref_warmup_then(lr, warmup, t, T, rest):
    return lr * (t + 1) / (warmup + 1) if t < warmup else rest(t - warmup, T - warmup)


def ref_cosine(lr, final, t, T):
    return final + (lr - final) * (1 + np.cos(np.pi * min(t, T - 1) / (T - 1))) / 2


def ref_onecycle(max_lr, t, T, pct_start=0.3, div=25.0, final_div=1e4):
    initial = max_lr / div
    low = initial / final_div
    peak = pct_start * T - 1
    if t <= peak:
        f = t / peak
        return max_lr + (initial - max_lr) * (1 + np.cos(np.pi * f)) / 2
    f = (t - peak) / (T - 1 - peak)
    return low + (max_lr - low) * (1 + np.cos(np.pi * f)) / 2
