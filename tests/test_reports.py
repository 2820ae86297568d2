"""The report writers, checked on hand-made results whose right answers are
known: the reproduce figure (nnx/report.py), the benchmark table that goes
into docs/performance.md (bench/report.py), and the GPU check's report
(bench/gpu_report.py), which runs only on a machine lent a GPU, so its parsing
is checked here on outputs shaped like the real ones."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import matplotlib
import pytest

matplotlib.use("Agg")
from matplotlib.axes import Axes  # noqa: E402

import nnx  # noqa: E402
from nnx.report import plot_ladder  # noqa: E402

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


def _script(name):
    """bench/<name>.py as a module (bench scripts are not a package to import)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def _figure_axes(monkeypatch, result, tmp_path):
    """The two panels plot_ladder draws for ``result``."""
    from matplotlib.figure import Figure
    seen = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: seen.append(self.axes)
                        or real(self, *a, **k))
    plot_ladder(result, tmp_path / "f.png")
    return seen[0]


@pytest.mark.parametrize("dataset", ["mnist", "digits"])
def test_the_accuracy_axis_starts_at_zero_and_no_legend_covers_a_bar(dataset, tmp_path,
                                                                     monkeypatch):
    """The axis started just under the lowest bar (0.6 on digits), which made
    small differences look large, and the legend sat on the bars."""
    acc, _ = _figure_axes(monkeypatch, _result(dataset), tmp_path)
    assert acc.get_ylim() == (0.0, 1.0)
    legend = acc.get_legend()
    if legend is not None:  # beside MNIST only, and then under the axis
        assert legend.get_bbox_to_anchor().transformed(acc.transAxes.inverted()).y1 < 0


def test_runs_with_one_evaluation_per_step_plot_the_loss_by_step(tmp_path, monkeypatch):
    """Each step a lone dot on an epoch axis from 9.6 to 10.4: now one line
    across the steps."""
    result = _result("digits")
    for s in result["steps"]:
        s["evaluations"] = s["evaluations"][:1]
    _, loss = _figure_axes(monkeypatch, result, tmp_path)
    assert loss.get_xlabel().startswith("step")
    assert [list(line.get_xdata()) for line in loss.get_lines()] == [[1, 2, 3]]


def _entry(name, median, rate, ceiling=2e11, **extra):
    return {"name": name, "group": "train study-784-89-10 float32", "stats": {"median": median},
            "extra_info": {"network": "study-784-89-10", "dtype": "float32",
                           "samples_per_s": rate, "flops_per_sample": 1e9,
                           "fraction_of_ceiling": rate * 1e9 / ceiling,
                           "matmul_ceiling_flops": ceiling, **extra}}


# per repeat, (median s, samples/s) of: nnx, PyTorch, JAX, nnx Adam, PyTorch Adam;
# and nnx's (fit/bare, fit/shuffled)
RUNS = [((0.3, 100.0), (0.5, 60.0), (0.2, 200.0), (0.4, 80.0), (0.6, 50.0), (1.2, 1.05)),
        ((0.1, 300.0), (0.4, 75.0), (0.3, 100.0), (0.2, 200.0), (0.5, 60.0), (1.1, 1.00)),
        ((0.2, 150.0), (0.6, 50.0), (0.25, 120.0), (0.3, 100.0), (0.7, 40.0), (1.3, 1.10))]


def _fake_suite(monkeypatch, peers=("nnx", "torch", "jax")):
    """bench/report.py run on RUNS instead of the benchmarks, with only
    ``peers`` installed: (module, data, info, the pytest calls it made)."""
    report = _script("report")
    calls = []

    def fake_pytest(tmp, label, targets, select, extra):
        calls.append((label, targets, select))
        if targets == "test_ops_bench.py":
            return []
        r = int(label.rsplit("-", 1)[1])
        (nm, nr), (tm, tr), (jm, jr), (am, ar), (tam, tar), (fb, fs) = RUNS[r]
        peer = label.split("-", 1)[0]
        if peer not in peers:
            return []  # its tests skipped
        if peer == "nnx":
            return [_entry("nnx-cpu", nm, nr),
                    _entry("nnx-cpu-fit", nm, nr, 2.2e11, fit_over_bare=fb,
                           fit_over_shuffled=fs),
                    _entry("nnx-cpu-adam", am, ar, optimizer="adam")]
        if peer == "torch":
            return [_entry("torch-cpu", tm, tr, 1.8e11),
                    _entry("torch-cpu-adam", tam, tar, optimizer="adam")]
        return [_entry("jax-cpu", jm, jr)]

    monkeypatch.setattr(report, "_pytest", fake_pytest)
    monkeypatch.setattr(report, "_cases", lambda: [("study-784-89-10", "float32")])
    data = report.run_suite("unused", [], repeats=3)
    info = {"cpu": "CPU", "cores": 2, "python": "3", "numpy": "2",
            "torch": "2" if "torch" in peers else None, "torch_threads": 2,
            "jax": "0.4" if "jax" in peers else None,
            "blas": [{"internal_api": "openblas", "version": "0",
                      "architecture": "Zen", "num_threads": 2}]}
    return report, data, info, calls


def _cells(md, first, after=None):
    """The cells of the first table row of ``md`` that starts with ``first``
    (after the line starting with ``after``, if given)."""
    lines = md.splitlines()
    if after is not None:
        lines = lines[next(i for i, line in enumerate(lines) if line.startswith(after)):]
    row = next(line for line in lines if line.startswith(first))
    return [c.strip() for c in row.strip("|").split("|")]


def test_the_table_keeps_the_median_run_and_the_median_side_by_side_ratio(monkeypatch):
    """Nothing checked the performance table's arithmetic: keeping the
    fastest run, or dividing PyTorch by nnx, passed every test."""
    report, data, info, _ = _fake_suite(monkeypatch)
    cells = _cells(report.table(data, info), "| study-784-89-10")
    # the median run by time: nnx repeat 2 (0.2 s, 150/s), PyTorch repeat 0 (0.5 s, 60/s);
    # side by side 100/60, 300/75, 150/50: median 3.00, from 1.67 to 4.00
    assert cells[2:5] == ["150", "60", "**3.00x** (1.67-4.00)"]
    # JAX's median run is repeat 2 (0.25 s, 120/s); 100/200, 300/100, 150/120
    assert cells[5:7] == ["120", "**1.25x** (0.50-3.00)"]
    # shares over one peak for the report, the median of those measured (1.8, 2, 2.2e11):
    # 150e9 / 2e11, 60e9 / 2e11 and 120e9 / 2e11, where PyTorch's own low reading
    # would give 33%
    assert cells[7:10] == ["75% of 200 GFLOP/s", "30%", "60%"]
    assert cells[10:] == ["1.20x time", "1.05x time"]


def test_the_adam_rows_compare_adam_with_adam(monkeypatch):
    """nnx.Adam against torch's Adam, each repeat side by side, and each
    library's Adam loop against its own momentum loop of the same run."""
    report, data, info, _ = _fake_suite(monkeypatch)
    md = report.table(data, info)
    cells = _cells(md, "| study-784-89-10", after="| network (batch) | dtype | nnx Adam")
    # median runs: nnx Adam repeat 2 (0.3 s, 100/s), PyTorch Adam repeat 0 (0.6 s, 50/s);
    # side by side 80/50, 200/60, 100/40
    assert cells[2:5] == ["100", "50", "**2.50x** (1.60-3.33)"]
    # time per sample over the momentum loop: nnx 100/80, 300/200, 150/100;
    # PyTorch 60/50, 75/60, 50/40
    assert cells[5:] == ["1.50x time (1.25-1.50)", "1.25x time (1.20-1.25)"]


def test_a_peer_that_is_not_installed_reads_n_a(monkeypatch):
    """Without torch and jax their tests skip; the table still renders, and
    says so, rather than failing on the missing runs."""
    report, data, info, _ = _fake_suite(monkeypatch, peers=("nnx",))
    md = report.table(data, info)
    assert "PyTorch not installed; JAX not installed" in md.splitlines()[0]
    cells = _cells(md, "| study-784-89-10")
    assert cells[2:10] == ["150", "n/a", "n/a", "n/a", "n/a", "75% of 200 GFLOP/s", "n/a",
                           "n/a"]
    adam = _cells(md, "| study-784-89-10", after="| network (batch) | dtype | nnx Adam")
    assert adam[2:] == ["100", "n/a", "n/a", "1.50x time (1.25-1.50)", "n/a"]


def test_each_case_runs_every_library_in_a_process_of_its_own(monkeypatch):
    """One pytest process per library, network and dtype, over both training
    files, so that the Adam cases share their library's process."""
    report, _, _, calls = _fake_suite(monkeypatch)
    train = [(label, select) for label, targets, select in calls
             if targets == report.TRAIN_FILES]
    assert [label for label, _ in train] == [
        f"{peer}-study-784-89-10-float32-{r}" for r in range(3)
        for peer in ("nnx", "torch", "jax")]
    assert len(calls) == 3 * 4  # and the operations once per repeat


@pytest.mark.parametrize("peer, expected", [
    ("nnx", {"test_nnx_train_steps", "test_nnx_fit", "test_nnx_adam"}),
    ("torch", {"test_torch_peer", "test_torch_adam"}),
    ("jax", {"test_jax_peer"}),
])
def test_each_library_selects_its_own_benchmarks(peer, expected):
    """The report's -k expressions, collected for real on one case: a name
    that matched another library's test would run it in the wrong process
    (and its idle threads would slow the one being timed)."""
    report = _script("report")
    select = dict(report.PEERS)[peer]
    r = subprocess.run(
        [sys.executable, "-m", "pytest", *(str(BENCH / f) for f in report.TRAIN_FILES),
         "--co", "-q", "-p", "no:cacheprovider", "-m", "not gpu",
         "-k", f"wide-784-1024-1024-10 and float32 and {select}"],
        capture_output=True, text=True, cwd=BENCH.parent, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ids = [line for line in r.stdout.splitlines() if "::" in line]
    assert {i.split("::")[1].split("[")[0] for i in ids} == expected
    assert all("float32" in i and "wide" in i for i in ids)


def test_the_table_renders_again_from_its_saved_json(monkeypatch, tmp_path):
    """--from-json reads back what the report saved and gives the same table."""
    report, data, info, _ = _fake_suite(monkeypatch)
    monkeypatch.setattr(report, "machine_info", lambda: info)
    monkeypatch.setattr(report, "run_suite", lambda tmp, extra, repeats: data)
    first = tmp_path / "first.md"
    report.main(["--no-readme", "--out", str(first)])
    again = tmp_path / "again.md"
    report.main(["--no-readme", "--out", str(again), "--from-json",
                 str(first.with_suffix(".json"))])
    assert again.read_text() == first.read_text() == report.table(data, info) + "\n"
    assert again.with_suffix(".json").read_text() == first.with_suffix(".json").read_text()


def test_extra_pytest_arguments_keep_the_report_on_the_cpu(monkeypatch, tmp_path):
    """Extra pytest arguments replaced the default -m 'not gpu', so
    `report.py -- -x` on a GPU machine mixed GPU cases into the CPU's table."""
    report, data, info, _ = _fake_suite(monkeypatch)
    monkeypatch.setattr(report, "machine_info", lambda: info)
    seen = []
    monkeypatch.setattr(report, "run_suite",
                        lambda tmp, extra, repeats: seen.append(extra) or data)
    report.main(["--no-readme", "--out", str(tmp_path / "t.md"), "--", "-x"])
    assert seen == [["-m", "not gpu", "-x"]]


# ------------------------------------------------------- the GPU check's report
def _bench(name, group, median, **extra):
    return {"name": name, "group": group, "fullname": f"bench/x.py::{group}::{name}",
            "stats": {"median": median}, "extra_info": extra}


def test_the_report_keeps_every_benchmark_and_computes_the_targets(tmp_path):
    """The report would have crashed on any real run: each training benchmark's
    extra_info holds network and dtype, which the report passed twice. And
    the per-operation benchmarks, which name no network, overwrote each other."""
    large, study = "large-784-4096-4096-10", "study-784-89-10"
    runs = [
        _bench("nnx-gpu", "train large f32", 0.5, network=large, dtype="float32",
               samples_per_s=1000.0, fraction_of_ceiling=0.8),
        _bench("torch-cuda", "train large f32", 0.6, network=large, dtype="float32",
               samples_per_s=800.0, fraction_of_ceiling=0.64),
        _bench("nnx-gpu-fit", "train study f32", 0.1, network=study, dtype="float32",
               samples_per_s=5000.0, fraction_of_ceiling=0.01, graph=True),
        _bench("torch-cuda", "train study f32", 0.2, network=study, dtype="float32",
               samples_per_s=2000.0, fraction_of_ceiling=0.004),
        _bench("torch-cuda-graph", "train study f32", 0.15, network=study, dtype="float32",
               samples_per_s=4000.0, fraction_of_ceiling=0.008),
        _bench("nnx-gpu", "op dense forward", 0.001),
        _bench("nnx-gpu", "op softmax ce", 0.002),
    ]
    (tmp_path / "bench.json").write_text(json.dumps({"benchmarks": runs}))
    _script("gpu_report").main([str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["benchmarks"]) == len(runs)
    share = next(t for t in report["targets"] if "share of the card's" in t["target"])
    assert share["measured"] == "80%" and share["met"] is True
    ratios = [t for t in report["targets"]
              if "nnx / PyTorch" in t["target"] and "precision=" not in t["target"]]
    assert [t["measured"] for t in ratios] == ["1.25x", "2.50x (graph: True)", "1.25x"]
    captured = next(t for t in report["targets"] if "captured in a CUDA graph" in t["target"])
    assert captured["met"] is False  # 1.25x of PyTorch's captured step: below 1.5x
    compiled = next(t for t in report["targets"] if "torch.compile" in t["target"])
    assert compiled["measured"] == "not run"
    assert (tmp_path / "report.md").read_text().startswith("# nnx GPU check")


def _junit(path, outcomes):
    tags = {"passed": "", "failure": '<failure message="boom">boom</failure>',
            "skipped": '<skipped message="no GPU">no GPU</skipped>'}
    cases = "".join(f'<testcase classname="tests.test_gpu" name="test_{i}">{tags[o]}</testcase>'
                    for i, o in enumerate(outcomes))
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{cases}'
                    '</testsuite></testsuites>')


@pytest.mark.parametrize("outcomes, status", [
    (None, 1),  # pytest -m gpu never ran
    ([], 1),  # it ran, and collected nothing
    (["passed", "failure", "passed"], 1),
    (["skipped", "skipped"], 1),  # every test skipped: nothing ran on the device
    (["passed", "skipped"], 1),
    (["passed", "passed", "passed"], 0),
])
def test_the_report_exits_non_zero_unless_every_gpu_test_passed(tmp_path, outcomes, status):
    """It exited 0 even when pytest -m gpu failed or never ran, so a broken
    device run looked like a good one to whoever read only the status."""
    if outcomes is not None:
        _junit(tmp_path / "gpu-tests.xml", outcomes)
    assert _script("gpu_report").main([str(tmp_path)]) == status


def test_the_adam_stage_is_read_from_its_own_file_and_shown_rows_have_no_target(tmp_path):
    """Stage 3 (Adam) writes bench-adam.json, apart from stage 2's file so that
    one time limit cannot lose both; the rows shown beside the targets (the
    compiled peer, the captured Adam, digits) read "yes" when they did not run."""
    large = "large-784-4096-4096-10"
    runs = [_bench(name, "train-adam large f32", t, network=large, dtype="float32",
                   samples_per_s=rate, fraction_of_ceiling=0.5)
            for name, t, rate in (("nnx-gpu-adam-fit", 0.5, 1200.0),
                                  ("torch-cuda-adam-fused", 0.6, 1000.0))]
    (tmp_path / "bench-adam.json").write_text(json.dumps({"benchmarks": runs}))
    _script("gpu_report").main([str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {t["target"]: t for t in report["targets"]}
    fused = rows[f"{large}, f32, Adam: nnx captured fit / PyTorch fused Adam"]
    assert fused["measured"] == "1.20x" and fused["met"] is True
    shown = [t for t in report["targets"] if t["wanted"] == "(shown)"]
    assert len(shown) >= 4 and all(t["met"] is None for t in shown)
    text = (tmp_path / "report.md").read_text()
    assert "torch.compile(mode='reduce-overhead') | (shown) | not run | (no target) |" in text


def test_the_report_says_why_a_gpu_test_was_skipped(tmp_path):
    """A skipped test (NCCL missing from the device's CuPy, say) was counted
    but not named, so the report could not tell a missing library from a fault."""
    _junit(tmp_path / "gpu-tests.xml", ["passed", "skipped"])
    _script("gpu_report").main([str(tmp_path)])
    assert "- skipped: `tests.test_gpu::test_1 (no GPU)`" in (
        tmp_path / "report.md").read_text().splitlines()


@pytest.mark.skipif(nnx.gpu_available()[0], reason="on a GPU machine the check would run")
def test_the_gpu_check_stops_at_once_without_a_gpu(tmp_path):
    """Without a GPU it ran every stage, exited 0 and wrote a report of
    'not run' rows under a '?' device, which the README says to commit."""
    script = BENCH / "gpu_check.sh"
    out = tmp_path / "report"
    r = subprocess.run(["bash", str(script), str(out)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert "no usable GPU" in r.stderr and "CuPy" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("outcomes, met", [
    (["passed", "passed"], True),
    (["passed", "failure"], False),
    (["passed", "skipped"], False),
    (None, False),  # never ran
])
def test_a_tests_target_is_met_only_when_all_its_tests_passed(tmp_path, outcomes, met):
    """The parity and no-copy rows said 'see measured' whatever happened, so
    a failed parity test still left the target table without a 'no'."""
    if outcomes is not None:
        cases = "".join(f'<testcase classname="tests.test_parity" name="test_{i}">'
                        + ('<failure message="boom"/>' if o == "failure" else
                           '<skipped message="no GPU"/>' if o == "skipped" else "")
                        + "</testcase>" for i, o in enumerate(outcomes))
        (tmp_path / "gpu-tests.xml").write_text(
            f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{cases}'
            '</testsuite></testsuites>')
    _script("gpu_report").main([str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    parity = next(t for t in report["targets"] if t["target"].startswith("parity"))
    assert parity["met"] is met
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines()
               if line.startswith("| parity"))
    assert row.endswith("| yes |" if met else "| **no** |")


@pytest.mark.parametrize("ratio, met", [(24.0, True), (12.5, False)])
def test_the_report_holds_the_estimators_gpu_row_and_names_the_runs_data(tmp_path, ratio,
                                                                          met):
    """The MLPClassifier stage's figures (nnx on the GPU against scikit-learn
    on the machine's CPU, the 20x target) were written by sklearn_compare.py
    but never reached the report; and the training run was called synthetic
    whatever data it read."""
    row = {"dataset": "fashion-mnist", "dtype": "float32", "nnx_backend": "gpu",
           "rows": 60000, "epochs": 5, "sklearn_s": [12.0, 12.0, 12.0],
           "nnx_s": [12.0 / ratio] * 3, "ratio": [ratio] * 3,
           "sklearn_accuracy": 0.87, "nnx_accuracy": 0.871}
    cpu_row = dict(row, nnx_backend="cpu", ratio=[1.3] * 3)
    (tmp_path / "sklearn.json").write_text(json.dumps([cpu_row, row]))
    run = {"seconds_per_epoch": 0.04, "first_epoch_s": 1.0, "epochs": 10,
           "test_accuracy": 0.88, "graph": True, "graph_note": ""}
    (tmp_path / "train.json").write_text(json.dumps(
        {"data": "fashion-mnist", "rows": [60000, 10000], "network": "784-178-46-10",
         "gpu": run, "precisions": {"tf32": dict(run, test_accuracy=0.878)}}))
    _script("gpu_report").main([str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    target = next(t for t in report["targets"]
                  if "fashion-mnist, float32: nnx on the GPU / scikit-learn" in t["target"])
    assert target["measured"].startswith(f"{ratio:.1f}x") and target["met"] is met
    tf32 = next(t for t in report["targets"] if "precision=tf32: test accuracy" in t["target"])
    assert tf32["target"].startswith("Fashion-MNIST run,") and tf32["met"] is True
    assert tf32["measured"] == "+0.20 points (0.8780 vs 0.8800, seed 1)"


def test_the_precision_accuracy_gap_is_that_of_the_seeds_means(tmp_path):
    """One run's accuracy moves with the seed by more than the 0.3-point
    target (measured with the CPU emulation: float32 0.8439 and 0.8359 with
    two seeds), so the report compares the means over the same seeds."""
    run = {"seconds_per_epoch": 0.04, "epochs": 10, "test_accuracy": 0.84, "graph": True,
           "graph_note": ""}
    (tmp_path / "train.json").write_text(json.dumps(
        {"data": "fashion-mnist", "rows": [60000, 10000], "network": "784-178-46-10",
         "gpu": run, "precisions": {"bfloat16": dict(run, test_accuracy=0.835)},
         "accuracy_by_seed": {"seeds": [1, 2, 3], "float32": [0.840, 0.836, 0.844],
                              "bfloat16": [0.835, 0.840, 0.841]}}))
    _script("gpu_report").main([str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    bf16 = next(t for t in report["targets"]
                if "precision=bfloat16: test accuracy" in t["target"])
    assert bf16["measured"].startswith("+0.13 points (mean of 3 seeds: 0.8387 vs 0.8400;")
    assert bf16["met"] is True  # seed 1 alone (0.5 points) would have missed
    f16 = next(t for t in report["targets"] if "precision=float16: test accuracy" in t["target"])
    assert f16["measured"] == "not run" and f16["met"] is False
    assert "Fashion-MNIST run (60k/10k," in (tmp_path / "report.md").read_text()


def test_rerender_keeps_the_device_the_gpu_machine_wrote(tmp_path):
    """Rendering a committed report again on a machine without CuPy must not
    replace the GPU machine's device details with this machine's."""
    gpu = {"device": "NVIDIA H200", "driver_version": 13000, "python": "3.12.3",
           "tf32": {"CUPY_TF32": "0", "NVIDIA_TF32_OVERRIDE": "0"}}
    (tmp_path / "report.json").write_text(json.dumps({"device": gpu, "seconds": 98.0}))
    runs = [_bench("nnx-gpu", "train wide f32", 0.5, network="wide", dtype="float32",
                   samples_per_s=300.0, fraction_of_ceiling=0.05),
            _bench("torch-cuda", "train wide f32", 0.6, network="wide", dtype="float32",
                   samples_per_s=200.0, fraction_of_ceiling=0.03)]
    (tmp_path / "bench.json").write_text(json.dumps({"benchmarks": runs}))
    _script("gpu_report").main([str(tmp_path), "--rerender"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["device"] == gpu and report["seconds"] == 98.0
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# nnx GPU check: NVIDIA H200")
    assert "TF32 off (CUPY_TF32=0, NVIDIA_TF32_OVERRIDE=0). Whole check: 98.0 s." in md
    assert "| wide | float32 | nnx-gpu | 300 | 1.50x | 5% |  |" in md


def test_pytest_m_gpu_skips_no_module_where_array_api_strict_is_missing():
    """The GPU machine has no array-api-strict: two test modules skipped
    themselves whole at import, and `pytest -m gpu` reported two skips, so the
    check failed (exit 1) with every gpu test passed. A module skip would also
    hide any gpu test inside it."""
    code = ("import sys, pytest; sys.modules['array_api_strict'] = None; "
            "sys.exit(pytest.main(['tests', '-m', 'gpu', '--co', '-q', "
            "'-p', 'no:cacheprovider']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=BENCH.parent, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "SKIPPED" not in r.stdout and "collected" in r.stdout.strip().splitlines()[-1]


def test_the_gpu_check_says_when_nnx_itself_does_not_import(tmp_path):
    """A broken install (here NumPy, shadowed by a package that fails) was
    reported as 'no usable GPU', which sent the reader after the device."""
    fake = tmp_path / "shadow" / "numpy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('planted: numpy is broken')\n")
    out = tmp_path / "report"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(fake.parent)}
    r = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), str(out)], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 3
    assert "planted: numpy is broken" in r.stderr and "cannot import nnx" in r.stderr
    assert "no usable GPU" not in r.stderr and not out.exists()


@pytest.mark.parametrize("content, args", [
    (None, []),  # no report.json
    ("{}", []),  # one without the device
    ("not json", []),
    ('{"device": {}, "seconds": 98.0}', ["--seconds", "5"]),  # which seconds?
])
def test_rerender_refuses_what_it_cannot_keep(tmp_path, capsys, content, args):
    """--rerender failed with a bare FileNotFoundError or KeyError traceback,
    and silently dropped --seconds."""
    if content is not None:
        (tmp_path / "report.json").write_text(content)
    with pytest.raises(SystemExit) as stop:
        _script("gpu_report").main([str(tmp_path), "--rerender", *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--rerender" in err and ("report.json" in err or "--seconds" in err)


@pytest.mark.parametrize("epoch_s, met", [(0.04, True), (0.17, False)])
def test_the_report_sets_the_fashion_sized_epoch_beside_its_target(tmp_path, epoch_s, met):
    """The run's steady epoch (the median after the first) against 0.05 s,
    and the µs per step of fit beside the graphs' device time per step."""
    train = {"network": "784-178-46-10 tanh, dropout 0.8", "gpu": {
        "epochs": 10, "seconds_per_epoch": epoch_s, "first_epoch_s": 1.2,
        "us_per_step": epoch_s * 1000, "graph_us_per_step": {"1": 31.0, "16": 24.5},
        "test_accuracy": 0.63, "graph": True, "graph_note": ""}}
    (tmp_path / "train.json").write_text(json.dumps(train))
    _script("gpu_report").main([str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    row = next(t for t in report["targets"] if "s per epoch after the first" in t["target"])
    assert row["met"] is met and row["measured"] == f"{epoch_s:.3f} s"
    md = (tmp_path / "report.md").read_text()
    assert f"`fit` {epoch_s * 1000:.0f} µs" in md
    assert "31 µs in graphs of 1, 24 µs in graphs of 16" in md  # 24.5 rounds to even


def test_the_report_sets_each_precision_beside_float32_and_pytorch(tmp_path):
    """TF32 must reach 3x nnx's float32 and half precision 5x, each at least
    PyTorch's with the same setting; each precision's accuracy within 0.3
    points of float32's."""
    net = "large-784-4096-4096-10"
    rates = {"nnx-gpu-float32": 1000.0, "nnx-gpu-tf32": 3500.0, "torch-cuda-tf32": 3000.0,
             "nnx-gpu-bfloat16": 4000.0, "torch-cuda-bfloat16": 5000.0,
             "nnx-gpu-float16": 6000.0}
    runs = [_bench(k, f"precision {net}", 0.1, network=net, dtype="float32", samples_per_s=v)
            for k, v in rates.items()]
    (tmp_path / "precision.json").write_text(json.dumps({"benchmarks": runs}))
    train = {"network": "n", "gpu": {"test_accuracy": 0.6300, "seconds_per_epoch": 0.1,
                                     "epochs": 10, "graph": True, "graph_note": ""},
             "precisions": {"tf32": {"test_accuracy": 0.6290},
                            "bfloat16": {"test_accuracy": 0.6200}}}
    (tmp_path / "train.json").write_text(json.dumps(train))
    _script("gpu_report").main([str(tmp_path)])
    rows = {t["target"]: t for t in json.loads((tmp_path / "report.json").read_text())["targets"]}

    def row(p, what):
        return next(r for k, r in rows.items() if f"precision={p}" in k and what in k)
    assert (row("tf32", "nnx float32")["measured"], row("tf32", "nnx float32")["met"]) == \
        ("3.50x", True)
    assert row("bfloat16", "nnx float32")["met"] is False  # 4x < 5x
    assert row("float16", "nnx float32")["met"] is True
    assert row("tf32", "PyTorch")["measured"] == "1.17x" and row("tf32", "PyTorch")["met"]
    assert row("bfloat16", "PyTorch")["met"] is False
    assert row("float16", "PyTorch")["measured"] == "not run"
    assert row("tf32", "accuracy")["met"] is True  # 0.1 points below
    assert row("bfloat16", "accuracy")["measured"].startswith("+1.00 points")
    assert row("bfloat16", "accuracy")["met"] is False
    assert row("float16", "accuracy")["measured"] == "not run"


def test_rerendering_the_committed_gpu_report_shows_no_nan(tmp_path):
    """Its training run predates the first epoch's time: the text read
    "(median after the first, which took nan s)"."""
    import shutil
    shutil.copytree(BENCH / "results" / "gpu-20261127-h200", tmp_path / "r")
    _script("gpu_report").main([str(tmp_path / "r"), "--rerender"])
    md = (tmp_path / "r" / "report.md").read_text()
    assert "s/epoch (median after the first) over" in md and "nan" not in md
