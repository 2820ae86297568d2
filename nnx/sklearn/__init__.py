"""scikit-learn's multi-layer perceptrons on nnx: ``MLPClassifier`` and
``MLPRegressor`` take scikit-learn's parameters and give its numbers (float64,
CPU), and add ``backend="gpu"``, ``dtype`` and ``dropout``. They work in
pipelines, searches, ``clone`` and pickles like any scikit-learn estimator.
See docs/sklearn.md.
"""

from ._classes import MLPClassifier, MLPRegressor
from ._onnx import register_skl2onnx

__all__ = ["MLPClassifier", "MLPRegressor", "register_skl2onnx"]
