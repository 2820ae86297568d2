"""The reproduce figure: test accuracy per step and each step's
evaluation-loss curve (needs matplotlib: pip install 'nnx-dl[cli]')."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def plot_ladder(result, path):
    steps = result["steps"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    nums = [s["step"] for s in steps]
    ax1.bar(nums, [s["test_accuracy"] for s in steps], color="tab:blue", label="nnx")
    if result["dataset"] == "mnist":
        ax1.plot(nums, [s["study_accuracy"] for s in steps], "o", color="tab:red",
                 label="study (MNIST)")
    accs = [s["test_accuracy"] for s in steps]
    ax1.set_ylim(max(0.0, min(accs) - 0.05), 1.0)
    ax1.set_xticks(nums)
    ax1.set_xlabel("step")
    ax1.set_ylabel("test accuracy")
    ax1.set_title(f"{result['dataset']}: test accuracy per step")
    ax1.legend(loc="lower right")
    for s in steps:
        ev = [r for r in s["evaluations"] if r["loss"] is not None]
        if ev:
            ax2.plot([r["epoch"] for r in ev], [r["loss"] for r in ev], marker="o",
                     label=f"step {s['step']}")
    ax2.set_xlabel("epoch")
    mse = "; step 1: MSE" if 1 in nums else ""
    ax2.set_ylabel(f"evaluation loss ({result['early_stopping_on']} set{mse})")
    ax2.set_yscale("log")
    ax2.set_title("evaluation loss")
    if ax2.get_lines():  # a step that diverged before its first evaluation has no curve
        ax2.legend(fontsize=8, ncol=2)
    scale = result.get("lr_scale", 1.0)
    fig.suptitle(f"nnx {result['nnx_version']} reproduce: backend {result['backend']}, "
                 f"{result['dtype']}" + (f", learning rates x{scale:g}" if scale != 1 else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
