"""Run the benchmark suite and write its side-by-side table.

    python bench/report.py            # CPU: nnx vs PyTorch and JAX, into docs/performance.md
    python bench/report.py --no-readme --out bench/results/cpu.md

The run unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for itself only (this
machine sets them, and they slow NumPy), then reports the BLAS kernel that
actually ran. Every network and dtype runs in an nnx process, then a PyTorch
process, then a JAX process, case after case, --repeats times over; nnx /
PyTorch and nnx / JAX are the medians of those side-by-side runs' ratios. The
Adam cases (nnx.Adam against torch.optim.Adam) run in the same processes. A
peer that is not installed skips, and its columns read n/a. The GPU has its
own script, bench/gpu_check.sh.
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
# the training benchmarks, and each library's -k selection of them
TRAIN_FILES = ("test_train_throughput.py", "test_adam_throughput.py")
PEERS = (("nnx", "not torch and not jax"), ("torch", "torch"), ("jax", "jax"))


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
        "from nnx.backend import fused\n"
        "info['nnx_cpu_updates'] = fused.status()\n"
        "try:\n"
        "    import torch\n"
        "    info['torch'] = torch.__version__; info['torch_threads'] = torch.get_num_threads()\n"
        "except ImportError:\n"
        "    info['torch'] = None\n"
        "try:\n"
        "    import jax\n"
        "    info['jax'] = jax.__version__\n"
        "except ImportError:\n"
        "    info['jax'] = None\n"
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


def _pytest(tmp, label, targets, select, extra):
    """One pytest process over ``targets`` (file names in bench/), keeping
    the benchmarks that ``select`` (a -k expression) picks; their JSON entries."""
    path = os.path.join(tmp, f"{label}.json")
    files = [str(ROOT / "bench" / t) for t in ([targets] if isinstance(targets, str)
                                                else targets)]
    cmd = [sys.executable, "-m", "pytest", *files, "-q",
           "-p", "no:cacheprovider", f"--benchmark-json={path}",
           "--benchmark-columns=median,ops", *(["-k", select] if select else []), *extra]
    print("running:", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True)
    if done.returncode not in (0, 5):  # 5: nothing selected
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        raise SystemExit(f"benchmark run failed ({done.returncode}): {' '.join(cmd)}")
    return json.load(open(path))["benchmarks"] if os.path.exists(path) else []


def run_suite(tmp, extra, repeats):
    """Each network and dtype runs as an nnx process, a PyTorch process and a
    JAX process (a library's idle threads would otherwise compete with the
    others'), case after case, ``repeats`` times over, so that a slow spell of
    this shared machine hits every side of a comparison alike. Per benchmark
    the run with the median time is kept; each repeat's side-by-side runs
    also give one ratio per pair, and the fit-overhead ratios are medians over
    the runs."""
    merged = {}
    for r in range(repeats):
        runs = [_pytest(tmp, f"ops-{r}", "test_ops_bench.py", None, extra)]
        for net, dtype in _cases():
            for peer, select in PEERS:
                runs.append(_pytest(tmp, f"{peer}-{net}-{dtype}-{r}", TRAIN_FILES,
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
    """``mine``/``peer`` throughput of each repeat's side-by-side pair, sorted."""
    a, b = mine["rates_by_repeat"], peer["rates_by_repeat"]
    return sorted(a[r] / b[r] for r in a if a[r] and b.get(r))


def _ratio_cell(mine, peer, bold=True, unit=""):
    """The median side-by-side ratio with its range, or n/a without both."""
    pairs = _pair_ratios(mine, peer) if mine and peer else []
    if not pairs:
        return "n/a"
    mid = f"{statistics.median(pairs):.2f}x"
    return f"{f'**{mid}**' if bold else mid}{unit} ({pairs[0]:.2f}-{pairs[-1]:.2f})"


def _versions(info):
    torch = (f"PyTorch {info['torch']} ({info['torch_threads']} threads)"
             if info.get("torch") else "PyTorch not installed")
    jax = f"JAX {info['jax']} (XLA CPU)" if info.get("jax") else "JAX not installed"
    nnx = f"nnx CPU updates: {info.get('nnx_cpu_updates', 'unknown')}"
    return f"{torch}; {jax}; {nnx}"


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
        + f"; {_versions(info)}",
        "",
        "| network (batch) | dtype | nnx samples/s | PyTorch eager samples/s | nnx / PyTorch "
        "| JAX jit samples/s | nnx / JAX | nnx share of matmul peak | PyTorch share "
        "| JAX share | fit / bare loop | fit / hand-shuffled loop |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def rate(e):
        return f"{e['samples_per_s']:,.0f}" if e else "n/a"

    for (net, dtype), r in sorted(rows.items()):
        nnx_, torch_, jax_ = r.get("nnx-cpu"), r.get("torch-cpu"), r.get("jax-cpu")
        fit = r.get("nnx-cpu-fit")
        if nnx_ is None:
            continue
        overhead = [f"{fit[k]:.2f}x time" if fit and k in fit else "n/a"
                    for k in ("fit_over_bare", "fit_over_shuffled")]
        lines.append(
            f"| {net} | {dtype} | {rate(nnx_)} | {rate(torch_)} | {_ratio_cell(nnx_, torch_)} | "
            f"{rate(jax_)} | {_ratio_cell(nnx_, jax_)} | "
            f"{share(nnx_):.0%} of {peak[dtype] / 1e9:.0f} GFLOP/s | "
            f"{f'{share(torch_):.0%}' if torch_ else 'n/a'} | "
            f"{f'{share(jax_):.0%}' if jax_ else 'n/a'} | {overhead[0]} | {overhead[1]} |")
    adam = [(key, r) for key, r in sorted(rows.items()) if "nnx-cpu-adam" in r]
    if adam:
        lines += ["", "| network (batch) | dtype | nnx Adam samples/s "
                  "| PyTorch Adam (foreach) samples/s | nnx / PyTorch "
                  "| Adam / momentum step, nnx | Adam / momentum step, PyTorch |",
                  "|---|---|---|---|---|---|---|"]
        for (net, dtype), r in adam:
            nnx_, torch_ = r["nnx-cpu-adam"], r.get("torch-cpu-adam")
            # time per sample of an Adam loop over a momentum loop, run in the
            # same process one after the other: what Adam's own pass costs
            cost = [_ratio_cell(r.get(m), a, bold=False, unit=" time")
                    for a, m in ((nnx_, "nnx-cpu"), (torch_, "torch-cpu"))]
            lines.append(f"| {net} | {dtype} | {rate(nnx_)} | {rate(torch_)} | "
                         f"{_ratio_cell(nnx_, torch_)} | {cost[0]} | {cost[1]} |")
    ops = sorted((b["group"], b["name"], b["stats"]["median"]) for b in data["benchmarks"]
                 if b["group"].startswith("op "))
    if ops:
        lines += ["", "| operation | backend | median |", "|---|---|---|"]
        lines += [f"| {g[3:]} | {n} | {m * 1e6:,.0f} µs |" for g, n, m in ops]
    lines += ["", f"Each figure is the median over {data['repeats']} alternating runs of "
              "the median of 7 rounds; nnx, PyTorch and JAX run in separate processes so "
              "no library's idle threads slow another, one network and dtype after another. "
              "nnx / PyTorch and nnx / JAX are the medians of the runs' side-by-side ratios "
              "(lowest-highest in brackets). samples/s counts training samples "
              "(forward, backward, optimiser step: SGD with momentum 0.9, and Adam in its own "
              "table); JAX compiles the whole step, batch gather included, with `jax.jit` and "
              "is called once per batch. The matmul peak is NumPy's 1024x1024x1024 "
              "product, measured in every run, and each share is over the median of those "
              "peaks for its dtype (no library whose matrix products run at NumPy's rate can "
              "be more than 1/share times faster than that peer on that network); "
              "fit / bare loop is the time per epoch of "
              "`Trainer.fit` (shuffling, batching, one evaluation) over the bare step loop on "
              "pre-sliced batches, and over a loop that shuffles by hand (a permutation per "
              "epoch, each batch gathered into reused buffers): the latter is what the "
              "Trainer itself costs; the three alternate round by round (medians of 9)."]
    if adam:
        lines += ["", "Adam: `nnx.Adam` and `torch.optim.Adam(foreach=True)` at lr 0.001, betas "
                  "(0.9, 0.999), eps 1e-8, in the same processes as the momentum runs; "
                  "Adam / momentum step is the time of each library's Adam loop over its "
                  "momentum loop in the same run (median of the runs, range in brackets): "
                  "the share of a step that Adam's own pass over the parameters adds."]
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
        + "; by default it also rewrites the table in docs/performance.md.",
        epilog="Extra pytest arguments go after --, and run after -m 'not gpu': "
               "python bench/report.py --repeats 1 --no-readme --out /tmp/cpu.md -- -x")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "cpu.md"),
                   help="the Markdown table; its measurements go beside it, as .json "
                        "(default: %(default)s)")
    p.add_argument("--no-readme", action="store_true", help="leave docs/performance.md alone")
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
        readme = ROOT / "docs" / "performance.md"
        text = readme.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            text = head + START + "\n" + md + "\n" + END + rest.split(END, 1)[1]
            readme.write_text(text)
            print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
