"""nnx: a small neural-network framework that runs the same code on NumPy
(``backend="cpu"``) and CuPy (``backend="gpu"``)."""

from ._checks import InputError, InputTypeError, InputValueError, InputWarning
from .backend import Backend, BackendUnavailableError, get_backend, gpu_available
from .layers import Dense, Layer
from .losses import Loss, MeanSquaredError, SigmoidCrossEntropy, SoftmaxCrossEntropy
from .metrics import accuracy, predict_classes
from .network import NeuralNetwork
from .ops import (
    ELU,
    GELU,
    BiasAdd,
    Dropout,
    LeakyReLU,
    Linear,
    Operation,
    ParamOperation,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Tanh,
    WeightMultiply,
)
from .optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    Constant,
    Cosine,
    ExponentialDecay,
    LinearDecay,
    OneCycle,
    Optimizer,
    ReduceOnPlateau,
    RMSprop,
    Schedule,
    SGDMomentum,
    StepDecay,
)
from .precision import LossScaler
from .train import (
    Callback,
    Checkpoint,
    CSVLogger,
    EarlyStopping,
    History,
    LambdaCallback,
    PrintProgress,
    ProgressBar,
    Trainer,
    TrainingDiverged,
)

__version__ = "0.1.0"


def _entry_points():
    """The calls a user makes raise refusals from the call itself (a short
    traceback); per-batch internals are left alone."""
    from . import _checks, metrics
    own = {"NeuralNetwork": ("build", "forward", "backward", "train_batch", "predict",
                             "predict_proba", "loss_on", "save", "load", "set_parameters",
                             "to_onnx"),
           "Trainer": ("fit",), "Optimizer": ("attach", "start", "start_epoch", "setup_decay")}
    for name in __all__:
        obj = globals().get(name)
        if isinstance(obj, type) and not issubclass(obj, (BaseException, Backend)):
            for cls in obj.__mro__:
                if cls.__module__.startswith("nnx"):
                    _checks.shorten_refusals(cls, ("__init__", *own.get(cls.__name__, ())))
    for name in ("accuracy", "predict_classes"):
        wrapped = _checks.short_refusals(getattr(metrics, name))
        setattr(metrics, name, wrapped)
        globals()[name] = wrapped



__all__ = [
    "Backend", "BackendUnavailableError", "get_backend", "gpu_available",
    "Operation", "ParamOperation", "WeightMultiply", "BiasAdd",
    "Linear", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "ReLU6", "GELU", "SiLU", "ELU", "Dropout",
    "Layer", "Dense", "Loss", "MeanSquaredError", "SoftmaxCrossEntropy", "SigmoidCrossEntropy",
    "Optimizer", "SGD", "SGDMomentum", "Adam", "AdamW", "RMSprop", "Adagrad",
    "Schedule", "Constant", "LinearDecay", "ExponentialDecay", "StepDecay", "Cosine", "OneCycle",
    "ReduceOnPlateau", "NeuralNetwork", "LossScaler", "Trainer", "History", "TrainingDiverged",
    "Callback", "EarlyStopping", "Checkpoint", "CSVLogger", "LambdaCallback", "PrintProgress",
    "ProgressBar",
    "accuracy", "predict_classes", "InputError", "InputValueError", "InputTypeError",
    "InputWarning",
    "__version__",
]

_entry_points()

# modules loaded when first named (nnx.checkpoint.read_header after a plain
# `import nnx`), so that importing nnx does not import them all
# (not nnx.report: it needs matplotlib, an extra, and chooses its backend)
_SUBMODULES = frozenset({"checkpoint", "cluster", "data", "onnx", "optimizers", "sklearn",
                         "study", "tables", "trainer"})


def __getattr__(name):
    if name in _SUBMODULES:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBMODULES)
