"""The optimiser family's common part: one ``step()`` over a network's flat
parameter and gradient buffers, the learning-rate schedule, weight decay and
global-norm gradient clipping.

Everything a step reads lives on the network's device: the rate (a 0-d
array), the step count and, for per-step schedules, the epoch's table of
rates. So a step makes no host read and no upload, and a CUDA graph recorded
from one step replays the whole run. The host writes these arrays only at
epoch boundaries (``start_epoch``) and when a run starts.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Iterator

from .. import _checks
from . import schedules as _schedules


def _looks_like_parameters(value):
    """Whether ``value`` is what PyTorch's optimisers take first: parameters
    (an iterator, or a list or tuple of arrays), which a rate never is."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(hasattr(v, "shape") for v in value)
    return isinstance(value, Iterator)


def _describe(value):
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} arrays"
    if isinstance(value, Iterator):
        return f"an iterator ({type(value).__name__})"
    return f"a {type(value).__name__}"


class Optimizer:
    """Updates a network's parameters from its gradients.

    ``lr`` is a number or a ``Schedule``; the study's ``final_lr`` and
    ``decay_type`` ("linear" or "exponential") describe a ``LinearDecay`` or
    ``ExponentialDecay`` over the epochs. On every optimiser:

    - ``weight_decay`` (L2): ``g += weight_decay * p`` before the update (AdamW
      instead shrinks the parameters directly: ``p *= 1 - lr * weight_decay``);
    - ``clip_norm``: before anything else, ``g *= min(1, clip_norm / (||g|| +
      1e-6))``, ``||g||`` the global norm of all the gradients (PyTorch's
      ``clip_grad_norm_``); the norm is computed on the device.

    Subclasses name their per-parameter state (``state_names``, buffers shaped
    like the flat parameter buffer, created at the first step) and call one
    backend method in ``_update``.
    """

    state_names: tuple = ()
    counts_steps = False  # whether the update reads the step count (bias corrections)

    def __new__(cls, *args, **kwargs):
        # PyTorch's shape, Adam(model.parameters(), lr=...), fails in Python's own
        # argument binding ("got multiple values for argument 'lr'") before
        # __init__ could say what is wrong: say it here, where the arguments arrive
        first = args[0] if args else None
        if first is not None and not isinstance(first, (numbers.Number, str,
                                                        _schedules.Schedule, type)):
            from ..layers import Layer
            from ..network import NeuralNetwork
            if isinstance(first, (NeuralNetwork, Layer)) or _looks_like_parameters(first):
                raise _checks.InputTypeError(
                    f"{cls.__name__}(...) got {_describe(first)} as its first "
                    f"argument, the learning rate: an nnx optimiser takes only its "
                    f"settings, e.g. {cls.__name__}(lr=0.01), and is given the network by "
                    f"nnx.Trainer(net, optimizer) or optimizer.attach(net) (not "
                    f"PyTorch's {cls.__name__}(model.parameters(), lr))")
        return super().__new__(cls)

    def __init__(self, lr=0.01, final_lr=None, decay_type=None, *, weight_decay=0.0,
                 clip_norm=None):
        self.schedule = _schedules.from_arguments(lr, final_lr, decay_type)
        self.weight_decay = _checks.non_negative("weight_decay", weight_decay)
        self.clip_norm = None if clip_norm is None else _schedules.positive("clip_norm",
                                                                           clip_norm)
        self.net = None
        self.state = {}  # name -> device array shaped like the parameters
        self._by_hand = None  # a constant rate set by hand (optim.lr = ...), if any
        self._lr = self._unplanned_rate()
        self.max_epochs = self.steps_per_epoch = None
        self._device = None  # the device scalars, made at the first step

    # ------------------------------------------------------------- display
    def _hyper(self):
        """This family's own settings, for ``repr`` (and so for ``resume=``)."""
        return {}

    def __repr__(self):
        s = self.schedule
        # the study's spelling for what it had (a rate, maybe with its decay), else the schedule
        study = not s.warmup and (type(s) is _schedules.Constant
                                  or (self.decay_type is not None and s.per == "epoch"))
        parts = [f"lr={s.lr}" if study else f"lr={s!r}"]
        parts += [f"{k}={v!r}" for k, v in self._hyper().items()]
        if study and self.decay_type is not None:
            parts += [f"final_lr={s.final_lr}", f"decay_type={self.decay_type!r}"]
        default = inspect.signature(type(self).__init__).parameters.get("weight_decay")
        if self.weight_decay or (default is not None and default.default != self.weight_decay):
            # AdamW(weight_decay=0) read back as AdamW(...) would be AdamW's 0.01
            parts.append(f"weight_decay={self.weight_decay}")
        if self.clip_norm is not None:
            parts.append(f"clip_norm={self.clip_norm}")
        return f"{type(self).__name__}({', '.join(parts)})"

    # ------------------------------------------ the study's decay, as before
    @property
    def first_lr(self):
        """The rate the schedule starts from."""
        return self.schedule.lr

    @property
    def final_lr(self):
        return getattr(self.schedule, "final_lr", None) if self.decay_type else None

    @property
    def decay_type(self):
        return {_schedules.LinearDecay: "linear", _schedules.ExponentialDecay: "exponential"
                }.get(type(self.schedule))

    @property
    def lr(self):
        """The current learning rate (the device keeps a copy). With a per-step
        schedule, the rate of the epoch's first step."""
        return self._lr

    @lr.setter
    def lr(self, value):
        if self.schedule.per == "step":
            # every step reads the epoch's table of rates: a rate set here would be
            # reported (records, logs) but never used
            raise _checks.InputValueError(
                f"optim.lr = {value!r}: {self.schedule!r} sets the rate of every step, so "
                "a rate set by hand would not be used; change the schedule, or use a "
                "per-epoch one (per=\"epoch\") and set the rate in a callback's "
                "on_epoch_start")
        plateau = isinstance(self.schedule, _schedules.ReduceOnPlateau)
        in_run = self.__dict__.get("_in_run", False)
        # a hand loop drives ReduceOnPlateau without optim.start: before any run, take it
        if not self._is_plain_constant() and not in_run \
                and not (plateau and self.max_epochs is None):
            # start() sets the first epoch's rate from the schedule: this one would be lost
            raise _checks.InputValueError(
                f"optim.lr = {value!r}: {self.schedule!r} sets the rate when a run starts (fit, "
                "or optim.start), so a rate set outside a run would be replaced; give the "
                "schedule the rate, or set it during the run (a callback's on_epoch_start)")
        self._set_lr(value)
        self._keep_constant()
        if plateau:  # its later cuts go on from this rate, not from its own
            self.schedule.current = self._lr
            if not in_run:  # a run started now would start from the schedule's lr: say so
                self._rate_before_run = self._lr

    def _is_plain_constant(self):
        return type(self.schedule) is _schedules.Constant and not self.schedule.warmup

    def _keep_constant(self):
        """A constant rate set by hand replaces the constant: it holds for the
        rest of the run, a resumed run and later fits (a schedule that follows
        the run sets each epoch's rate itself). The schedule, and so the
        optimiser's settings (its ``repr``, which ``resume=`` compares), stay
        as constructed: the rate set is state, as the rate of a decay is."""
        if self._is_plain_constant():
            self._by_hand = self._lr

    def _set_lr(self, value):
        # 0 is allowed: a linear decay may end there
        self._lr = _checks.non_negative("lr", value)
        if self._device is not None:  # in place: a recorded step reads this array
            self.net.backend.assign(self._device["lr"], self._lr)

    @property
    def velocity(self):
        """The SGD family's velocity (None before the first step, or for plain SGD)."""
        return self.state.get("velocity")

    @velocity.setter
    def velocity(self, value):
        if value is None:
            self.state.pop("velocity", None)
        else:
            self.state["velocity"] = value

    # -------------------------------------------------------- the schedule
    def host_settings(self):
        """The optimiser's settings that a recorded step (a CUDA graph) holds
        as the values it was recorded with: its public attributes of plain
        numbers (weight decay, clipping, momentum, betas, ...), by name. The
        rate and the step count are not among them: they live in device
        arrays. ``Trainer.fit`` records its steps again when these change
        (an optimiser of one's own keeps what changes every step or epoch in
        private attributes, ``_name``, or in device arrays)."""
        settings = _checks.plain_settings(self, ("net", "max_epochs", "steps_per_epoch"))
        return tuple(sorted(settings.items()))

    def attach(self, net):
        """Update the parameters of ``net`` from now on (forgets any state)."""
        _checks.network(net, "attach(net): net")  # not at the first step(), deep inside
        self.net = net
        self.state = {}
        self._device = None

    def forget_state(self):
        """Back to no step taken: the state buffers (Adam's moments, the
        velocity...) cleared and the step count at 0, together (Adam's bias
        correction goes with its moments; Adagrad's ``lr_decay``, which counts
        steps, starts over). The rate and the plan stay. The trainer calls it
        when training diverged: the buffers hold the NaNs."""
        self.state = {}
        if self._device is not None:
            self.net.backend.assign(self._device["t"], 0)

    def start(self, epochs, steps_per_epoch=None, *, continuing=False):
        """Plan the schedule for a run of ``epochs`` epochs (of
        ``steps_per_epoch`` steps; needed by per-step schedules) and go back
        to its first rate, with no step taken. ``Trainer.fit`` calls it.
        ``continuing=True`` (``fit(restart=False)``) keeps what a schedule that
        follows the evaluations has learnt (``ReduceOnPlateau``'s rate, best
        loss and counts): a loop of one-epoch fits never cut the rate."""
        epochs = _checks.integer("epochs", epochs)
        if steps_per_epoch is not None:
            steps_per_epoch = _checks.integer("steps_per_epoch", steps_per_epoch)
        elif self.schedule.per == "step":
            raise _checks.InputValueError(
                f"{self.schedule!r} changes the rate every step: pass steps_per_epoch to "
                "start(epochs, steps_per_epoch) (Trainer.fit does)")
        self.schedule.check_run(self._units(epochs, steps_per_epoch))
        by_hand = self.__dict__.pop("_rate_before_run", None)
        keeps = continuing and hasattr(self.schedule, "restart")  # a plateau going on
        if by_hand is not None and not keeps:
            _checks.warn_caller(
                f"optim.lr = {by_hand!r} was set before this run; {self.schedule!r} starts "
                "the run from its own rate (a hand loop without optim.start keeps it): give "
                "the schedule the rate", _checks.InputWarning)
        if hasattr(self.schedule, "restart") and not keeps:
            self.schedule.restart()
        self.max_epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self._in_run = True  # until end_run(): a rate set by hand now is used
        # a hand loop's steps are counted against the plan (Trainer.fit, whose
        # recorded steps run without this Python, plans them itself)
        self._plan = {"counted": True, "taken": 0, "warned": False}
        if self._device is not None and "rates" in self._device \
                and self._device["rates"].shape[0] != steps_per_epoch:
            del self._device["rates"]  # made again at the next step, for this run's epochs
        self.start_epoch(0)

    def end_run(self):
        """The run ``start`` planned is over (``Trainer.fit`` says so as it
        returns): a rate set by hand from now on would be replaced by the
        next run's plan, so a schedule that follows the run refuses it."""
        self._in_run = False

    def setup_decay(self, epochs):
        """The study's name for ``start(epochs)`` (per-epoch schedules)."""
        self.start(epochs)

    def _units(self, epochs, steps_per_epoch):
        return epochs * steps_per_epoch if self.schedule.per == "step" else epochs

    def lr_at(self, epoch):
        """The rate of epoch ``epoch`` (0-based; with a per-step schedule, of its
        first step) in the run planned by ``start``."""
        if self.__dict__.get("_by_hand") is not None:
            return self._by_hand
        if self.max_epochs is None:
            return self._unplanned_rate()
        if self.schedule.per == "step":
            return self.schedule.rate(epoch * self.steps_per_epoch,
                                      self._units(self.max_epochs, self.steps_per_epoch))
        return self.schedule.rate(epoch, self.max_epochs)

    def _unplanned_rate(self):
        """Before a run is planned, the first rate of a long one (OneCycle's
        start, not the end a one-unit run would jump to)."""
        return self.schedule.rate(0, self.schedule.warmup + 1000)

    def start_epoch(self, epoch):
        """Set the rates of epoch ``epoch`` (0-based) on the device: one value,
        or for a per-step schedule the epoch's table of rates (one upload)."""
        epoch = _checks.integer("epoch", epoch, minimum=0)
        rate = self.lr_at(epoch)
        if self.__dict__.get("_by_hand") is None:  # the schedule's: named if it is no rate
            rate = self._checked(rate, "its first rate" if self.max_epochs is None else
                                 f"{self.schedule.per} {epoch * self.steps_per_epoch} (0-based, "
                                 f"of {self._units(self.max_epochs, self.steps_per_epoch)})"
                                 if self.schedule.per == "step" else
                                 f"epoch {epoch} (0-based, of {self.max_epochs})")
        self._set_lr(rate)
        if "_plan" in self.__dict__:
            self._plan["taken"] = 0
        if self.schedule.per == "step" and self.max_epochs is not None:
            total = self._units(self.max_epochs, self.steps_per_epoch)
            first = epoch * self.steps_per_epoch
            self._rates = [self._checked_rate(first + i, total)
                           for i in range(self.steps_per_epoch)]
            if self._device is not None and "rates" in self._device:
                self._upload_rates()

    def _checked_rate(self, t, total):
        """The schedule's rate of step ``t``, refused unless a number >= 0 (a
        per-step table is not checked again when the steps read it)."""
        return self._checked(self.schedule.rate(t, total), f"step {t} (0-based, of {total})")

    def _checked(self, rate, what):
        try:
            return _checks.non_negative("lr", rate)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{self.schedule!r} gave {what} the rate {rate!r}; a learning "
                            "rate must be a number >= 0") from None

    def decay(self, epoch):
        """Set the rate for the epoch after ``epoch``: the study's call at the
        end of each epoch."""
        if self.decay_type is not None and self.max_epochs is None:
            raise RuntimeError(f"decay() needs the run's length to follow its {self.decay_type} "
                               "schedule: call setup_decay(epochs) first (Trainer.fit does)")
        self.start_epoch(epoch + 1)

    def evaluated(self, loss):
        """Show the schedule an evaluation loss (``ReduceOnPlateau`` acts on it);
        a cut applies at once (in ``fit``, whose evaluations end an epoch:
        from the next epoch)."""
        if loss is not None and getattr(loss, "shape", None) != () and (
                _checks._is_bool(loss) or not isinstance(loss, numbers.Real)):
            raise _checks.InputTypeError(f"evaluated(loss={loss!r}): the evaluation loss must "
                                         "be one number (or None: no evaluation)")
        self.schedule.evaluated(loss)
        if self.schedule.per == "epoch" and not self.schedule.follows_the_run:
            # the rate depends on the evaluations alone: a hand loop that never calls
            # start_epoch must see the cut too
            self._set_lr(self.lr_at(0))  # the same at every epoch (or the rate set by hand)

    # --------------------------------------------------------------- steps
    def _check_net(self):
        net = self.net
        if net is None:
            raise RuntimeError("this optimizer has no network: use Trainer(net, optim) "
                               "or optim.attach(net) first")
        if not net.built:
            raise RuntimeError("optim.step(): the network this optimiser updates (the one last "
                               "given to Trainer(net, optim) or optim.attach(net)) has no "
                               "parameters yet: train that network, or attach the one you train")
        return net

    def _prepare(self, net):
        """The device scalars and state buffers, made once (and again if the
        network was rebuilt with buffers of another size)."""
        b, params = net.backend, net.param_buffer
        if self._device is None:
            self._device = {"lr": b.asarray(self._lr), "t": b.zeros_int(())}
        if self.schedule.per == "step" and "rates" not in self._device:
            if self.max_epochs is None:
                raise RuntimeError(
                    f"{self.schedule!r} changes the rate every step: call "
                    "optim.start(epochs, steps_per_epoch) before the first step "
                    "(Trainer.fit does)")
            self._device["rates"] = b.zeros((self.steps_per_epoch,))
            self._device["s"] = b.zeros_int(())
            self._upload_rates()
        elif self.max_epochs is None and self.schedule.follows_the_run:
            raise RuntimeError(
                f"{self.schedule!r} changes the rate with the epoch: call optim.start(epochs) "
                "before the first step and optim.start_epoch(epoch) as each epoch begins "
                "(Trainer.fit does); without them every step would use its first rate")
        for name in self.state_names:
            buf = self.state.get(name)
            if buf is None or tuple(buf.shape) != tuple(params.shape):
                self.state[name] = b.zeros(params.shape)

    def _upload_rates(self):
        b = self.net.backend
        b.assign(self._device["rates"], b.asarray(self._rates))
        b.assign(self._device["s"], 0)

    def step(self):
        """Apply one update from the gradients in the network's ``grad_buffer``."""
        net = self._check_net()
        self._prepare(net)
        # trained now (a hand loop's too): a later fit that redraws its weights says so
        net.__dict__["_trained"] = True
        b, dev = net.backend, self._device
        # a float16 network's train_step leaves its gradient multiplied by the loss scale
        scaler = net.loss_scaler if getattr(net, "_scaled_grads", False) else None
        scale = None
        if scaler is not None:  # divide the loss scale out; negative: skip this step
            scale = b.unscale_factor(net.grad_buffer, scaler.scale_of(b), self.clip_norm)
        elif self.clip_norm is not None:
            scale = b.clip_scale(net.grad_buffer, self.clip_norm)
        if self.schedule.per == "step":
            self._count_planned_step()
            b.tick(dev["t"], dev["lr"], dev["rates"], dev["s"])
        elif self.counts_steps:
            b.tick(dev["t"])
        if scaler is None:
            self._update(b, net.param_buffer, net.grad_buffer, scale)
            return
        if self.counts_steps:
            b.uncount_skipped(dev["t"], scale)

        def update():
            self._update(b, net.param_buffer, net.grad_buffer, scale)
        if b.update_kernels_skip and self._kernel_skips():
            update()  # the backend's update kernel leaves everything when scale < 0
        else:
            arrays = [net.param_buffer] + [self.state[k] for k in self.state_names
                                           if self.state.get(k) is not None]
            b.update_unless_skipped(scale, arrays, update)
        scaler.after_step(b, scale)

    def _count_planned_step(self):
        """A per-step schedule's table holds ``steps_per_epoch`` rates: say so
        once if a hand loop takes more steps in an epoch (they would all get
        the epoch's last rate)."""
        plan = self.__dict__.get("_plan")
        if plan is None or not plan["counted"]:
            return
        plan["taken"] += 1
        if plan["taken"] == self.steps_per_epoch + 1 and not plan["warned"]:
            plan["warned"] = True
            _checks.warn_caller(
                f"{self.schedule!r}: this epoch has taken more than the {self.steps_per_epoch} "
                "steps that optim.start(epochs, steps_per_epoch) planned, and its further "
                "steps all get the epoch's last rate: give start() the number of batches in "
                "an epoch, and call optim.start_epoch(epoch) as each epoch begins "
                "(Trainer.fit does both)", UserWarning)

    def _kernel_skips(self):
        """True if this optimiser's update is one backend update method (the
        built-in ones), whose device kernel skips a step by itself; an update
        of one's own is skipped by the backend's generic copy-and-restore."""
        for cls in type(self).__mro__:
            if "_update" in cls.__dict__:
                return cls.__dict__.get("_backend_update", False)
        return False

    # ------------------------------------------- for an update of one's own
    @property
    def rate(self):
        """The rate of the step being taken: the 0-d device array every step
        reads (``lr`` is a host figure, the epoch's first rate)."""
        self._check_net()
        self._prepare(self.net)
        return self._device["lr"]

    @property
    def step_count(self):
        """The number of steps taken, the current one included (a 0-d device
        integer; counted only with ``counts_steps = True``)."""
        self._check_net()
        self._prepare(self.net)
        return self._device["t"]

    def state_arrays(self):
        """Every device array the optimiser's next steps read besides the
        parameters: its state buffers (by name) and its step count, made if not
        yet; a distributed fit copies rank 0's into every rank's, in place."""
        self._check_net()
        self._prepare(self.net)
        return [self.state[name] for name in sorted(self.state)] + [self._device["t"]]

    def gradient(self, b, param, grad, scale):
        """The gradient ``_update`` should use: ``grad`` clipped (and, in a
        float16 network, unscaled) by ``scale``, with the L2 ``weight_decay``
        added; a new array only if either applies."""
        return b._decayed(grad, param, self.weight_decay, scale)

    def _update(self, b, param, grad, scale):
        raise NotImplementedError(
            f"{type(self).__name__} defines no _update(b, param, grad, scale), which updates "
            "the flat parameter buffer param in place from grad (see docs/training.md, "
            "'Parts of your own')")

    # ------------------------------------------------------------ resuming
    def state_for_checkpoint(self):
        """``(plain data, arrays)``: what a resumed run needs besides the
        parameters (the rate, the step count, the schedule's own state and
        the state buffers)."""
        b = self.net.backend if self.net is not None else None
        steps = 0 if self._device is None else int(b.to_numpy(self._device["t"]))
        data = {"lr": self._lr, "steps": steps, "max_epochs": self.max_epochs,
                "steps_per_epoch": self.steps_per_epoch, "schedule": self.schedule.state()}
        scaler = getattr(self.net, "loss_scaler", None)
        if scaler is not None:  # float16: the loss scale and its count of good steps
            data["loss_scale"] = list(scaler.state(b))
            data["loss_scaler"] = repr(scaler)  # its rules, which resume= compares
        return data, dict(self.state)

    def load_checkpoint_state(self, data, arrays, epoch):
        """Put back ``state_for_checkpoint`` output for a run resuming at ``epoch``."""
        net = self.net
        self.start(data["max_epochs"], data.get("steps_per_epoch"))
        self.schedule.load_state(data.get("schedule", {}))
        self.start_epoch(epoch)
        self._set_lr(data["lr"])
        self._keep_constant()
        b = net.backend
        self.state = {k: b.asarray(v) for k, v in arrays.items()}
        self._prepare(net)
        b.assign(self._device["t"], int(data.get("steps", 0)))
        scaler = getattr(net, "loss_scaler", None)
        if scaler is not None and data.get("loss_scale") is not None:
            scaler.load_state(b, *data["loss_scale"])
