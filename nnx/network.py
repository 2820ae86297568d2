"""NeuralNetwork: layers, a loss, one random generator, one device."""

from __future__ import annotations

import copy
import math
import sys
import types
import weakref

from . import _checks
from ._checks import InputTypeError, InputValueError
from .backend import get_backend, host
from .layers import Dense, Layer
from .losses import LOSSES, Loss
from .precision import LossScaler


class ClassIds:
    """Targets given as class ids, kept as one int32 per row on the device
    (``NeuralNetwork.as_target(..., ids=True)``): ``Trainer.fit`` makes each
    batch's one-hot rows as it takes the batch (``one_hot_rows``,
    ``gather_one_hot``) instead of holding the whole set's, which would take
    ``classes`` numbers of the compute dtype per row. ``shape`` is that of the
    rows they stand for."""

    def __init__(self, ids, classes):
        self.ids, self.shape = ids, (int(ids.shape[0]), int(classes))

    def __getitem__(self, rows):
        """The ids of a slice of the rows (``y[lo:hi]``), as ``ClassIds``."""
        if not isinstance(rows, slice):
            raise InputTypeError("ClassIds takes a slice of rows, as y[lo:hi]")
        return ClassIds(self.ids[rows], self.shape[1])

    def one_hot(self, backend, lo, hi):
        """The one-hot rows of rows ``lo`` to ``hi`` (a new device array)."""
        return backend.one_hot_rows(self.ids, backend.row_range(lo, hi),
                                    backend.empty((hi - lo, self.shape[1])))


class _ClassOrInstance:
    """A method that does one thing called on the class and another called
    on an instance: ``NeuralNetwork.load(path)`` makes a new network,
    ``net.load(path)`` loads into ``net`` (it returned a new one, which a
    PyTorch or Keras habit threw away: ``net`` was silently unchanged).
    Generic in its two functions; ``load`` is its only use."""

    short_refusals = True  # each function is wrapped here already

    def __init__(self, on_class, on_instance):
        for fn in (on_class, on_instance):  # as help() and tracebacks name them
            fn.__name__ = "load"
            fn.__qualname__ = "NeuralNetwork.load"
        self.on_class = _checks.short_refusals(on_class)
        self.on_instance = _checks.short_refusals(on_instance)
        self.__doc__ = on_class.__doc__

    def __get__(self, obj, owner=None):
        if obj is None:
            return types.MethodType(self.on_class, owner)
        return types.MethodType(self.on_instance, obj)


class NeuralNetwork:
    """A stack of layers trained against a loss.

    Parameters
    ----------
    layers : list of Layer
    loss : Loss, or its name ("softmax_cross_entropy", "mse")
    seed : int or None
        Seeds the network's generators: initial weights are drawn on the host
        (so every backend starts from the same numbers), dropout masks on the
        device. ``None`` picks a fresh seed, kept in ``self.seed``.
    backend : "cpu", "gpu" or a Backend
    dtype : "float32" or "float64": every array the network owns. The default
        is float32, or the dtype of a Backend given as ``backend``.
    precision : "float32", "tf32", "bfloat16" or "float16"
        How the matrix products run (``nnx.precision``): exact float32 (the
        default, or a given Backend's), or on tensor cores with TF32 or
        half-precision operands, everything else staying float32. A float16
        network scales its loss (``loss_scaler``, a ``LossScaler``).

    All parameters live in one flat buffer on the device; each layer's weights
    and biases are views into it, and likewise for the gradients, so an
    optimiser step is a few whole-buffer operations.
    """

    def __init__(self, layers, loss, seed=None, backend="cpu", dtype=None, precision=None):
        if isinstance(layers, (Layer, str, bytes)) or not hasattr(layers, "__iter__"):
            raise InputTypeError(f"layers must be a list of Layer objects (e.g. [Dense(10)]), "
                                 f"got {type(layers).__name__}")
        layers = list(layers)
        if not layers or not all(isinstance(la, Layer) for la in layers):
            raise InputTypeError("layers must be a non-empty list of Layer objects (e.g. Dense)")
        if len({id(la) for la in layers}) != len(layers):
            raise InputValueError("the same Layer object appears twice in layers")
        if isinstance(loss, str):
            loss = LOSSES[_checks.name_in("loss", loss, LOSSES)]()
        if not isinstance(loss, Loss):
            raise InputTypeError(f"loss must be a Loss (e.g. SoftmaxCrossEntropy()) or one of "
                                 f"{sorted(LOSSES)}, got {loss!r}")
        if loss.classification and layers[-1].neurons < 2:
            raise InputValueError(f"{type(loss).__name__} needs one output per class, but the last "
                                  "layer has 1: a softmax over one output is always 1, so the loss "
                                  "would be 0 with no gradient; use 2 outputs for two classes")
        last = getattr(layers[-1], "activation", None)
        if (loss.classification or loss.binary) and last is not None \
                and getattr(last, "name", None) != "linear":
            _checks.warn_caller(
                f"the output layer applies {type(last).__name__} before {type(loss).__name__}, "
                f"which applies its own {'sigmoid' if loss.binary else 'softmax'}: squashing "
                "the outputs first slows learning and caps the accuracy; give the last layer a "
                f"linear activation (Dense({layers[-1].neurons}, 'linear'))")
        if seed is not None:
            seed = _checks.integer("seed", seed, minimum=0)
        for i, layer in enumerate(layers):
            owner = layer._owner() if layer._owner is not None else None
            if owner is not None:
                raise InputValueError(
                    f"layers[{i}] ({layer!r}) already belongs to another NeuralNetwork, whose "
                    "parameters it holds; give each network its own layer objects")
        self.backend = get_backend(backend, dtype, precision)
        # float16 operands need the loss scaled; the others keep float32's range
        self.loss_scaler = LossScaler() if self.backend.precision == "float16" else None
        self.layers = layers
        for layer in layers:
            layer._owner = weakref.ref(self)
        # the loss keeps this network's backend and last batch: a copy of its
        # own, so two networks given one loss object never share them
        self.loss = copy.copy(loss)
        self.loss._bind(self.backend)
        self.seed = host.fresh_seed() if seed is None else seed
        self.n_in = None
        # a pandas DataFrame's column names the network was trained on (see
        # note_columns): later frames must name the same columns in this order
        self.feature_names = None
        self._param_buf = self._grad_buf = None
        self._scaled_grads = False  # whether grad_buffer holds loss-scaled gradients
        self._graph_memory = None  # a fit's graphs, kept while custom parts may hold their arrays
        self._seed_generators()

    def __reduce__(self):
        """``pickle`` and ``copy.deepcopy`` rebuild the network from its layers'
        settings, its loss, seed and backend, then put back its parameters and
        its generators' state: the copy has layers and flat buffers of its own
        and goes on training exactly as the original would. (A GPU network's
        parameters travel through the host; CuPy's generator state cannot be
        read, so a copied GPU network draws dropout masks from a fresh stream.)"""
        state = {"n_in": self.n_in,
                 "params": self.backend.to_numpy(self._param_buf) if self.built else None,
                 "init_rng": self._init_rng.bit_generator.state,
                 "rng": self.generator_state(),
                 "loss_scaler": self.loss_scaler,
                 # what a subclass or load() added (checkpoint_meta, ...)
                 "attributes": {k: v for k, v in self.__dict__.items() if k not in _OWN}}
        return (_rebuild, (type(self), [layer._settings_copy() for layer in self.layers],
                           self.loss, self.seed, self.backend, state))

    def __repr__(self):
        return (f"NeuralNetwork({self.layers}, {type(self.loss).__name__}, seed={self.seed}, "
                f"backend={self.backend.name!r}, dtype={self.backend.dtype_name!r})")

    def __str__(self):
        return self.summary()

    def summary(self):
        """A table of the layers: units, activation, dropout, output shape and
        parameter count, with the totals (what ``print(net)`` shows)."""
        rows = [("layer", "units", "activation", "dropout", "output", "parameters")]
        width, total = self.n_in, 0
        for i, layer in enumerate(self.layers, 1):
            # from the layer's own shapes: a layer of one's own may hold any parameters
            count = None if width is None else sum(
                math.prod(shape) for shape in layer.param_shapes(width))
            total = None if count is None or total is None else total + count
            act = getattr(layer, "activation", None)
            keep = getattr(layer, "dropout", 1.0)
            rows.append((f"{i} {type(layer).__name__}", str(layer.neurons),
                         type(act).__name__ if act is not None else "-",
                         f"keep {keep:g}" if keep < 1 else "-", f"(rows, {layer.neurons})",
                         "?" if count is None else f"{count:,}"))
            width = layer.neurons
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        count = f"{len(self.layers)} layer" + ("s" if len(self.layers) != 1 else "")
        lines = [f"NeuralNetwork: {count}, {type(self.loss).__name__}, "
                 f"backend {self.backend.name} {self.backend.dtype_name}, seed {self.seed}",
                 f"input: (rows, {self.n_in if self.n_in is not None else '?'})"]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        if total is None:
            lines.append("parameters: not built yet (fit, forward or build(n_in) creates them)")
        else:
            size = total * (4 if self.backend.dtype_name == "float32" else 8)
            lines.append(f"parameters: {total:,} ({size / 2**20:.2f} MiB in "
                         f"{self.backend.dtype_name})")
        return "\n".join(lines)

    @property
    def n_out(self) -> int:
        return self.layers[-1].neurons

    @property
    def built(self) -> bool:
        return self._param_buf is not None

    # ------------------------------------------------- the public contract
    # What optimisers, the trainer and tools use: the two flat buffers and a
    # training step on data already on the device.
    @property
    def param_buffer(self):
        """Every parameter in one flat device array (W1, B1, W2, B2, ... in
        order); each layer's arrays are views into it, so writing it in place
        changes the network."""
        if self._param_buf is None:  # read at every step: no more than this check
            self.require_built("param_buffer")
        return self._param_buf

    @property
    def grad_buffer(self):
        """The gradients of the last training step, laid out like ``param_buffer``."""
        if self._grad_buf is None:
            self.require_built("grad_buffer")
        return self._grad_buf

    def _seed_generators(self):
        init_seed, device_seed = host.spawn_seeds(self.seed, 2)
        self._init_rng = self.backend.host_generator(init_seed)
        self._use_generator(self.backend.generator(device_seed))

    def _use_generator(self, rng):
        self.rng = rng
        for layer in self.layers:  # dropout ops keep a reference to the generator
            for op in layer.operations:
                if hasattr(op, "rng"):
                    op.rng = rng

    def generator_state(self):
        """The dropout generator's state as plain data, or None where the backend
        cannot export it (CuPy)."""
        return self.backend.generator_state(self.rng)

    def restore_generator(self, state, epoch):
        """Put the dropout generator back in ``state``; without one, reseed it
        from the network's seed and ``epoch`` (a fresh but reproducible stream)."""
        if state is not None and self.backend.set_generator_state(self.rng, state):
            return True
        self._use_generator(self.backend.generator(host.derive_seed(self.seed, 1, epoch)))
        return False

    # ------------------------------------------------------------------ build
    def build(self, n_in):
        """Create every parameter for inputs of width ``n_in`` (done by the first
        forward pass; call it yourself to inspect weights before training).
        A network too large to allocate is refused, and a build that fails
        leaves the network (and its weight generator) as it was."""
        n_in = _checks.integer("n_in", n_in)
        widths = [n_in] + [layer.neurons for layer in self.layers]
        total = sum(a * c + c for a, c in zip(widths[:-1], widths[1:]))  # weights and biases
        if total > sys.maxsize // 8:  # beyond any array NumPy or CuPy can index
            raise InputValueError(f"a network of widths {widths} has {total:,} parameters, "
                                  "more than any array can hold")
        before = ([dict(layer.__dict__) for layer in self.layers], self._param_buf,
                  self._grad_buf, self.n_in, self._init_rng.bit_generator.state)
        try:
            self._build(n_in)
        except BaseException as exc:
            for layer, state in zip(self.layers, before[0]):
                layer.__dict__.clear()
                layer.__dict__.update(state)
            self._param_buf, self._grad_buf, self.n_in = before[1:4]
            self._init_rng.bit_generator.state = before[4]
            if isinstance(exc, MemoryError):  # CuPy's OutOfMemoryError is one too
                raise InputValueError(
                    f"a network of widths {widths} has {total:,} parameters: too many to "
                    f"allocate in {self.backend.dtype_name} ({type(exc).__name__}: {exc})"
                ) from None
            raise

    def _build(self, n_in):
        b = self.backend
        listed, width = [], n_in
        for layer in self.layers:
            listed.append([tuple(int(n) for n in shape) for shape in layer.param_shapes(width)])
            width = layer.neurons
        shapes = [shape for layer_shapes in listed for shape in layer_shapes]
        sizes = [math.prod(shape) for shape in shapes]
        self._param_buf = b.zeros((sum(sizes),))
        self._grad_buf = b.zeros((sum(sizes),))
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        slots = iter(zip(offsets, shapes))
        taken = {}  # id of each view alloc() gave -> (the view, its offset, its shape)

        def alloc(shape):
            slot = next(slots, None)
            if slot is None or tuple(shape) != slot[1]:
                raise InputValueError(
                    f"a layer's setup asked alloc() for a parameter of shape {tuple(shape)}, "
                    f"but its param_shapes(n_in) listed {'no more' if slot is None else slot[1]}"
                    ": param_shapes must list every parameter, in the order setup allocates")
            view = b.view(self._param_buf, slot[0], shape)
            taken[id(view)] = (view, *slot)
            return view

        width = n_in
        for layer, layer_shapes in zip(self.layers, listed):
            before = len(taken)
            layer.setup(width, b, self._init_rng, self.rng, alloc)
            if len(taken) - before != len(layer_shapes):
                raise InputValueError(
                    f"{type(layer).__name__}.setup took {len(taken) - before} parameter(s) "
                    f"from alloc(), but its param_shapes({width}) listed {len(layer_shapes)}: "
                    "every parameter listed must be taken from alloc(), which places it in "
                    "the network's buffers (the optimiser trains those, not arrays of a "
                    "layer's own)")
            layer.built = True  # a layer of one's own may not say so itself
            width = layer.neurons
        self._place_gradients(taken)
        self.n_in = n_in
        self._built_layers = tuple(self.layers)  # see _check_layers

    def _place_gradients(self, taken):
        """Each operation's gradient into the slot of the gradient buffer that
        matches its parameter's in the parameter buffer, found by the parameter
        itself: a layer may apply its operations in another order than it
        allocated their parameters."""
        b, owner = self.backend, {}
        for layer in self.layers:
            for op in layer.operations:
                if not hasattr(op, "param"):
                    continue
                what = f"{type(layer).__name__}'s {type(op).__name__}"
                slot = taken.get(id(op.param))
                if slot is None or slot[0] is not op.param:
                    raise InputValueError(
                        f"{what} has a parameter that its setup did not take from alloc() "
                        "(or took and then reshaped, transposed or copied): give the "
                        "operation the array alloc(shape) returned")
                if id(op.param) in owner:
                    raise InputValueError(
                        f"{what} and {owner[id(op.param)]} share one parameter: each "
                        "operation's gradient would overwrite the other's; give each its own")
                owner[id(op.param)] = what
                op.param_grad = op.grad_out = b.view(self._grad_buf, *slot[1:])

    def reset(self):
        """Re-seed the generators, draw the initial weights again and start
        the loss scale (float16) from its initial value."""
        self._seed_generators()
        # fresh weights: nothing trained or loaded for a later fit to warn of replacing
        self.__dict__.pop("_trained", None)
        self.__dict__.pop("_loaded_from", None)
        self.feature_names = None  # what fresh weights learned nothing of
        if self.loss_scaler is not None:
            self.loss_scaler.reset()
        if self.built:
            for layer in self.layers:
                layer.reset_parameters(self._init_rng)

    # ---------------------------------------------------------- data crossing
    def on_host(self, x, name):
        """True for host data (NumPy arrays, lists), False for arrays of this
        network's backend; arrays of any other device raise."""
        if host.is_host_array(x):
            return True
        if self.backend.owns(x):
            return False
        if any(hasattr(x, a) for a in ("__array_namespace__", "__cuda_array_interface__",
                                       "__dlpack__")):
            lib = type(x).__module__.split(".")[0]
            how = f"{name}.numpy() (on the CPU), " if lib == "torch" else ""
            raise InputValueError(
                f"{name} is an array of {lib}, not on this network's device "
                f"({self.backend.name}), which takes NumPy arrays (and lists, pandas) or arrays "
                f"of its own device: pass {how}np.asarray({name}), or move it first")
        return True

    def as_input(self, X, name="X", rows=False, convert=True, columns=True, finite=True):
        """``X`` on this network's device in its dtype: host data is checked
        and uploaded (one copy); arrays already on the device pass through.
        ``rows=True``: host data comes C-contiguous too (its rows are gathered
        into batches), in the same one conversion. ``convert=False``: host
        data is checked and returned as it is, for a caller that converts a
        chunk of rows at a time (inference). ``columns=False``: a DataFrame's
        column names are not compared with ``feature_names`` (a fit's data,
        which may be going to replace them). ``finite=False``: NaN and
        infinities pass (checked by the caller already)."""
        b = self.backend
        if host.is_sparse(X):
            return self._sparse_input(X, name)
        if self.on_host(X, name):
            if columns:
                self._check_columns(X, name)
            X = host.check_features(X, name, self.n_in, b.dtype_name, finite)
            if b.precision == "float16":
                host.check_half_range(host.largest_magnitude(X), name)
            if not convert:
                return X
            if rows and not X.flags.c_contiguous:  # cast, then copied again by its rows
                X = host.c_order(X, b.dtype_name)
            return b.asarray(X)
        if len(X.shape) != 2 or 0 in X.shape or (self.n_in is not None
                                                 and X.shape[1] != self.n_in):
            raise InputValueError(f"{name} has shape {tuple(X.shape)}; expected (rows, "
                                  f"{self.n_in if self.n_in else 'features'}), neither of them 0")
        if b.precision == "float16":  # two reductions on the device, no temporary
            xp = b.xp
            host.check_half_range(float(b.to_numpy(xp.maximum(xp.max(X), -xp.min(X)))), name)
        return b.asarray(X)

    def note_columns(self, names, fresh, evaluation=None):
        """Take ``names`` (``host.column_names`` of a DataFrame about to be
        trained on; None for other data) as the network's ``feature_names``:
        always for ``fresh`` weights, else where it has none yet; weights
        trained on other columns refuse them, as they refuse an evaluation
        frame of other columns (``evaluation``, its names) beside training
        rows of none. ``Trainer.fit`` calls it."""
        if not fresh and names is None and evaluation is not None and \
                self.feature_names is not None and evaluation != self.feature_names:
            raise InputValueError(
                "the evaluation set is a DataFrame of other columns than the network was "
                f"trained on: {host.differing_columns(evaluation, self.feature_names)}; "
                "select and order them as in training (X_val[list(net.feature_names)])")
        if fresh or self.feature_names is None:
            self.feature_names = names
        elif names is not None and names != self.feature_names:
            raise InputValueError(
                "X_train is a DataFrame of other columns than the network was trained on: "
                f"{host.differing_columns(names, self.feature_names)}; select and order them "
                "as before (X_train[list(net.feature_names)]), or pass restart=True to train "
                "new weights on these")

    def _check_columns(self, X, name):
        """Refuse a DataFrame whose column names differ from those the network
        was trained on: the same values in another order would otherwise give
        wrong predictions without a word. NumPy arrays are not checked."""
        host.check_same_columns(X, name, self.feature_names, "the network",
                                "list(net.feature_names)")

    def _sparse_input(self, X, name):
        """SciPy sparse rows, kept sparse (CSR in the compute dtype): the first
        layer multiplies them with SciPy's sparse product, as scikit-learn's
        MLP does. Only on the CPU, and only into a Dense first layer (no
        other operation takes a sparse matrix)."""
        if self.backend.name != "cpu":
            raise InputTypeError(f"{name} is a SciPy sparse matrix: sparse input trains and "
                                 f"predicts on the CPU backend only (this network is on "
                                 f"{self.backend.name!r}); pass {name}.toarray() if it fits "
                                 "in memory")
        if not self.layers or not isinstance(self.layers[0], Dense):
            raise InputTypeError(f"{name} is a SciPy sparse matrix: only a Dense first layer "
                                 f"takes sparse rows (this network's is "
                                 f"{type(self.layers[0]).__name__ if self.layers else 'none'}); "
                                 f"pass {name}.toarray()")
        X = host.check_sparse_features(X, name, self.n_in, self.backend.dtype_name)
        if self.backend.precision == "float16" and X.nnz:  # the stored values are the operands
            host.check_half_range(host.largest_magnitude(X.data), name)
        return X

    def as_target(self, y, n_rows, name="y", x_name="X", ids=False):
        """Class ids or one-hot/target rows -> ``(n_rows, n_out)`` on the device.
        ``ids=True``: class ids come back as ``ClassIds`` (int32 on the
        device, one per row), not as one-hot rows."""
        b = self.backend
        if self.on_host(y, name):
            rows = host.check_targets(
                y, n_rows, self.n_out, name, distributions=self.loss.classification,
                x_name=x_name, dtype=b.dtype_name, unit=self.loss.binary, ids_only=ids)
            if rows.ndim == 1:  # ids (ids_only): as they are
                return ClassIds(b.asarray(rows, dtype=b.xp.int32), self.n_out)
            return b.asarray(rows)
        if tuple(y.shape) == (n_rows,) and self.n_out > 1 and "int" in str(y.dtype):
            return self._device_ids(y, name, ids)
        if tuple(y.shape) != (n_rows, self.n_out):
            raise InputValueError(f"{name} on the device must have shape ({n_rows}, {self.n_out}),"
                                  f" or ({n_rows},) of integer class ids, got {tuple(y.shape)}")
        return b.asarray(y)

    def _device_ids(self, y, name, ids):
        """Integer class ids already on the device: checked in range (one read
        of their least and largest), as ``ClassIds`` or their one-hot rows."""
        b, xp = self.backend, self.backend.xp
        low, high = (int(v) for v in b.to_numpy(xp.stack([xp.min(y), xp.max(y)])))
        if low < 0 or high >= self.n_out:
            raise InputValueError(f"{name}: class ids must be in [0, {self.n_out - 1}] for a "
                                  f"network with {self.n_out} outputs, got values from {low} "
                                  f"to {high}")
        found = ClassIds(b.astype(y, xp.int32), self.n_out)
        return found if ids else found.one_hot(b, 0, int(y.shape[0]))

    @property
    def feature_names(self):
        """The column names of the DataFrame the network was trained on (a
        tuple of strings), or None: later frames must name the same columns
        in the same order."""
        return self.__dict__.get("_feature_names")

    @feature_names.setter
    def feature_names(self, names):
        if names is not None:
            names = tuple(names) if not isinstance(names, (str, bytes)) else None
            if names is None or not all(isinstance(c, str) for c in names) or \
                    (self.n_in is not None and len(names) != self.n_in):
                raise InputValueError(
                    f"feature_names must be None or {self.n_in or 'the'} column names "
                    "(strings), one per input")
        self.__dict__["_feature_names"] = names

    # ------------------------------------------------------------- the passes
    def forward(self, X, inference=False):
        X = self.as_input(X)
        if not self.built:
            self.build(int(X.shape[1]))
        return self._infer(X, inference)

    def backward(self, loss_grad, input_grad=True):
        """Back-propagate ``loss_grad``; returns the gradient with respect to the
        network's input, or None with ``input_grad=False`` (saves a matmul)."""
        self.require_built()
        self._scaled_grads = False  # what a caller passes in is the gradient itself
        for layer in reversed(self.layers[1:]):
            loss_grad = layer.backward(loss_grad)
        return self.layers[0].backward(loss_grad, input_grad)

    def train_batch(self, X, y):
        """Forward, loss, backward. Returns the batch loss as a 0-d device array
        (``float()`` reads it; the training loop does not, to avoid a sync)."""
        X = self.as_input(X)
        if not self.built:
            self.build(int(X.shape[1]))
        return self.train_step(X, self.as_target(y, int(X.shape[0])))

    def train_step(self, X, y, weight=1.0):
        """Forward, loss and backward on a batch already on the device (from
        ``as_input`` and ``as_target``), without checks: the training loop's
        per-batch path. The gradients land in ``grad_buffer``; returns the
        batch loss as a 0-d device array. ``weight`` multiplies the loss's
        gradient (a rank's share of a distributed batch: each row's gradient
        is then the single process's). In a float16 network the gradients
        are those of the loss times ``loss_scaler``'s current scale, which the
        optimiser's next step divides out (``backward`` called directly
        leaves the gradient it is given unscaled)."""
        if not self.built:  # its layers would make weights of their own, outside the buffers
            self.build(int(X.shape[1]))
        prediction = self._infer(X, inference=False)
        loss = self.loss.forward(prediction, y)
        grad = self.loss.backward()
        if self.loss_scaler is not None:  # the optimiser divides it out again
            scale = self.loss_scaler.scale_of(self.backend)
            grad = grad * (scale if weight == 1.0 else scale * weight)
        elif weight != 1.0:
            grad = grad * weight
        self.backward(grad, input_grad=False)
        self._scaled_grads = self.loss_scaler is not None
        return loss

    def forget_pass(self):
        """Let go of the arrays the last pass left in the layers and the loss
        (inputs, outputs, masks, what the gradients needed): the next
        ``backward`` needs a ``forward`` first. ``Trainer.fit`` calls it when
        it ends after replaying recorded (CUDA graph) steps, whose arrays live
        in memory that goes with the graphs."""
        for layer in self.layers:
            if "output" in layer.__dict__:
                layer.output = None
            for op in layer.operations:
                for k in op._pass_state:
                    if k in op.__dict__:
                        setattr(op, k, None)
        for k in ("prediction", "target", "value", "_grad", "input_grad"):
            if k in self.loss.__dict__:
                setattr(self.loss, k, None)

    def params(self):
        """The parameter arrays in layer order: W1, B1, W2, B2, ..."""
        for layer in self.layers:
            yield from layer.params()

    def param_grads(self):
        """The gradients of the last ``train_batch``, in the order of ``params()``."""
        for layer in self.layers:
            yield from layer.param_grads()

    # ------------------------------------------------------------- snapshots
    def get_parameters(self):
        """A copy of all parameters as one flat device array."""
        self.require_built()
        return self.backend.copy(self._param_buf)

    def set_parameters(self, flat):
        """Write a flat parameter array (from ``get_parameters``) back in place."""
        self.require_built()
        if not self.backend.owns(flat):
            self.on_host(flat, "flat")  # an array of another device is refused, named
            flat = self.backend.asarray(host.plain(flat, "flat", "a flat array of parameters"))
        if tuple(flat.shape) != tuple(self._param_buf.shape):
            raise InputValueError(f"parameters have shape {tuple(flat.shape)}, expected "
                                  f"{tuple(self._param_buf.shape)}")
        self.backend.assign(self._param_buf, flat)

    def require_built(self, what=None):
        """Raise ``RuntimeError`` (prefixed with ``what``) unless the network has parameters."""
        if not self.built:
            raise RuntimeError((f"{what}: " if what else "") + "the network has no parameters "
                               "yet: call fit(), build(n_in) or forward() first")
        self._check_layers()

    def _check_layers(self):
        """Refuse a built network whose ``layers`` list was changed since: its
        parameters live in one buffer laid out for the layers it was built with
        (an appended layer failed deep inside, an IndexError)."""
        built = getattr(self, "_built_layers", None)
        if self.built and built is not None and (
                len(built) != len(self.layers)
                or any(a is not b for a, b in zip(built, self.layers))):
            raise InputValueError(
                f"net.layers was changed after the network was built ({len(built)} layers "
                f"then, {len(self.layers)} now): a network's layers are fixed once it has "
                "parameters; make a new NeuralNetwork with the layers you want")

    # ------------------------------------------------------------ checkpoints
    def describe(self) -> dict:
        """The architecture as plain data: enough to rebuild the network."""
        return {
            "layers": [layer.describe() for layer in self.layers],
            "loss": self.loss.describe(),
            "dtype": self.backend.dtype_name,
            "precision": self.backend.precision,
            "seed": self.seed,
            "n_in": self.n_in,
            **({} if self.feature_names is None
               else {"feature_names": list(self.feature_names)}),
        }

    def save(self, path, extra=None, training=None, meta=None):
        """Write parameters and architecture to ``path`` (atomically, no pickle).
        ``extra`` (name -> array) is stored alongside, e.g. optimiser state;
        ``training`` (plain data) is the trainer's state for resuming; ``meta``
        (plain data, e.g. the dataset's name) comes back as ``checkpoint_meta``
        after ``load``. See ``nnx.checkpoint.save_network``."""
        from .checkpoint import save_network
        return save_network(self, path, extra=extra, training=training, meta=meta)

    def _load_new(cls, path, backend="cpu", dtype=None, precision=None):
        """A network rebuilt from a checkpoint written by ``save``, on ``backend``
        (any backend loads any checkpoint), in its saved dtype unless ``dtype``,
        with exact float32 products unless ``precision`` (the precision it was
        trained with is in its header, but predicting does not need it; pass
        it to go on training, or resume, as it was). See
        ``nnx.checkpoint.load_network``.

        Called on a network instead, ``net.load(path)`` puts the saved
        parameters into ``net`` (as Keras's ``load_weights``): see
        ``_load_into``."""
        from .checkpoint import load_network
        return load_network(path, backend=backend, dtype=dtype, cls=cls, precision=precision)

    def _load_into(self, path):
        """``net.load(path)``: the parameters saved at ``path`` (and the column
        names it trained on) put into this network, on its backend and in its
        dtype; returns the network. The checkpoint must hold a network of the
        same input width, layers, activations and loss (dropout and the weight
        initialisation may differ: they do not change what the weights mean)."""
        from .checkpoint import load_network
        saved = load_network(path, backend=self.backend)
        def shape(desc, n_in):  # what the weights mean
            layers = [{k: v for k, v in d.items() if k not in ("dropout", "weight_init")}
                      if isinstance(d, dict) else d for d in desc["layers"]]
            return {"layers": layers, "loss": desc["loss"], "n_in": n_in}
        mine = shape(self.describe(), self.n_in if self.built else saved.n_in)
        theirs = shape(saved.describe(), saved.n_in)
        if mine != theirs:
            from .train.trainer import _network_differences
            words = _network_differences(theirs, mine, 1, where=(" in the checkpoint",
                                                                 " in this network"))
            if mine["n_in"] != theirs["n_in"]:
                words.append(f"{theirs['n_in']} inputs in the checkpoint but "
                             f"{mine['n_in']} in this network")
            raise InputValueError(
                f"net.load({str(path)!r}): the checkpoint holds another network: "
                + "; ".join(words) + "; to get the saved network itself, "
                "net = nnx.NeuralNetwork.load(path)")
        if not self.built:
            self.build(saved.n_in)
        self.set_parameters(saved.get_parameters())
        self.feature_names = saved.feature_names
        self.checkpoint_extra, self.checkpoint_meta = saved.checkpoint_extra, saved.checkpoint_meta
        return self

    load = _ClassOrInstance(_load_new, _load_into)

    def to_onnx(self, path, output=None, opset=None):
        """Write the network as an ONNX model to ``path`` (atomically); returns
        ``path``. Needs the ``onnx`` extra: ``pip install 'nnx-dl[onnx]'``.

        ``output`` is what the model returns: "raw" (the outputs, as
        ``predict``), "softmax", "sigmoid" or "exp" of the outputs, or
        "binary" (a one-output network's ``[1 - p, p]``, ``p`` the logistic
        of its output for a sigmoid cross-entropy, else the output clipped
        into [0, 1]); the default is what ``predict_proba`` gives
        (``probability_output``). The input is named "X", of shape ``(N, n_in)`` in
        the network's dtype; ``opset`` defaults to 17. Dropout is left out, as
        at inference. See ``nnx.onnx.export_network``."""
        from .onnx import export_network
        if output is None:
            output = self.probability_output
        return export_network(self, path, output=output, opset=opset)

    @property
    def probability_output(self):
        """How the outputs become what ``predict_proba`` gives, by the name of
        ONNX export's ``output``: "softmax" for a softmax cross-entropy
        network, "binary" ([1 - p, p]) for one sigmoid cross-entropy output,
        "sigmoid" for several, "raw" otherwise."""
        if self.loss.classification:
            return "softmax"
        if self.loss.binary:
            return "binary" if self.n_out == 1 else "sigmoid"
        return "raw"

    @property
    def reports_accuracy(self):
        """Whether evaluations measure an accuracy: a softmax cross-entropy
        network of several classes, or a sigmoid cross-entropy one with one
        output (a binary classifier; several outputs may be labels of their
        own, which no single accuracy describes)."""
        return (self.loss.classification and self.n_out > 1) or \
            (self.loss.binary and self.n_out == 1)

    # ------------------------------------------------------------- inference
    def predict(self, X, batch_size=1024):
        """Network outputs for ``X`` in inference mode, on the device,
        computed in chunks of ``batch_size`` rows."""
        batch_size = _checks.integer("batch_size", batch_size)
        self.require_built("predict")
        return self._predict(self.as_input(X, convert=False), batch_size)

    def _predict(self, X, batch_size, each=None):
        """``predict`` of checked rows (``as_input(..., convert=False)``): host
        rows are converted and uploaded a chunk at a time, so the whole of X
        is never copied into the compute dtype or onto the device. ``each``
        maps a chunk's outputs to what is kept of them (probabilities, say),
        chunk by chunk into one array made at the first: the whole set's
        outputs are held once (a list of chunks, then their concatenation,
        then a softmax's two whole-set temporaries held them three times)."""
        b, n = self.backend, int(X.shape[0])

        def chunk(i):
            part = X[i:min(i + batch_size, n), :]
            kept = self._infer(part if host.is_sparse(part) else b.asarray(part))
            return kept if each is None else each(kept)

        out = chunk(0)
        if n > batch_size:
            first, out = out, b.empty((n, *out.shape[1:]), dtype=out.dtype)
            out[:batch_size] = first
            for i in range(batch_size, n, batch_size):
                out[i:min(i + batch_size, n)] = chunk(i)
        self.forget_pass()  # the layers held the last chunk (a view of all of X, maybe)
        return out

    def predict_proba(self, X, batch_size=1024):
        """Class probabilities for ``X``, one row per sample, on the device: the
        softmax of the outputs for a softmax cross-entropy network; the sigmoid
        of each output for a sigmoid cross-entropy one (``[1 - p, p]`` for one
        output); for another network with one output (a sigmoid, or a linear
        output, trained on 0/1 targets), the columns ``1 - p`` and ``p`` with
        ``p`` the output clipped into [0, 1], and a warning where the outputs
        stray far outside [0, 1], as a regression's values do. Computed a
        chunk of ``batch_size`` rows at a time."""
        batch_size = _checks.integer("batch_size", batch_size)
        self.require_built("predict_proba")
        if not (self.loss.classification or self.loss.binary or self.n_out == 1):
            raise InputValueError(
                f"predict_proba needs a classification loss (softmax or sigmoid cross-entropy) "
                f"or one output; this network has {self.n_out} outputs and "
                f"{type(self.loss).__name__}: use predict()")
        seen = []
        out = self._predict(self.as_input(X, convert=False), batch_size,
                            lambda z: self._probabilities(z, seen))
        self.warn_unless_probabilities(seen, "predict_proba")
        return out

    def _probabilities(self, out, seen):
        """``predict_proba`` of one chunk's outputs; a clipped output's range
        goes into ``seen``."""
        b, xp = self.backend, self.backend.xp
        if self.loss.classification:
            return b.softmax(out)
        if self.loss.binary:
            out = b.sigmoid(out)
        if self.loss.binary and self.n_out > 1:
            return out
        if not self.loss.binary:
            self.note_range(out, seen)
        p = xp.clip(out, 0.0, 1.0)
        return xp.concat([1.0 - p, p], axis=1) if hasattr(xp, "concat") else \
            xp.concatenate([1.0 - p, p], axis=1)

    def note_range(self, out, seen):
        """Keep the smallest and largest of a chunk's outputs (on the device)."""
        xp = self.backend.xp
        seen.append(self.backend.stack([xp.min(out), xp.max(out)]))

    def warn_unless_probabilities(self, seen, what):
        """Say when the outputs read as probabilities (a one-output network
        trained on 0/1 targets, not with a cross-entropy) stray far from [0, 1]:
        a regression's values clipped into "probabilities" of [[0, 1], ...] and
        a class of 1 everywhere, silently."""
        if not seen:
            return
        b = self.backend
        ranges = b.to_numpy(b.stack(seen))  # one transfer
        lo, hi = float(ranges[:, 0].min()), float(ranges[:, 1].max())
        if lo < -0.5 or hi > 1.5:
            _checks.warn_caller(
                f"{what}: this network's one output ranges from {lo:.4g} to {hi:.4g}, far "
                "outside [0, 1], yet it is read as the probability of class 1 (clipped into "
                f"[0, 1]): a {type(self.loss).__name__} network of values (a regression) has "
                "no classes; use predict() for its values, or train a classifier "
                "(SigmoidCrossEntropy)", _checks.InputWarning)

    def _infer(self, X, inference=True):
        for layer in self.layers:
            X = layer.forward(X, inference)
        return X

    def loss_on(self, X, y, batch_size=1024):
        """Mean loss over ``(X, y)`` in inference mode, as a 0-d device array."""
        batch_size = _checks.integer("batch_size", batch_size)
        X = self.as_input(X, convert=False)  # checked; mean_loss converts it by chunks
        if not self.built:
            self.build(int(X.shape[1]))
        return self.mean_loss(X, self._targets(y, int(X.shape[0])), batch_size)

    def _targets(self, y, n_rows, name="y", x_name="X"):
        """``as_target`` for training and evaluation: class ids stay ids
        (``ClassIds``) through nnx's own ``as_target`` and ``mean_loss``; a
        subclass's own, written for target rows, gets rows as ever."""
        cls = type(self)
        ids = cls.as_target is NeuralNetwork.as_target and \
            cls.mean_loss is NeuralNetwork.mean_loss
        return self.as_target(y, n_rows, name, x_name, ids=True) if ids else \
            self.as_target(y, n_rows, name, x_name)

    def mean_loss(self, X, y, batch_size=1024, accuracy=False):
        """``loss_on`` for data already on the device, without checks (the
        trainer's evaluations). With ``accuracy=True``, also the share of rows
        whose largest output is the target's class (for one output: whose
        output is on the target's side of the loss's ``threshold``):
        ``(loss, accuracy)``, both 0-d device arrays, from the same forward pass."""
        b, n = self.backend, int(X.shape[0])
        if not self.built:
            self.build(int(X.shape[1]))
        total = correct = None
        for i in range(0, n, batch_size):
            rows = min(batch_size, n - i)
            part = X[i:i + rows, :]  # host rows (from loss_on) converted a chunk at a time
            out = self._infer(part if host.is_sparse(part) else b.asarray(part))
            # class ids (ClassIds): one chunk's one-hot rows at a time
            target = y.one_hot(b, i, i + rows) if isinstance(y, ClassIds) else y[i:i + rows, :]
            part = self.loss.forward(out, target) * (rows / n)
            total = part if total is None else total + part
            if accuracy:
                truth = y.ids[i:i + rows] if isinstance(y, ClassIds) else b.argmax_rows(target)
                same = (out[:, 0] > self.loss.threshold) == (target[:, 0] > 0.5) \
                    if self.n_out == 1 else b.argmax_rows(out) == truth
                hits = b.xp.sum(b.astype(same, b.dtype))
                correct = hits if correct is None else correct + hits
        loss = b.xp.asarray(total)  # NumPy arithmetic gives a scalar, not 0-d
        self.forget_pass()  # the layers and the loss held views of the whole set
        return (loss, correct / n) if accuracy else loss


# the attributes NeuralNetwork itself keeps; a copy rebuilds them
_OWN = frozenset({"backend", "layers", "loss", "seed", "n_in", "_param_buf", "_grad_buf",
                  "_scaled_grads", "_graph_memory", "_init_rng", "rng", "loss_scaler",
                  "_built_layers"})


def _rebuild(cls, layers, loss, seed, backend, state):
    """The network ``NeuralNetwork.__reduce__`` describes (of class ``cls``,
    whose own ``__init__`` is not called, as pickle does)."""
    net = cls.__new__(cls)
    NeuralNetwork.__init__(net, layers, loss, seed=seed, backend=backend)
    if state["n_in"] is not None:
        net.build(state["n_in"])
        net.set_parameters(net.backend.asarray(state["params"]))
    net._init_rng.bit_generator.state = state["init_rng"]
    if state["rng"] is not None:
        net.backend.set_generator_state(net.rng, state["rng"])
    net.loss_scaler = state.get("loss_scaler", net.loss_scaler)
    net.__dict__.update(state["attributes"])
    return net
