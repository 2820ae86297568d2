"""Checks of scalar arguments shared by the public entry points: each raises
before any work starts, naming the argument, its value and what was expected.
NumPy scalars are accepted like Python numbers; booleans are not numbers here."""

from __future__ import annotations

import difflib
import functools
import math
import numbers
import os
import sys
import warnings


class InputError(Exception):
    """nnx refused an argument or data given to it; the message names the
    argument, its value and what was expected. Raised as ``InputValueError``
    or ``InputTypeError``, which are also ``ValueError`` and ``TypeError``."""


class InputValueError(InputError, ValueError):
    """An argument or data whose value nnx cannot use."""


class InputTypeError(InputError, TypeError):
    """An argument or data whose type nnx cannot use."""




class InputWarning(UserWarning):
    """nnx accepted an argument or data that will likely train badly; the
    message says why and what to do."""


for _cls in (InputError, InputValueError, InputTypeError, InputWarning):
    _cls.__module__ = "nnx"  # shown as nnx.InputValueError, the name users import


def short_refusals(fn):
    """``fn`` as a public entry point: a refusal raised anywhere inside it
    surfaces with a traceback that starts here, not 13-26 frames deep in nnx,
    so the caller sees their own line and the message. Bugs (anything that
    is not an ``InputError``) keep their whole traceback."""
    @functools.wraps(fn)
    def entry(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            raise exc.with_traceback(None) from None
        except TypeError as exc:
            words = _binding_words(fn, args, kwargs, exc)
            if words is None:  # raised inside, not by the call's arguments: a bug
                raise
            raise InputTypeError(words).with_traceback(None) from None
    entry.short_refusals = True
    return entry


# other libraries' keywords (Keras, PyTorch, scikit-learn) and what nnx calls them
_FOREIGN_KEYWORDS = {
    "validation_data": "nnx's is validation=(X_val, y_val)",
    "learning_rate": "nnx's is lr= (the first argument)",
    "beta_1": "nnx's Adam takes betas=(beta1, beta2)",
    "beta_2": "nnx's Adam takes betas=(beta1, beta2)",
    "epsilon": "nnx's is eps=",
    "rho": "nnx's RMSprop calls it alpha=",
    "momentum": "momentum is SGDMomentum's: nnx.SGDMomentum(lr, momentum=0.9)",
    "nesterov": "Nesterov momentum is SGDMomentum's: nnx.SGDMomentum(lr, 0.9, nesterov=True)",
    "restore_best_weights": "nnx's is restore_best=",
    "T_max": "the schedule's length is fit's epochs (or steps): Cosine(lr, final_lr)",
    "eta_min": "nnx's is final_lr=",
    "max_lr": "nnx's OneCycle takes its peak as lr= (the first argument)",
    "units": "nnx's Dense takes the count first: Dense(neurons, activation)",
    "input_dim": "a Dense takes its input width from the data (or net.build(n_in))",
    "input_shape": "a Dense takes its input width from the data (or net.build(n_in))",
    "kernel_initializer": "nnx's is weight_init= (\"glorot\", \"he\", ...)",
    "shuffle": "fit always shuffles each epoch, in an order drawn from seed=",
    "sample_weight": "Trainer.fit takes no sample weights; nnx.sklearn's estimators do "
                     "(MLPClassifier().fit(X, y, sample_weight=w))",
    "class_weight": "Trainer.fit takes no class weights; weight the rows with nnx.sklearn's "
                    "estimators (fit(X, y, sample_weight=w))",
    "on_epoch_end": "LambdaCallback(fn) calls fn(epoch, record) after each epoch; for other "
                    "hooks subclass nnx.Callback",
    "mode": "nnx's watches the evaluation loss, lower being better (PyTorch's mode='min')",
    "amsgrad": "nnx's Adam has no AMSGrad variant",
}


def _binding_words(fn, args, kwargs, exc):
    """Words for a call whose arguments ``fn`` cannot take (Python's own
    "unexpected keyword argument 'validation_data'"), with what nnx calls
    another library's keyword, or a close name; None when the arguments bind
    (the TypeError came from inside)."""
    import inspect
    try:
        sig = inspect.signature(fn)
        sig.bind(*args, **kwargs)
        return None
    except ValueError:  # no signature to read
        return None
    except TypeError:
        pass
    words = str(exc).replace(".__init__()", "()")  # Python names the call itself
    taken = [p for p in sig.parameters if p != "self"]
    for key in kwargs:
        if key in sig.parameters or any(p.kind is p.VAR_KEYWORD
                                        for p in sig.parameters.values()):
            continue
        if key in _FOREIGN_KEYWORDS:
            return f"{words}: {_FOREIGN_KEYWORDS[key]}"
        close = difflib.get_close_matches(key, taken, n=1, cutoff=0.6)
        if close:
            return f"{words} (did you mean {close[0]}=?)"
        break
    return f"{words}; it takes ({', '.join(taken)})"


def warn_caller(message, category=None, also=()):
    """``warnings.warn`` pointed at the first frame outside nnx (and outside
    the packages ``also``, e.g. scikit-learn's wrappers around an estimator's
    fit): the user's line, however deep inside nnx the warning is raised."""
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    skip = (here, *(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in also))
    frame, level = sys._getframe(0), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(skip):
        frame, level = frame.f_back, level + 1
    if frame is None:  # none of the user's own (a worker process of joblib, say)
        level = 2
    warnings.warn(message, category or InputWarning, stacklevel=level)


def shorten_refusals(cls, names):
    """Wrap the methods ``names`` that ``cls`` defines itself (classmethods
    included) with ``short_refusals``."""
    for name in names:
        attr = cls.__dict__.get(name)
        if attr is None or getattr(attr, "short_refusals", False):
            continue
        if isinstance(attr, classmethod):
            setattr(cls, name, classmethod(short_refusals(attr.__func__)))
        elif callable(attr):
            setattr(cls, name, short_refusals(attr))


def _is_bool(value):
    return isinstance(value, bool) or type(value).__name__ in ("bool_", "bool")  # NumPy 1, 2


def is_true(value):
    """True for ``True`` and NumPy's ``True_`` only (not for 1 or a non-empty list)."""
    return _is_bool(value) and bool(value)


def asks_to_stop(result, who):
    """Whether a callback's ``result`` asks training to stop: True (or NumPy's
    True_) does; None and False do not; anything else (1, a loss) does not
    either, and is said once per place it comes from, since it looks meant."""
    if result is None or _is_bool(result):
        return bool(result)
    if who not in _SAID:
        _SAID.add(who)
        warn_caller(f"{who} returned {result!r} ({type(result).__name__}); only True stops "
                    "training (return True to stop, or None to go on)", InputWarning)
    return False


_SAID = set()  # what asks_to_stop has warned of, once each


def network(net, where="net"):
    """``net`` itself if it is a NeuralNetwork; otherwise a refusal naming
    ``where`` (arguments given in the wrong order land here)."""
    from .network import NeuralNetwork  # the network module imports this one
    if not isinstance(net, NeuralNetwork):
        raise InputTypeError(f"{where} must be a NeuralNetwork, got {type(net).__name__}")
    return net


def integer(name, value, minimum=1):
    """An int ``>= minimum`` (Python or NumPy integer)."""
    if _is_bool(value) or not isinstance(value, numbers.Integral) or value < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(
            minimum, f"an integer >= {minimum}")
        kind = InputValueError if isinstance(value, numbers.Real) and not _is_bool(value) \
            else InputTypeError  # "2", None, True: not a number of any kind
        raise kind(f"{name}={value!r} must be {what}")
    return int(value)


def number(name, value):
    """A finite real number (Python or NumPy), returned as a float."""
    _real(name, value, "a finite number")
    if not math.isfinite(value):
        raise InputValueError(f"{name}={value!r} must be a finite number")
    return float(value)


def _real(name, value, what="a number"):
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be {what}, got {value!r}")


def non_negative(name, value):
    """A number >= 0 (NaN is not)."""
    _real(name, value)
    if not value >= 0 or not math.isfinite(value):
        raise InputValueError(f"{name}={value!r} must be a number >= 0")
    return float(value)


def in_range(name, value, low, high, low_open=False, high_open=False, hint=""):
    """A finite number in the interval given by ``low``/``high`` and their openness."""
    _real(name, value)
    value = float(value)  # NaN fails both comparisons, so it is reported with the range
    ok = (low < value if low_open else low <= value) and (
        value < high if high_open else value <= high)
    if not ok:
        lb, rb = "(" if low_open else "[", ")" if high_open else "]"
        raise InputValueError(f"{name}={value!r} must be in {lb}{low:g}, {high:g}{rb}{hint}")
    return value


# names other libraries use for one of nnx's (offered only where it is a choice)
_SYNONYMS = {"cuda": "gpu", "cupy": "gpu", "device": "gpu", "numpy": "cpu", "host": "cpu",
             "swish": "silu", "identity": "linear", "logistic": "sigmoid", "lrelu": "leaky_relu",
             "bce": "sigmoid_cross_entropy", "binary_cross_entropy": "sigmoid_cross_entropy",
             "binary_crossentropy": "sigmoid_cross_entropy",
             "bce_with_logits": "sigmoid_cross_entropy", "log_loss": "softmax_cross_entropy",
             "cross_entropy": "softmax_cross_entropy",
             "categorical_crossentropy": "softmax_cross_entropy",
             # PyTorch's and Keras's class names (compared without case, _ or -)
             "bce_with_logits_loss": "sigmoid_cross_entropy", "bce_loss": "sigmoid_cross_entropy",
             "cross_entropy_loss": "softmax_cross_entropy", "nll_loss": "softmax_cross_entropy",
             "sparse_categorical_crossentropy": "softmax_cross_entropy",
             "mean_squared_error": "mse", "mse_loss": "mse", "squared_error": "mse"}


def _plain_name(text):
    """A name without case, underscores, hyphens or spaces: BCEWithLogitsLoss
    and bce_with_logits_loss alike."""
    return "".join(c for c in text.lower() if c not in "_- ")


_PLAIN_SYNONYMS = {_plain_name(k): v for k, v in _SYNONYMS.items()}
# other libraries' losses that nnx lacks, whose names are close to one it has
_OTHER_LOSSES = {_plain_name(k) for k in (
    "mae", "l1", "l1_loss", "mean_absolute_error", "rmse", "msle",
    "mean_squared_logarithmic_error", "sse", "huber", "smooth_l1", "hinge", "kl_div",
    "kld", "poisson", "cosine")}


def plain_settings(obj, exclude=()):
    """``obj``'s public attributes of plain values (numbers, strings,
    tuples; None left out, as the arrays of a pass are between passes), by
    name: the host settings a recorded step (a CUDA graph) holds as it was
    recorded (a Dropout's keep_prob, an optimiser's momentum)."""
    def plain(v):
        return isinstance(v, (bool, numbers.Number, str)) or (
            isinstance(v, tuple) and all(isinstance(e, (bool, numbers.Number, str)) for e in v))
    exclude = (*exclude, *getattr(obj, "_pass_state", ()))  # an operation's arrays of a pass
    return {k: v for k, v in vars(obj).items()
            if not k.startswith("_") and k not in exclude and plain(v)}


def did_you_mean(value, choices):
    """`` (did you mean 'tanh'?)`` for a misspelt name close to one of
    ``choices``, or another library's name for one, else an empty string."""
    if not isinstance(value, str):
        return ""
    known = {str(c) for c in choices}
    if value.lower() == "softmax" and "linear" in known and "tanh" in known:  # activations
        return (" (softmax belongs to the loss: give the output layer 'linear' and the "
                "network nnx.SoftmaxCrossEntropy(), which applies it)")
    plain, plain_value = {_plain_name(c): c for c in known}, _plain_name(value)
    if plain_value in plain:  # SoftmaxCrossEntropy, Leaky-ReLU
        return f" (did you mean {plain[plain_value]!r}?)"
    if _PLAIN_SYNONYMS.get(plain_value) in known:
        return f" (did you mean {_PLAIN_SYNONYMS[plain_value]!r}?)"
    if "mse" in known and (plain_value in _OTHER_LOSSES or plain_value.endswith("loss")
                           and plain_value[:-4] in _OTHER_LOSSES):  # not a misspelt "mse"
        return " (a loss nnx does not have)"
    by_lower = {str(c).lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def name_in(name, value, choices):
    """One of ``choices`` (strings); the message lists them all, and the
    closest one when the value looks like a misspelling of it."""
    if not isinstance(value, str) or value not in choices:
        raise InputValueError(f"{name}={value!r} is not known{did_you_mean(value, choices)}; "
                              f"expected one of {sorted(choices)}")
    return value
