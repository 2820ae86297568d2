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


def test_a_row_that_fails_parity_is_left_out_and_the_others_still_run(monkeypatch, tmp_path):
    """A parity failure ended the whole script, so the rows after it (the
    GPU's, in the device check) never ran: now it leaves out its own row,
    the others run, and the exit status names it."""
    import json

    for name in sklearn_compare._BLAS_OVERRIDES:  # else main() restarts the process
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sklearn_compare.PARITY, ("float64", True), -1.0)  # fails
    with pytest.raises(SystemExit) as stop:
        sklearn_compare.main(["--datasets", "digits", "--dtypes", "float64,float32",
                              "--repeats", "1", "--epochs", "1", "--out", str(tmp_path)])
    assert "digits float64 (nnx on cpu): loss curves differ" in str(stop.value)
    rows = json.loads((tmp_path / "sklearn.json").read_text())
    assert [(r["dataset"], r["dtype"]) for r in rows] == [("digits", "float32")]


def test_the_rows_measured_are_written_before_a_time_limit_ends_the_run(monkeypatch, tmp_path):
    """The files were written once, at the end: the device check's time
    limit on this stage would have left none (from a review of the GPU path)."""
    import json

    for name in sklearn_compare._BLAS_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    real, calls = sklearn_compare.compare, []

    def stopped_after_one(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # as the stage's timeout ends the process
        return real(*args, **kwargs)
    monkeypatch.setattr(sklearn_compare, "compare", stopped_after_one)
    with pytest.raises(KeyboardInterrupt):
        sklearn_compare.main(["--datasets", "digits", "--dtypes", "float64,float32",
                              "--repeats", "1", "--epochs", "1", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "sklearn.json").read_text())
    assert [(r["dataset"], r["dtype"]) for r in rows] == [("digits", "float64")]
