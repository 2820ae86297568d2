"""The reproduce figure: test accuracy per step and each step's
evaluation-loss curve (needs matplotlib: pip install 'nnx-dl[cli]')."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def _accuracy_panel(ax, result, steps):
    nums = [s["step"] for s in steps]
    ax.bar(nums, [s["test_accuracy"] or 0.0 for s in steps], color="tab:blue",  # None: blown up
           label="nnx")
    if result["dataset"] == "mnist":
        ax.plot(nums, [s["study_accuracy"] for s in steps], "o", color="tab:red",
                label="study (MNIST)")
        # under the axis, so it covers no bar
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.set_ylim(0.0, 1.0)  # from 0: a cut axis makes small differences look large
    ax.set_xticks(nums)
    ax.set_xlabel("step")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{result['dataset']}: test accuracy per step")


def _loss_panel(ax, result, steps):
    curves = {s["step"]: [r for r in s["evaluations"] if r["loss"] is not None] for s in steps}
    mse = "; step 1: MSE" if 1 in curves else ""
    ax.set_ylabel(f"evaluation loss ({result['early_stopping_on']} set{mse})")
    ax.set_yscale("log")
    if all(len(ev) <= 1 for ev in curves.values()):
        # one evaluation per step: a curve per step would be a lone dot on an
        # epoch axis of width zero; show each step's loss by step instead
        shown = [(n, ev[0]["loss"]) for n, ev in curves.items() if ev]
        if shown:
            ax.plot([n for n, _ in shown], [v for _, v in shown], "o-", color="tab:blue",
                    label="evaluation loss")
        ax.set_xticks(list(curves))
        ax.set_xlabel("step (one evaluation each)")
        ax.set_title("evaluation loss per step")
        return
    for n, ev in curves.items():
        if ev:
            ax.plot([r["epoch"] for r in ev], [r["loss"] for r in ev], marker="o",
                    label=f"step {n}")
    ax.set_xlabel("epoch")
    ax.set_title("evaluation loss")
    if ax.get_lines():  # a step that diverged before its first evaluation has no curve
        ax.legend(fontsize=8, ncol=2)


def plot_ladder(result, path):
    steps = result["steps"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    _accuracy_panel(ax1, result, steps)
    _loss_panel(ax2, result, steps)
    scale = result.get("lr_scale", 1.0)
    fig.suptitle(f"nnx {result['nnx_version']} reproduce: backend {result['backend']}, "
                 f"{result['dtype']}" + (f", learning rates x{scale:g}" if scale != 1 else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
