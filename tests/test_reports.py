"""The two report writers: the reproduce figure (nnx/report.py) and the
benchmark table that goes into the README (bench/report.py), checked on
hand-made results whose right answers are known."""

import importlib.util
import pathlib

import matplotlib
import pytest

matplotlib.use("Agg")
from matplotlib.axes import Axes  # noqa: E402

from nnx.report import plot_ladder  # noqa: E402

BENCH_REPORT = pathlib.Path(__file__).resolve().parents[1] / "bench" / "report.py"


def _result(dataset):
    steps = [{"step": i, "test_accuracy": 0.8 + i / 100, "study_accuracy": 0.85 + i / 100,
              "evaluations": [{"epoch": 10, "loss": 0.5 / i}, {"epoch": 20, "loss": 0.4 / i}]}
             for i in (1, 2, 3)]
    return {"dataset": dataset, "steps": steps, "nnx_version": "0", "backend": "cpu",
            "dtype": "float32", "early_stopping_on": "validation", "lr_scale": 1.0}


@pytest.mark.parametrize("dataset, with_study", [("mnist", True), ("digits", False),
                                                 ("fashion-mnist", False)])
def test_the_figure_shows_the_study_only_beside_mnist(dataset, with_study, tmp_path,
                                                      monkeypatch):
    """The study reported MNIST accuracies; beside another dataset they would
    compare unlike with unlike."""
    labels = []
    real = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, *a, **k: labels.append(k.get("label"))
                        or real(self, *a, **k))
    plot_ladder(_result(dataset), tmp_path / "f.png")
    assert ("study (MNIST)" in labels) is with_study
    assert [x for x in labels if x and x.startswith("step")] == ["step 1", "step 2", "step 3"]


def _bench_report():
    spec = importlib.util.spec_from_file_location("bench_report", BENCH_REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entry(name, median, rate, **extra):
    return {"name": name, "group": "train study-784-89-10 float32", "stats": {"median": median},
            "extra_info": {"network": "study-784-89-10", "dtype": "float32",
                           "samples_per_s": rate, "fraction_of_ceiling": rate / 1000,
                           "matmul_ceiling_flops": 2e11, **extra}}


# per repeat: (nnx median, nnx rate), (torch median, torch rate), (fit/bare, fit/shuffled)
RUNS = [((0.3, 100.0), (0.5, 60.0), (1.2, 1.05)),
        ((0.1, 300.0), (0.4, 75.0), (1.1, 1.00)),
        ((0.2, 150.0), (0.6, 50.0), (1.3, 1.10))]


def test_the_table_keeps_the_median_run_and_the_median_side_by_side_ratio(monkeypatch):
    """Nothing checked the README's performance arithmetic: keeping the
    fastest run, or dividing PyTorch by nnx, passed every test."""
    report = _bench_report()

    def fake_pytest(tmp, label, target, select, extra):
        if target == "test_ops_bench.py":
            return []
        r = int(label.rsplit("-", 1)[1])
        (nm, nr), (tm, tr), (fb, fs) = RUNS[r]
        if label.startswith("nnx"):
            return [_entry("nnx-cpu", nm, nr),
                    _entry("nnx-cpu-fit", nm, nr, fit_over_bare=fb, fit_over_shuffled=fs)]
        return [_entry("torch-cpu", tm, tr)]

    monkeypatch.setattr(report, "_pytest", fake_pytest)
    monkeypatch.setattr(report, "_cases", lambda: [("study-784-89-10", "float32")])
    data = report.run_suite("unused", [], repeats=3)
    info = {"cpu": "CPU", "cores": 2, "python": "3", "numpy": "2", "torch": "2",
            "torch_threads": 2, "blas": [{"internal_api": "openblas", "version": "0",
                                          "architecture": "Zen", "num_threads": 2}]}
    row = next(line for line in report.table(data, info).splitlines()
               if line.startswith("| study-784-89-10"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # the median run by time: nnx repeat 2 (0.2 s, 150/s), PyTorch repeat 0 (0.5 s, 60/s);
    # side by side 100/60, 300/75, 150/50: median 3.00, from 1.67 to 4.00
    assert cells[2:5] == ["150", "60", "**3.00x** (1.67-4.00)"]
    assert cells[5].startswith("15% of 200 GFLOP/s") and cells[6] == "6%"
    assert cells[7:] == ["1.20x time", "1.05x time"]
