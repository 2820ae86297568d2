"""bench/gpu_report.py turns a GPU run's outputs into report.json and
report.md. It runs only on a machine lent a GPU, so its parsing is checked
here on outputs shaped like the real ones."""

import importlib.util
import json
import pathlib
import subprocess

import pytest

import nnx

REPORT = pathlib.Path(__file__).resolve().parents[1] / "bench" / "gpu_report.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        _bench("nnx-gpu", "op dense forward", 0.001),
        _bench("nnx-gpu", "op softmax ce", 0.002),
    ]
    (tmp_path / "bench.json").write_text(json.dumps({"benchmarks": runs}))
    _load().main([str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["benchmarks"]) == len(runs)
    share = next(t for t in report["targets"] if "share of the card's" in t["target"])
    assert share["measured"] == "80%" and share["met"] is True
    ratios = [t for t in report["targets"] if "nnx / PyTorch" in t["target"]]
    assert [t["measured"] for t in ratios] == ["1.25x", "2.50x (graph: True)"]
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
    assert _load().main([str(tmp_path)]) == status


@pytest.mark.skipif(nnx.gpu_available()[0], reason="on a GPU machine the check would run")
def test_the_gpu_check_stops_at_once_without_a_gpu(tmp_path):
    """Without a GPU it ran every stage, exited 0 and wrote a report of
    'not run' rows under a '?' device, which the README says to commit."""
    script = pathlib.Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"
    out = tmp_path / "report"
    r = subprocess.run(["bash", str(script), str(out)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert "no usable GPU" in r.stderr and "CuPy" in r.stderr
    assert not out.exists()
