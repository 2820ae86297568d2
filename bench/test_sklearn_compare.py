"""The comparison with scikit-learn's MLPClassifier (bench/sklearn_compare.py),
once on digits, timing aside: CI runs it so the script cannot rot, and its
parity check (the same loss curve before any timing) runs with it."""

import pytest

from bench import sklearn_compare


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_comparison_runs_and_checks_parity(dtype):
    data = sklearn_compare._data("digits")
    row = sklearn_compare.compare("digits", data, dtype, epochs=3, repeats=1)
    assert row["loss_curve_gap"] <= (1e-8 if dtype == "float64" else 1e-3)
    assert row["nnx_accuracy"] == pytest.approx(row["sklearn_accuracy"], abs=0.01)
    assert "| digits |" in sklearn_compare._table([row], "test")
