"""Datasets and the study's preprocessing, on the host with NumPy.

``load_dataset(name)`` gives a ``Dataset`` of train and test arrays for
"digits" (scikit-learn's bundled 8x8 digits), "mnist" or "fashion-mnist" (the
standard gzip IDX files). ``standardize`` and ``one_hot`` are the study's
``StandardScaler`` and ``OneHotEncoder`` steps. ``prepare_dataset`` is what
``nnx train`` and ``nnx reproduce`` train on: ``train_validation_split`` holds
out validation rows, then ``feature_stats`` of the training rows and
``standardize_with`` scale every set; with ``inplace=True`` all of it works in
the loaded arrays themselves, so a dataset is held in memory once.

Where the IDX files are looked for, first complete folder wins:

1. ``data_dir`` (files directly in it, or in ``data_dir/<name>/``); a
   ``data_dir`` that does not exist, or holds some of the four files but not
   all those needed (the two test files alone with ``test_only``), raises
   ``DatasetNotFound`` (naming the missing ones), rather than letting a copy
   further down this list stand in for it; one that holds none of them is
   passed over;
2. ``$NNX_DATA/<name>/``, then ``$NNX_DATA`` itself;
3. the user cache, ``$XDG_CACHE_HOME/nnx/<name>`` or ``~/.cache/nnx/<name>``;
4. the system folder a package installs (Debian's ``dataset-fashion-mnist``
   puts Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``).

If none has all the files needed and ``download=True``, the missing ones are fetched
from the published mirror into the user cache, each checked against its
SHA-256 before it is written (atomically). Every file loaded with
``verify=True`` (the default) must match the official checksum; ``verify=False``
skips that comparison (for your own IDX files) but keeps the format checks.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import math
import os
import struct
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _checks
from ._checks import InputTypeError, InputValueError, InputWarning, in_range, integer
from ._files import atomic_write
from .backend import host

__all__ = [
    "DATASETS", "Dataset", "DatasetError", "DatasetNotFound", "load_dataset",
    "standardize", "one_hot", "read_idx", "parse_idx", "atomic_write", "cache_dir",
    "search_dirs", "feature_stats", "standardize_with", "train_validation_split",
    "prepare_dataset", "PreparedData", "VALIDATION_FRACTION",
]

DATASETS = ("digits", "mnist", "fashion-mnist")


class DatasetError(InputValueError):
    """A dataset file is truncated, corrupted, not in IDX format, or fails its checksum."""


class DatasetNotFound(FileNotFoundError):
    """The dataset's files are in none of the searched folders and could not be
    downloaded. ``files`` are the names needed, ``folder`` where to put them,
    ``searched`` the folders looked in."""

    def __init__(self, message, *, dataset=None, files=(), folder=None, searched=()):
        super().__init__(message)
        self.dataset = dataset
        self.files = tuple(files)
        self.folder = folder
        self.searched = tuple(searched)


_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # of a Dataset's images


@dataclass(frozen=True, repr=False)
class Dataset:
    """Train and test arrays on the host: ``X_*`` float32 or float64 (both
    alike) ``(rows, features)`` raw pixel/feature values, ``y_*`` int64 class
    ids in ``[0, n_classes)``."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str
    n_classes: int
    class_names: tuple[str, ...] | None = None
    source: str = ""
    feature_names: tuple[str, ...] | None = None  # a table's header names, or None
    target_name: str | None = None  # the label column of a table (load_file)

    def __post_init__(self):
        for split in ("train", "test"):
            X, y = getattr(self, f"X_{split}"), getattr(self, f"y_{split}")
            if X.ndim != 2 or X.dtype not in _DTYPES:
                raise InputValueError(f"X_{split} must be 2-D float32 or float64, got {X.dtype} "
                                      f"{X.shape}")
            if y.ndim != 1 or y.dtype != np.int64 or y.shape[0] != X.shape[0]:
                raise InputValueError(
                    f"y_{split} must be 1-D int64 with one entry per row of X_{split} "
                    f"({X.shape[0]}), got {y.dtype} {y.shape}"
                )
        if self.X_train.dtype != self.X_test.dtype:
            raise InputValueError(f"X_train is {self.X_train.dtype} and X_test "
                                  f"{self.X_test.dtype}: expected one dtype")
        if self.X_train.shape[1] != self.X_test.shape[1]:
            raise InputValueError(
                f"X_train has {self.X_train.shape[1]} features, X_test {self.X_test.shape[1]}"
            )

    @property
    def n_features(self):
        return self.X_train.shape[1]

    def __repr__(self):
        return (f"Dataset(name={self.name!r}, train={self.X_train.shape}, "
                f"test={self.X_test.shape}, n_classes={self.n_classes}, source={self.source!r})")


# ---------------------------------------------------------------------------
# Known files and checksums
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _File:
    name: str
    magic: int            # 0x801: unsigned bytes, 1-D (labels); 0x803: 3-D (images)
    gz_sha256: str        # the .gz exactly as the mirror serves it (checked on download)
    idx_sha256: str | None = None  # the decompressed IDX bytes, where known


@dataclass(frozen=True)
class _IdxInfo:
    title: str
    files: tuple[_File, _File, _File, _File]  # train images, train labels, test images, labels
    mirrors: tuple[str, ...]
    class_names: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    hint: str = ""


_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
          "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_MAGICS = (0x803, 0x801, 0x803, 0x801)

# Fashion-MNIST. gz_sha256: the archives in zalandoresearch/fashion-mnist's S3
# bucket (the README lists their MD5s; these SHA-256s are the ones published
# for the same files, 26,421,880 bytes etc.). Debian's package ships the same
# deflate streams with the gzip header rewritten (mtime set to the build date,
# file name dropped, by dh_strip_nondeterminism), so its .gz bytes differ from
# the mirror's; putting the header back rebuilds the mirror's bytes exactly
# (tests/test_data.py checks this). Loading therefore compares the SHA-256 of
# the decompressed IDX data, computed from the Debian files, which any
# faithful re-compression keeps.
_FASHION = (
    ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
     "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
     "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
     "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
)

# MNIST: SHA-256 of LeCun's original archives (9,912,422 / 28,881 / 1,648,877 /
# 4,542 bytes), the same digests published independently for his site, Google's
# cvdf-datasets mirror (TensorFlow) and the ossci-datasets mirror torchvision
# uses (torchvision itself lists MD5s: f68b3c2d..., d53e105e..., 9fb629c4...,
# ec29112d...). No copy of MNIST was at hand to hash the decompressed data, so
# MNIST files are verified on the .gz bytes: a re-compressed copy fails the
# check and needs verify=False.
_MNIST = (
    ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", None),
    ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", None),
    ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", None),
    ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", None),
)


def _files(digests):
    return tuple(_File(n, m, gz, idx)
                 for n, m, (gz, idx) in zip(_NAMES, _MAGICS, digests, strict=True))


_IDX_DATASETS = {
    "mnist": _IdxInfo(
        title="MNIST",
        files=_files(_MNIST),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"),
        class_names=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": _IdxInfo(
        title="Fashion-MNIST",
        files=_files(_FASHION),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                     "Shirt", "Sneaker", "Bag", "Ankle boot"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        hint="On Debian/Ubuntu: apt-get install dataset-fashion-mnist",
    ),
}

_MAX_DOWNLOAD = 64 * 2**20  # the largest file is 26 MB; refuse anything far bigger


# ---------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------

_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(data, path="<bytes>", magic=None):
    """The array in IDX bytes ``data`` (read-only, it views ``data``).

    Checks the magic number (``magic``, e.g. ``0x803`` for a 3-D unsigned-byte
    file, when given), the header and that the payload is exactly as long as the
    dimensions say; raises ``DatasetError`` naming ``path`` otherwise."""
    if len(data) < 4:
        raise DatasetError(f"{path}: {len(data)} bytes is too short for an IDX header")
    found = struct.unpack(">I", data[:4])[0]
    code, ndim = data[2], data[3]
    if magic is not None and found != magic:
        raise DatasetError(f"{path}: IDX magic number is 0x{found:08x}, expected 0x{magic:08x} "
                           f"({_describe_magic(magic)})")
    if data[0] or data[1] or code not in _IDX_TYPES or ndim == 0:
        raise DatasetError(f"{path}: 0x{found:08x} is not an IDX magic number")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: IDX header truncated ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_TYPES[code]
    need = math.prod(dims) * dtype.itemsize  # Python ints: no wrap-around
    have = len(data) - header
    if have != need:
        why = "truncated" if have < need else "trailing bytes"
        raise DatasetError(f"{path}: IDX payload is {have} bytes but dims {dims} need {need} "
                           f"({why})")
    return np.frombuffer(data, dtype=dtype, count=need // dtype.itemsize,
                         offset=header).reshape(dims)


def _describe_magic(magic):
    kind = {0x08: "unsigned bytes", 0x09: "signed bytes", 0x0B: "int16", 0x0C: "int32",
            0x0D: "float32", 0x0E: "float64"}.get((magic >> 8) & 0xFF, "unknown type")
    return f"{kind}, {magic & 0xFF}-D"


def _gunzip(blob, path):
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DatasetError(f"{path}: corrupted or truncated gzip file ({e})") from e


def read_idx(path, magic=None, dtype=None):
    """The array in the IDX file at ``path`` (gzip-compressed if it ends in
    ``.gz``), as a writable NumPy array of the file's type or of ``dtype``
    (converted straight from the file's bytes); no checksum is compared."""
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = _gunzip(data, path)
    array = parse_idx(data, path, magic)
    return _converted(array, array.shape, array.dtype if dtype is None else dtype)


def _converted(array, shape, dtype):
    """``array`` reshaped to ``shape``, in a new array of ``dtype``: NumPy casts
    into the preallocated result a buffer at a time, so the only full-size
    array made is the result itself."""
    out = np.empty(shape, dtype=dtype)
    out[...] = array.reshape(shape)
    return out


def _sha256(blob):
    return hashlib.sha256(blob).hexdigest()


def _read_known(path, spec, info, verify, dtype):
    """Read one of a dataset's files into a new ``dtype`` array, one row per
    image or label: gunzip, format checks, then the checksum (format problems
    first, since their messages say more)."""
    blob = path.read_bytes()
    gz_digest = _sha256(blob) if verify and spec.idx_sha256 is None else None
    data = _gunzip(blob, path)
    del blob  # the compressed bytes are not needed past here: free them before converting
    array = parse_idx(data, path, spec.magic)
    if verify:
        if spec.idx_sha256 is not None:
            got, want, what = _sha256(data), spec.idx_sha256, "decompressed data"
        else:
            got, want, what = gz_digest, spec.gz_sha256, "file"
        if got != want:
            raise DatasetError(
                f"{path}: checksum mismatch: SHA-256 of the {what} is {got}, the official "
                f"{info.title} {spec.name} has {want}. The file is corrupted or not the "
                f"official one: replace it, or pass verify=False to load your own IDX files"
            )
    rows = array.shape[0]  # images flattened to one row each; explicit, since rows may be 0
    return _converted(array, (rows, math.prod(array.shape[1:])) if array.ndim > 1 else rows,
                      dtype)


# ---------------------------------------------------------------------------
# Folders, the cache and downloads
# ---------------------------------------------------------------------------

def cache_dir(name):
    """The user cache folder for dataset ``name``: ``$XDG_CACHE_HOME/nnx/<name>``,
    or ``~/.cache/nnx/<name>`` when that variable is unset or not absolute."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "nnx" / name


def search_dirs(name, data_dir=None):
    """The folders ``load_dataset(name, data_dir)`` looks in, in order."""
    name = _canonical(name)
    info = _IDX_DATASETS.get(name)
    dirs = []
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        dirs += [data_dir, data_dir / name]
    env = os.environ.get("NNX_DATA", "")
    if env:
        env = Path(env).expanduser()
        dirs += [env / name, env]
    dirs.append(cache_dir(name))
    if info is not None:
        dirs += [Path(d) for d in info.system_dirs]
    unique, seen = [], set()
    for d in dirs:
        key = os.path.abspath(d)
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def _fetch(url):
    """The bytes at ``url`` (tests replace this function; nothing else touches
    the network)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        blob = response.read(_MAX_DOWNLOAD + 1)
    if len(blob) > _MAX_DOWNLOAD:
        raise OSError(f"{url}: larger than {_MAX_DOWNLOAD} bytes, not a dataset file")
    return blob


def _download(info, folder, specs):
    """Fetch ``specs`` into ``folder``, each verified before it is written.
    Returns the problems (one line each) for the files that could not be had;
    raises ``DatasetError`` when a mirror served a file with the wrong checksum."""
    problems, corrupt, unreachable = [], [], set()
    for spec in specs:
        for base in info.mirrors:
            url = base + spec.name
            if base in unreachable:  # offline: don't wait out a timeout per file
                continue
            try:
                blob = _fetch(url)
            except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
                problems.append(f"{url}: {e}")
                if not isinstance(e, urllib.error.HTTPError):  # the host, not the file
                    unreachable.add(base)
                continue
            got = _sha256(blob)
            if got != spec.gz_sha256:
                corrupt.append(f"{url}: SHA-256 {got}, expected {spec.gz_sha256}")
                continue
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(folder / spec.name) as f:
                f.write(blob)
            break
    if all((folder / f.name).is_file() for f in specs):
        return []  # a later mirror made up for an earlier one
    if corrupt:
        raise DatasetError(f"{info.title}: downloaded file failed its checksum, nothing was "
                           "written for it:\n  " + "\n  ".join(corrupt))
    return problems


def _not_found(name, info, searched, reason):
    cache = cache_dir(name)
    lines = [f"{info.title} files not found {reason}",
             "Put these files:", *(f"    {f.name}" for f in info.files),
             f"into the folder {cache}",
             f"(or into data_dir=..., or $NNX_DATA/{name}/)."]
    if info.hint:
        lines.append(info.hint + ".")
    lines.append("Searched:")
    lines += [f"    {d}  (missing: {', '.join(m)})" for d, m, _ in searched]
    return DatasetNotFound("\n".join(lines), dataset=name, files=[f.name for f in info.files],
                           folder=cache, searched=[d for d, _, _ in searched])


def _given(name, data_dir):
    """The folders ``data_dir`` names for dataset ``name`` (itself and its
    ``<name>`` subfolder), as absolute paths; none without one."""
    if data_dir is None:
        return set()
    given = Path(data_dir).expanduser()
    return {os.path.abspath(given), os.path.abspath(given / name)}


def _incomplete(name, info, searched, data_dir):
    """A ``DatasetNotFound`` for a folder the caller named that holds some of
    the dataset's files but not all those needed (``searched``: each folder,
    the needed files it lacks, whether it holds any of the four), or None."""
    for d, missing, holds_some in searched:
        if os.path.abspath(d) in _given(name, data_dir) and holds_some:
            return DatasetNotFound(
                f"{info.title}: the folder {str(d)!r} (data_dir=...) holds only some of the "
                f"dataset's files; missing: {', '.join(missing)}. Put them there, or name a "
                "folder that has them all", dataset=name,
                files=[f.name for f in info.files], folder=d, searched=[d])
    return None


def _load_idx(name, data_dir, download, verify, test_only, dtype):
    info = _IDX_DATASETS[name]
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        # a typo, most likely: another copy must not stand in without a word
        raise DatasetNotFound(
            f"{info.title}: the folder {str(data_dir)!r} (data_dir=...) does not exist "
            "(or is not a folder). "
            "Name the folder that holds the files, or leave it out to search the usual "
            "places", dataset=name, files=[f.name for f in info.files], folder=data_dir,
            searched=[data_dir])
    searched, folder = [], None
    # the test set alone (evaluating a model) needs the two test files only
    needed = info.files[2:] if test_only else info.files
    for d in search_dirs(name, data_dir):
        held = {f.name for f in info.files if (d / f.name).is_file()}
        missing = [f.name for f in needed if f.name not in held]
        if not missing:
            folder = d
            break
        searched.append((d, missing, bool(held)))
    # a folder the caller named is used whole or not at all: another copy
    # further down the search must not make up for its missing files
    if folder is None or os.path.abspath(folder) not in _given(name, data_dir):
        problem = _incomplete(name, info, searched, data_dir)
        if problem is not None:
            raise problem
    if folder is None:
        if not download:
            raise _not_found(name, info, searched, "(download=False).")
        folder = cache_dir(name)
        todo = [f for f in needed if not (folder / f.name).is_file()]
        problems = _download(info, folder, todo)
        if problems:
            raise _not_found(name, info, searched, "and the download failed:\n    "
                             + "\n    ".join(problems))
    # labels first: they are small, so a bad file is reported before the images load;
    # each file goes straight into the Dataset's dtype, the only copy kept
    def read(i, dtype):
        return _read_known(folder / info.files[i].name, info.files[i], info, verify, dtype)
    y_train, y_test = (None if test_only and i == 1 else read(i, np.int64) for i in (1, 3))
    X_train, X_test = (None if test_only and i == 0 else read(i, dtype) for i in (0, 2))
    n_classes = len(info.class_names)
    if test_only:  # the training files are neither read nor kept
        X_train, y_train = np.empty((0, X_test.shape[1]), dtype), np.empty(0, np.int64)
    for X, y, i in ((X_train, y_train, 0), (X_test, y_test, 2)):
        if test_only and i == 0:
            continue
        if X.shape[0] != y.shape[0]:
            raise DatasetError(f"{folder / info.files[i].name}: {X.shape[0]} images but "
                               f"{info.files[i + 1].name} has {y.shape[0]} labels")
        if X.shape[0] == 0:
            raise DatasetError(f"{folder / info.files[i].name}: the file holds no images")
        if y.size and int(y.max()) >= n_classes:
            raise DatasetError(f"{folder / info.files[i + 1].name}: label {int(y.max())} is "
                               f"not below {n_classes}")
    return Dataset(
        X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
        name=name, n_classes=n_classes, class_names=info.class_names, source=str(folder),
    )


# ---------------------------------------------------------------------------
# scikit-learn sources
# ---------------------------------------------------------------------------

def _load_digits(dtype):
    # imported here: scikit-learn is slow to import and only these loaders need it
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y)
    return Dataset(
        X_train=X_train.astype(dtype), y_train=y_train.astype(np.int64),
        X_test=X_test.astype(dtype), y_test=y_test.astype(np.int64),
        name="digits", n_classes=10, class_names=tuple(str(d) for d in range(10)),
        source="sklearn.datasets.load_digits (train_test_split: stratified, "
               "test_size=0.25, random_state=0)",
    )


def _load_openml_mnist(data_dir, download, dtype):
    """MNIST as the study loaded it: OpenML's mnist_784, whose first 60,000 rows
    are the training set and last 10,000 the test set. ``data_dir`` is passed
    as scikit-learn's ``data_home`` (its default, ~/scikit_learn_data, if None)."""
    from sklearn.datasets import fetch_openml, get_data_home

    cache = Path(get_data_home(data_dir)) / "openml"
    if not download and not any(cache.rglob("*mnist_784*")):
        # fetch_openml has no offline switch: without a cached copy it would go online
        raise DatasetNotFound(
            f"OpenML mnist_784 is not in scikit-learn's cache ({cache}) and download=False. "
            "Use load_dataset('mnist') for the IDX files.", dataset="mnist", folder=data_dir)
    try:
        X, y = fetch_openml("mnist_784", version=1, return_X_y=True, as_frame=False,
                            parser="auto", data_home=data_dir)
    except OSError as e:  # no network, or a damaged cache
        raise DatasetNotFound(
            f"OpenML mnist_784 is not in scikit-learn's cache ({data_dir or 'its default'}) "
            f"and could not be downloaded: {e}. Use load_dataset('mnist') for the IDX files.",
            dataset="mnist", folder=data_dir) from e
    X = np.asarray(X, dtype=dtype)
    y = np.asarray(y).astype(np.int64)  # OpenML gives the labels as strings
    return Dataset(X_train=X[:60000], y_train=y[:60000], X_test=X[60000:], y_test=y[60000:],
                   name="mnist", n_classes=10, class_names=tuple(str(d) for d in range(10)),
                   source="openml:mnist_784 (sklearn.datasets.fetch_openml)")


# ---------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------

_SOURCES = {"digits": ("sklearn",), "mnist": ("idx", "openml"), "fashion-mnist": ("idx",)}


def _check_dtype(dtype):
    try:  # np.dtype(None), and a dtype compared with None, are float64: None is refused here
        got = None if dtype is None else np.dtype(dtype)
    except TypeError:
        got = None
    if got is None or got not in _DTYPES:
        raise InputValueError(f"dtype={dtype!r}: expected 'float32' or 'float64'")
    return got


def _canonical(name):
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise InputValueError(f"dataset {name!r} is not known{_checks.did_you_mean(key, DATASETS)}"
                              f"; expected one of {DATASETS}")
    return key


def load_dataset(name, data_dir=None, download=True, *, source=None, verify=True,
                 test_only=False, dtype="float32") -> Dataset:
    """Load dataset ``name`` ("digits", "mnist" or "fashion-mnist").

    Parameters
    ----------
    data_dir : folder searched first for the IDX files (see the module
        docstring for the full order); for ``source="openml"``, scikit-learn's
        ``data_home``. Ignored for "digits".
    download : fetch missing files into the user cache (else raise
        ``DatasetNotFound``, which says which files to put where).
    source : "idx" (default for mnist and fashion-mnist), "openml" (mnist via
        ``fetch_openml("mnist_784")``, as in the study) or "sklearn" (digits).
    verify : compare each IDX file with its official SHA-256; ``False`` for
        your own IDX files (format checks still apply).
    test_only : load the test set alone (for evaluating a trained model): the
        training arrays come back empty (0 rows), and the IDX training files
        are neither needed, read nor downloaded.
    dtype : "float32" (default) or "float64": the images are read straight
        into it, the one copy kept (give the network's dtype: a float64
        network then trains on data that never passed through float32).

    Raises ``DatasetError`` for a truncated, corrupted or wrong file.
    """
    name = _canonical(name)
    dtype = _check_dtype(dtype)
    source = _SOURCES[name][0] if source is None else source
    if source not in _SOURCES[name]:
        raise InputValueError(f"source={source!r} is not available for {name!r}; "
                              f"expected one of {_SOURCES[name]}")
    if source == "idx":
        return _load_idx(name, data_dir, download, verify, test_only, dtype)
    ds = (_load_digits(dtype) if source == "sklearn"
          else _load_openml_mnist(data_dir, download, dtype))
    if test_only:  # these sources come whole: the training rows are dropped
        ds = dataclasses.replace(ds, X_train=ds.X_train[:0].copy(), y_train=ds.y_train[:0].copy())
    return ds


# ---------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------

VALIDATION_FRACTION = 0.1  # the share of training rows nnx train and reproduce hold out

# Work on a whole set a block of rows at a time where a full-size temporary
# would cost memory: at most _BLOCK rows, and at most _BLOCK_BYTES in float64.
_BLOCK = 4096
_BLOCK_BYTES = 16 * 2**20


def _block_rows(X):
    return max(1, min(_BLOCK, _BLOCK_BYTES // (8 * max(1, math.prod(X.shape[1:])))))


def standardize(X_train, X_test):
    """Both sets standardised with the training set's per-feature mean and
    (population) standard deviation, as float32, like the study's
    ``StandardScaler``. Features constant on the training set are only
    centred: dividing by their zero spread would give NaN or inf."""
    X_train = host.check_features(X_train, "X_train")
    X_test = host.plain(X_test, "X_test", "a 2-D numeric array")
    if not (X_test.ndim == 2 and X_test.shape[0] == 0):  # an empty test set is fine
        X_test = host.check_features(X_test, "X_test")
    if X_train.shape[1] != X_test.shape[1]:
        raise InputValueError(f"X_train has {X_train.shape[1]} features, X_test {X_test.shape[1]}")
    mean, scale = _stats(X_train)
    out = []
    for name, X in (("X_train", X_train), ("X_test", X_test)):
        # in float64 like StandardScaler, then rounded once to float32; a block
        # of rows at a time, so no float64 copy of the whole set is made
        Z = np.empty(X.shape, dtype=np.float32)
        with np.errstate(over="ignore"):  # checked just below, naming the rows
            step = _block_rows(X)
            for i in range(0, X.shape[0], step):
                Z[i:i + step] = (X[i:i + step] - mean) / scale
        if not host.all_finite(Z):
            row = int(np.flatnonzero(~np.isfinite(Z).all(axis=1))[0])
            raise InputValueError(f"{name} row {row} lies beyond the float32 range once "
                                  "standardised with X_train's mean and std")
        out.append(Z)
    return tuple(out)


def _column_sums(X, fill):
    """Per-feature float64 sums of the rows ``fill(block, out)`` writes for
    each block of ``X``'s rows. NumPy's ``sum(axis=0)`` of a C-ordered array
    adds the rows one after another to 0.0; carrying the running total as the
    first row of the next block keeps that order, so the sums equal those of
    a full-size float64 copy (bit for bit) without making one."""
    n, d = X.shape
    step = _block_rows(X)
    buf = np.zeros((min(n, step) + 1, d), dtype=np.float64)
    for i in range(0, n, step):
        k = min(step, n - i)
        fill(X[i:i + k], buf[1:k + 1])
        buf[0] = buf[:k + 1].sum(axis=0)
    return buf[0].copy()


def _stats(X_train):
    """Per-feature float64 ``(mean, scale)``: scale is the population std, or
    1 for a constant feature. Taken a block of rows at a time, with the values
    ``X_train.mean(axis=0, dtype=float64)`` and ``.std(...)`` give."""
    X_train = host.check_features(X_train, "X_train")
    n = X_train.shape[0]

    def squares(block, out):
        np.subtract(block, mean, out=out)
        np.multiply(out, out, out=out)

    # sums over 60,000 rows in float64; exactly constant features are found by
    # their range, since their computed std may be a rounding error, not 0
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        mean = _column_sums(X_train, lambda block, out: np.copyto(out, block)) / n
        std = np.sqrt(_column_sums(X_train, squares) / n)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        j = int(np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))[0])
        raise InputValueError(f"X_train feature {j}: its mean or std overflows float64; "
                              "rescale the data")
    constant = X_train.max(axis=0) == X_train.min(axis=0)
    return mean, np.where(constant | (std == 0), 1.0, std)


def __getattr__(name):
    # load_file lives in nnx.tables, which builds on this module
    if name == "load_file":
        from .tables import load_file
        return load_file
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def feature_stats(X_train):
    """Per-feature ``(mean, scale)`` of the training set (taken in float64),
    where ``scale`` is the population std, or 1 for a constant feature, or for
    one whose spread is too small for the statistics' dtype (it would divide
    by zero there). That dtype is the one ``standardize_with`` gives the data
    with float32 statistics: float32 for float32, float16 and small integer
    data (images of uint8), float64 for float64 and wide integers. Such data
    keeps float64 statistics: a mean rounded to float32 is off by up to 6e-8
    of itself, which for a feature at 1e6 with a spread of 1e-3 is a whole
    standard deviation."""
    mean, scale = _stats(X_train)
    # (a list's numbers are float64 or int64 as NumPy reads them: float64 either way)
    dtype = np.result_type(getattr(X_train, "dtype", np.float64), np.float32).type
    scale_d = scale.astype(dtype)
    tiny = scale_d < np.finfo(dtype).tiny  # zero or subnormal in that dtype
    return mean.astype(dtype), np.where(tiny, dtype(1), scale_d)


def _check_fraction(name, value):
    return in_range(name, value, 0, 1, low_open=True, high_open=True)


def _check_seed(seed):
    return None if seed is None else integer("seed", seed, minimum=0)


def _host_array(a, name, inplace):
    """``a`` as a NumPy array with rows; with ``inplace``, one that can be overwritten."""
    if inplace and not isinstance(a, np.ndarray):
        raise InputTypeError(f"{name} must be a NumPy array to be changed in place, got "
                             f"{type(a).__name__}")
    a = host.plain(a, name, "an array of rows")
    if a.ndim == 0:
        raise InputValueError(f"{name} must have rows, got a scalar")
    if inplace and not a.flags.writeable:
        raise InputValueError(f"{name} is read-only, so it cannot be changed in place; "
                              "pass a writable copy or inplace=False")
    return a


def _permute_rows(a, order):
    """Reorder ``a``'s rows in place so that row k becomes the old row
    ``order[k]``. Each cycle of the permutation is shifted along one block of
    rows at a time, so the scratch memory is a block, not a copy of ``a``."""
    order = order.tolist()
    seen = bytearray(len(order))
    step = _block_rows(a)
    for start, nxt in enumerate(order):
        if seen[start] or nxt == start:
            continue
        cycle = [start]
        while nxt != start:
            seen[nxt] = 1
            cycle.append(nxt)
            nxt = order[nxt]
        cycle = np.asarray(cycle)
        saved = a[start].copy()
        last = len(cycle) - 1
        for i in range(0, last, step):
            # rows cycle[i+1..j] are read before any of them is written
            j = min(i + step, last)
            a[cycle[i:j]] = a[cycle[i + 1:j + 1]]
        a[cycle[last]] = saved


def train_validation_split(X, y, fraction=VALIDATION_FRACTION, seed=None, *, inplace=False,
                           keep=None):
    """Hold out ``fraction`` of the rows: ``(X_train, y_train, X_val, y_val)``.

    The order is ``np.random.default_rng(seed).permutation(len(X))``: its
    first ``max(1, round(fraction * len(X)))`` rows are the validation set,
    the rest the training set, both in that order (``nnx train`` and ``nnx
    reproduce`` hold out 10% with their ``--seed``). ``seed=None`` draws a new
    order. ``inplace=True`` reorders the rows of ``X`` and ``y`` themselves
    and returns views of them, so no copy of the data is made. ``keep``, a
    boolean mask of the rows, keeps those rows out of the validation set
    (the next rows of the order are held out in their place)."""
    fraction = _check_fraction("fraction", fraction)
    seed = _check_seed(seed)
    X, y = _host_array(X, "X", inplace), _host_array(y, "y", inplace)
    n = X.shape[0]
    if y.shape[0] != n:
        raise InputValueError(f"y has {y.shape[0]} rows but X has {n}; expected one label per row")
    if keep is not None:
        keep = np.asarray(keep)
        if keep.dtype != bool or keep.shape != (n,):
            raise InputValueError(f"keep must be a boolean mask of the {n} rows, got dtype "
                                  f"{keep.dtype} and shape {keep.shape}")
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise InputValueError(f"fraction={fraction!r} of {n} rows holds out {n_val}, leaving no "
                              "training rows")
    order, n_val = _held_out_first(np.random.default_rng(seed).permutation(n), n_val, keep)
    if not inplace:
        val, train = order[:n_val], order[n_val:]
        return X[train], y[train], X[val], y[val]
    _permute_rows(X, order)
    _permute_rows(y, order)
    return X[n_val:], y[n_val:], X[:n_val], y[:n_val]


def _held_out_first(order, n_val, keep):
    """``(order, n_val)``: ``order`` with its first ``n_val`` rows not among
    ``keep`` (a boolean mask of rows that stay in training): rows of
    ``keep`` drawn among the first give their places to the next ones, the
    order otherwise as it was (all of it, where ``keep`` is None or marks
    none of those rows). Fewer than ``n_val`` rows are held out where fewer
    are free (none: as drawn, with a warning)."""
    if keep is None or not keep[order[:n_val]].any():
        return order, n_val
    free = order[~keep[order]]
    if free.shape[0] == 0:
        _checks.warn_caller("every row is the only one of its class: the validation rows "
                            "hold classes the training rows lack", InputWarning)
        return order, n_val
    val = free[:n_val]
    taken = np.zeros(order.shape[0], dtype=bool)
    taken[val] = True
    return np.concatenate([val, order[~taken[order]]]), int(val.shape[0])


def _check_stat(values, name, n_features):
    values = host.plain(values, name, "a 1-D array of numbers")
    if values.dtype.kind not in "biuf":
        raise InputTypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
    if values.shape != (n_features,):
        raise InputValueError(f"{name} has shape {values.shape}; X has {n_features} features, "
                              f"so expected ({n_features},)")
    return values


def standardize_with(X, mean, scale, *, inplace=False, dtype=None):
    """``(X - mean) / scale`` for each feature (column) of ``X``, with the
    statistics given (such as ``feature_stats`` of the training rows, or those
    saved beside a network), in the dtype NumPy gives these arrays: float32
    for float32 data and statistics. ``inplace=True`` writes the result into
    ``X``, which must then be a writable array of that dtype; should the
    result overflow, ``X`` is left partly standardised. ``dtype`` (such as
    the network's "float32") stores the result in that dtype, computed as
    above a block of rows at a time: the values of ``.astype(dtype)`` of the
    result, without a full-size result in the wider dtype (float64 data
    into a float32 network: one copy of half the size, which fit then
    trains on without another)."""
    X = _host_array(X, "X", inplace)
    if X.ndim != 2:
        raise InputValueError(f"X must be 2-D (rows, features), got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise InputTypeError(f"X must hold real numbers, got dtype {X.dtype}")
    mean = _check_stat(mean, "mean", X.shape[1])
    scale = _check_stat(scale, "scale", X.shape[1])
    if not np.isfinite(mean).all():
        j = int(np.flatnonzero(~np.isfinite(mean))[0])
        raise InputValueError(f"mean must hold finite numbers; mean[{j}] is {mean[j]}")
    if not (np.isfinite(scale) & (scale > 0)).all():
        j = int(np.flatnonzero(~(np.isfinite(scale) & (scale > 0)))[0])
        raise InputValueError(f"scale must hold finite numbers > 0; scale[{j}] is {scale[j]}")
    if X.dtype.kind == "f" and not host.all_finite(X):
        raise InputValueError(f"X contains {int(np.count_nonzero(~np.isfinite(X)))} NaN or "
                              "infinite value(s)")
    dtype_in = np.result_type(X, mean, scale)
    stored = dtype_in if dtype is None else _check_dtype(dtype)
    if inplace and dtype is not None and stored != X.dtype:
        raise InputTypeError(f"dtype={dtype!r} with inplace=True: X is {X.dtype}, so it cannot "
                             f"hold the result in {stored}; drop dtype= (or pass inplace=False)")
    if inplace and dtype_in != X.dtype:
        raise InputTypeError(f"X is {X.dtype}, but standardised with a {mean.dtype} mean and "
                             f"{scale.dtype} scale it becomes {dtype_in}, so it cannot be "
                             "overwritten; pass inplace=False or statistics of X's dtype")
    out = X if inplace else np.empty(X.shape, dtype=stored)
    # the same two rounded operations as (X - mean) / scale, without its temporary
    with np.errstate(over="ignore"):  # checked just below, naming the row
        if stored == dtype_in:
            np.subtract(X, mean, out=out)
            np.divide(out, scale, out=out)
        else:  # a block of rows at a time through a scratch block, then stored
            rows = max(1, (1 << 20) // max(1, X.shape[1]))
            scratch = np.empty((min(rows, X.shape[0]), X.shape[1]), dtype_in)
            for lo in range(0, X.shape[0], rows):
                block = scratch[:min(rows, X.shape[0] - lo)]
                np.subtract(X[lo:lo + len(block)], mean, out=block)
                np.divide(block, scale, out=block)
                out[lo:lo + len(block)] = block
    if out.dtype.kind == "f" and not host.all_finite(out):
        row = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise InputValueError(f"X row {row} lies beyond the {stored} range once standardised "
                              "with this mean and scale")
    return out


@dataclass(frozen=True, repr=False)
class PreparedData:
    """A ``Dataset`` made ready to train on by ``prepare_dataset``: every
    ``X_*`` standardised with the training rows' ``mean`` and ``scale``
    (in the images' dtype; keep them to standardise new data alike, as ``nnx train``
    saves them beside the network); ``X_val``/``y_val`` are the held-out
    rows, or None without a validation split."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    X_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    name: str
    n_classes: int
    class_names: tuple[str, ...] | None = None
    source: str = ""
    feature_names: tuple[str, ...] | None = None
    target_name: str | None = None

    def __repr__(self):
        val = None if self.X_val is None else self.X_val.shape
        return (f"PreparedData(name={self.name!r}, train={self.X_train.shape}, "
                f"validation={val}, test={self.X_test.shape}, n_classes={self.n_classes})")


def prepare_dataset(dataset, validation=VALIDATION_FRACTION, seed=None, *, inplace=False):
    """What ``nnx train`` and ``nnx reproduce`` train on, as ``PreparedData``:
    ``validation`` (a fraction, or None for no split) of ``dataset``'s
    training rows held out by ``train_validation_split(..., seed=seed)``
    (the only row of a class kept in training), then
    every set standardised with ``feature_stats`` of the remaining training
    rows. ``inplace=True`` reorders and overwrites ``dataset``'s own arrays
    rather than copying them (it is used up); otherwise ``dataset`` is left
    as it was and shares no memory with the result."""
    if not isinstance(dataset, Dataset):
        raise InputTypeError(f"dataset must be an nnx.data.Dataset, got {type(dataset).__name__}")
    if validation is not None:
        _check_fraction("validation", validation)
    seed = _check_seed(seed)
    X, y = dataset.X_train, dataset.y_train
    X_val = y_val = None
    if validation is not None:  # copies unless in place: from here on they may be overwritten
        # a class of one training row stays in training: held out, nothing would train it
        keep = None
        if np.issubdtype(np.asarray(y).dtype, np.integer) and y.size and y.min() >= 0:
            keep = (np.bincount(y) == 1)[y]
        X, y, X_val, y_val = train_validation_split(X, y, validation, seed, inplace=inplace,
                                                    keep=keep)
    elif not inplace:
        X, y = X.copy(), y.copy()
    mean, scale = feature_stats(X)
    for part in (X, X_val):
        if part is not None:
            standardize_with(part, mean, scale, inplace=True)
    return PreparedData(
        X_train=X, y_train=y, X_val=X_val, y_val=y_val,
        X_test=standardize_with(dataset.X_test, mean, scale, inplace=inplace),
        y_test=dataset.y_test if inplace else dataset.y_test.copy(), mean=mean, scale=scale,
        name=dataset.name, n_classes=dataset.n_classes, class_names=dataset.class_names,
        source=dataset.source, feature_names=dataset.feature_names,
        target_name=dataset.target_name)


def one_hot(y, n_classes):
    """Float32 rows with a 1 in column ``y[i]``: shape ``(len(y), n_classes)``."""
    y = np.asarray(y)
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) \
            or n_classes < 1:
        raise InputValueError(f"n_classes={n_classes!r} must be a positive integer")
    if y.ndim != 1:
        raise InputValueError(f"y must be 1-D class ids, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputTypeError(f"y must hold integer class ids, got dtype {y.dtype}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise InputValueError(f"class ids must be in [0, {n_classes}), got {int(y.min())}.."
                              f"{int(y.max())}")
    out = np.zeros((y.shape[0], int(n_classes)), dtype=np.float32)
    out[np.arange(y.shape[0]), y] = 1.0
    return out


# the public functions raise refusals from the call itself (a short traceback)
for _name in ("load_dataset", "standardize", "one_hot", "read_idx", "parse_idx",
              "feature_stats", "standardize_with", "train_validation_split", "prepare_dataset"):
    globals()[_name] = _checks.short_refusals(globals()[_name])
del _name
