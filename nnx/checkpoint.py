"""Checkpoints: a network's parameters and architecture in one file that any
backend can load, with no pickle anywhere.

The file is a NumPy ``.npz`` archive holding the flat parameter array (and any
extra arrays, such as optimiser state) plus a JSON header with the layer
description, dtype, nnx version, a format version and a SHA-256 over the
header and the arrays. It is written to a temporary file beside the target, flushed to disk
and renamed over it, so a crash mid-write never leaves a half-written
checkpoint under the real name; only finite parameters are written.

The checksum detects damage, not tampering (anyone can hash an altered header
again), so reading trusts nothing the file declares: its kind and size are
checked before it is opened (at most ``MAX_BYTES``, or
``$NNX_CHECKPOINT_MAX_BYTES``), its first bytes before anything else, and
every member's declared size against the file and the header before anything
is allocated (see ``read``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import struct
import tempfile
import zipfile

import numpy as np

from . import _checks
from ._checks import InputTypeError, InputValueError
from ._files import atomic_write

FORMAT = "nnx-checkpoint"
FORMAT_VERSION = 2
# Version 1 files are still read; their checksum covers only the arrays.
READ_VERSIONS = (1, 2)

# The largest file read() opens (4 GiB): far above any network nnx trains,
# far below what would exhaust a machine's memory; the environment variable
# NNX_CHECKPOINT_MAX_BYTES overrides it.
MAX_BYTES = 4 * 2**30
MAX_BYTES_VARIABLE = "NNX_CHECKPOINT_MAX_BYTES"
# The zip directory holds one entry of about 100 bytes per array: 1 MiB is
# thousands of arrays, and keeps zipfile's reading of it small.
_MAX_DIRECTORY = 2**20
_END_RECORD = 22


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
        try:  # the array's own memory, not a copy of it
            h.update(a.reshape(-1).view(np.uint8))
        except (TypeError, ValueError):
            h.update(a.tobytes())
    return h.hexdigest()


def _shown(path):
    """``path`` for a message: as given, or its text for a path object."""
    return os.fspath(path) if isinstance(path, os.PathLike) else path


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


def path_problem(path, like="model.npz"):
    """Why a file (a checkpoint, or another file like ``like``) could not be
    written at ``path``, as a message (to be shown after the argument's
    name); None if it can."""
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:
        return f"must be a file path (str or os.PathLike), got {type(path).__name__}"
    real = os.path.realpath(path) if path else path  # writing goes through symbolic links
    if not path or path.endswith(("/", os.sep)) or os.path.isdir(real):
        return f"names a folder; expected a file path like {like}"
    if os.path.lexists(real) and not os.path.isfile(real):
        return "exists and is not a regular file"
    return folder_problem(os.path.dirname(real))


def _existing_folder(path):
    """The folder a file at ``path`` would go into, or its nearest existing
    ancestor when that folder is still to be made."""
    folder = os.path.dirname(os.path.realpath(os.fsdecode(os.fspath(path))))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder


def saved_size(net, extra=None):
    """About how many bytes ``save_network(net, path, extra)`` writes: the
    parameters and ``extra`` arrays, and room for the header and the zip."""
    params = int(net.param_buffer.shape[0]) * np.dtype(net.backend.dtype_name).itemsize
    return params + sum(getattr(v, "nbytes", 0) for v in (extra or {}).values()) + 2**16


def space_problem(path, nbytes):
    """Why ``nbytes`` could not be written at ``path`` for lack of free space,
    as a message; None if they fit (or the free space cannot be known)."""
    folder = _existing_folder(path)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if free >= nbytes:
        return None
    return (f"the model needs about {nbytes / 2**20:,.1f} MiB but {folder!r} has "
            f"{free / 2**20:,.1f} MiB free; free some space or choose another folder")


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


def max_bytes():
    """The largest checkpoint file ``read`` opens, in bytes: the environment
    variable ``NNX_CHECKPOINT_MAX_BYTES`` when set, else ``MAX_BYTES``."""
    text = os.environ.get(MAX_BYTES_VARIABLE, "").strip()
    if not text:
        return MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputValueError(f"${MAX_BYTES_VARIABLE}={text!r} must be a positive whole "
                              "number of bytes")
    return value


def _open(path):
    """``path`` opened for reading, once it is known to be a regular file
    (after following links) no larger than ``max_bytes()``; with its size."""
    try:
        st = os.stat(path)  # before opening: opening a pipe would wait for a writer
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path!r} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path!r} cannot be read ({exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"checkpoint {path!r} is a directory, not a checkpoint file")
    _check_kind_and_size(path, st)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path!r} cannot be read ({exc})") from None
    st = os.fstat(f.fileno())  # the file opened, should the name have moved on since
    try:
        _check_kind_and_size(path, st)
    except CheckpointError:
        f.close()
        raise
    return f, st.st_size


def _check_kind_and_size(path, st):
    if not stat.S_ISREG(st.st_mode):  # a device or a pipe
        raise CheckpointError(f"checkpoint {path!r} is not a regular file")
    limit = max_bytes()
    if st.st_size > limit:
        raise CheckpointError(
            f"checkpoint {path!r} is {st.st_size:,} bytes, more than the {limit:,} nnx reads "
            f"(set ${MAX_BYTES_VARIABLE} to read larger files)")


def _directory_size(f, size):
    """The size of the zip's central directory, as its end record declares it
    (zipfile reads the whole directory into memory at once), or None when
    there is no end record (zipfile then says what is wrong)."""
    tail = min(size, _END_RECORD + 0xFFFF)  # the record, and a comment of up to 64 KiB
    f.seek(size - tail)
    data = f.read(tail)
    at = data.rfind(b"PK\x05\x06")
    if at < 0 or len(data) - at < _END_RECORD:
        return None
    entries, length = struct.unpack("<HI", data[at + 10:at + 16])
    if (entries == 0xFFFF or length == 0xFFFFFFFF) and at >= 20 \
            and data[at - 20:at - 16] == b"PK\x06\x07":  # a zip64 end record holds the sizes
        f.seek(struct.unpack("<Q", data[at - 12:at - 4])[0])
        record = f.read(56)
        if len(record) == 56 and record[:4] == b"PK\x06\x06":
            length = struct.unpack("<Q", record[40:48])[0]
    return length


def _array_header(member, path):
    """``(dtype, shape, fortran_order)`` from the .npy header at the start of
    the open zip member, or None if it is not a .npy file."""
    magic = member.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        return None
    readers = {1: np.lib.format.read_array_header_1_0, 2: np.lib.format.read_array_header_2_0}
    if magic[6] not in readers:  # nnx writes 1.0 (2.0 for a header over 64 KiB)
        raise CheckpointError(f"checkpoint {path!r} is not an nnx checkpoint: its member "
                              f"{member.name!r} is a .npy file of format version "
                              f"{magic[6]}.{magic[7]}")
    shape, fortran, dtype = readers[magic[6]](member)
    return dtype, shape, fortran


def _members(z, size, path):
    """``{name: (ZipInfo, dtype, shape)}`` for the archive's arrays, from the
    zip directory and each member's .npy header; no array data is read. A
    member that is compressed, or that declares more bytes than it holds or
    the file could hold, is refused here, before anything is allocated."""
    members, odd = {}, []
    for info in z.infolist():
        name = info.filename
        key = name[:-4] if name.endswith(".npy") else name
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"checkpoint {path!r} is not an nnx checkpoint: its member "
                                  f"{name!r} is compressed (nnx stores arrays uncompressed)")
        if info.file_size > size:
            raise CheckpointError(f"checkpoint {path!r} is damaged: its member {name!r} "
                                  f"declares {info.file_size:,} bytes, more than the whole "
                                  f"file's {size:,}")
        with z.open(info) as member:
            found = _array_header(member, path)
            start = member.tell()
        if found is None:
            odd.append(key)
            continue
        dtype, shape, _ = found
        if dtype.hasobject:
            raise CheckpointError(f"checkpoint {path!r} is not an nnx checkpoint: its array "
                                  f"{key!r} holds Python objects, which only unpickling could "
                                  "read, and nnx never unpickles")
        need, have = math.prod(shape) * dtype.itemsize, info.file_size - start
        if need != have:
            raise CheckpointError(f"checkpoint {path!r} is truncated or damaged: its array "
                                  f"{key!r} declares shape {shape} of {dtype} ({need:,} "
                                  f"bytes) but holds {have:,} bytes")
        if key in members:
            raise CheckpointError(f"checkpoint {path!r} is damaged: it holds two arrays "
                                  f"named {key!r}")
        members[key] = (info, dtype, shape)
    if odd:  # NumPy would hand such a member over as raw bytes
        raise CheckpointError(f"checkpoint {path!r} is not an nnx checkpoint: its members "
                              f"{sorted(odd)} are not arrays")
    return members


def _parameter_count(description):
    """The number of parameters of the network ``description`` (a header's
    ``"network"``) implies: each Dense layer's weights and biases. None when
    the description does not give positive integer widths."""
    try:
        widths = [description["n_in"]] + [d["neurons"] for d in description["layers"]]
    except (KeyError, TypeError):
        return None
    if not all(type(w) is int and w >= 1 for w in widths):
        return None
    return sum(a * c + c for a, c in zip(widths[:-1], widths[1:]))


def _check_implied_size(header, members, path):
    """Refuse a ``params`` array of another size than the layers described in
    the header need, before it is read or a network is built for it."""
    if "params" not in members or not isinstance(header.get("network"), dict):
        return
    count = _parameter_count(header["network"])
    if count is None:  # load_network names what is wrong with the description
        return
    _, dtype, shape = members["params"]
    declared = header["network"].get("dtype")
    itemsize = np.dtype(declared).itemsize if declared in ("float32", "float64") \
        else dtype.itemsize
    need, have = count * itemsize, math.prod(shape) * dtype.itemsize
    if need != have or math.prod(shape) != count:
        raise CheckpointError(
            f"checkpoint {path!r} is damaged or altered: its header describes a network of "
            f"{count:,} parameters ({need:,} bytes), but its params array has shape {shape} "
            f"of {dtype} ({have:,} bytes)")


def _read_header(z, members, path):
    if "__header__" not in members:
        raise CheckpointError(f"checkpoint {path!r} has no nnx header")
    with z.open(members["__header__"][0]) as member:
        blob = np.lib.format.read_array(member, allow_pickle=False)
    try:
        header = json.loads(blob.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path!r} has a damaged header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path!r} is not an nnx checkpoint")
    version = header.get("format_version")
    if version not in READ_VERSIONS or isinstance(version, bool):
        raise CheckpointError(
            f"checkpoint {path!r} has format version {version!r}; "
            f"this nnx reads versions {', '.join(map(str, READ_VERSIONS))}")
    return header


def _read(path, arrays_too):
    """``(header, arrays)`` (``arrays`` None unless ``arrays_too``); see ``read``."""
    path = _fspath(path)
    f, size = _open(path)
    with f:
        try:
            magic = f.read(6)
            if not magic.startswith(b"PK"):  # np.load would try to unpickle it, and say so
                what = "it is empty" if not magic else (
                    "it holds a single .npy array" if magic == b"\x93NUMPY"
                    else "it is not a .npz archive")
                raise CheckpointError(f"checkpoint {path!r} is not an nnx checkpoint: {what}")
            directory = _directory_size(f, size)
            if directory is not None and directory > _MAX_DIRECTORY:
                raise CheckpointError(f"checkpoint {path!r} is not an nnx checkpoint: its zip "
                                      f"directory declares {directory:,} bytes of members")
            with zipfile.ZipFile(f) as z:
                members = _members(z, size, path)
                header = _read_header(z, members, path)
                if not arrays_too:
                    return header, None
                _check_implied_size(header, members, path)
                arrays = {}
                for key, (info, _, _) in members.items():
                    if key != "__header__":
                        with z.open(info) as member:
                            arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
        except CheckpointError:
            raise
        except MemoryError:
            raise CheckpointError(f"checkpoint {path!r} could not be read: not enough free "
                                  "memory for its arrays") from None
        except Exception as exc:  # a damaged zip can raise almost anything
            raise CheckpointError(f"checkpoint {path!r} is truncated or not an nnx checkpoint "
                                  f"({type(exc).__name__}: {exc})") from None
    if _digest(arrays, header if header["format_version"] >= 2 else None) \
            != header.get("sha256"):
        raise CheckpointError(f"checkpoint {path!r} failed its checksum: its header or arrays "
                              "were altered or damaged after it was written")
    return header, arrays


def read(path):
    """``(header, arrays)`` from a checkpoint, after checking its format,
    version and checksum; raises ``CheckpointError`` naming the file.

    Before anything is read into memory: the file must be a regular file
    (after following links) of at most ``max_bytes()``, start like a zip
    archive, and its members must be stored uncompressed, each no larger
    than the file, each a .npy array of no Python objects whose declared
    shape fills the member exactly; the parameter array must have the size
    the header's layers need. So a read holds at most the file's size, in
    the arrays themselves."""
    return _read(path, True)


def read_header(path):
    """The JSON header of the checkpoint at ``path``, after the file checks
    of ``read`` but without reading (or verifying) its arrays."""
    return _read(path, False)[0]


def count_non_finite(array):
    """How many entries of the host array ``array`` are NaN or infinite."""
    if array.dtype.kind not in "fc":
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


# ------------------------------------------------------------------ networks
def save_network(net, path, extra=None, training=None, meta=None):
    """Write ``net``'s parameters and architecture to ``path`` (see
    ``NeuralNetwork.save``); returns the path as given."""
    from . import __version__
    _checks.network(net).require_built()
    check_extra(extra)
    check_meta(meta)
    b = net.backend
    arrays = {"params": b.to_numpy(net.param_buffer)}
    bad = count_non_finite(arrays["params"])
    if bad:  # such a file would replace a good one, and load() would predict NaN
        raise InputValueError(
            f"cannot save checkpoint {_shown(path)!r}: {bad:,} of the network's "
            f"{arrays['params'].size:,} parameters are NaN or infinite (training diverged); "
            "a checkpoint is only written from finite parameters")
    for name, value in (extra or {}).items():
        arrays[name] = b.to_numpy(value) if b.owns(value) else value
    header = {"network": net.describe(), "nnx_version": __version__}
    if training is not None:
        header["training"] = training
    if meta is not None:
        header["meta"] = meta
    return write(path, header, arrays)


def check_extra(extra, reserved=("params", "__header__")):
    """Refuse, before any work, ``extra=`` arrays a checkpoint cannot keep:
    names that are not strings or are ``reserved`` (the file's own arrays),
    and arrays of Python objects."""
    for name in extra or {}:
        if not isinstance(name, str):
            raise InputTypeError(f"extra names must be strings, got "
                                 f"{type(name).__name__} {name!r}")
        if name in reserved:
            raise InputValueError(f"extra name {name!r} is reserved for the checkpoint's "
                                  "own arrays; choose another")
        value = extra[name]
        dtype = getattr(value, "dtype", None)  # a device array's, without a copy
        if (dtype if dtype is not None else np.asarray(value).dtype).kind == "O":
            # NumPy would pickle it, and load() (which never unpickles) refuse the file
            raise InputTypeError(f"extra[{name!r}] holds Python objects ({type(value).__name__}"
                                 f" of dtype object); a checkpoint keeps arrays of numbers, "
                                 "strings or booleans: convert it, or keep it in meta=")


def json_problem(value, where):
    """Why ``value`` would not come back from JSON as it went in (a key that is
    not a str becomes one, a tuple a list, a NumPy number is refused), naming
    the place below ``where``; "" for plain data."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                back = next(iter(json.loads(json.dumps({key: 0}))), None) \
                    if key is None or isinstance(key, (int, float)) else None
                return (f"{where} has the key {key!r} ({type(key).__name__}): JSON's keys are "
                        + (f"strings, so it would come back as {json.dumps(back)}"
                           if back is not None else "strings, and it cannot write this one"))
            problem = json_problem(item, f"{where}[{key!r}]")
            if problem:
                return problem
        return ""
    if isinstance(value, list):
        return next((p for p in (json_problem(v, f"{where}[{i}]") for i, v in enumerate(value))
                     if p), "")
    if isinstance(value, tuple):
        return f"{where} is a tuple, which JSON would bring back as a list: pass a list"
    if value is None or isinstance(value, (str, int, float)):  # np.float64 is a float
        return ""
    return f"{where} is {type(value).__name__}, which JSON cannot write"


def check_meta(meta):
    """Refuse ``meta=`` that is not a dict of plain data JSON can write."""
    if meta is None:
        return
    if not isinstance(meta, dict):
        raise InputTypeError(f"meta must be a dict of plain data (e.g. {{'dataset': "
                             f"'digits'}}), got {type(meta).__name__}")
    problem = json_problem(meta, "meta")  # refused here, in one line, naming the place
    if problem:
        raise InputTypeError(f"meta must hold plain data that JSON can write (str, Python "
                             f"numbers, booleans, None, lists, dicts with str keys): {problem}")


def _training_arrays(training, arrays):
    """The names of a training checkpoint's own arrays (the best parameters,
    the optimiser's and the callbacks' state): ``resume=``'s, not the
    ``extra=`` a user gave, which is all ``checkpoint_extra`` shows."""
    if not isinstance(training, dict):
        return set()
    keys = training.get("callbacks")
    prefixes = ("optim.", *(f"{k}." for k in (keys if isinstance(keys, dict) else ())))
    return {k for k in arrays if k == "good_params" or k.startswith(prefixes)}


def _feature_names(desc):
    """The DataFrame column names a network description records, or None."""
    names = desc.get("feature_names")
    if names is None:
        return None
    if not (isinstance(names, list) and len(names) == desc["n_in"]
            and all(isinstance(c, str) for c in names)):
        raise InputValueError(f"feature_names must be {desc['n_in']} strings, got {names!r}")
    return tuple(names)


def load_network(path, backend="cpu", dtype=None, cls=None, precision=None):
    """The network saved at ``path``, rebuilt on ``backend`` in its saved dtype
    unless ``dtype``, with ``precision`` (default float32; see
    ``NeuralNetwork.load``); ``cls`` is the class to
    build (a subclass of ``NeuralNetwork``). The network comes back with
    ``checkpoint_extra`` (the ``extra=`` arrays given to ``save``, as NumPy
    arrays by name) and ``checkpoint_meta`` (its ``meta=`` dict)."""
    from .backend import BACKENDS, Backend, get_backend, precision_name
    from .layers import QUIET_DROPOUT, layer_from_description
    from .losses import loss_from_description
    from .network import NeuralNetwork
    cls = NeuralNetwork if cls is None else cls
    # the arguments first, so that their errors are not blamed on the file
    if dtype is not None or isinstance(backend, Backend):
        backend = get_backend(backend, dtype, precision)
    elif backend not in BACKENDS:
        get_backend(backend)  # raises, naming the value
    header, arrays = read(path)
    bad = count_non_finite(arrays.get("params", np.zeros(0)))
    if bad:
        raise CheckpointError(f"checkpoint {str(path)!r} holds {bad:,} NaN or infinite "
                              "parameters; it cannot predict anything")
    if precision is not None:  # the arguments' fault, not the file's
        saved = header.get("network", {}).get("dtype") if isinstance(header.get("network"),
                                                                     dict) else None
        precision_name(precision, backend.dtype_name if isinstance(backend, Backend)
                       else saved if saved in ("float32", "float64") else "float32")
    try:
        desc = header["network"]
        quiet = QUIET_DROPOUT.set(True)  # the file's dropout was chosen when it trained
        try:
            layers = [layer_from_description(d) for d in desc["layers"]]
        finally:
            QUIET_DROPOUT.reset(quiet)
        net = cls(layers, loss_from_description(desc["loss"]), seed=desc["seed"],
                  backend=backend, dtype=None if isinstance(backend, Backend) else desc["dtype"],
                  precision=None if isinstance(backend, Backend) else precision)
        net.build(desc["n_in"])
        net.set_parameters(net.backend.asarray(arrays["params"]))
        net.feature_names = _feature_names(desc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} describes no valid network ({exc})") from None
    except MemoryError as exc:  # the device's memory (CuPy's OutOfMemoryError is one)
        raise CheckpointError(f"checkpoint {str(path)!r}: not enough free memory to load its "
                              f"network ({type(exc).__name__}: {exc})") from None
    state = _training_arrays(header.get("training"), arrays)
    net.checkpoint_extra = {k: v for k, v in arrays.items() if k != "params" and k not in state}
    meta = header.get("meta")
    net.checkpoint_meta = meta if isinstance(meta, dict) else {}
    net._loaded_from = os.fspath(path)  # fit(restart=True) warns before redrawing
    return net
