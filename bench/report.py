"""Run the benchmark suite and write its side-by-side table.

    python bench/report.py            # CPU: nnx vs PyTorch eager, writes README's Performance
    python bench/report.py --no-readme --out bench/results/cpu.md

The run unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for itself only (this
machine sets them, and they slow NumPy), then reports the BLAS kernel that
actually ran. Every network and dtype runs in an nnx process and then a
PyTorch process, case after case, --repeats times over; nnx / PyTorch is the
median of those side-by-side pairs' ratios. The GPU has its own script,
bench/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
START, END = "<!-- perf:start -->", "<!-- perf:end -->"


def _cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info():
    """Machine, BLAS and thread details, read in a child with the same env."""
    code = (
        "import json, os, platform, numpy\n"
        "from threadpoolctl import threadpool_info\n"
        "info = {'numpy': numpy.__version__, 'python': platform.python_version(),\n"
        "        'cores': os.cpu_count(), 'blas': [\n"
        "   {k: p.get(k) for k in ('internal_api', 'version', 'architecture', 'num_threads')}\n"
        "   for p in threadpool_info() if p.get('user_api') == 'blas']}\n"
        "try:\n"
        "    import torch\n"
        "    info['torch'] = torch.__version__; info['torch_threads'] = torch.get_num_threads()\n"
        "except ImportError:\n"
        "    info['torch'] = None\n"
        "print(json.dumps(info))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), check=True)
    info = json.loads(out.stdout)
    info["cpu"] = _cpu_model()
    return info


def _env():
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    return env


def _cases():
    """(network, dtype) pairs of the CPU training benchmarks."""
    sys.path.insert(0, str(ROOT))
    from bench.conftest import DTYPES, GPU_ONLY, NETWORKS
    return [(net, dtype) for net in NETWORKS if net not in GPU_ONLY for dtype in DTYPES]


def _pytest(tmp, label, target, select, extra):
    path = os.path.join(tmp, f"{label}.json")
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "bench" / target), "-q",
           "-p", "no:cacheprovider", f"--benchmark-json={path}",
           "--benchmark-columns=median,ops", *(["-k", select] if select else []), *extra]
    print("running:", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True)
    if done.returncode not in (0, 5):  # 5: nothing selected (no torch, say)
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        raise SystemExit(f"benchmark run failed ({done.returncode}): {' '.join(cmd)}")
    return json.load(open(path))["benchmarks"] if os.path.exists(path) else []


def run_suite(tmp, extra, repeats):
    """Each network and dtype runs as an nnx process and then a PyTorch
    process (a library's idle threads would otherwise compete with the
    other's), case after case, ``repeats`` times over, so that a slow spell of
    this shared machine hits both sides of a comparison alike. Per benchmark
    the run with the median time is kept; each repeat's nnx/PyTorch pair also
    gives one ratio, and the fit-overhead ratios are medians over the runs."""
    merged = {}
    for r in range(repeats):
        runs = [_pytest(tmp, f"ops-{r}", "test_ops_bench.py", None, extra)]
        for net, dtype in _cases():
            for peer, select in (("nnx", "not torch"), ("torch", "torch")):
                runs.append(_pytest(tmp, f"{peer}-{net}-{dtype}-{r}", "test_train_throughput.py",
                                    f"{net} and {dtype} and {select}", extra))
        for run in runs:
            for b in run:
                b["repeat"] = r
                merged.setdefault((b["group"], b["name"]), []).append(b)
    out = []
    for entries in merged.values():
        rates = {b["repeat"]: b["extra_info"].get("samples_per_s") for b in entries}
        entries.sort(key=lambda b: b["stats"]["median"])
        mid = entries[len(entries) // 2]
        mid["rates_by_repeat"] = rates
        for key in ("fit_over_bare", "fit_over_shuffled", "shuffled_over_bare"):
            values = [b["extra_info"][key] for b in entries if key in b["extra_info"]]
            if values:  # each run's ratio was measured side by side: take their median
                mid["extra_info"][key] = statistics.median(values)
        out.append(mid)
    return {"benchmarks": out, "repeats": repeats}


def _pair_ratios(mine, peer):
    """nnx/PyTorch throughput of each repeat's side-by-side pair."""
    a, b = mine["rates_by_repeat"], peer["rates_by_repeat"]
    return sorted(a[r] / b[r] for r in a if a[r] and b.get(r))


def table(data, info):
    # one matmul peak per dtype for the whole report: the median of the peaks the
    # runs measured, so that one slow reading does not flatter one case's share
    peaks = {}
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if "matmul_ceiling_flops" in e:
            peaks.setdefault(e["dtype"], []).append(e["matmul_ceiling_flops"])
    peak = {dtype: statistics.median(v) for dtype, v in peaks.items()}

    def share(e):
        return e["samples_per_s"] * e["flops_per_sample"] / peak[e["dtype"]]

    rows = {}
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if "samples_per_s" not in e:
            continue
        rows.setdefault((e["network"], e["dtype"]), {})[b["name"]] = {
            **e, "rates_by_repeat": b.get("rates_by_repeat", {})}
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, "
        f"NumPy {info['numpy']}, BLAS "
        + ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}, "
                    f"{b['num_threads']} threads)" for b in info["blas"])
        + (f"; PyTorch {info['torch']} ({info['torch_threads']} threads)"
           if info.get("torch") else "; PyTorch not installed"),
        "",
        "| network (batch) | dtype | nnx samples/s | PyTorch eager samples/s | nnx / PyTorch "
        "| nnx share of matmul peak | PyTorch share | fit / bare loop | fit / hand-shuffled loop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (net, dtype), r in sorted(rows.items()):
        nnx_, torch_, fit = r.get("nnx-cpu"), r.get("torch-cpu"), r.get("nnx-cpu-fit")
        if nnx_ is None:
            continue
        t = f"{torch_['samples_per_s']:,.0f}" if torch_ else "n/a"
        t_share = f"{share(torch_):.0%}" if torch_ else "n/a"
        ratio = "n/a"
        if torch_:
            pairs = _pair_ratios(nnx_, torch_)
            ratio = (f"**{statistics.median(pairs):.2f}x** ({pairs[0]:.2f}-{pairs[-1]:.2f})"
                     if pairs else "n/a")
        overhead = [f"{fit[k]:.2f}x time" if fit and k in fit else "n/a"
                    for k in ("fit_over_bare", "fit_over_shuffled")]
        lines.append(
            f"| {net} | {dtype} | {nnx_['samples_per_s']:,.0f} | {t} | {ratio} | "
            f"{share(nnx_):.0%} of {peak[dtype] / 1e9:.0f} GFLOP/s | {t_share} | "
            f"{overhead[0]} | {overhead[1]} |")
    ops = sorted((b["group"], b["name"], b["stats"]["median"]) for b in data["benchmarks"]
                 if b["group"].startswith("op "))
    if ops:
        lines += ["", "| operation | backend | median |", "|---|---|---|"]
        lines += [f"| {g[3:]} | {n} | {m * 1e6:,.0f} µs |" for g, n, m in ops]
    lines += ["", f"Each figure is the median over {data['repeats']} alternating runs of "
              "the median of 7 rounds; nnx and PyTorch run in separate processes so neither "
              "library's idle threads slow the other, one network and dtype after another. "
              "nnx / PyTorch is the median of the runs' side-by-side ratios (lowest-highest "
              "in brackets). samples/s counts training samples "
              "(forward, backward, optimiser step); the matmul peak is a 1024x1024x1024 "
              "product, measured in every run, and each share is over the median of those "
              "peaks for its dtype (no library can run more than 1/share times faster than "
              "PyTorch on that network); "
              "fit / bare loop is the time per epoch of "
              "`Trainer.fit` (shuffling, batching, one evaluation) over the bare step loop on "
              "pre-sliced batches, and over a loop that shuffles by hand (a permutation per "
              "epoch, each batch gathered into reused buffers): the latter is what the "
              "Trainer itself costs; the three alternate round by round (medians of 9)."]
    return "\n".join(lines)


def saved(path):
    """``(data, info)`` back from a report's JSON (what ``main`` writes beside
    the Markdown), to render the table again without running the suite."""
    d = json.loads(pathlib.Path(path).read_text())
    benchmarks, repeats = [], 1
    for b in d["benchmarks"]:
        b = dict(b)
        entry = {"name": b.pop("name"), "group": b.pop("group"),
                 "stats": {"median": b.pop("median_s")}}
        runs = b.pop("samples_per_s_by_run", None)
        if runs is not None:
            entry["rates_by_repeat"] = dict(enumerate(runs))
            repeats = max(repeats, len(runs))
        entry["extra_info"] = b
        benchmarks.append(entry)
    return {"benchmarks": benchmarks, "repeats": repeats}, d["machine"]


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0].rstrip(".")
        + "; by default it also rewrites README.md's Performance section.",
        epilog="Extra pytest arguments go after --, and run after -m 'not gpu': "
               "python bench/report.py --repeats 1 --no-readme --out /tmp/cpu.md -- -x")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "cpu.md"),
                   help="the Markdown table; its measurements go beside it, as .json "
                        "(default: %(default)s)")
    p.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    p.add_argument("--repeats", type=int, default=3, help="side-by-side runs of every case")
    p.add_argument("--from-json", metavar="PATH",
                   help="render the table again from a report's saved JSON "
                        "(bench/results/cpu.json) instead of running the suite")
    p.add_argument("pytest_args", nargs="*",
                   help="extra pytest arguments for every run, after -m 'not gpu' "
                        "(the report is the CPU's)")
    args = p.parse_args(argv)
    if any(a == "-k" or a.startswith("-k") for a in args.pytest_args):
        p.error("-k would replace the per-case selection; the report runs every CPU case")
    if args.from_json:
        data, info = saved(args.from_json)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            data = run_suite(tmp, ["-m", "not gpu", *args.pytest_args], args.repeats)
        info = machine_info()
    md = table(data, info)
    print("\n" + md)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md + "\n")
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "benchmarks": [
        {"name": b["name"], "group": b["group"], "median_s": b["stats"]["median"],
         **b["extra_info"],
         **({"samples_per_s_by_run": [v for _, v in sorted(b["rates_by_repeat"].items())]}
            if "samples_per_s" in b["extra_info"] else {})}
        for b in data["benchmarks"]]}, indent=1))
    if not args.no_readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            text = head + START + "\n" + md + "\n" + END + rest.split(END, 1)[1]
            readme.write_text(text)
            print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
