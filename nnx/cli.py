"""The ``nnx`` command line: reproduce the study, train one network, evaluate
a checkpoint. Every user error ends as one line on stderr and exit code 2.

``nnx train`` started by a launcher (``mpirun -n 4 nnx train ...``, ``srun``,
``torchrun``) trains one network data-parallel across the processes: each
checks the flags and loads the data, they agree on any refusal, and rank 0
alone prints and saves."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
import warnings

from . import __version__, checkpoint, distributed
from ._checks import InputError, InputWarning, did_you_mean
from .backend import BACKENDS, PRECISIONS, BackendUnavailableError, get_backend
from .cluster import ClusterError
from .data import DATASETS, VALIDATION_FRACTION, prepare_dataset, standardize_with
from .layers import Dense
from .losses import LOSSES
from .metrics import accuracy, confusion_matrix, format_confusion_matrix, predict_classes
from .network import NeuralNetwork
from .ops import ACTIVATIONS
from .optim import DECAY_TYPES, DEFAULT_LR, OPTIMIZER_NAMES, SCHEDULE_NAMES, make_optimizer
from .study import BATCH_SIZE, EPOCHS, EVAL_EVERY, LADDER, SEED
from .tables import TEST_FRACTION, _kind, file_digest, load_file
from .train import Checkpoint, CSVLogger, ProgressBar, Trainer, TrainingDiverged


class UsageError(Exception):
    """A bad value on the command line, reported without a traceback."""


# ----------------------------------------------------------------- data prep
def _prepare(args, validation=True):
    """The dataset as ``nnx.data.prepare_dataset`` prepares it, as a dict of
    host arrays. It works in place: the loaded arrays are held only once."""
    ds = _load(args)
    try:
        p = prepare_dataset(ds, VALIDATION_FRACTION if validation else None, seed=args.seed,
                            inplace=True)
    except InputError as exc:  # a file of one's own with too few rows, say
        raise UsageError(f"{_data_name(args)}: {len(ds.y_train)} training rows (after "
                         f"{len(ds.y_test)} test rows) are too few for the validation split "
                         f"of --early-stopping validation ({exc})") from None
    out = {"X_train": p.X_train, "y_train": p.y_train, "X_test": p.X_test, "y_test": p.y_test,
           "mean": p.mean, "std": p.scale, "n_classes": p.n_classes, "source": p.source,
           "meta": _data_meta(args, p)}
    if validation:
        out["X_val"], out["y_val"] = p.X_val, p.y_val
    return out


def _file_summary(prep):
    """One line on a --data file as read: its rows, features, target and classes."""
    data = prep["meta"]["data_file"]
    classes = data["classes"]
    shown = ", ".join(classes[:6]) + (f", ... ({len(classes)})" if len(classes) > 6 else "")
    target = f"target {data['target']!r}" if data["target"] is not None else "labels y"
    val = len(prep["y_val"]) if prep.get("y_val") is not None else 0
    return (f"data: {len(prep['y_train']) + val + len(prep['y_test'])} rows x "
            f"{prep['X_train'].shape[1]} features, {target} with {len(classes)} classes "
            f"({shown}); {len(prep['y_train'])} training, {val} validation, "
            f"{len(prep['y_test'])} test rows")


def _data_meta(args, p):
    """What the model file records of its data: the dataset's name (and
    class names), and for a --data file its path, bytes (SHA-256), target
    and feature columns by name, test split and class names, with which nnx
    evaluate scores the same test rows later, or a file of new rows."""
    if getattr(args, "data", None) is None:
        return {"dataset": args.dataset, "classes": list(p.class_names or ())}
    fraction = args.test_fraction if args.test_fraction is not None else TEST_FRACTION
    table = p.feature_names is not None or not args.data.lower().endswith(".npz")
    return {"dataset": _data_name(args), "classes": list(p.class_names),
            "data_file": {"path": os.path.abspath(args.data), "sha256": file_digest(args.data),
                          # by name where the table has a header, else as the flag gave it
                          "target": (p.target_name if p.feature_names is not None
                                     else args.target) if table else None,
                          "features": None if p.feature_names is None else
                          list(p.feature_names),
                          "test_fraction": fraction, "classes": list(p.class_names)}}


# ---------------------------------------------------------------- training
def _fit(net, optim, prep, args, desc, callbacks=(), comm=None, saved=None):
    """Train with the flags' settings; the progress bar is a callback (off
    with --quiet or away from a terminal). ``comm``: the processes that
    train this network together (``nnx.distributed``), or None alone.
    ``saved``: the ``(extra, meta)`` the model file gets, which --checkpoint
    files get too (so that evaluate and export take them alike)."""
    validation = None
    if getattr(args, "early_stopping", "validation") == "validation":
        validation = (prep["X_val"], prep["y_val"])
    bar = [] if args.quiet else [ProgressBar(desc)]
    t0 = time.perf_counter()
    run_file = getattr(args, "checkpoint", None)
    resume = run_file if getattr(args, "resume", False) and os.path.exists(run_file) else None
    if getattr(args, "resume", False) and resume is None and (comm is None or comm.is_main):
        # as asked (a job that always passes --resume), but a mistyped path must show
        print(f"nnx train: note: --resume: no checkpoint at {run_file} yet: the run starts "
              "afresh and saves its state there", file=sys.stderr)
    elif run_file is not None and resume is None and os.path.exists(run_file) \
            and (comm is None or comm.is_main):  # it was replaced in silence
        print(f"nnx train: note: --checkpoint {run_file}: an earlier run's state is there; "
              "this run starts afresh and replaces it (add --resume to go on from it instead)",
              file=sys.stderr)
    if run_file is not None:
        extra, meta = saved or (None, None)
        callbacks = [*callbacks, Checkpoint(run_file, extra=extra, meta=meta)]
    try:
        history = Trainer(net, optim).fit(
            prep["X_train"], prep["y_train"],
            # the study's evaluation set (--early-stopping test), or the validation rows
            *((prep["X_test"], prep["y_test"]) if validation is None else ()),
            validation=validation, epochs=args.epochs, eval_every=args.eval_every,
            batch_size=args.batch_size, seed=args.seed, patience=getattr(args, "patience", 1),
            monitor=getattr(args, "monitor", "loss"), callbacks=[*bar, *callbacks],
            distributed=comm, resume=resume)
    except InputError as exc:  # (what --resume warns of is reworded as main() prints it)
        if resume is not None:
            exc.args = (_in_flags(str(exc)),)
        raise
    net.backend.synchronize()
    return history, time.perf_counter() - t0


# fit()'s words for what a resumed run must share, as the flags that set it
_FLAGS = {"epochs": "--epochs", "eval_every": "--eval-every", "batch_size": "--batch-size",
          "seed": "--seed", "net_seed": "the network's seed (--seed)", "patience": "--patience",
          "monitor": "--monitor", "train_rows": "training rows",
          "eval_rows": "evaluation rows",
          "optimizer": "the optimiser (--optimizer, --lr, --schedule, ...)"}


def _in_flags(message):
    """A resume refusal or warning of ``fit`` in the command line's words."""
    message = message.replace("fit() arguments differ from the saved run's",
                              "the flags differ from the saved run's")
    # the command line always seeds its network: the seed differs because --seed does
    message = re.sub(r"; net_seed is the network's own seed \([^)]*\)", "", message)
    message = re.sub(r"\b(" + "|".join(_FLAGS) + r")=", lambda m: _FLAGS[m.group(1)] + " ",
                     message)
    return message.replace("so fit returns its history without training",
                           "so nothing is trained").replace(
        "to train on from its parameters, NeuralNetwork.load the checkpoint and fit it with "
        "restart=False", "nnx evaluate or nnx export it, or train a new run under another "
        "--checkpoint path").replace("resume=", "--checkpoint ")


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
    if getattr(args, "scheduler", None) is None:  # a cluster's workers run it, not this machine
        get_backend(args.backend, args.dtype)  # a missing CuPy is reported before the data load


def _check_data_flags(args, default="digits"):
    """--data (a file of the user's) or --dataset (a known one, ``default``
    when neither is given), and the flags that go with each."""
    data = getattr(args, "data", None)
    if data is not None:
        if args.dataset is not None:
            raise UsageError(f"--data {data!r} and --dataset {args.dataset}: give one of them")
        for flag, value in (("--data-dir", args.data_dir), ("--no-download", args.no_download)):
            if value:
                raise UsageError(f"{flag}: applies to --dataset mnist or fashion-mnist, not "
                                 f"to --data {data!r}")
        try:
            _kind(data)
        except InputError as exc:
            raise UsageError(str(exc).replace(repr(data), f"--data {data!r}", 1)) from None
        fraction = getattr(args, "test_fraction", None)
        if fraction is not None and not 0 < fraction < 1:
            raise UsageError(f"--test-fraction {fraction}: must be between 0 and 1 (exclusive)")
        return
    for flag in ("target", "test_fraction"):  # --data's own flags
        if getattr(args, flag, None) is not None:
            raise UsageError(f"--{flag.replace('_', '-')}: applies to --data FILE (a CSV, TSV "
                             "or .npz file of your own)")
    if args.dataset is None:
        args.dataset = default
    if args.data_dir is not None and args.dataset == "digits":
        raise UsageError(f"--data-dir {args.data_dir!r}: applies to --dataset mnist or "
                         "fashion-mnist; digits is bundled with scikit-learn")


def _data_name(args):
    """What the run trains on, as the messages and the model's meta name it."""
    return os.path.basename(args.data) if getattr(args, "data", None) else args.dataset


def _load(args, test_only=False, dtype=None):
    """The dataset of ``--dataset`` or ``--data``, its features in ``dtype``
    (``--dtype`` if None); a missing file's message names the flags."""
    from .data import DatasetError, DatasetNotFound, load_dataset
    dtype = dtype or getattr(args, "dtype", "float32")
    if getattr(args, "data", None) is not None:
        fraction = args.test_fraction if args.test_fraction is not None else TEST_FRACTION
        try:
            return load_file(args.data, target=args.target, dtype=dtype,
                             test_fraction=None if test_only else fraction)
        except InputError as exc:
            raise UsageError(re.sub(r"^target=", "--target ", str(exc))) from None
    try:
        return load_dataset(args.dataset, data_dir=args.data_dir,
                            download=not args.no_download, test_only=test_only, dtype=dtype)
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


def _same_file(a, b):
    """Whether two paths name one file (a link to it too)."""
    return os.path.realpath(a) == os.path.realpath(b)


def _nnx_file_problem(path, kind):
    """Why the existing file ``path`` is not one nnx wrote as ``kind`` ("log":
    a training log; else a model or checkpoint), or "" (also where nothing
    is there): nnx train replaces only its own files."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:  # a placeholder (mktemp)
        return ""
    if kind == "log":
        try:
            with open(path, newline="") as f:
                first = f.readline(200).strip()
        except (OSError, UnicodeDecodeError) as exc:
            return f"cannot be read as a training log ({type(exc).__name__})"
        if first in ("", ",".join(CSVLogger.COLUMNS)):
            return ""
        return f"is not a training log (its first line is {first[:60]!r})"
    try:
        checkpoint.read_header(path)
    except checkpoint.CheckpointError as exc:
        return f"is not a model or checkpoint nnx wrote ({str(exc)[:120]})"
    return ""


def _check_outputs(args):
    """--out, --checkpoint and --log may replace files nnx wrote, never the
    --data file or a file of another kind (each was replaced in silence)."""
    for flag, path, kind in (("--out", args.out, "model"),
                             ("--checkpoint", args.checkpoint, "checkpoint"),
                             ("--log", args.log, "log")):
        if path is None:
            continue
        if getattr(args, "data", None) is not None and _same_file(path, args.data):
            raise UsageError(f"{flag} {path!r} is the --data file: the run would replace the "
                             f"data it trains on; give {flag} another path")
        problem = _nnx_file_problem(path, kind)
        if problem:
            raise UsageError(f"{flag} {path!r}: a file is there that {problem}; nnx train "
                             "replaces only files it wrote: remove it, or give another path")


def _check_log_file(args):
    """--log must not be a file the run writes otherwise: each would
    replace the other."""
    for flag, other in (("--out", args.out), ("--checkpoint", args.checkpoint)):
        if args.log is not None and other is not None and _same_file(args.log, other):
            raise UsageError(f"--log {args.log!r} is {flag} too: the log and the "
                             f"{'model' if flag == '--out' else 'run state'} need two files")


def _check_run_file(args, writes=True):
    """--checkpoint (the training state, at every evaluation) and --resume;
    its folder where it is written (``writes``)."""
    if args.checkpoint is None:
        if args.resume:
            raise UsageError("--resume goes on from --checkpoint RUN.npz; give that too")
        return
    if _same_file(args.checkpoint, args.out):
        raise UsageError(f"--checkpoint {args.checkpoint!r} is --out too: the run's state and "
                         "the trained model need two files")
    problem = checkpoint.path_problem(args.checkpoint) if writes else None
    if problem:
        raise UsageError(f"--checkpoint {args.checkpoint!r}: {problem}")


def _one_process(command, instead):
    """Refuse, on every rank alike (rank 0 says it), a command that runs in
    one process when a launcher started several."""
    here = distributed.world()
    if here.size > 1:
        if here.rank != 0:  # rank 0 says it: the others leave after it (Open MPI ends the
            time.sleep(2)   # job at the first exit, which could be before rank 0 printed)
        raise distributed.mark_agreed(UsageError(
            f"nnx {command} runs in one process, not in each of the {here.size} that "
            f"{here.launcher} started ({instead}); nnx train trains one network across "
            "processes"))


def _reproduce_flags(args):
    """The steps to run, after checking every flag (and the scaled rates)."""
    _one_process("reproduce", "--workers runs its steps on a Dask cluster")
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
    if args.workers is not None or args.scheduler is not None:
        from .cluster import check_options
        try:
            check_options(args.workers, args.scheduler, names=("--workers ", "--scheduler "))
        except (InputError, ImportError) as exc:
            raise UsageError(str(exc)) from None
    return steps


def _ladder_step(number, prep, args, failures):
    """Train one step of the ladder; its results.json entry and table cells."""
    step = LADDER[number - 1]
    net, optim = step.build(prep["X_train"].shape[1], prep["n_classes"], args.backend,
                            args.dtype, seed=args.seed, lr_scale=args.lr_scale)
    t0 = time.perf_counter()
    try:
        history, seconds = _fit(net, optim, prep, args, f"step {number}")
        diverged = None
    except TrainingDiverged as err:  # the other steps still run and are saved
        history, seconds, diverged = err.history, time.perf_counter() - t0, err
        restored = f"epoch {err.restored_epoch}" if err.restored_epoch else "the start"
        failures.append(f"step {number} diverged in epoch {err.epoch}; its row shows the "
                        f"parameters of {restored} (try a smaller --lr-scale)")
    try:
        acc = accuracy(net, prep["X_test"], prep["y_test"])
    except InputError:  # outputs not finite: even the restored parameters had blown up
        if diverged is None:
            raise
        acc = None  # no accuracy to report (a count of NaN rows' argmax is none)
    best = history.best_loss if math.isfinite(history.best_loss) else None
    change = step.describe(args.lr_scale)
    mnist = args.dataset == "mnist"  # the study's figures are MNIST's: beside MNIST only
    rec = {"step": number, "change": change, "test_accuracy": acc,
           "study_accuracy": step.mnist_accuracy if mnist else None, "best_eval_loss": best,
           "best_epoch": history.best_epoch, "epochs_run": history.epochs_run,
           "stopped_early": history.stopped_early, "seconds": seconds,
           "diverged_in_epoch": diverged.epoch if diverged else None,
           "evaluations": history.records}
    cells = [number, change, "n/a" if acc is None else f"{acc:.4f}", f"{history.best_loss:.4f}",
             f"div@{diverged.epoch}" if diverged else history.epochs_run, f"{seconds:.1f}"]
    if args.dataset == "mnist":
        cells.insert(3, f"{step.mnist_accuracy:.4f}")
    return rec, cells


def _run_step(number, prep, args):
    """One step of the ladder, here or as a Dask task: its results.json
    entry, its table cells, what failed and what nnx warned of (collected,
    so that a step on a Dask worker reports them as a step here does)."""
    failures = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        rec, cells = _ladder_step(number, prep, args, failures)
    notes = []
    for w in caught:
        if issubclass(w.category, InputWarning):
            notes.append(f"step {number}: warning: {w.message}")
        else:  # not nnx's: on as it came
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return rec, cells, failures, notes


def _write_results(args, prep, rows):
    """results.json and, where matplotlib works, results.png in --out."""
    os.makedirs(args.out, exist_ok=True)
    result = {"nnx_version": __version__, "dataset": args.dataset, "source": prep["source"],
              "backend": args.backend, "dtype": args.dtype, "seed": args.seed,
              "epochs": args.epochs, "batch_size": args.batch_size, "lr_scale": args.lr_scale,
              "eval_every": args.eval_every, "early_stopping_on": args.early_stopping,
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "processor": platform.machine()},
              # what study_accuracy is: the study's reported MNIST test accuracies, which
              # compare with this run only when it ran on MNIST too
              "study_accuracy_dataset": "mnist" if args.dataset == "mnist" else None,
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


def cmd_reproduce(args):
    steps = _reproduce_flags(args)
    prep = _prepare(args, validation=args.early_stopping == "validation")
    rows, failures, notes = [], [], []
    show_study = args.dataset == "mnist"
    header = ["step", "change", "test acc", "best eval loss", "epochs", "seconds"]
    if show_study:
        header.insert(3, "study")
    # the change column as wide as its longest entry (scaled rates lengthen some)
    change = max([40] + [len(LADDER[n - 1].describe(args.lr_scale)) for n in steps])
    widths = [4, change, 8, 7, 14, 6, 8] if show_study else [4, change, 8, 14, 6, 8]
    print(f"nnx {__version__} reproduce: dataset={args.dataset} ({prep['source']}), "
          f"backend={args.backend}, dtype={args.dtype}, early stopping on {args.early_stopping}"
          + (f", learning rates x{args.lr_scale:g}" if args.lr_scale != 1.0 else ""))
    _row(header, widths)
    if args.workers is None and args.scheduler is None:
        results = (_run_step(number, prep, args) for number in steps)
    else:  # the steps as Dask tasks, without progress bars; the rows come in step order
        from .cluster import map_shared
        remote = argparse.Namespace(**{**vars(args), "quiet": True})
        results = map_shared(_run_step, steps, prep, remote, workers=args.workers,
                             scheduler=args.scheduler)
    try:
        for rec, cells, step_failures, step_notes in results:
            rows.append(rec)
            failures += step_failures
            notes += step_notes
            _row(cells, widths)
    except BaseException as exc:  # Ctrl-C, a lost worker...: the steps that finished are kept
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped by an error"
        print(f"nnx reproduce: {what} after {len(rows)} finished step(s)"
              + ("; writing them" if rows else "; nothing written"), file=sys.stderr)
        if rows:
            _write_results(args, prep, rows)
        raise
    _write_results(args, prep, rows)
    for line in notes + failures:
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
_TRAIN_FLAGS = {"Dense dropout": "--dropout", "decay_type": "--decay", "schedule": "--schedule",
                "final_lr": "--final-lr", "momentum": "--momentum", "lr": "--lr",
                "weight_decay": "--weight-decay", "clip_norm": "--clip-norm",
                "warmup": "--warmup", "step_size": "--step-size", "gamma": "--gamma"}
_ARG_NAME = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, _TRAIN_FLAGS)) + r")\b")
_STUDY_OPTIMIZERS = ("sgd", "momentum", "nesterov")  # their --lr default is the study's


def _flag_error(exc):
    """``exc`` as a UsageError whose message names flags, not Python arguments."""
    return UsageError(_ARG_NAME.sub(lambda m: _TRAIN_FLAGS[m.group(1)], str(exc)))


def _schedule_flags(args):
    """--schedule, or the study's --decay spelling of it; defaults for --lr."""
    if args.decay is not None and args.schedule not in (None, args.decay):
        raise UsageError(f"--decay {args.decay} and --schedule {args.schedule} disagree; "
                         "give one of them")
    schedule = args.schedule or args.decay or "constant"
    if args.final_lr is not None and schedule == "constant":
        raise UsageError(f"--final-lr={args.final_lr!r} was given without a --decay; pass "
                         f"--decay as one of {list(DECAY_TYPES)}, or --schedule cosine")
    if args.lr is None:  # the study's MNIST rate, scaled where it overshoots
        if args.optimizer in _STUDY_OPTIMIZERS:
            args.lr = round(TRAIN_LR * DEFAULT_LR_SCALE.get(args.dataset, 1.0), 12)
        else:
            args.lr = DEFAULT_LR[args.optimizer]
        if args.final_lr is not None and args.final_lr > args.lr:
            raise UsageError(f"--final-lr {args.final_lr:g} is above the default --lr "
                             f"{args.lr:g} on {args.dataset}, so the rate would rise; "
                             "pass --lr as well")
    return schedule


def _optimizer(args, schedule, steps_per_epoch):
    try:
        return make_optimizer(
            args.optimizer, args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
            clip_norm=args.clip_norm, schedule=schedule, final_lr=args.final_lr,
            warmup=args.warmup, epochs=args.epochs, steps_per_epoch=steps_per_epoch,
            step_size=args.step_size, gamma=args.gamma)
    except InputError as exc:
        raise _flag_error(exc) from None


def _train_flags(args, writes=True):
    """Every training flag checked before the data is loaded: the layers
    and the optimiser's schedule name. The files' folders only where the
    files are written (``writes``: rank 0 of a distributed run, whose file
    system may be another rank's)."""
    _check_training_flags(args)
    if writes:
        _check_out_file(args.out)
    _check_run_file(args, writes)
    _check_log_file(args)
    if writes:
        _check_outputs(args)
    if args.precision != "float32" and args.dtype != "float32":
        raise UsageError(f"--precision {args.precision}: applies to --dtype float32, not "
                         f"--dtype {args.dtype}")
    if args.monitor == "accuracy" and not (LOSSES[args.loss].classification
                                           or LOSSES[args.loss].binary):
        raise UsageError(f"--monitor accuracy: early stopping by the evaluation accuracy "
                         f"needs a classification loss, not --loss {args.loss} (use --loss "
                         "softmax_cross_entropy, or --monitor loss)")
    sizes = _hidden(args.hidden)
    if args.momentum is not None and args.optimizer not in ("momentum", "nesterov", "rmsprop"):
        raise UsageError(f"--momentum {args.momentum}: applies to --optimizer momentum, "
                         f"nesterov or rmsprop only, not --optimizer {args.optimizer}")
    schedule = _schedule_flags(args)
    if args.warmup >= args.epochs:
        raise UsageError(f"--warmup {args.warmup}: must be fewer epochs than --epochs "
                         f"{args.epochs}")
    _optimizer(args, schedule, 1)  # refused now, not after loading the data
    if args.log is not None and writes:
        try:
            CSVLogger(args.log)
        except InputError as exc:
            raise UsageError(str(exc).replace("CSVLogger path", "--log")) from None
    try:
        layers = [Dense(s, args.activation, dropout=args.dropout, weight_init=args.init)
                  for s in sizes]
    except InputError as exc:
        raise _flag_error(exc) from None
    return layers, schedule


def _save_model(net, out, extra, meta):
    """``net`` saved at ``out``; if that write fails (a full disk, say), saved
    in the system's temporary folder instead, and an ``OSError`` says where
    the model is and why ``out`` failed."""
    try:
        return net.save(out, extra=extra, meta=meta)
    except OSError as exc:
        why = f"{exc.strerror or exc}"
    # the trained model is the run's whole result: it goes somewhere before we stop
    try:
        # mkstemp's file is private (0600), as it should be in a folder others share
        fd, spare = tempfile.mkstemp(prefix="nnx-model-", suffix=".npz")
        os.close(fd)
        net.save(spare, extra=extra, meta=meta)
    except OSError as exc:
        raise OSError(f"--out {out!r} could not be written ({why}), nor a copy in "
                      f"{tempfile.gettempdir()!r} ({exc.strerror or exc}): the trained model "
                      "is lost") from None
    raise OSError(f"--out {out!r} could not be written ({why}); the trained model was saved "
                  f"to {spare} instead")


def _communicator(args):
    """The processes training this network together: those a launcher
    started (each runs this command), or this one alone."""
    if distributed.world().size == 1:
        return distributed.LOCAL
    return distributed.init(args.backend)  # before the network: it picks this rank's GPU


def _prepare_in_turn(args, comm):
    """The dataset on every rank: rank 0's first (a download happens once),
    then the others' (from the files rank 0 left); a failure on any rank is
    raised on all."""
    prep = None
    for main_turn in (True, False):
        with distributed.agreement(comm):
            if comm.is_main == main_turn:
                prep = _prepare(args, validation=args.early_stopping == "validation")
    return prep


def _train_model(args, layers, prep, comm):
    """The network (built) and what is saved beside it; the output path is
    checked for room now, not after the training."""
    out_act = "sigmoid" if args.loss == "mse" else "linear"
    # a sigmoid cross-entropy classifies two classes with one output (the logit of class 1)
    outputs = 1 if LOSSES[args.loss].binary and prep["n_classes"] == 2 else prep["n_classes"]
    layers.append(Dense(outputs, out_act, weight_init=args.init))
    net = NeuralNetwork(layers, LOSSES[args.loss](), seed=args.seed, backend=args.backend,
                        dtype=args.dtype, precision=args.precision)
    net.build(prep["X_train"].shape[1])  # as fit would: the model's size is known now
    extra = {"x_mean": prep["mean"], "x_std": prep["std"]}
    problem = checkpoint.space_problem(args.out, checkpoint.saved_size(net, extra)) \
        if comm.is_main else None  # rank 0 writes it
    if problem:  # refused now, not after the training
        raise UsageError(f"--out {args.out!r}: {problem}")
    return net, extra


def _chosen(history, args):
    """The evaluation whose parameters were kept, by the figure it was chosen by."""
    if getattr(args, "monitor", "loss") == "accuracy":
        record = next((r for r in history.records if r["epoch"] == history.best_epoch), None)
        if record is not None and record.get("accuracy") is not None:
            return (f"best evaluation accuracy {record['accuracy']:.4f} (epoch "
                    f"{history.best_epoch}, loss {record['loss']:.4f})")
    return f"best evaluation loss {history.best_loss:.4f} (epoch {history.best_epoch})"


def _interrupted_train(args):
    """What an interrupted ``nnx train`` leaves, and how to go on."""
    stale = " (the file there is an earlier run's)" if os.path.exists(args.out) else ""
    if args.checkpoint is None:
        return (f"nnx train: interrupted; --out {args.out!r} was not written{stale}. "
                "Give --checkpoint RUN.npz to keep a long run's state at every evaluation "
                "and go on from it with --resume")
    kept = (f"--checkpoint {args.checkpoint!r} holds the state of the last evaluation"
            if os.path.exists(args.checkpoint) else
            f"no evaluation had saved --checkpoint {args.checkpoint!r} yet")
    return (f"nnx train: interrupted; --out {args.out!r} was not written{stale}; {kept}: "
            "the same command with --resume goes on")


def cmd_train(args):
    comm = _communicator(args)
    say = print if comm.is_main else (lambda *a, **k: None)  # rank 0 speaks for the job
    with distributed.guard(comm):
        with distributed.agreement(comm):
            layers, schedule = _train_flags(args, writes=comm.is_main)
        prep = _prepare_in_turn(args, comm)
        together = f", {comm.size} processes (batch {args.batch_size} each)" \
            if comm.size > 1 else ""
        say(f"nnx {__version__} train: dataset={_data_name(args)} ({prep['source']}), "
            f"backend={args.backend}, dtype={args.dtype}"
            + (f", precision={args.precision}" if args.precision != "float32" else "")
            + together)
        if args.data is not None:  # what was read, where a misread shows at once
            say(_file_summary(prep))
        with distributed.agreement(comm):
            net, extra = _train_model(args, layers, prep, comm)
            steps = math.ceil(len(prep["X_train"]) / (args.batch_size * comm.size))
            optim = _optimizer(args, schedule, steps)
        log = [CSVLogger(args.log)] if args.log is not None and comm.is_main else []
        try:
            history, seconds = _fit(net, optim, prep, args, "train", callbacks=log, comm=comm,
                                    saved=(extra, prep["meta"]))
        except KeyboardInterrupt:
            if comm.is_main:
                print(_interrupted_train(args), file=sys.stderr)
            raise
        if comm.is_main:
            acc = accuracy(net, prep["X_test"], prep["y_test"])
            say(f"test accuracy {acc:.4f}, {_chosen(history, args)}, "
                f"{history.epochs_run} epochs in {seconds:.1f} s")
        features = (prep["meta"].get("data_file") or {}).get("features")
        if features is not None:  # the file's columns: a DataFrame of them predicts in Python
            net.feature_names = features
        with distributed.agreement(comm):  # rank 0 saves; its failure is everyone's
            path = _save_model(net, args.out, extra, prep["meta"]) \
                if comm.is_main else None
        say(f"saved {path}")
    return 0


def _standardisation(checkpoint, net):
    """The checkpoint's ``(x_mean, x_std)`` (as ``nnx train`` saves them), or
    None when it holds neither; refused when half there, not numbers, or not
    one value per input."""
    extra = net.checkpoint_extra
    held = [k for k in ("x_mean", "x_std") if k in extra]
    for k in held:
        if extra[k].dtype.kind not in "iuf":
            raise UsageError(f"{checkpoint}: its {k} holds {extra[k].dtype} values; "
                             "expected real numbers")
        if extra[k].shape != (net.n_in,):
            raise UsageError(f"{checkpoint}: its {k} has shape {extra[k].shape} but the "
                             f"network takes {net.n_in} features; expected ({net.n_in},)")
    if len(held) == 1:
        raise UsageError(f"{checkpoint}: it holds {held[0]} without its partner; "
                         "expected both x_mean and x_std, or neither")
    return (extra["x_mean"], extra["x_std"]) if held else None


def cmd_evaluate(args):
    _one_process("evaluate", "each would print the same report")
    precision = args.precision
    if precision is None:  # as trained: nnx train's own figure
        from .checkpoint import read_header
        precision = read_header(args.checkpoint)["network"].get("precision", "float32")
    net = NeuralNetwork.load(args.checkpoint, backend=args.backend, precision=precision)
    trained_on = net.checkpoint_meta.get("dataset")
    trained_file = net.checkpoint_meta.get("data_file")
    trained_file = trained_file if isinstance(trained_file, dict) else None
    if args.dataset is None and args.data is None and trained_file is not None:
        own = trained_file.get("target")
        if args.target is not None and str(args.target) != str(own):
            raise UsageError(f"--target {args.target} applies to a file given with --data; "
                             f"{args.checkpoint} goes back to the file it was trained on, "
                             "whose target is "
                             + (repr(own) if own is not None else "its last column"))
        args.data = trained_file.get("path")  # the file it was trained on, if still there
        if not isinstance(args.data, str) or not os.path.isfile(args.data):
            raise UsageError(f"{args.checkpoint} was trained on the file {args.data!r}, which "
                             "is not there now; pass --data FILE (or --dataset) to score it")
        if file_digest(args.data) != trained_file.get("sha256"):
            raise UsageError(f"{args.data} has changed since {args.checkpoint} was trained on "
                             "it (its bytes differ), so the rows nnx train held out for "
                             f"testing cannot be found again; --data {args.data} scores "
                             "every row of it as it is now (training rows included)")
    if args.data is not None:
        _check_data_flags(args)
        ds, rows = _evaluation_file(args, net, trained_file)
    else:
        if args.dataset is None:  # the dataset the checkpoint was trained on (nnx train saves it)
            if trained_on is not None and trained_on not in DATASETS:
                raise UsageError(f"{args.checkpoint} was trained on {trained_on!r}, which nnx "
                                 f"evaluate cannot load; pass --dataset as one of "
                                 f"{list(DATASETS)} to score it on one of those")
            args.dataset = trained_on or "digits"
        elif trained_on not in (None, args.dataset):
            print(f"nnx evaluate: note: {args.checkpoint} was trained on {trained_on}, not "
                  f"{args.dataset}", file=sys.stderr)
        _check_data_flags(args)
        # the training rows: not needed
        ds, rows = _load(args, test_only=True, dtype=net.backend.dtype_name), "test set"
    stats = _standardisation(args.checkpoint, net)
    shown = "" if precision == "float32" else f", precision={precision}"
    print(f"nnx {__version__} evaluate: {args.checkpoint} on dataset={_data_name(args)} "
          f"({ds.source}), backend={args.backend}{shown}")
    X = ds.X_test
    if X.shape[1] != net.n_in:
        raise UsageError(f"{args.checkpoint}: the network takes {net.n_in} features but "
                         f"{_data_name(args)} has {X.shape[1]}")
    if ds.n_classes != _classes_of(net):
        raise UsageError(f"{args.checkpoint}: the network has {net.n_out} output(s), for "
                         f"{_classes_of(net)} classes, but {_data_name(args)} has "
                         f"{ds.n_classes} classes")
    if stats:
        X = standardize_with(X, *stats)
    else:
        print(f"nnx evaluate: note: {args.checkpoint} holds no standardisation statistics "
              "(x_mean, x_std), so the features are used as they are", file=sys.stderr)
    pred = predict_classes(net, X)
    acc = float((pred == ds.y_test).mean())
    print(f"{_data_name(args)} {rows}: {len(pred)} rows, accuracy {acc:.4f}")
    print(format_confusion_matrix(confusion_matrix(ds.y_test, pred, ds.n_classes)))
    names = ds.class_names or ()
    if tuple(names) != tuple(str(i) for i in range(ds.n_classes)):
        print("classes (index = name): "
              + ", ".join(f"{i} = {name}" for i, name in enumerate(names)))
    return 0


def _classes_of(net):
    """How many classes a network tells apart: two for one output."""
    return 2 if net.n_out == 1 else net.n_out


def _evaluation_file(args, net, trained):
    """The rows of ``--data`` to score, labelled with the model's classes,
    and what they are: the test rows ``nnx train`` held out when the file is
    the one it trained on (same bytes), else every row of the file."""
    classes = trained.get("classes") if trained else None
    if not isinstance(classes, list):  # a model of a known dataset: labels are class ids
        classes = [str(i) for i in range(_classes_of(net))]
    same = trained is not None and file_digest(args.data) == trained.get("sha256")
    # the label column and the features by the names they had in training
    target = args.target if args.target is not None else trained.get("target") \
        if trained and not args.data.lower().endswith(".npz") else None
    features = trained.get("features") if trained else None
    if not isinstance(features, list) and net.feature_names is not None:
        features = list(net.feature_names)  # a model trained in Python on a DataFrame
    fraction = trained.get("test_fraction") if same else None
    try:
        ds = load_file(args.data, target=target, test_fraction=fraction,
                       dtype=net.backend.dtype_name, classes=classes,
                       features=features if isinstance(features, list) else None)
    except InputError as exc:
        if args.target is None and target is not None and str(exc).startswith("target="):
            raise UsageError(re.sub(r"^target=", "the model's target column ", str(exc))
                             + "; name this file's label column with --target") from None
        raise UsageError(re.sub(r"^target=", "--target ", str(exc))) from None
    if same:
        return ds, "test rows (held out by nnx train)"
    if trained is not None:
        print(f"nnx evaluate: note: {args.data} is not the file {args.checkpoint} was trained "
              "on (its bytes differ), so every row of it is scored", file=sys.stderr)
    return ds, "rows (all of the file)"


def cmd_export(args):
    _one_process("export", "each would write the same file")
    if _same_file(args.checkpoint, args.out):  # the export would replace its source
        raise UsageError(f"{args.out!r} is the checkpoint itself: give the ONNX model another "
                         "path, such as model.onnx")
    real = os.path.realpath(args.out)  # a symbolic link's target is what would be replaced
    if any(os.path.isfile(p) and not str(p).lower().endswith(".onnx")
           for p in (args.out, real)):
        linked = f" (a link to {real!r})" if os.path.islink(args.out) else ""
        raise UsageError(f"{args.out!r}{linked} exists and is not a .onnx file (the model's "
                         "training data, say): nnx export replaces only .onnx files; give a "
                         "path such as model.onnx")
    from .checkpoint import read_header
    # as trained: a network of reduced precision is exported with a warning saying so
    precision = read_header(args.checkpoint)["network"].get("precision", "float32")
    net = NeuralNetwork.load(args.checkpoint, precision=precision)
    output = args.output or net.probability_output
    stats = _standardisation(args.checkpoint, net)
    if args.standardized_inputs:
        stats = None
    try:
        from .onnx import export_network
        classes = net.checkpoint_meta.get("classes")  # nnx train's, named as on the estimators
        path = export_network(net, args.out, output=output, opset=args.opset,
                              standardize=stats,
                              metadata={"classes": json.dumps(list(classes))}
                              if isinstance(classes, list) and classes else None)
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    except InputError as exc:  # the library names its argument; here it is the flag
        words = re.sub(r'\boutput="(\w+)"', r"--output \1", str(exc))
        words = re.sub(r"\bopset=", "--opset ", re.sub(r"^path=", "OUT ", words))
        raise UsageError(words) from None
    takes = ("raw features (the checkpoint's standardisation is its first step)"
             if stats is not None else "features as the network saw them in training")
    print(f"nnx {__version__} export: {args.checkpoint} -> {path} (output {output}, "
          f"{net.backend.dtype_name}); the model takes {takes}")
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


def _common(p, data=True, training=True, files=False):
    p.add_argument("--backend", choices=BACKENDS[:2], default="cpu",
                   help="cpu (NumPy) or gpu (CuPy); default cpu")
    if data and not training:  # evaluate
        p.add_argument("--dataset", choices=DATASETS, default=None,
                       help="digits, mnist or fashion-mnist; default: the dataset the "
                            "checkpoint was trained on (digits if it does not say)")
    elif data:
        p.add_argument("--dataset", choices=DATASETS, default="digits" if not files else None,
                       help="digits (bundled, default), mnist or fashion-mnist")
    if files:
        p.add_argument("--data", default=None, metavar="FILE",
                       help="a dataset of your own instead: a .csv, .tsv or .npz file "
                            "(docs/cli.md)" + ("" if training else
                                               "; default: the file the checkpoint was "
                                               "trained on, if it was"))
        p.add_argument("--target", default=None, metavar="COLUMN",
                       help="the label column of a --data CSV/TSV file, by header name or "
                            "index (default: " + ("the last column)" if training else
                                                  "the column the model was trained on, "
                                                  "else the last)"))
        if training:
            p.add_argument("--test-fraction", type=float, default=None,
                           help=f"share of the --data file's rows held out as its test set, "
                                f"when it has no split of its own (default {TEST_FRACTION})")
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
        p.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                       help="rows per mini-batch; with nnx train under mpirun/srun/torchrun, "
                            "rows per process: each step then trains on processes x this "
                            "many rows (docs/distributed.md)")
        p.add_argument("--seed", type=int, default=SEED,
                       help="seed of the weights, the split, the shuffling and dropout")
        p.add_argument("--early-stopping", choices=("validation", "test"), default="validation",
                       help="pick the model on a 10%% validation split of the training set "
                            "(default) or on the test set, as the study did")
        p.add_argument("--quiet", action="store_true", help="no progress bar")


def _patience(text):
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or 'none'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1 (or 'none')")
    return value


def _train_parser(p):
    """The flags of ``nnx train``."""
    _common(p, files=True)
    p.add_argument("--hidden", default="89", help="hidden sizes, e.g. 89 or 178,46")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh",
                   help="activation of the hidden layers")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="matrix products: float32 (exact), or on GPU tensor cores tf32, "
                        "bfloat16 or float16 (with loss scaling); the CPU emulates them, "
                        "slowly (docs/gpu.md)")
    p.add_argument("--dropout", type=float, default=1.0,
                   help="keep probability of the hidden units, in (0, 1]")
    p.add_argument("--init", choices=("glorot", "he", "standard"), default="glorot",
                   help="weight initialisation")
    p.add_argument("--loss", choices=sorted(LOSSES), default="softmax_cross_entropy",
                   help="mse gives the output layer a sigmoid, as in the study's step 1; "
                        "sigmoid_cross_entropy gives two classes one output (more: one "
                        "sigmoid per class, one-vs-rest)")
    p.add_argument("--optimizer", choices=OPTIMIZER_NAMES, default="momentum",
                   help="sgd, momentum (the study's), nesterov, adam, adamw, rmsprop, adagrad")
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (the first, or the peak of onecycle); default "
                        f"{TRAIN_LR:g} for sgd, momentum and nesterov (the study's rate for "
                        f"MNIST; {TRAIN_LR * DEFAULT_LR_SCALE['fashion-mnist']:g} on "
                        "fashion-mnist, where that rate overshoots), PyTorch's default for "
                        "the others (adam and adamw 0.001, rmsprop and adagrad 0.01)")
    p.add_argument("--schedule", choices=SCHEDULE_NAMES, default=None,
                   help="how the rate moves: constant (default); linear or exponential "
                        "from --lr to --final-lr over the epochs; step (x --gamma every "
                        "--step-size epochs); cosine to --final-lr (default 0) and onecycle, "
                        "every step; plateau (x --gamma after an evaluation that did not "
                        "improve)")
    p.add_argument("--final-lr", type=float, default=None,
                   help="rate at the end of a linear, exponential or cosine schedule")
    p.add_argument("--decay", choices=DECAY_TYPES, default=None,
                   help="the study's name for --schedule linear or exponential")
    p.add_argument("--warmup", type=int, default=0,
                   help="epochs of linear warm-up before the schedule")
    p.add_argument("--step-size", type=int, default=None,
                   help="epochs between the cuts of --schedule step (default a third of "
                        "--epochs)")
    p.add_argument("--gamma", type=float, default=None,
                   help="factor of each cut of --schedule step or plateau (default 0.1)")
    p.add_argument("--momentum", type=float, default=None,
                   help="default 0.9 for momentum and nesterov, 0 for rmsprop")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 weight decay (default 0; decoupled for adamw, whose default is "
                        "0.01)")
    p.add_argument("--clip-norm", type=float, default=None,
                   help="clip the gradients to this global norm")
    p.add_argument("--patience", type=_patience, default=1,
                   help="evaluations without improvement before stopping early; 'none' "
                        "never stops (the best evaluation is still kept)")
    p.add_argument("--monitor", choices=("loss", "accuracy"), default="loss",
                   help="what chooses the model (and stops early): the evaluation loss, or "
                        "the evaluation accuracy")
    p.add_argument("--log", default=None, help="write one CSV row per evaluation to this file")
    p.add_argument("--out", default="model.npz", help="checkpoint path (default model.npz)")
    p.add_argument("--checkpoint", default=None, metavar="RUN.npz",
                   help="save the whole training state here at every evaluation, so that an "
                        "interrupted run (Ctrl-C, a lost machine) can go on with --resume")
    p.add_argument("--resume", action="store_true",
                   help="go on from --checkpoint's saved state (the same command and flags); "
                        "a missing file starts the run afresh")
    p.set_defaults(func=cmd_train)


def _subcommand(sub, name, **kwargs):
    """A subcommand whose flags must be spelt out: ``nnx export m.npz --out
    m.onnx`` was read as --output (an abbreviation), with a baffling refusal."""
    _SUBCOMMANDS[name] = sub.add_parser(name, allow_abbrev=False, **kwargs)
    return _SUBCOMMANDS[name]


_SUBCOMMANDS = {}  # name -> its parser, for refusals in its own words


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nnx", description="nnx: the study's neural networks on NumPy or CuPy")
    parser.add_argument("--version", action="version", version=f"nnx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _subcommand(sub, "reproduce", help="run the study's 8-step ladder and tabulate it",
                       formatter_class=_Help)
    _common(p)
    p.add_argument("--steps", default="1-8", help="which steps, e.g. 1-8 (default) or 5,7")
    p.add_argument("--out", default="results", help="folder for results.json and results.png")
    p.add_argument("--lr-scale", type=float, default=None,
                   help="multiply every step's learning rates; default 1 (the study's "
                        "rates, chosen for MNIST) except 0.1 on fashion-mnist, where the "
                        "study's rates overshoot")
    p.add_argument("--workers", type=int, default=None,
                   help="run the steps as tasks on a local Dask cluster of this many worker "
                        "processes (pip install 'nnx-dl[dask]'; see docs/cluster.md)")
    p.add_argument("--scheduler", default=None,
                   help="run the steps as tasks on the Dask cluster of this scheduler, "
                        "e.g. tcp://host:8786")
    p.set_defaults(func=cmd_reproduce)

    _train_parser(_subcommand(sub, "train", help="train one network and save a checkpoint",
                                 formatter_class=_Help))

    p = _subcommand(sub, "evaluate", help="accuracy and confusion matrix of a checkpoint",
                       formatter_class=_Help)
    p.add_argument("checkpoint")
    _common(p, training=False, files=True)
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="matrix products (default: those the checkpoint was trained with, "
                        "so that the accuracy is the one nnx train printed)")
    p.set_defaults(func=cmd_evaluate)

    p = _subcommand(sub, "export", help="write a checkpoint as an ONNX model (pip install "
                       "'nnx-dl[onnx]')", formatter_class=_Help)
    p.add_argument("checkpoint")
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--output", choices=("raw", "softmax", "sigmoid", "binary", "exp"),
                   default=None,
                   help="what the model returns after the last layer (binary: a one-output "
                        "network's predict_proba, [1 - p, p]); default: what the model's "
                        "predict_proba gives (softmax for a softmax cross-entropy network, "
                        "sigmoid or binary for a sigmoid cross-entropy one), raw otherwise")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--standardized-inputs", action="store_true",
                   help="leave the checkpoint's x_mean/x_std out: the model then takes "
                        "standardised features, as the network itself")
    p.set_defaults(func=cmd_export)
    return parser


def _rank_of_launcher():
    try:
        return distributed.world().rank
    except distributed.DistributedError:  # malformed launcher variables: say it everywhere
        return 0


def _parse(parser, argv):
    """The arguments; a flag the subcommand does not know is refused in the
    subcommand's words (argparse leaves it to the top level, whose usage
    line lists the subcommands), with the closest flag it has."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        command = _SUBCOMMANDS[args.command]
        flags = [f for action in command._actions for f in action.option_strings]
        positional = [a.dest for a in command._actions if not a.option_strings]
        named = [e for e in extras if e.startswith("--")]
        hint = next((f" ({e[2:]} is given by its place: nnx {args.command} "
                     f"{' '.join(p.upper() for p in positional)})" for e in named
                     if e[2:].split("=")[0] in positional), "") \
            or next((f" ({e.split('=')[0]} belongs after the subcommand: nnx {args.command} "
                     f"{e.split('=')[0]} ...)" for e in named if e.split("=")[0] in flags), "") \
            or next((h for h in (did_you_mean(e.split("=")[0], flags) for e in named) if h), "")
        command.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    return args


def main(argv=None):
    parser = build_parser()
    args = _parse(parser, argv)
    try:
        with warnings.catch_warnings():
            # nnx's own warnings in one line, as its errors: not Python's two, whose
            # second would show the console script's source line
            plain = warnings.showwarning
            quiet = _rank_of_launcher() != 0  # every rank reads the same data: rank 0 says it

            def show(message, category, filename, lineno, file=None, line=None):
                if issubclass(category, InputWarning):
                    if quiet:
                        return
                    text = str(message)  # a resumed run's, in the command line's words
                    text = _in_flags(text) if text.startswith("resume=") else text
                    if args.command == "train":  # the keep probability, as --dropout takes it
                        text = text.replace("Dense dropout=", "--dropout ").replace(
                            "pass dropout=", "pass --dropout ")
                    elif args.command == "export":  # export_network's output=, as the flag
                        text = re.sub(r"\boutput='(\w+)'", r"--output \1", text)
                    print(f"nnx {args.command}: warning: {text}", file=sys.stderr)
                else:
                    plain(message, category, filename, lineno, file, line)
            warnings.showwarning = show
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
    except (UsageError, InputError, OSError, BackendUnavailableError, TrainingDiverged,
            distributed.DistributedError, ClusterError) as exc:
        # what nnx refused, in one line; anything else is a bug and keeps its traceback.
        # An error every rank of a distributed job raised alike is printed by rank 0.
        alike = distributed.is_agreed(exc) or isinstance(exc, TrainingDiverged)
        if not alike or _rank_of_launcher() == 0:
            print(f"nnx {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nnx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
