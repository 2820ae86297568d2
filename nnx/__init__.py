"""nnx: a small neural-network framework that runs the same code on NumPy
(``backend="cpu"``) and CuPy (``backend="gpu"``)."""

from ._checks import InputError, InputTypeError, InputValueError, InputWarning
from .backend import Backend, BackendUnavailableError, get_backend, gpu_available
from .layers import Dense, Layer
from .losses import Loss, MeanSquaredError, SoftmaxCrossEntropy
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

__all__ = [
    "Backend", "BackendUnavailableError", "get_backend", "gpu_available",
    "Operation", "ParamOperation", "WeightMultiply", "BiasAdd",
    "Linear", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "ReLU6", "GELU", "SiLU", "ELU", "Dropout",
    "Layer", "Dense", "Loss", "MeanSquaredError", "SoftmaxCrossEntropy",
    "Optimizer", "SGD", "SGDMomentum", "Adam", "AdamW", "RMSprop", "Adagrad",
    "Schedule", "Constant", "LinearDecay", "ExponentialDecay", "StepDecay", "Cosine", "OneCycle",
    "ReduceOnPlateau", "NeuralNetwork", "Trainer", "History", "TrainingDiverged",
    "Callback", "EarlyStopping", "Checkpoint", "CSVLogger", "LambdaCallback", "PrintProgress",
    "ProgressBar",
    "accuracy", "predict_classes", "InputError", "InputValueError", "InputTypeError",
    "InputWarning",
    "__version__",
]
