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
