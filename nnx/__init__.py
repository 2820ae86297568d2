"""nnx: a small neural-network framework that runs the same code on NumPy
(``backend="cpu"``) and CuPy (``backend="gpu"``)."""

from ._checks import InputError, InputTypeError, InputValueError
from .backend import Backend, BackendUnavailableError, get_backend, gpu_available
from .layers import Dense, Layer
from .losses import Loss, MeanSquaredError, SoftmaxCrossEntropy
from .metrics import accuracy, predict_classes
from .network import NeuralNetwork
from .ops import (
                  BiasAdd,
                  Dropout,
                  LeakyReLU,
                  Linear,
                  Operation,
                  ParamOperation,
                  ReLU,
                  ReLU6,
                  Sigmoid,
                  Tanh,
                  WeightMultiply,
)
from .optimizers import SGD, Optimizer, SGDMomentum
from .trainer import History, Trainer, TrainingDiverged

__version__ = "0.1.0"

__all__ = [
    "Backend", "BackendUnavailableError", "get_backend", "gpu_available",
    "Operation", "ParamOperation", "WeightMultiply", "BiasAdd",
    "Linear", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "ReLU6", "Dropout",
    "Layer", "Dense", "Loss", "MeanSquaredError", "SoftmaxCrossEntropy",
    "Optimizer", "SGD", "SGDMomentum", "NeuralNetwork", "Trainer", "History", "TrainingDiverged",
    "accuracy", "predict_classes", "InputError", "InputValueError", "InputTypeError",
    "__version__",
]
