"""Turn the outputs of bench/gpu_check.sh into report.json and report.md,
with each of the GPU issue's targets beside what was measured.

    python bench/gpu_report.py OUTDIR [--seconds N]
    python bench/gpu_report.py OUTDIR --rerender   # anywhere: the device and the
        # seconds from OUTDIR's report.json, every figure from its raw files
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import xml.etree.ElementTree as ET


def device_info():
    info = {"python": platform.python_version()}
    try:
        import numpy
        info["numpy"] = numpy.__version__
        import cupy
        info["cupy"] = cupy.__version__
        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(0)
        name = props["name"]
        info["device"] = name.decode() if isinstance(name, bytes) else str(name)
        info["memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
        info["driver_version"] = rt.driverGetVersion()
        info["cuda_runtime_version"] = rt.runtimeGetVersion()
    except Exception as exc:  # report what is missing instead of failing
        info["error"] = f"{type(exc).__name__}: {exc}"
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    info["tf32"] = {k: os.environ.get(k) for k in ("CUPY_TF32", "NVIDIA_TF32_OVERRIDE")}
    return info


def tests(path):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {"ran": False}
    cases, failed, skipped = [], [], []
    for case in root.iter("testcase"):
        status = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                status = tag
        name = f"{case.get('classname')}::{case.get('name')}"
        cases.append({"name": name, "status": status})
        if status in ("failure", "error"):
            failed.append(name)
        elif status == "skipped":  # with its reason: a missing library is not a failure
            skipped.append(f"{name} ({case.find('skipped').get('message', '')})")
    count = {s: sum(c["status"] == s for c in cases) for s in
             ("passed", "failure", "error", "skipped")}
    return {"ran": True, "counts": count, "failed": failed, "skipped": skipped,
            "cases": cases}


def benchmarks(path):
    try:
        data = json.load(open(path))
    except (OSError, ValueError):  # not written: the stage failed or timed out
        return {}
    out = {}
    for b in data["benchmarks"]:
        e = b["extra_info"]
        # the per-operation benchmarks name no network: their group tells them apart
        key = (e.get("network") or b.get("group") or b["fullname"], e.get("dtype"), b["name"])
        out[key] = dict(e, median_s=b["stats"]["median"])
    return out


def _status(case_names, cases):
    picked = [c for c in cases if any(n in c["name"] for n in case_names)]
    if not picked:
        return "not run"
    counts = {s: sum(c["status"] == s for c in picked) for s in
              ("passed", "failure", "error", "skipped")}
    if counts["passed"] == len(picked):
        return f"all {len(picked)} passed"
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v)


def _all_passed(status):
    """A tests row is met only when its tests ran and every one passed."""
    return status.startswith("all ") and status.endswith(" passed")


def _counts(counts):
    words = {"passed": "passed", "failure": "failed", "error": "errors", "skipped": "skipped"}
    return ", ".join(f"{counts[k]} {w}" for k, w in words.items())


# the precision targets: speed-up over nnx's own float32, and the accuracy gap
PRECISION_SPEEDUP = {"tf32": 3.0, "bfloat16": 5.0, "float16": 5.0}
ACCURACY_GAP = 0.003  # 0.3 points of test accuracy


def _json(path):
    """A stage's JSON output, or None where the stage did not write it."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _precision_targets(bench, train):
    """Rows for the reduced precisions: each against nnx's float32 and
    against PyTorch with the same setting (784-4096-4096-10, batch 1024), and
    each one's test accuracy in the Fashion-MNIST-sized run against float32's."""
    def rate(who, precision):
        e = next((v for k, v in bench.items() if k[2] == f"{who}-{precision}"), None)
        return e and e.get("samples_per_s")
    rows = []
    base = rate("nnx-gpu", "float32")
    for p, wanted in PRECISION_SPEEDUP.items():
        mine, peer = rate("nnx-gpu", p), rate("torch-cuda", p)
        rows.append((f"784-4096-4096-10, b1024, precision={p}: nnx / nnx float32",
                     f">= {wanted:g}x", f"{mine / base:.2f}x" if mine and base else "not run",
                     bool(mine and base and mine / base >= wanted)))
        what = "TF32 on" if p == "tf32" else f"autocast {p}"
        rows.append((f"784-4096-4096-10, b1024, precision={p}: nnx / PyTorch ({what})",
                     ">= 1.0x", f"{mine / peer:.2f}x" if mine and peer else "not run",
                     bool(mine and peer and mine / peer >= 1.0)))
    what_run = _run_name(train)
    runs = (train or {}).get("precisions") or {}
    ref = ((train or {}).get("gpu") or {}).get("test_accuracy")
    by_seed = (train or {}).get("accuracy_by_seed") or {}
    for p in PRECISION_SPEEDUP:
        acc = (runs.get(p) or {}).get("test_accuracy")
        gap = None if acc is None or ref is None else ref - acc
        measured = (f"{gap * 100:+.2f} points ({acc:.4f} vs {ref:.4f}, seed 1)"
                    if gap is not None else "not run")
        mine, base = by_seed.get(p) or [], by_seed.get("float32") or []
        n = min(len(mine), len(base))
        if n >= 2:  # the same seeds for both: the mean's gap is the figure
            gap = statistics.mean(base[:n]) - statistics.mean(mine[:n])
            measured = (f"{gap * 100:+.2f} points (mean of {n} seeds: "
                        f"{statistics.mean(mine[:n]):.4f} vs {statistics.mean(base[:n]):.4f}; "
                        f"float32's seeds {min(base[:n]):.4f}-{max(base[:n]):.4f}, "
                        f"{p}'s {min(mine[:n]):.4f}-{max(mine[:n]):.4f})")
        rows.append((f"{what_run}, precision={p}: test accuracy below float32's",
                     f"<= {ACCURACY_GAP * 100:.1f} points", measured,
                     gap is not None and gap <= ACCURACY_GAP))
    return rows


def _run_name(train):
    """The training run's data, as the report names it."""
    if (train or {}).get("data") == "fashion-mnist":
        return "Fashion-MNIST run"
    return "Fashion-MNIST-sized run (synthetic rows)"


SKLEARN_SPEEDUP = 20.0  # nnx's estimator on the GPU over scikit-learn on the machine's CPU


def _sklearn_targets(rows):
    """nnx's MLPClassifier on the GPU against scikit-learn's on this machine's
    CPU (bench/sklearn_compare.py): the target is Fashion-MNIST's row; the
    digits row, far too small for a GPU, is shown beside it."""
    out = []
    for name in ("fashion-mnist", "digits"):
        r = next((r for r in rows if r.get("dataset") == name
                  and r.get("nnx_backend") == "gpu"), None)
        wanted = f">= {SKLEARN_SPEEDUP:g}x" if name == "fashion-mnist" else "(shown)"
        label = (f"MLPClassifier (256,), adam, {name}, float32: nnx on the GPU / "
                 "scikit-learn on this CPU")
        shown = None if name != "fashion-mnist" else False  # None: no target of its own
        if r is None:
            out.append((label, wanted, "not run", shown))
            continue
        q = r["ratio"]
        out.append((label, wanted, f"{q[0]:.1f}x ({q[1]:.1f}-{q[2]:.1f}; {r['rows']} rows x "
                    f"{r['epochs']} epochs, accuracy {r['sklearn_accuracy']:.4f} / "
                    f"{r['nnx_accuracy']:.4f})",
                    shown if shown is None else q[0] >= SKLEARN_SPEEDUP))
    return out


def _tf32_note(d):
    tf32 = d.get("tf32") or {}
    if tf32.get("NVIDIA_TF32_OVERRIDE") == "0":  # an older check: off for the whole script
        return "TF32 off (" + ", ".join(f"{k}={v}" for k, v in tf32.items()) + ")."
    return ("TF32 off for the tests and the float32 benchmarks (NVIDIA_TF32_OVERRIDE=0 in "
            "those stages), allowed in the precision stage.")


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("outdir")
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--rerender", action="store_true",
                   help="keep the device and the seconds of OUTDIR/report.json (written on "
                        "the GPU machine) and render every figure again from the raw files")
    a = p.parse_args(argv)
    device, seconds = None, a.seconds
    if a.rerender:
        if a.seconds is not None:
            p.error("--seconds and --rerender: the seconds come from report.json; "
                    "pass one or the other")
        path = os.path.join(a.outdir, "report.json")
        try:
            with open(path) as f:
                old = json.load(f)
            device, seconds = old["device"], old.get("seconds")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            p.error(f"--rerender needs {path} as gpu_check.sh wrote it (with its "
                    f"'device' entry): {type(exc).__name__}: {exc}")
    t = tests(os.path.join(a.outdir, "gpu-tests.xml"))
    # the benchmarks of stages 2 and 3, in two files so that one stage's time limit
    # cannot lose the other's figures (pytest-benchmark writes at the very end)
    bench = {**benchmarks(os.path.join(a.outdir, "bench.json")),
             **benchmarks(os.path.join(a.outdir, "bench-adam.json"))}
    precision = benchmarks(os.path.join(a.outdir, "precision.json"))
    train, sk_rows = _json(os.path.join(a.outdir, "train.json")), _json(
        os.path.join(a.outdir, "sklearn.json"))
    cases = t.get("cases", [])

    def rate(net, dtype, name):
        e = bench.get((net, dtype, name))
        return e and e.get("samples_per_s")

    large, study = "large-784-4096-4096-10", "study-784-89-10"
    lg_nnx, lg_torch = rate(large, "float32", "nnx-gpu"), rate(large, "float32", "torch-cuda")
    lg = bench.get((large, "float32", "nnx-gpu"), {})
    st_fit, st_torch = rate(study, "float32", "nnx-gpu-fit"), rate(study, "float32", "torch-cuda")
    st_graph = bench.get((study, "float32", "nnx-gpu-fit"), {}).get("graph")
    st_graph_torch = rate(study, "float32", "torch-cuda-graph")
    st_compiled = rate(study, "float32", "torch-cuda-compile")
    parity = _status(["test_parity", "test_fused_bias_activation", "test_captured"], cases)
    no_copies = _status(["test_no_device_to_host_copy_per_batch"], cases)
    targets = [
        ("parity with the CPU (1e-10 f64, 1e-4 f32, TF32 off)", "all pass", parity,
         _all_passed(parity)),
        ("784-4096-4096-10, b1024, f32: share of the card's f32 matmul rate", ">= 70%",
         f"{lg['fraction_of_ceiling']:.0%}" if lg.get("fraction_of_ceiling") else "not run",
         (lg.get("fraction_of_ceiling") or 0) >= 0.70),
        ("784-4096-4096-10, b1024, f32: nnx / PyTorch CUDA eager", ">= 1.0x",
         f"{lg_nnx / lg_torch:.2f}x" if lg_nnx and lg_torch else "not run",
         bool(lg_nnx and lg_torch and lg_nnx / lg_torch >= 1.0)),
        ("784-89-10, b60, f32, captured step: nnx / PyTorch CUDA eager", ">= 2x",
         f"{st_fit / st_torch:.2f}x (graph: {st_graph})" if st_fit and st_torch else "not run",
         bool(st_fit and st_torch and st_fit / st_torch >= 2.0)),
        ("784-89-10, b60, f32, captured step: nnx / PyTorch's step captured in a CUDA graph",
         ">= 1.5x", f"{st_fit / st_graph_torch:.2f}x" if st_fit and st_graph_torch else "not run",
         bool(st_fit and st_graph_torch and st_fit / st_graph_torch >= 1.5)),
        ("784-89-10, b60, f32: nnx / torch.compile(mode='reduce-overhead')", "(shown)",
         f"{st_fit / st_compiled:.2f}x" if st_fit and st_compiled else "not run",
         None),  # shown beside the targets, not one of them
        ("device-to-host copies per batch", "0", no_copies, _all_passed(no_copies)),
    ]
    targets += _precision_targets(precision, train)
    g = (train or {}).get("gpu") or {}
    epoch_s = g.get("seconds_per_epoch")
    targets.append(("784-178-46-10, dropout, b60, 60k rows: s per epoch after the first",
                    "<= 0.05 s", f"{epoch_s:.3f} s" if epoch_s else "not run",
                    bool(epoch_s and epoch_s <= 0.05)))
    targets += _sklearn_targets(sk_rows if isinstance(sk_rows, list) else [])
    for net in (large, study):  # nnx's Adam in its captured fit against PyTorch's fused Adam
        mine = rate(net, "float32", "nnx-gpu-adam-fit")
        for mode, wanted in (("fused", ">= 1.0x"), ("fused-graph", "(shown)")):
            peer = rate(net, "float32", f"torch-cuda-adam-{mode}")
            what = "fused Adam" + (", captured in a CUDA graph" if mode == "fused-graph" else "")
            targets.append((f"{net}, f32, Adam: nnx captured fit / PyTorch {what}", wanted,
                            f"{mine / peer:.2f}x" if mine and peer else "not run",
                            bool(mine and peer and mine / peer >= 1.0) if mode == "fused"
                            else None))  # shown beside the target, not one itself
    report = {"device": device or device_info(),
              "tests": {k: v for k, v in t.items() if k != "cases"},
              "benchmarks": [dict(v, network=k[0], dtype=k[1], name=k[2])
                             for k, v in sorted(bench.items(), key=str)],
              "precision_benchmarks": [dict(v, name=k[2])
                                       for k, v in sorted(precision.items(), key=str)],
              "fashion_sized_run": train, "sklearn": sk_rows, "seconds": seconds,
              "targets": [{"target": n, "wanted": w, "measured": m, "met": ok}
                          for n, w, m, ok in targets]}
    with open(os.path.join(a.outdir, "report.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)

    d = report["device"]
    md = [f"# nnx GPU check: {d.get('device', '?')}", "",
          f"Driver {d.get('driver_version')}, CUDA runtime {d.get('cuda_runtime_version')}, "
          f"CuPy {d.get('cupy')}, NumPy {d.get('numpy')}, PyTorch {d.get('torch')}, "
          f"Python {d.get('python')}; " + _tf32_note(d) + f" Whole check: {seconds} s.", ""]
    if a.rerender:
        md += ["(Rendered again from this folder's raw files with `--rerender`: the device "
               "and the seconds are those the GPU machine wrote.)", ""]
    if "error" in d:
        md += [f"Device query failed: {d['error']}", ""]
    if t.get("ran"):
        md += [f"`pytest -m gpu`: {_counts(t['counts'])}", ""]
        md += [f"- failed: `{n}`" for n in t["failed"]]
        md += [f"- skipped: `{n}`" for n in t.get("skipped", [])]
    md += ["", "| target | wanted | measured | met |", "|---|---|---|---|"]
    for r in report["targets"]:
        met = "(no target)" if r["met"] is None else "yes" if r["met"] else "**no**"
        md.append(f"| {r['target']} | {r['wanted']} | {r['measured']} | {met} |")
    md += ["", "| network | dtype | run | samples/s | / torch-cuda | share of matmul peak "
           "| graph |", "|---|---|---|---|---|---|---|"]
    for b in report["benchmarks"]:
        if "samples_per_s" in b:
            peer = rate(b["network"], b["dtype"], "torch-cuda")
            ratio = f"{b['samples_per_s'] / peer:.2f}x" if peer else ""
            md.append(f"| {b['network']} | {b['dtype']} | {b['name']} | "
                      f"{b['samples_per_s']:,.0f} | {ratio} | {b['fraction_of_ceiling']:.0%} | "
                      f"{b.get('graph', '')} |")
    if train and "gpu" in train:
        g = train["gpu"]
        rows_ = "/".join(f"{n // 1000}k" for n in train.get("rows", [60_000, 10_000]))
        md += ["", f"{_run_name(train)} ({rows_}, {train['network']}, batch 60):",
               f"GPU {g['seconds_per_epoch']:.3f} s/epoch (median after the first"
               + (f", which took {g['first_epoch_s']:.2f} s" if "first_epoch_s" in g else "")
               + f") over {g['epochs']} epochs, test "
               f"accuracy {g['test_accuracy']:.4f}, captured step: {g['graph']} "
               f"{g['graph_note']}."]
        if "cpu" in train:
            md[-1] += (f" The machine's CPU: {train['cpu']['seconds_per_epoch']:.2f} s/epoch "
                       f"({train['gpu_speedup_per_epoch']:.1f}x slower).")
        if g.get("us_per_step"):
            md += ["", f"Per step: `fit` {g['us_per_step']:.0f} µs; the recorded graphs "
                   "replayed back to back (device time per step, the launch-bound limit): "
                   + ", ".join(f"{v:.0f} µs in graphs of {k}"
                               for k, v in g.get("graph_us_per_step", {}).items())
                   + "."]
    with open(os.path.join(a.outdir, "report.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    # 0 only when gpu tests ran and every one passed (none skipped, none failed)
    counts = t.get("counts", {})
    return 0 if counts.get("passed") and counts["passed"] == sum(counts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
