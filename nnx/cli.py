"""The ``nnx`` command line: reproduce the study, train one network, evaluate
a checkpoint. Every user error ends as one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time

import numpy as np

from . import __version__, checkpoint
from ._checks import InputError
from .backend import BACKENDS, BackendUnavailableError, get_backend
from .data import DATASETS
from .layers import Dense
from .losses import LOSSES
from .metrics import accuracy, predict_classes
from .network import NeuralNetwork
from .ops import ACTIVATIONS
from .optimizers import DECAY_TYPES, SGD, SGDMomentum
from .study import BATCH_SIZE, EPOCHS, EVAL_EVERY, LADDER, SEED
from .trainer import Trainer, TrainingDiverged


class UsageError(Exception):
    """A bad value on the command line, reported without a traceback."""


# ----------------------------------------------------------------- data prep
def _prepare(args, validation=True):
    """Load the dataset, hold out a validation split from the training set,
    standardise on the training rows. Returns a dict of host arrays."""
    from .data import feature_stats
    ds = _load(args)
    X_train, y_train = ds.X_train, ds.y_train
    X_val = y_val = None
    if validation:
        rng = np.random.default_rng(args.seed)
        order = rng.permutation(X_train.shape[0])
        n_val = max(1, int(round(0.1 * X_train.shape[0])))
        val, train = order[:n_val], order[n_val:]
        X_val, y_val = X_train[val], y_train[val]
        X_train, y_train = X_train[train], y_train[train]
    mean, std = feature_stats(X_train)
    out = {"X_train": (X_train - mean) / std, "y_train": y_train,
           "X_test": (ds.X_test - mean) / std, "y_test": ds.y_test,
           "mean": mean, "std": std, "n_classes": ds.n_classes, "source": ds.source}
    if validation:
        out["X_val"], out["y_val"] = (X_val - mean) / std, y_val
    return out


# ------------------------------------------------------------------ progress
class _Progress:
    """A per-run progress bar (tqdm) showing epoch, last evaluation loss and
    learning rate; silent with --quiet, off a terminal, or without tqdm."""

    def __init__(self, total, desc, quiet):
        self.bar = None
        if quiet or not sys.stderr.isatty():
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, desc=desc, unit="epoch", leave=False, file=sys.stderr)

    def __call__(self, epoch, record, lr):
        if self.bar is None:
            return
        self.bar.update(1)
        if record is not None:
            loss = record["loss"] if record["loss"] is not None else record["train_loss"]
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.4g}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _fit(net, optim, prep, args, desc):
    progress = _Progress(args.epochs, desc, args.quiet)
    validation = None
    if getattr(args, "early_stopping", "validation") == "validation":
        validation = (prep["X_val"], prep["y_val"])
    t0 = time.perf_counter()
    try:
        history = Trainer(net, optim).fit(
            prep["X_train"], prep["y_train"], prep["X_test"], prep["y_test"],
            epochs=args.epochs, eval_every=args.eval_every,
            batch_size=args.batch_size, seed=args.seed, validation=validation,
            callback=lambda e, r: progress(e, r, optim.lr))
        net.backend.synchronize()
    finally:
        progress.close()
    return history, time.perf_counter() - t0


# ----------------------------------------------------------------- reproduce
def _parse_steps(text):
    steps = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            lo, hi = int(lo), int(hi or lo)
            if hi < lo:
                raise UsageError(f"--steps {text!r}: the range {part!r} runs backwards; "
                                 f"write '{hi}-{lo}'")
            steps.update(range(lo, hi + 1))
    except ValueError:
        raise UsageError(f"--steps {text!r}: expected numbers 1-8 like '1-8' or '5,7'") from None
    if not steps or min(steps) < 1 or max(steps) > 8:
        raise UsageError(f"--steps {text!r}: steps run from 1 to 8")
    return sorted(steps)


# The study's rates were chosen for MNIST. On Fashion-MNIST they overshoot:
# with them the best step reaches about 0.857 (an independent NumPy loop of
# step 5 agrees), with a tenth of them about 0.88, and the ladder keeps its shape.
DEFAULT_LR_SCALE = {"fashion-mnist": 0.1}
TRAIN_LR = 0.2  # nnx train's rate: the study's step 5 starts there


def _check_training_flags(args):
    """The run's sizes, checked before any data is loaded (flag names in the messages)."""
    for flag, value, minimum in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                                 ("--seed", args.seed, 0)):
        if value < minimum:
            raise UsageError(f"{flag} {value}: must be "
                             + ("a positive integer" if minimum else "a non-negative integer"))
    if args.eval_every is None:
        args.eval_every = min(EVAL_EVERY, args.epochs)
    if not 1 <= args.eval_every <= args.epochs:
        raise UsageError(f"--eval-every {args.eval_every}: must be between 1 and --epochs "
                         f"{args.epochs}")
    _check_data_flags(args)
    get_backend(args.backend, args.dtype)  # a missing CuPy is reported before the data load


def _check_data_flags(args):
    if args.data_dir is not None and args.dataset == "digits":
        raise UsageError(f"--data-dir {args.data_dir!r}: applies to --dataset mnist or "
                         "fashion-mnist; digits is bundled with scikit-learn")


def _load(args):
    """The dataset of ``--dataset``; a missing file's message names the flags."""
    from .data import DatasetError, DatasetNotFound, load_dataset
    try:
        return load_dataset(args.dataset, data_dir=args.data_dir,
                            download=not args.no_download)
    except (DatasetError, DatasetNotFound) as exc:
        exc.args = (str(exc).replace("data_dir=...", "--data-dir DIR").replace(
            "download=False", "--no-download"),)
        raise


def _check_out_folder(out):
    """``--out`` of reproduce: a folder, or a path where one can be made."""
    if not out or (os.path.lexists(out) and not os.path.isdir(out)):
        raise UsageError(f"--out {out!r}: " + ("exists and is not a folder; " if out else "")
                         + "expected a folder for results.json and results.png")
    problem = checkpoint.folder_problem(out)
    for name in ("results.json", "results.png"):
        target = os.path.join(out, name)
        if problem is None and os.path.lexists(target) and not os.path.isfile(target):
            problem = f"{target!r} exists and is not a regular file"
    if problem:
        raise UsageError(f"--out {out!r}: {problem}")


def _check_out_file(out):
    """``--out`` of train: a file path in a folder that exists or can be made."""
    problem = checkpoint.path_problem(out)
    if problem:
        raise UsageError(f"--out {out!r}: {problem}")


def cmd_reproduce(args):
    steps = _parse_steps(args.steps)
    _check_training_flags(args)
    _check_out_folder(args.out)
    if args.lr_scale is None:
        args.lr_scale = DEFAULT_LR_SCALE.get(args.dataset, 1.0)
    if not (args.lr_scale > 0 and math.isfinite(args.lr_scale)):
        raise UsageError(f"--lr-scale {args.lr_scale!r}: must be a finite number > 0")
    for number in steps:  # the scaled rates themselves must be valid rates
        try:
            LADDER[number - 1].optimizer(args.lr_scale)
        except InputError as exc:
            raise UsageError(f"--lr-scale {args.lr_scale!r}: step {number}: {exc}") from None
    prep = _prepare(args, validation=args.early_stopping == "validation")
    n_in, n_out = prep["X_train"].shape[1], prep["n_classes"]
    rows, failures = [], []
    show_study = args.dataset == "mnist"
    header = ["step", "change", "test acc", "best eval loss", "epochs", "seconds"]
    if show_study:
        header.insert(3, "study")
    widths = [4, 40, 8, 7, 14, 6, 8] if show_study else [4, 40, 8, 14, 6, 8]
    print(f"nnx {__version__} reproduce: dataset={args.dataset} ({prep['source']}), "
          f"backend={args.backend}, dtype={args.dtype}, early stopping on {args.early_stopping}"
          + (f", learning rates x{args.lr_scale:g}" if args.lr_scale != 1.0 else ""))
    _row(header, widths)
    for number in steps:
        step = LADDER[number - 1]
        net, optim = step.build(n_in, n_out, args.backend, args.dtype, seed=args.seed,
                                lr_scale=args.lr_scale)
        t0 = time.perf_counter()
        try:
            history, seconds = _fit(net, optim, prep, args, f"step {number}")
            diverged = None
        except TrainingDiverged as err:  # the other steps still run and are saved
            history, seconds, diverged = err.history, time.perf_counter() - t0, err
            restored = f"epoch {err.restored_epoch}" if err.restored_epoch else "the start"
            failures.append(f"step {number} diverged in epoch {err.epoch}; its row shows the "
                            f"parameters of {restored} (try a smaller --lr-scale)")
        acc = accuracy(net, prep["X_test"], prep["y_test"])
        best = history.best_loss if math.isfinite(history.best_loss) else None
        change = step.describe(args.lr_scale)
        rec = {"step": number, "change": change, "test_accuracy": acc,
               "study_accuracy": step.mnist_accuracy, "best_eval_loss": best,
               "best_epoch": history.best_epoch, "epochs_run": history.epochs_run,
               "stopped_early": history.stopped_early, "seconds": seconds,
               "diverged_in_epoch": diverged.epoch if diverged else None,
               "evaluations": history.records}
        rows.append(rec)
        cells = [number, change, f"{acc:.4f}", f"{history.best_loss:.4f}",
                 f"div@{diverged.epoch}" if diverged else history.epochs_run,
                 f"{seconds:.1f}"]
        if show_study:
            cells.insert(3, f"{step.mnist_accuracy:.4f}")
        _row(cells, widths)
    os.makedirs(args.out, exist_ok=True)
    result = {"nnx_version": __version__, "dataset": args.dataset, "source": prep["source"],
              "backend": args.backend, "dtype": args.dtype, "seed": args.seed,
              "epochs": args.epochs, "batch_size": args.batch_size, "lr_scale": args.lr_scale,
              "eval_every": args.eval_every, "early_stopping_on": args.early_stopping,
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "processor": platform.machine()},
              "steps": rows}
    json_path = os.path.join(args.out, "results.json")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {json_path}")
    png = os.path.join(args.out, "results.png")
    try:  # the figure is optional: a missing or misconfigured matplotlib costs only it
        from .report import plot_ladder
    except ImportError as exc:
        print(f"no figure: {exc} (pip install 'nnx-dl[cli]')", file=sys.stderr)
    except ValueError as exc:  # matplotlib's import validates MPLBACKEND, say
        print(f"no figure: matplotlib cannot start ({exc})", file=sys.stderr)
    else:
        plot_ladder(result, png)
        print(f"wrote {png}")
    for line in failures:
        print(f"nnx reproduce: {line}", file=sys.stderr)
    return 1 if failures else 0


def _row(cells, widths):
    print("  ".join(str(c)[:w].ljust(w) for c, w in zip(cells, widths)).rstrip())


# --------------------------------------------------------------------- train
def _hidden(text):
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise UsageError(f"--hidden {text!r}: expected sizes like '89' or '178,46'") from None
    if any(s < 1 for s in sizes):
        raise UsageError(f"--hidden {text!r}: sizes must be positive")
    return sizes


# The library's errors name its arguments; the command line's name the flags.
_TRAIN_FLAGS = {"Dense dropout": "--dropout", "decay_type": "--decay",
                "final_lr": "--final-lr", "momentum": "--momentum", "lr": "--lr"}
_ARG_NAME = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, _TRAIN_FLAGS)) + r")\b")


def _flag_error(exc):
    """``exc`` as a UsageError whose message names flags, not Python arguments."""
    return UsageError(_ARG_NAME.sub(lambda m: _TRAIN_FLAGS[m.group(1)], str(exc)))


def cmd_train(args):
    # every hyper-parameter is checked before the data is loaded
    _check_training_flags(args)
    _check_out_file(args.out)
    sizes = _hidden(args.hidden)
    if args.lr is None:  # the study's MNIST rate, scaled where it overshoots
        args.lr = round(TRAIN_LR * DEFAULT_LR_SCALE.get(args.dataset, 1.0), 12)
        if args.final_lr is not None and args.final_lr > args.lr:
            raise UsageError(f"--final-lr {args.final_lr:g} is above the default --lr "
                             f"{args.lr:g} on {args.dataset}, so the rate would rise; "
                             "pass --lr as well")
    if args.momentum is None:
        args.momentum = 0.9
    elif args.optimizer != "momentum":
        raise UsageError(f"--momentum {args.momentum}: applies to --optimizer momentum only, "
                         f"not --optimizer {args.optimizer}")
    try:
        layers = [Dense(s, args.activation, dropout=args.dropout, weight_init=args.init)
                  for s in sizes]
        if args.optimizer == "sgd":
            optim = SGD(args.lr, final_lr=args.final_lr, decay_type=args.decay)
        else:
            optim = SGDMomentum(args.lr, momentum=args.momentum, final_lr=args.final_lr,
                                decay_type=args.decay)
    except InputError as exc:
        raise _flag_error(exc) from None
    prep = _prepare(args, validation=args.early_stopping == "validation")
    out_act = "sigmoid" if args.loss == "mse" else "linear"
    layers.append(Dense(prep["n_classes"], out_act, weight_init=args.init))
    net = NeuralNetwork(layers, LOSSES[args.loss](), seed=args.seed, backend=args.backend,
                        dtype=args.dtype)
    history, seconds = _fit(net, optim, prep, args, "train")
    acc = accuracy(net, prep["X_test"], prep["y_test"])
    path = net.save(args.out, extra={"x_mean": prep["mean"], "x_std": prep["std"]},
                    meta={"dataset": args.dataset})
    print(f"test accuracy {acc:.4f}, best evaluation loss {history.best_loss:.4f} "
          f"(epoch {history.best_epoch}), {history.epochs_run} epochs in {seconds:.1f} s")
    print(f"saved {path}")
    return 0


def cmd_evaluate(args):
    net = NeuralNetwork.load(args.checkpoint, backend=args.backend)
    trained_on = net.checkpoint_meta.get("dataset")
    if args.dataset is None:  # the dataset the checkpoint was trained on (nnx train saves it)
        args.dataset = trained_on if trained_on in DATASETS else "digits"
    elif trained_on not in (None, args.dataset):
        print(f"nnx evaluate: note: {args.checkpoint} was trained on {trained_on}, not "
              f"{args.dataset}", file=sys.stderr)
    _check_data_flags(args)
    extra = net.checkpoint_extra
    stats = [k for k in ("x_mean", "x_std") if k in extra]
    for k in stats:
        if extra[k].dtype.kind not in "iuf":
            raise UsageError(f"{args.checkpoint}: its {k} holds {extra[k].dtype} values; "
                             "expected real numbers")
        if extra[k].shape != (net.n_in,):
            raise UsageError(f"{args.checkpoint}: its {k} has shape {extra[k].shape} but the "
                             f"network takes {net.n_in} features; expected ({net.n_in},)")
    if len(stats) == 1:
        raise UsageError(f"{args.checkpoint}: it holds {stats[0]} without its partner; "
                         "expected both x_mean and x_std, or neither")
    ds = _load(args)
    X = ds.X_test
    if X.shape[1] != net.n_in:
        raise UsageError(f"{args.checkpoint}: the network takes {net.n_in} features but "
                         f"{args.dataset} has {X.shape[1]}")
    if ds.n_classes != net.n_out:
        raise UsageError(f"{args.checkpoint}: the network has {net.n_out} outputs but "
                         f"{args.dataset} has {ds.n_classes} classes")
    if stats:
        X = (X - extra["x_mean"]) / extra["x_std"]
    else:
        print(f"nnx evaluate: note: {args.checkpoint} holds no standardisation statistics "
              "(x_mean, x_std), so the features are used as they are", file=sys.stderr)
    pred = predict_classes(net, X)
    acc = float((pred == ds.y_test).mean())
    k = ds.n_classes
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (ds.y_test, pred), 1)
    print(f"{args.dataset} test set: {len(pred)} rows, accuracy {acc:.4f}")
    print("confusion matrix (rows: true class, columns: predicted)")
    w = max(5, len(str(cm.max())) + 1)
    print(" " * 6 + "".join(str(j).rjust(w) for j in range(k)))
    for i in range(k):
        print(str(i).rjust(5) + " " + "".join(str(v).rjust(w) for v in cm[i]))
    return 0


# -------------------------------------------------------------------- parser
class _Help(argparse.HelpFormatter):
    """``--help`` shows each option's default, unless its text already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
                and "default" not in text):
            text += " (default: %(default)s)"
        return text


def _common(p, data=True, training=True):
    p.add_argument("--backend", choices=BACKENDS[:2], default="cpu",
                   help="cpu (NumPy) or gpu (CuPy); default cpu")
    if data and not training:  # evaluate
        p.add_argument("--dataset", choices=DATASETS, default=None,
                       help="digits, mnist or fashion-mnist; default: the dataset the "
                            "checkpoint was trained on (digits if it does not say)")
    elif data:
        p.add_argument("--dataset", choices=DATASETS, default="digits",
                       help="digits (bundled, default), mnist or fashion-mnist")
    if data:
        p.add_argument("--data-dir", default=None,
                       help="folder with the MNIST/Fashion-MNIST .gz files")
        p.add_argument("--no-download", action="store_true",
                       help="never download; fail if the files are not found")
    if training:
        p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="compute dtype")
        p.add_argument("--epochs", type=int, default=EPOCHS, help="most epochs to train")
        p.add_argument("--eval-every", type=int, default=None,
                       help=f"epochs between evaluations (default {EVAL_EVERY}, or --epochs "
                            "when that is smaller)")
        p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="rows per mini-batch")
        p.add_argument("--seed", type=int, default=SEED,
                       help="seed of the weights, the split, the shuffling and dropout")
        p.add_argument("--early-stopping", choices=("validation", "test"), default="validation",
                       help="pick the model on a 10%% validation split of the training set "
                            "(default) or on the test set, as the study did")
        p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nnx", description="nnx: the study's neural networks on NumPy or CuPy")
    parser.add_argument("--version", action="version", version=f"nnx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reproduce", help="run the study's 8-step ladder and tabulate it",
                       formatter_class=_Help)
    _common(p)
    p.add_argument("--steps", default="1-8", help="which steps, e.g. 1-8 (default) or 5,7")
    p.add_argument("--out", default="results", help="folder for results.json and results.png")
    p.add_argument("--lr-scale", type=float, default=None,
                   help="multiply every step's learning rates; default 1 (the study's "
                        "rates, chosen for MNIST) except 0.1 on fashion-mnist, where the "
                        "study's rates overshoot")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("train", help="train one network and save a checkpoint",
                       formatter_class=_Help)
    _common(p)
    p.add_argument("--hidden", default="89", help="hidden sizes, e.g. 89 or 178,46")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh",
                   help="activation of the hidden layers")
    p.add_argument("--dropout", type=float, default=1.0,
                   help="keep probability of the hidden units, in (0, 1]")
    p.add_argument("--init", choices=("glorot", "he", "standard"), default="glorot",
                   help="weight initialisation")
    p.add_argument("--loss", choices=sorted(LOSSES), default="softmax_cross_entropy",
                   help="mse gives the output layer a sigmoid, as in the study's step 1")
    p.add_argument("--optimizer", choices=("sgd", "momentum"), default="momentum",
                   help="plain SGD or SGD with momentum")
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (of the first epoch, with --decay); default "
                        f"{TRAIN_LR:g}, the study's rate for MNIST, or "
                        f"{TRAIN_LR * DEFAULT_LR_SCALE['fashion-mnist']:g} on fashion-mnist, "
                        "where that rate overshoots")
    p.add_argument("--final-lr", type=float, default=None,
                   help="learning rate of the last epoch; needs --decay")
    p.add_argument("--decay", choices=DECAY_TYPES, default=None,
                   help="decay the rate from --lr to --final-lr over the epochs")
    p.add_argument("--momentum", type=float, default=None,
                   help="default 0.9; with --optimizer momentum only")
    p.add_argument("--out", default="model.npz", help="checkpoint path (default model.npz)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy and confusion matrix of a checkpoint",
                       formatter_class=_Help)
    p.add_argument("checkpoint")
    _common(p, training=False)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
        if sys.stdout is not None:  # a pipe buffers: a reader that left shows here
            sys.stdout.flush()
        return status
    except BrokenPipeError:  # `nnx evaluate m.npz | head -1`: the reader has gone
        # point the process's stdout at /dev/null, so that exiting does not report it again
        if sys.stdout is not None and sys.stdout is sys.__stdout__:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 1
    except (UsageError, InputError, OSError, BackendUnavailableError, TrainingDiverged) as exc:
        # what nnx refused, in one line; anything else is a bug and keeps its traceback
        print(f"nnx {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nnx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
