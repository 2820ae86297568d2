"""The nnx estimators inside skl2onnx conversions: a scikit-learn Pipeline
that ends in (or holds) ``nnx.sklearn.MLPClassifier`` or ``MLPRegressor``
becomes one ONNX model with ``skl2onnx.to_onnx``, as scikit-learn's own
estimators do, once ``register_skl2onnx()`` has been called.

The network's part of the graph is the one ``to_onnx(path)`` writes (nnx's
own export, checked against onnxruntime), spliced into skl2onnx's graph under
fresh names and computed in the pipeline input's float type. A classifier
gives skl2onnx's two outputs, ``label`` (``classes_`` by the largest
probability, or by p > 0.5 for a binary or multilabel problem, as
``predict``) and ``probabilities`` (``predict_proba``; skl2onnx's ``zipmap``
option applies as to its own classifiers). A regressor gives ``variable``,
rows x outputs, including the Poisson loss's exp output (skl2onnx's
converter for scikit-learn's own MLPRegressor has none).
"""

from __future__ import annotations

import numpy as np

from .._checks import InputValueError


def _proto_type(operator):
    """The ONNX element type of the operator's input (1 FLOAT, 11 DOUBLE, ...)."""
    from skl2onnx.common.data_types import guess_proto_type
    return guess_proto_type(operator.inputs[0].type)


def _input_dtype(operator):
    """The float type the network computes in: the input's, float32 for any
    but float64 (integer features are cast to float32 first)."""
    return "float64" if _proto_type(operator) == 11 else "float32"


def _splice(scope, operator, container, output_name):
    """Add the estimator's network (nnx's own ONNX graph of it) to
    ``container``, reading the operator's input and writing ``output_name``."""
    from onnx import helper, numpy_helper

    from ..onnx import MIN_OPSET, layers_model
    from ._base import _HIDDEN

    est = operator.raw_operator
    opset = container.target_opset
    source = operator.inputs[0].full_name
    if _proto_type(operator) not in (1, 11):  # integer features: as floats, as predict takes them
        source = scope.get_unique_variable_name("nnx_float_input")
        container.add_node("Cast", operator.inputs[0].full_name, source, to=1,
                           name=scope.get_unique_operator_name("nnx_Cast"))
    if opset is not None and opset < MIN_OPSET:
        raise InputValueError(f"target_opset={opset}: nnx's estimators export from opset "
                              f"{MIN_OPSET}")
    model = layers_model(est.coefs_, est.intercepts_, _HIDDEN[est.activation],
                         est._onnx_output(), _input_dtype(operator), opset=opset)
    graph = model.graph
    names = {graph.input[0].name: source,
             graph.output[0].name: output_name}
    for tensor in graph.initializer:
        names[tensor.name] = scope.get_unique_variable_name("nnx_" + _plain(tensor.name))
        value = numpy_helper.to_array(tensor)
        container.add_initializer(names[tensor.name], tensor.data_type, list(value.shape),
                                  value.ravel().tolist())
    for node in graph.node:
        for out in node.output:
            names.setdefault(out, scope.get_unique_variable_name("nnx_" + _plain(out)))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        container.add_node(node.op_type, [names[i] for i in node.input],
                           [names[o] for o in node.output],
                           name=scope.get_unique_operator_name("nnx_" + node.op_type),
                           op_domain=node.domain, **attrs)


def _plain(name):
    return "".join(c if c.isalnum() else "_" for c in name)


def _convert_classifier(scope, operator, container):
    est = operator.raw_operator
    label, probabilities = (o.full_name for o in operator.outputs)
    if len(est.classes_) == 1:
        # predict_proba's [1 - p, p]; the model gives [p] alone, as skl2onnx's
        # converter of scikit-learn's own MLPClassifier does (one probability
        # per class: ZipMap maps each to its class)
        both = scope.get_unique_variable_name("probabilities_1_p")
        _splice(scope, operator, container, both)
        container.add_initializer(second := scope.get_unique_variable_name("column_p"), 7,
                                  [1], [1])
        container.add_node("Gather", [both, second], probabilities, axis=1,
                           name=scope.get_unique_operator_name("Gather"))
        probabilities = both  # the label's ArgMax reads both columns
    else:
        _splice(scope, operator, container, probabilities)
    if est._label_binarizer.y_type_ == "multilabel-indicator":  # one 0/1 column per label
        above = scope.get_unique_variable_name("above_half")
        container.add_initializer(half := scope.get_unique_variable_name("half"),
                                  _elem(operator), [], [0.5])
        container.add_node("Greater", [probabilities, half], above,
                           name=scope.get_unique_operator_name("Greater"))
        container.add_node("Cast", above, label, to=7,  # INT64: predict's 0/1 indicator
                           name=scope.get_unique_operator_name("Cast"))
        return
    classes = est.classes_
    index = scope.get_unique_variable_name("class_index")
    container.add_node("ArgMax", probabilities, index, axis=1, keepdims=0,
                       name=scope.get_unique_operator_name("ArgMax"))
    table = scope.get_unique_variable_name("classes")
    if len(classes) == 1:  # predict_proba's two columns [1 - p, p] name the one class
        classes = np.repeat(classes, 2)
    # numbers as int64, skl2onnx's type for them (float labels are whole:
    # scikit-learn refuses others as continuous targets)
    if classes.dtype.kind in "biuf":
        container.add_initializer(table, 7, [len(classes)], classes.astype(np.int64).tolist())
    else:
        container.add_initializer(table, 8, [len(classes)],  # STRING
                                  [str(c).encode() for c in classes])
    container.add_node("Gather", [table, index], label, axis=0,
                       name=scope.get_unique_operator_name("Gather"))


def _elem(operator):
    return 11 if _input_dtype(operator) == "float64" else 1  # DOUBLE or FLOAT


def _regressor_shapes(operator):
    """``variable``: rows x outputs, in the input's float type."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from sklearn.utils.validation import check_is_fitted
    check_is_fitted(operator.raw_operator)  # NotFittedError, as predict says it
    rows = operator.inputs[0].get_first_dimension()
    kind = DoubleTensorType if _input_dtype(operator) == "float64" else FloatTensorType
    operator.outputs[0].type = kind([rows, operator.raw_operator.n_outputs_])


def _convert_regressor(scope, operator, container):
    _splice(scope, operator, container, operator.outputs[0].full_name)


def _classifier_parser():
    """skl2onnx's parser of classifiers, after the check that ``predict``
    makes (an unfitted one failed in skl2onnx: "No known ways to retrieve
    the number of classes"); skl2onnx's default where its (private) parser
    is not where this skl2onnx keeps it."""
    try:
        from skl2onnx._parse import _parse_sklearn_classifier
    except ImportError:
        return None
    from sklearn.utils.validation import check_is_fitted

    def parse(scope, model, inputs, custom_parsers=None):
        check_is_fitted(model)
        return _parse_sklearn_classifier(scope, model, inputs, custom_parsers=custom_parsers)
    return parse


def _classifier_shapes(operator):
    from skl2onnx.common.data_types import Int64TensorType
    from skl2onnx.shape_calculators.linear_classifier import (
        calculate_linear_classifier_output_shapes,
    )
    calculate_linear_classifier_output_shapes(operator)
    est = operator.raw_operator
    if est._label_binarizer.y_type_ == "multilabel-indicator":
        rows = operator.inputs[0].get_first_dimension()
        operator.outputs[0].type = Int64TensorType([rows, est.n_outputs_])


def register_skl2onnx():
    """Teach skl2onnx (``pip install skl2onnx``) to convert the nnx
    estimators, alone or inside a Pipeline: afterwards
    ``skl2onnx.to_onnx(pipeline, X[:1])`` gives one ONNX model of the whole
    pipeline. Call it once per process; calling it again does no harm."""
    try:
        from skl2onnx import update_registered_converter
    except ImportError as exc:
        raise ImportError("register_skl2onnx needs skl2onnx: pip install skl2onnx (or "
                          "'nnx-dl[onnx]')") from exc
    from ._classes import MLPClassifier, MLPRegressor

    update_registered_converter(MLPClassifier, "NnxMLPClassifier", _classifier_shapes,
                                _convert_classifier, parser=_classifier_parser(),
                                options={"zipmap": [True, False, "columns"],
                                         "nocl": [True, False]})
    update_registered_converter(MLPRegressor, "NnxMLPRegressor", _regressor_shapes,
                                _convert_regressor)
