"""Checkpoints: a network's parameters and architecture in one file that any
backend can load, with no pickle anywhere.

The file is a NumPy ``.npz`` archive holding the flat parameter array (and any
extra arrays, such as optimiser state) plus a JSON header with the layer
description, dtype, nnx version, a format version and a SHA-256 over the
header and the arrays. It is written to a temporary file beside the target, flushed to disk
and renamed over it, so a crash mid-write never leaves a half-written
checkpoint under the real name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile

import numpy as np

from ._checks import InputTypeError, InputValueError
from ._files import atomic_write

FORMAT = "nnx-checkpoint"
FORMAT_VERSION = 2
# Version 1 files are still read; their checksum covers only the arrays.
READ_VERSIONS = (1, 2)


class CheckpointError(InputValueError):
    """A checkpoint file is missing, truncated, altered or of an unknown version."""


def _canonical(header):
    """``header`` as JSON text that is the same before writing and after reading."""
    header = json.loads(json.dumps(header))
    return json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True)


def _digest(arrays, header=None):
    """SHA-256 over the arrays and, from version 2 on, the header (less its checksum)."""
    h = hashlib.sha256()
    if header is not None:
        text = _canonical(header).encode()
        h.update(f"header {len(text)}\n".encode())
        h.update(text)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _fspath(path):
    """``path`` as str or bytes; anything that is not a path is refused by name."""
    try:
        return os.fspath(path)
    except TypeError:
        raise InputTypeError(f"a checkpoint path must be a str, bytes or os.PathLike, got "
                             f"{type(path).__name__} {path!r}") from None


def folder_problem(folder):
    """Why files could not be written into ``folder`` (which may not exist yet:
    it is made on writing), as a message; None if they can."""
    existing = os.path.abspath(folder or ".")
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing!r} is not a folder"
    try:  # os.access says yes to root everywhere but on read-only mounts
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"cannot create files in folder {existing!r} ({exc.strerror})"
    return None


def path_problem(path):
    """Why a checkpoint could not be written at ``path``, as a message (to be
    shown after the argument's name); None if it can."""
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:
        return f"must be a file path (str or os.PathLike), got {type(path).__name__}"
    real = os.path.realpath(path) if path else path  # writing goes through symbolic links
    if not path or path.endswith(("/", os.sep)) or os.path.isdir(real):
        return "names a folder; expected a checkpoint file path like model.npz"
    if os.path.lexists(real) and not os.path.isfile(real):
        return "exists and is not a regular file"
    return folder_problem(os.path.dirname(real))


def write(path, header, arrays):
    """Write ``arrays`` (name -> host array) and the JSON-able ``header``
    atomically to ``path``."""
    # through a symbolic link to its target, which is replaced; the link stays
    given = _fspath(path)
    path = os.path.realpath(os.fsdecode(given))
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    header = dict(header, format=FORMAT, format_version=FORMAT_VERSION)
    header["sha256"] = _digest(arrays, header)
    blob = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:  # a file saved over keeps its permissions
        np.savez(f, __header__=blob, **arrays)
    return given


def read(path):
    """``(header, arrays)`` from a checkpoint, after checking its format,
    version and checksum; raises ``CheckpointError`` naming the file."""
    path = _fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory, not a checkpoint file")
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if not os.path.isfile(path):  # a device or a pipe
        raise CheckpointError(f"checkpoint {path!r} is not a regular file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except MemoryError:
        raise
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path!r} cannot be read ({exc})") from None
    if not data.startswith(b"PK"):  # np.load would try to unpickle it, and say so
        what = "it is empty" if not data else (
            "it holds a single .npy array" if data.startswith(b"\x93NUMPY")
            else "it is not a .npz archive")
        raise CheckpointError(f"checkpoint {path!r} is not an nnx checkpoint: {what}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except MemoryError:
        raise
    except Exception as exc:  # a damaged zip can raise almost anything
        raise CheckpointError(f"checkpoint {path!r} is truncated or not an nnx checkpoint "
                              f"({type(exc).__name__}: {exc})") from None
    odd = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
    if odd:  # NumPy hands over a member that is not a .npy file as raw bytes
        raise CheckpointError(f"checkpoint {path!r} is not an nnx checkpoint: its members "
                              f"{odd} are not arrays")
    if "__header__" not in arrays:
        raise CheckpointError(f"checkpoint {path!r} has no nnx header")
    try:
        header = json.loads(arrays.pop("__header__").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path!r} has a damaged header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path!r} is not an nnx checkpoint")
    version = header.get("format_version")
    if version not in READ_VERSIONS or isinstance(version, bool):
        raise CheckpointError(
            f"checkpoint {path!r} has format version {version!r}; "
            f"this nnx reads versions {', '.join(map(str, READ_VERSIONS))}")
    if _digest(arrays, header if version >= 2 else None) != header.get("sha256"):
        raise CheckpointError(f"checkpoint {path!r} failed its checksum: its header or arrays "
                              "were altered or damaged after it was written")
    return header, arrays


# ------------------------------------------------------------------ networks
def save_network(net, path, extra=None, training=None, meta=None):
    """Write ``net``'s parameters and architecture to ``path`` (see
    ``NeuralNetwork.save``); returns the path as given."""
    from . import __version__
    net.require_built()
    for name in extra or {}:  # before any work: these would replace the file's own
        if not isinstance(name, str):
            raise InputTypeError(f"extra names must be strings, got "
                                 f"{type(name).__name__} {name!r}")
        if name in ("params", "__header__"):
            raise InputValueError(f"extra name {name!r} is reserved for the checkpoint's "
                                  "own arrays; choose another")
    b = net.backend
    arrays = {"params": b.to_numpy(net.param_buffer)}
    for name, value in (extra or {}).items():
        arrays[name] = b.to_numpy(value) if b.owns(value) else value
    header = {"network": net.describe(), "nnx_version": __version__}
    if training is not None:
        header["training"] = training
    if meta is not None:
        if not isinstance(meta, dict):
            raise InputTypeError(f"meta must be a dict of plain data (e.g. {{'dataset': "
                                 f"'digits'}}), got {type(meta).__name__}")
        header["meta"] = meta
    return write(path, header, arrays)


def load_network(path, backend="cpu", dtype=None, cls=None):
    """The network saved at ``path``, rebuilt on ``backend`` in its saved dtype
    unless ``dtype`` (see ``NeuralNetwork.load``); ``cls`` is the class to
    build (a subclass of ``NeuralNetwork``). The network comes back with
    ``checkpoint_extra`` (the ``extra=`` arrays given to ``save``, as NumPy
    arrays by name) and ``checkpoint_meta`` (its ``meta=`` dict)."""
    from .backend import BACKENDS, Backend, get_backend
    from .layers import layer_from_description
    from .losses import loss_from_description
    from .network import NeuralNetwork
    cls = NeuralNetwork if cls is None else cls
    # the arguments first, so that their errors are not blamed on the file
    if dtype is not None or isinstance(backend, Backend):
        backend = get_backend(backend, dtype)
    elif backend not in BACKENDS:
        get_backend(backend)  # raises, naming the value
    header, arrays = read(path)
    try:
        desc = header["network"]
        layers = [layer_from_description(d) for d in desc["layers"]]
        net = cls(layers, loss_from_description(desc["loss"]), seed=desc["seed"],
                  backend=backend, dtype=None if isinstance(backend, Backend) else desc["dtype"])
        net.build(desc["n_in"])
        net.set_parameters(net.backend.asarray(arrays["params"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} describes no valid network ({exc})") from None
    net.checkpoint_extra = {k: v for k, v in arrays.items() if k != "params"}
    meta = header.get("meta")
    net.checkpoint_meta = meta if isinstance(meta, dict) else {}
    net._loaded_from = os.fspath(path)  # fit(restart=True) warns before redrawing
    return net
