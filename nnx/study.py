"""The study's experiment ladder as data: eight steps, each one change."""

from __future__ import annotations

from dataclasses import dataclass

from .layers import Dense
from .losses import MeanSquaredError, SoftmaxCrossEntropy
from .network import NeuralNetwork
from .optimizers import SGD, SGDMomentum

SEED = 20200720
BATCH_SIZE = 60
EPOCHS = 50
EVAL_EVERY = 10


@dataclass(frozen=True)
class Step:
    number: int
    change: str  # what the step adds; {lr} and {final} stand for its rates
    mnist_accuracy: float  # what the study reports on MNIST (60k/10k)

    def describe(self, lr_scale=1.0):
        """``change`` with this step's learning rates, multiplied by ``lr_scale``."""
        optim = self.optimizer(lr_scale)
        return self.change.format(lr=f"{optim.first_lr:g}", final=f"{optim.final_lr or 0:g}")

    def build(self, n_in, n_out, backend="cpu", dtype=None, seed=SEED, lr_scale=1.0,
              precision=None):
        """The network and optimiser of this step; ``lr_scale`` multiplies its
        learning rates (the study's were chosen for MNIST); ``precision`` is
        the network's (``nnx.precision``)."""
        n = self.number
        init = "standard" if n <= 4 else "glorot"
        keep = 0.8 if n in (6, 8) else 1.0
        if n <= 6:
            hidden = [Dense(89, "tanh", dropout=keep, weight_init=init)]
        else:
            hidden = [Dense(178, "tanh", dropout=keep, weight_init=init),
                      Dense(46, "tanh", dropout=keep, weight_init=init)]
        if n == 1:
            out, loss = Dense(n_out, "sigmoid", weight_init=init), MeanSquaredError()
        else:
            out, loss = Dense(n_out, "linear", weight_init=init), SoftmaxCrossEntropy()
        net = NeuralNetwork(hidden + [out], loss, seed=seed, backend=backend, dtype=dtype,
                            precision=precision)
        net.build(n_in)
        return net, self.optimizer(lr_scale)

    def optimizer(self, lr_scale=1.0):
        """This step's optimiser, its learning rates multiplied by ``lr_scale``."""
        n, s = self.number, lr_scale
        if n <= 2:
            return SGD(0.1 * s)
        if n == 3:
            return SGDMomentum(0.1 * s, momentum=0.9)
        if n == 4:
            return SGDMomentum(0.15 * s, momentum=0.9, final_lr=0.05 * s, decay_type="linear")
        return SGDMomentum(0.2 * s, momentum=0.9, final_lr=0.05 * s, decay_type="exponential")


LADDER = [
    Step(1, "89 tanh, sigmoid output, MSE, SGD", 0.8758),
    Step(2, "linear output + softmax cross-entropy", 0.8924),
    Step(3, "SGD with momentum 0.9", 0.9154),
    Step(4, "learning-rate decay {lr}->{final} (linear)", 0.9339),
    Step(5, "Glorot init, lr {lr}->{final} exponential", 0.9487),
    Step(6, "dropout keep 0.8 on the hidden layer", 0.9448),
    Step(7, "deeper: 178 tanh, 46 tanh", 0.9555),
    Step(8, "deeper with dropout 0.8 on both", 0.9522),
]
