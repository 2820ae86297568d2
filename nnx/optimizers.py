"""Optimisers: one ``step()`` for plain SGD and SGD with momentum, with
optional linear or exponential learning-rate decay once per epoch."""

from __future__ import annotations

from . import _checks
from ._checks import InputValueError

DECAY_TYPES = ("linear", "exponential")


def _positive(name, value):
    value = _checks.number(name, value)
    if value <= 0:
        raise InputValueError(f"{name}={value!r} must be > 0")
    return value


class Optimizer:
    """Updates a network's parameters from its gradients.

    ``lr`` is the learning rate of the first epoch. With ``decay_type``
    ("linear" or "exponential") and ``final_lr``, the rate moves from ``lr`` at
    the first epoch to exactly ``final_lr`` at the last:

    - linear: ``lr_t = lr - (lr - final_lr) * t / (N - 1)``
    - exponential: ``lr_t = lr * (final_lr / lr) ** (t / (N - 1))``

    ``momentum`` > 0 keeps a velocity per parameter:
    ``v = momentum * v + lr * g``; ``p -= v``. With 0 the step is ``p -= lr * g``.
    """

    def __init__(self, lr=0.01, final_lr=None, decay_type=None, momentum=0.0):
        self._lr_buf = None  # the rate on the device, for the update kernels
        self.net = None
        self.lr = self.first_lr = _positive("lr", lr)
        self.momentum = _checks.in_range("momentum", momentum, 0, 1, high_open=True)
        if decay_type is not None:
            _checks.name_in("decay_type", decay_type, DECAY_TYPES)
        if decay_type is None and final_lr not in (None, 0):  # 0: the study's "no final rate"
            raise InputValueError(f"final_lr={final_lr!r} was given without a decay_type; "
                                  f"pass decay_type as one of {list(DECAY_TYPES)}")
        if decay_type is not None and final_lr is None:
            raise InputValueError(f"decay_type={decay_type!r} needs a final_lr")
        if decay_type == "exponential":
            self.final_lr = _positive("final_lr", final_lr)  # lr * (0 / lr) ** f is no decay
        elif decay_type == "linear":
            self.final_lr = _checks.non_negative("final_lr", final_lr)
        else:
            self.final_lr = None
        self.decay_type = decay_type
        self.velocity = None
        self.max_epochs = None

    @property
    def lr(self):
        """The current learning rate (a float; the device keeps a copy)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        # 0 is allowed: a linear decay may end there
        self._lr = _checks.non_negative("lr", value)
        if self._lr_buf is not None:  # update in place: a captured step reads this array
            self.net.backend.assign(self._lr_buf, self._lr)

    def __repr__(self):
        extra = ""
        if self.decay_type:
            extra = f", final_lr={self.final_lr}, decay_type={self.decay_type!r}"
        return f"{type(self).__name__}(lr={self.first_lr}, momentum={self.momentum}{extra})"

    # the trainer calls these; a hand-written loop may too
    def attach(self, net):
        """Update the parameters of ``net`` from now on (resets the velocity)."""
        self.net = net
        self.velocity = None
        self._lr_buf = None

    def setup_decay(self, epochs):
        """Plan the schedule for a run of ``epochs`` epochs and restart at ``lr``."""
        self.max_epochs = int(epochs)
        self.lr = self.first_lr

    def lr_at(self, epoch):
        """The learning rate of epoch ``epoch`` (0-based) in a run of ``max_epochs``."""
        if self.decay_type is None or not self.max_epochs or self.max_epochs < 2:
            return self.first_lr
        f = min(epoch, self.max_epochs - 1) / (self.max_epochs - 1)
        lr, end = self.first_lr, self.final_lr
        if self.decay_type == "linear":
            return lr * (1.0 - f) + end * f  # exact at both ends
        return lr ** (1.0 - f) * end ** f  # = lr * (end / lr) ** f, exact at both ends

    def decay(self, epoch):
        """Set the rate for the epoch after ``epoch``: call at the end of each epoch."""
        if self.decay_type is not None and self.max_epochs is None:
            raise RuntimeError(f"decay() needs the run's length to follow its {self.decay_type} "
                               "schedule: call setup_decay(epochs) first (Trainer.fit does)")
        self.lr = self.lr_at(epoch + 1)

    def step(self):
        """Apply one update from the gradients of the last ``train_batch``."""
        net = self.net
        if net is None:
            raise RuntimeError("this optimizer has no network: use Trainer(net, optim) "
                               "or optim.attach(net) first")
        if not net.built:
            raise RuntimeError("optim.step(): the network this optimiser updates (the one last "
                               "given to Trainer(net, optim) or optim.attach(net)) has no "
                               "parameters yet: train that network, or attach the one you train")
        b = net.backend
        if self._lr_buf is None:
            self._lr_buf = b.asarray(self._lr)
        if self.momentum == 0.0:
            b.sgd_step(net._param_buf, net._grad_buf, self._lr_buf)
            return
        if self.velocity is None or self.velocity.shape != net._param_buf.shape:
            self.velocity = b.zeros(net._param_buf.shape)
        b.momentum_step(net._param_buf, net._grad_buf, self.velocity, self._lr_buf,
                        self.momentum)


class SGD(Optimizer):
    """Plain stochastic gradient descent: ``p -= lr * g``."""

    def __init__(self, lr=0.01, final_lr=None, decay_type=None):
        super().__init__(lr, final_lr, decay_type, momentum=0.0)


class SGDMomentum(Optimizer):
    """SGD with momentum (default 0.9)."""

    def __init__(self, lr=0.01, momentum=0.9, final_lr=None, decay_type=None):
        super().__init__(lr, final_lr, decay_type, momentum=momentum)
