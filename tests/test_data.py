"""nnx.data: the real Fashion-MNIST files (from Debian's dataset-fashion-mnist
package; skipped where it is absent), scikit-learn's digits, and small IDX
files written here for the search order, the format checks and downloads;
the validation split, statistics and standardisation.
No test touches the network: ``_fetch`` is replaced in every one."""

import dataclasses
import gzip
import hashlib
import os
import re
import struct
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from helpers import INF, N_IN, NAN, X0, with_value

from nnx import InputValueError, data
from nnx.data import (
    Dataset,
    DatasetError,
    DatasetNotFound,
    PreparedData,
    feature_stats,
    load_dataset,
    one_hot,
    parse_idx,
    prepare_dataset,
    read_idx,
    search_dirs,
    standardize,
    standardize_with,
    train_validation_split,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
HAVE_FASHION = all((FASHION_DIR / n).is_file() for n in NAMES)
NO_FASHION = (f"Fashion-MNIST not in {FASHION_DIR}: install Debian's package with "
              "'apt-get install -y dataset-fashion-mnist'")
needs_fashion = pytest.mark.skipif(not HAVE_FASHION, reason=NO_FASHION)
FASHION_MIRROR = data._IDX_DATASETS["fashion-mnist"].mirrors[0]


def _no_network(url):
    raise AssertionError(f"a test tried to download {url}")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No $NNX_DATA, a fresh user cache, and no network."""
    monkeypatch.delenv("NNX_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(data, "_fetch", _no_network)


@pytest.fixture
def no_system_dirs(monkeypatch):
    """Hide the Debian folder, so Fashion-MNIST must come from elsewhere."""
    info = data._IDX_DATASETS["fashion-mnist"]
    monkeypatch.setitem(data._IDX_DATASETS, "fashion-mnist",
                        dataclasses.replace(info, system_dirs=()))


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """Fashion-MNIST loaded once (about a second), found by the default search."""
    if not HAVE_FASHION:
        pytest.skip(NO_FASHION)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("NNX_DATA", raising=False)
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
        mp.setattr(data, "_fetch", _no_network)
        return load_dataset("fashion-mnist", download=False)


# -------------------------------------------- helpers for synthetic IDX files
def idx_bytes(array):
    array = np.asarray(array, dtype=np.uint8)
    return (struct.pack(">I", 0x800 | array.ndim)
            + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def write_synthetic(folder, mark, n_train=4, n_test=2):
    """Four tiny gzip IDX files whose labels are all ``mark``, to tell folders apart."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(mark)
    arrays = (rng.integers(0, 256, (n_train, 3, 3)), np.full(n_train, mark),
              rng.integers(0, 256, (n_test, 3, 3)), np.full(n_test, mark))
    for name, array in zip(NAMES, arrays, strict=True):
        (folder / name).write_bytes(gzip.compress(idx_bytes(array), mtime=0))
    return folder


def mark_of(ds):
    (mark,) = set(ds.y_train.tolist()) | set(ds.y_test.tolist())
    return mark


def folder_with(tmp_path, name, blob):
    """A folder with the real Fashion-MNIST files linked in, ``name`` replaced by ``blob``."""
    folder = tmp_path / "copy"
    folder.mkdir()
    for n in NAMES:
        if n == name:
            (folder / n).write_bytes(blob)
        else:
            (folder / n).symlink_to(FASHION_DIR / n)
    return folder


# Debian's package rewrote each gzip header (dh_strip_nondeterminism: mtime set to
# the package's date, the stored file name dropped) but kept upstream's deflate
# data. Upstream's headers had these mtimes (found by matching its published
# SHA-256s), so putting the header back gives the mirror's exact bytes.
UPSTREAM_MTIME = {"train-images-idx3-ubyte.gz": 1504176606,
                  "train-labels-idx1-ubyte.gz": 1504176606,
                  "t10k-images-idx3-ubyte.gz": 1504176627,
                  "t10k-labels-idx1-ubyte.gz": 1504176627}


def upstream_archive(name):
    blob = (FASHION_DIR / name).read_bytes()
    if blob[:4] != b"\x1f\x8b\x08\x00":
        pytest.skip(f"{name}: Debian's gzip header changed; cannot rebuild upstream's")
    return (b"\x1f\x8b\x08\x08" + struct.pack("<I", UPSTREAM_MTIME[name]) + blob[8:10]
            + name[:-3].encode() + b"\0" + blob[10:])


# ---------------------------------------------- Fashion-MNIST, the real files
def test_fashion_shapes_dtypes_and_class_counts(fashion):
    assert fashion.name == "fashion-mnist" and fashion.n_classes == 10
    assert fashion.X_train.shape == (60000, 784) and fashion.X_test.shape == (10000, 784)
    assert fashion.y_train.shape == (60000,) and fashion.y_test.shape == (10000,)
    assert fashion.X_train.dtype == fashion.X_test.dtype == np.float32
    assert fashion.y_train.dtype == fashion.y_test.dtype == np.int64
    assert np.array_equal(np.bincount(fashion.y_train, minlength=10), np.full(10, 6000))
    assert np.array_equal(np.bincount(fashion.y_test, minlength=10), np.full(10, 1000))
    # raw pixel values, not rescaled
    assert fashion.X_train.min() == 0 and fashion.X_train.max() == 255
    assert len(fashion.class_names) == 10 and fashion.class_names[9] == "Ankle boot"
    # nothing in $NNX_DATA or the cache: the Debian folder is where it came from
    assert fashion.source == str(FASHION_DIR)


@needs_fashion
def test_fashion_files_match_the_checksums():
    for spec in data._IDX_DATASETS["fashion-mnist"].files:
        raw = gzip.decompress((FASHION_DIR / spec.name).read_bytes())
        assert hashlib.sha256(raw).hexdigest() == spec.idx_sha256, spec.name


@needs_fashion
def test_debian_files_rebuild_the_mirror_archives():
    # ties the download checksums to the packaged data: same deflate stream
    for spec in data._IDX_DATASETS["fashion-mnist"].files:
        assert hashlib.sha256(upstream_archive(spec.name)).hexdigest() == spec.gz_sha256


@needs_fashion
@pytest.mark.parametrize("how", ["truncated", "corrupted"])
def test_damaged_real_file_raises_naming_it(tmp_path, how):
    name = "train-labels-idx1-ubyte.gz"
    blob = bytearray((FASHION_DIR / name).read_bytes())
    if how == "truncated":
        blob = blob[:len(blob) // 2]
    else:
        blob[len(blob) // 2] ^= 0xFF
    folder = folder_with(tmp_path, name, bytes(blob))
    with pytest.raises(DatasetError, match="gzip") as err:
        load_dataset("fashion-mnist", data_dir=folder, download=False)
    assert str(folder / name) in str(err.value)


@needs_fashion
@pytest.mark.parametrize("how", ["truncated", "corrupted"])
def test_damaged_image_file_raises_in_read_idx(tmp_path, how):
    blob = bytearray((FASHION_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    if how == "truncated":
        blob = blob[:len(blob) // 2]
    else:
        blob[len(blob) // 2] ^= 0xFF
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(DatasetError, match="corrupted or truncated gzip") as err:
        read_idx(path)
    assert str(path) in str(err.value)


@needs_fashion
def test_altered_but_well_formed_file_fails_the_checksum(tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress((FASHION_DIR / name).read_bytes()))
    raw[8] = (raw[8] + 1) % 10  # one label changed: a valid IDX file, not the official one
    folder = folder_with(tmp_path, name, gzip.compress(bytes(raw)))
    with pytest.raises(DatasetError, match="checksum mismatch") as err:
        load_dataset("fashion-mnist", data_dir=folder, download=False)
    assert str(folder / name) in str(err.value) and "verify=False" in str(err.value)


# ------------------------------------------------------------- the IDX format
def test_parse_idx_round_trip():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(array), magic=0x803), array)


def test_wrong_magic_number_raises_naming_the_file(tmp_path):
    write_synthetic(tmp_path, mark=1)
    # an images (3-D) file where the labels (1-D) belong
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 3, 3)))))
    with pytest.raises(DatasetError, match="magic number is 0x00000803, expected 0x00000801"
                       ) as err:
        load_dataset("mnist", data_dir=tmp_path, download=False, verify=False)
    assert str(labels) in str(err.value)


@pytest.mark.parametrize("blob, message", [
    (b"\x12\x34\x08\x01" + struct.pack(">I", 0), "not an IDX magic number"),
    (b"\x00\x00", "too short"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header truncated"),
    (idx_bytes(np.zeros((2, 3, 3)))[:-1], r"truncated\)"),
    (idx_bytes(np.zeros((2, 3, 3))) + b"\0", "trailing bytes"),
    # dimensions whose product is 2**64: wrapped to 0 in int64, an empty payload matched
    (b"\x00\x00\x08\x03" + struct.pack(">3I", 2**22, 2**21, 2**21),
     r"need 18446744073709551616 \(truncated\)"),
])
def test_malformed_idx_raises(blob, message):
    with pytest.raises(DatasetError, match=message) as err:
        parse_idx(blob, "some/file.idx")
    assert "some/file.idx" in str(err.value)


@pytest.mark.parametrize("blob, message", [
    (b"\x00\x00\x08", "too short"),                          # 3 bytes: still no header
    (b"\x00\x01\x08\x01" + struct.pack(">I", 0), "not an IDX magic number"),  # 2nd byte set
    (b"\x00\x00\x08\x00", "not an IDX magic number"),        # no dimensions at all
])
def test_more_malformed_headers_raise(blob, message):
    with pytest.raises(DatasetError, match=message):
        parse_idx(blob, "some/file.idx")


@pytest.mark.parametrize("code, dtype", [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
                                         (0x0D, np.float32), (0x0E, np.float64)])
def test_every_idx_type_is_read_big_endian(code, dtype):
    values = np.array([[1, -2, 100], [-40, 5, -6]], dtype=dtype)
    blob = (struct.pack(">I", code << 8 | 2) + struct.pack(">2I", *values.shape)
            + values.astype(np.dtype(dtype).newbyteorder(">")).tobytes())
    out = parse_idx(blob, magic=code << 8 | 2)
    np.testing.assert_array_equal(out, values)


def test_image_and_label_counts_must_agree(tmp_path):
    write_synthetic(tmp_path, mark=2)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.ones(5))))
    with pytest.raises(DatasetError, match="2 images but t10k-labels-idx1-ubyte.gz has 5"):
        load_dataset("mnist", data_dir=tmp_path, download=False, verify=False)


def test_an_image_file_without_images_is_refused(tmp_path):
    write_synthetic(tmp_path, mark=2)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros((0, 3, 3), np.uint8))))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(0, np.uint8))))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz: the file holds no images"):
        load_dataset("mnist", data_dir=tmp_path, download=False, verify=False)


def test_labels_must_be_class_ids(tmp_path):
    write_synthetic(tmp_path, mark=3)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.full(4, 10))))
    with pytest.raises(DatasetError, match="label 10 is not below 10"):
        load_dataset("mnist", data_dir=tmp_path, download=False, verify=False)


def test_own_files_need_verify_false(tmp_path):
    write_synthetic(tmp_path, mark=4)
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    ds = load_dataset("mnist", data_dir=tmp_path, download=False, verify=False)
    assert ds.X_train.shape == (4, 9) and ds.X_test.shape == (2, 9)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert mark_of(ds) == 4 and ds.source == str(tmp_path)


# ---------------------------------- reading straight into the Dataset's dtype
def test_read_idx_converts_straight_into_a_dtype(tmp_path):
    write_synthetic(tmp_path, mark=5)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = read_idx(path)
    assert raw.dtype == np.uint8 and raw.shape == (4, 3, 3) and raw.flags.writeable
    for dtype in (np.float32, np.float64):
        out = read_idx(path, dtype=dtype)
        assert out.dtype == dtype and out.flags.writeable
        np.testing.assert_array_equal(out, raw.astype(dtype))


def test_the_loaded_arrays_are_the_only_copy(tmp_path):
    """Each array is converted from the file's bytes into its own buffer: no
    view keeps the decompressed file alive, and nothing else holds the data."""
    write_synthetic(tmp_path, mark=5)
    ds = load_dataset("mnist", data_dir=tmp_path, download=False, verify=False)
    for field in ("X_train", "y_train", "X_test", "y_test"):
        a = getattr(ds, field)
        assert a.base is None and a.flags.c_contiguous and a.flags.writeable, field
    raw = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(ds.X_train, raw.reshape(4, 9).astype(np.float32))


# --------------------------------------------- where the files are looked for
def test_search_dirs_order(tmp_path, monkeypatch):
    monkeypatch.setenv("NNX_DATA", str(tmp_path / "env"))
    cache = tmp_path / "xdg-cache" / "nnx" / "fashion-mnist"
    assert search_dirs("Fashion_MNIST", data_dir=tmp_path / "mine") == [
        tmp_path / "mine", tmp_path / "mine" / "fashion-mnist",
        tmp_path / "env" / "fashion-mnist", tmp_path / "env", cache, FASHION_DIR,
    ]
    assert search_dirs("mnist") == [tmp_path / "env" / "mnist", tmp_path / "env",
                                    tmp_path / "xdg-cache" / "nnx" / "mnist"]
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, per XDG
    assert search_dirs("mnist")[-1] == Path.home() / ".cache" / "nnx" / "mnist"


def test_search_order(tmp_path, monkeypatch):
    def load(**kw):
        return mark_of(load_dataset("mnist", download=False, verify=False, **kw))

    mine, env = tmp_path / "mine", tmp_path / "env"
    write_synthetic(mine, mark=1)
    write_synthetic(env / "mnist", mark=2)
    write_synthetic(tmp_path / "xdg-cache" / "nnx" / "mnist", mark=3)
    monkeypatch.setenv("NNX_DATA", str(env))
    assert load(data_dir=mine) == 1          # data_dir beats $NNX_DATA
    assert load() == 2                       # $NNX_DATA/<name> beats the cache
    (tmp_path / "empty").mkdir()
    assert load(data_dir=tmp_path / "empty") == 2  # an empty data_dir is passed over
    write_synthetic(env, mark=5)
    assert load() == 2                       # the per-dataset subfolder comes first
    for name in NAMES:
        (env / "mnist" / name).unlink()
    assert load() == 5                       # files directly in $NNX_DATA
    monkeypatch.delenv("NNX_DATA")
    assert load() == 3                       # then the user cache
    write_synthetic(tmp_path / "root" / "mnist", mark=6)
    assert load(data_dir=tmp_path / "root") == 6  # data_dir/<name> also accepted


def test_incomplete_folder_is_passed_over(tmp_path, monkeypatch):
    # a folder found on the search path; one given as data_dir is an error (below)
    write_synthetic(tmp_path / "a", mark=1)
    (tmp_path / "a" / NAMES[3]).unlink()
    write_synthetic(tmp_path / "xdg-cache" / "nnx" / "mnist", mark=3)
    monkeypatch.setenv("NNX_DATA", str(tmp_path / "a"))
    ds = load_dataset("mnist", download=False, verify=False)
    assert mark_of(ds) == 3


@pytest.mark.parametrize("sub", ["", "mnist"])
def test_an_incomplete_data_dir_is_an_error_naming_the_missing_files(tmp_path, sub):
    """A data_dir with three of the four files was passed over in silence,
    and the dataset came from another copy (here the user cache)."""
    write_synthetic(tmp_path / "mine" / sub, mark=1)
    for name in NAMES[2:]:
        (tmp_path / "mine" / sub / name).unlink()
    write_synthetic(tmp_path / "xdg-cache" / "nnx" / "mnist", mark=3)
    with pytest.raises(DatasetNotFound) as err:
        load_dataset("mnist", data_dir=tmp_path / "mine", download=False, verify=False)
    message = str(err.value)
    assert f"{str(tmp_path / 'mine' / sub).rstrip('/')!r}" in message
    assert "missing: t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz" in message
    assert NAMES[0] not in message.split("missing:")[1]
    # the same folder complete loads from there, and an empty data_dir is still passed over
    write_synthetic(tmp_path / "mine" / sub, mark=1)
    assert mark_of(load_dataset("mnist", data_dir=tmp_path / "mine", download=False,
                                verify=False)) == 1
    (tmp_path / "none").mkdir()
    assert mark_of(load_dataset("mnist", data_dir=tmp_path / "none", download=False,
                                verify=False)) == 3


def test_a_data_dir_that_does_not_exist_is_an_error_naming_it(tmp_path):
    """A mistyped data_dir was passed over in silence, and another copy of the
    dataset (here the user cache) was loaded instead."""
    write_synthetic(tmp_path / "xdg-cache" / "nnx" / "mnist", mark=3)
    for download in (False, True):
        with pytest.raises(DatasetNotFound, match=r"'.*typo' \(data_dir=\.\.\.\) does not "
                                                  r"exist"):
            load_dataset("mnist", data_dir=tmp_path / "typo", download=download, verify=False)


def test_missing_files_with_download_false(tmp_path):
    (tmp_path / "nowhere").mkdir()  # an empty data_dir: passed over, and named as searched
    with pytest.raises(DatasetNotFound) as err:
        load_dataset("mnist", data_dir=tmp_path / "nowhere", download=False)
    e = err.value
    assert isinstance(e, FileNotFoundError)
    message = str(e)
    cache = tmp_path / "xdg-cache" / "nnx" / "mnist"
    for name in NAMES:
        assert name in message
    assert f"into the folder {cache}" in message
    assert str(tmp_path / "nowhere") in message and "download=False" in message
    assert e.files == NAMES and e.folder == cache
    assert not cache.exists()


def test_missing_fashion_points_at_the_debian_package(no_system_dirs):
    with pytest.raises(DatasetNotFound, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", download=False)


# -------------------------------- downloads (with a stand-in for the network)
def test_no_network_raises_not_found(monkeypatch, tmp_path):
    urls = []

    def offline(url):
        urls.append(url)
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(data, "_fetch", offline)
    with pytest.raises(DatasetNotFound, match="download failed") as err:
        load_dataset("mnist")
    assert "ossci-datasets" in str(err.value) and "no route to host" in str(err.value)
    assert len(urls) == len(data._IDX_DATASETS["mnist"].mirrors)  # each host tried once
    cache = tmp_path / "xdg-cache" / "nnx" / "mnist"
    assert not cache.exists() or not any(cache.iterdir())


def test_download_with_bad_checksum_leaves_nothing(monkeypatch, tmp_path):
    urls = []

    def tampered(url):
        urls.append(url)
        return b"not the file you wanted"

    monkeypatch.setattr(data, "_fetch", tampered)
    with pytest.raises(DatasetError, match="failed its checksum") as err:
        load_dataset("mnist")
    assert urls[0] in str(err.value)
    cache = tmp_path / "xdg-cache" / "nnx" / "mnist"
    assert not cache.exists() or not any(cache.iterdir())


def serve_synthetic(monkeypatch, tmp_path, mark, mirrors=None, idx_checksums=False):
    """Synthetic MNIST files on a pretend server: the dataset's checksums (and,
    given, its mirrors) replaced by theirs. Returns the server folder and the specs."""
    src = write_synthetic(tmp_path / "server", mark=mark)
    info = data._IDX_DATASETS["mnist"]

    def checksums(f):
        blob = (src / f.name).read_bytes()
        extra = {"idx_sha256": hashlib.sha256(gzip.decompress(blob)).hexdigest()} \
            if idx_checksums else {}
        return dataclasses.replace(f, gz_sha256=hashlib.sha256(blob).hexdigest(), **extra)
    specs = tuple(checksums(f) for f in info.files)
    monkeypatch.setitem(data._IDX_DATASETS, "mnist", dataclasses.replace(
        info, files=specs, mirrors=mirrors or info.mirrors))
    return src, specs


def test_a_good_mirror_makes_up_for_a_bad_one(monkeypatch, tmp_path):
    src, _ = serve_synthetic(monkeypatch, tmp_path, 8,
                             mirrors=("https://bad.example/", "https://good.example/"))

    def fetch(url):
        if url.startswith("https://bad.example/"):
            return b"tampered"
        return (src / url.rsplit("/", 1)[1]).read_bytes()

    monkeypatch.setattr(data, "_fetch", fetch)
    assert mark_of(load_dataset("mnist")) == 8  # verified on the .gz bytes, as MNIST is


def test_download_is_verified_and_written_to_the_cache(monkeypatch, tmp_path):
    # synthetic files standing in for the official ones (runs without the Debian package)
    src, _ = serve_synthetic(monkeypatch, tmp_path, 7, idx_checksums=True)
    urls = []

    def fetch(url):
        urls.append(url)
        return (src / url.rsplit("/", 1)[1]).read_bytes()

    monkeypatch.setattr(data, "_fetch", fetch)
    ds = load_dataset("mnist")
    cache = tmp_path / "xdg-cache" / "nnx" / "mnist"
    assert urls == [data._IDX_DATASETS["mnist"].mirrors[0] + n for n in NAMES]
    assert sorted(p.name for p in cache.iterdir()) == sorted(NAMES)  # no temp files left
    assert ds.source == str(cache) and mark_of(ds) == 7
    monkeypatch.setattr(data, "_fetch", _no_network)  # now cached: no second download
    assert mark_of(load_dataset("mnist")) == 7


def test_a_download_that_gets_only_some_files_says_which_are_missing(monkeypatch, tmp_path):
    src, specs = serve_synthetic(monkeypatch, tmp_path, 6, mirrors=("https://only.example/",))

    def fetch(url):
        name = url.rsplit("/", 1)[1]
        if name == specs[-1].name:
            raise urllib.error.HTTPError(url, 404, "not found", None, None)
        return (src / name).read_bytes()

    monkeypatch.setattr(data, "_fetch", fetch)
    with pytest.raises(DatasetNotFound, match="404") as err:
        load_dataset("mnist")
    assert specs[-1].name in err.value.files


@needs_fashion
def test_download_of_real_fashion_files(monkeypatch, tmp_path, no_system_dirs):
    cache = tmp_path / "xdg-cache" / "nnx" / "fashion-mnist"
    cache.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (cache / name).symlink_to(FASHION_DIR / name)  # half there: fetch only the rest
    urls = []

    def fetch(url):
        urls.append(url)
        return upstream_archive(url.rsplit("/", 1)[1])

    monkeypatch.setattr(data, "_fetch", fetch)
    ds = load_dataset("fashion-mnist")
    assert urls == [FASHION_MIRROR + "train-labels-idx1-ubyte.gz",
                    FASHION_MIRROR + "t10k-labels-idx1-ubyte.gz"]
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert (cache / name).read_bytes() == upstream_archive(name)
    assert sorted(p.name for p in cache.iterdir()) == sorted(NAMES)
    assert ds.source == str(cache) and ds.X_train.shape == (60000, 784)


# ----------------------------------------------- digits and the other sources
def test_digits_split():
    ds = load_dataset("digits")
    assert ds.X_train.shape == (1347, 64) and ds.X_test.shape == (450, 64)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.n_classes == 10 and ds.name == "digits"
    assert 0 <= ds.X_train.min() and ds.X_train.max() == 16
    for y in (ds.y_train, ds.y_test):
        assert set(np.unique(y)) == set(range(10))
    # stratified: each class's share of the test set is within a row of a quarter
    total = np.bincount(ds.y_train, minlength=10) + np.bincount(ds.y_test, minlength=10)
    assert np.all(np.abs(np.bincount(ds.y_test, minlength=10) - total * 0.25) <= 1)
    again = load_dataset("digits")
    for field in ("X_train", "y_train", "X_test", "y_test"):
        assert np.array_equal(getattr(ds, field), getattr(again, field))


def test_openml_mnist_is_split_60k_10k(monkeypatch, tmp_path):
    import inspect

    import sklearn.datasets

    real = sklearn.datasets.fetch_openml
    calls = {}

    def fake_fetch_openml(name, **kw):
        inspect.signature(real).bind(name, **kw)  # only arguments the real one takes
        calls.update(kw, name=name)
        X = np.arange(70000, dtype=np.float64)[:, None]
        return X, np.array([str(i % 10) for i in range(70000)], dtype=object)

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fake_fetch_openml)
    # offline and not cached: refused before scikit-learn could go online
    with pytest.raises(DatasetNotFound, match="mnist_784 is not in scikit-learn's cache"):
        load_dataset("mnist", source="openml", download=False, data_dir=tmp_path)
    assert not calls
    cached = tmp_path / "openml" / "openml.org" / "api" / "data_name" / "mnist_784"
    cached.mkdir(parents=True)
    ds = load_dataset("mnist", source="openml", download=False, data_dir=tmp_path)
    assert calls["name"] == "mnist_784" and calls["data_home"] == tmp_path
    assert ds.X_train.shape == (60000, 1) and ds.X_test.shape == (10000, 1)
    assert ds.X_train[-1, 0] == 59999 and ds.X_test[0, 0] == 60000
    assert ds.y_train.dtype == np.int64 and ds.y_test[:3].tolist() == [0, 1, 2]

    def offline(name, **kw):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(DatasetNotFound, match="mnist_784"):
        load_dataset("mnist", source="openml", data_dir=tmp_path)


def test_bad_names_and_sources():
    with pytest.raises(ValueError, match="not known"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="not available"):
        load_dataset("fashion-mnist", source="openml")


def test_dataset_checks_its_arrays():
    X, y = np.zeros((3, 2), np.float32), np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="float32"):
        Dataset(X.astype(np.float64), y, X, y, name="x", n_classes=2)
    with pytest.raises(ValueError, match="one entry per row"):
        Dataset(X, y[:2], X, y, name="x", n_classes=2)
    assert "train=(3, 2)" in repr(Dataset(X, y, X, y, name="x", n_classes=2))


# --------------------------------------- standardisation and one-hot encoding
def test_standardize_closed_form():
    X_train = np.array([[1, 5, 2], [3, 5, 4]], dtype=np.float32)
    X_test = np.array([[2, 7, 0]], dtype=np.float32)
    # means (2, 5, 3), population stds (1, 0, 1); the constant column is only centred
    tr, te = standardize(X_train, X_test)
    assert tr.dtype == te.dtype == np.float32
    np.testing.assert_array_equal(tr, [[-1, 0, -1], [1, 0, 1]])
    np.testing.assert_array_equal(te, [[0, 2, -3]])
    np.testing.assert_array_equal(X_train, [[1, 5, 2], [3, 5, 4]])  # inputs untouched


def test_standardize_matches_the_studys_scaler():
    from sklearn.preprocessing import StandardScaler

    ds = load_dataset("digits")  # has all-zero pixel columns
    tr, te = standardize(ds.X_train, ds.X_test)
    scaler = StandardScaler().fit(ds.X_train.astype(np.float64))
    np.testing.assert_allclose(tr, scaler.transform(ds.X_train), atol=1e-5)
    np.testing.assert_allclose(te, scaler.transform(ds.X_test), atol=1e-5)
    assert np.isfinite(tr).all() and np.isfinite(te).all()


def test_standardize_keeps_float64_precision_and_tiny_spreads():
    """Centred and scaled in float64 like StandardScaler, rounded once: a
    feature at 1e6 with a spread of 0.05 keeps its values, and one whose spread
    is too small for float32 gives finite numbers, not 0 / 0."""
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = np.column_stack([1e6 + 0.05 * rng.standard_normal(1000),
                         1e-50 * rng.standard_normal(1000), rng.standard_normal(1000)])
    tr, te = standardize(X, X[:10])
    want = StandardScaler().fit(X).transform(X)
    np.testing.assert_allclose(tr, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(te, tr[:10])
    mean, scale = feature_stats(X.astype(np.float32))  # in float32 that spread is none
    assert scale[1] == 1.0 and np.isfinite((X[:, 1] - mean[1]) / scale[1]).all()
    # float64 data keeps float64 statistics: rounded to float32, the mean of the
    # feature at 1e6 was off by up to 0.03, most of a standard deviation of 0.05
    mean, scale = feature_stats(X)
    assert mean.dtype == scale.dtype == np.float64
    np.testing.assert_allclose(standardize_with(X, mean, scale), want, rtol=1e-9, atol=1e-9)


def test_a_float64_constant_column_is_centred_not_blown_up():
    # 0.1 summed 1000 times is not 100 exactly: the computed std is ~1e-15, not 0
    X = np.full((1000, 2), 0.1)
    X[:, 1] = np.arange(1000)
    Z_train, _ = standardize(X, X[:3])
    assert np.abs(Z_train[:, 0]).max() < 1e-12  # centred (up to the mean's rounding), not +-1


def test_statistics_of_float32_data_are_taken_in_float64():
    rng = np.random.default_rng(0)
    X = (1000 + rng.standard_normal((60_000, 3))).astype(np.float32)
    mean, _ = feature_stats(X)
    np.testing.assert_allclose(mean, X.astype(np.float64).mean(axis=0), rtol=1e-7)


@pytest.mark.parametrize("n", [4096, 5000, 8193])
def test_standardize_covers_every_block_of_rows(n):
    from sklearn.preprocessing import StandardScaler
    X = np.random.default_rng(n).standard_normal((n, 4)) * 3 + 1
    Z_train, Z_test = standardize(X, X[::-1])
    expected = StandardScaler().fit_transform(X)
    np.testing.assert_allclose(Z_train, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(Z_test, expected[::-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype, tiny", [(np.float32, 2e-40), (np.float64, 2e-310)])
def test_a_subnormal_spread_gets_scale_one(dtype, tiny):
    X = np.zeros((4, 2), dtype)
    X[:, 0] = [0, tiny, 0, tiny]  # std tiny / 2: subnormal in the data's dtype
    X[:, 1] = [1, 2, 3, 4]
    _, scale = feature_stats(X)
    assert scale.dtype == dtype and scale[0] == 1.0 and np.isfinite(scale).all()


@pytest.mark.parametrize("dtype, stats", [(np.uint8, np.float32), (np.float16, np.float32),
                                          (np.int64, np.float64), (np.float64, np.float64)])
def test_statistics_come_in_the_dtype_the_standardised_data_gets(dtype, stats):
    """uint8 images keep float32 statistics (float64 ones would double the
    standardised copy); data that standardises to float64 anyway gets them."""
    X = (np.arange(12).reshape(6, 2) * 7).astype(dtype)
    mean, scale = feature_stats(X)
    assert mean.dtype == scale.dtype == stats
    assert standardize_with(X, mean, scale).dtype == np.result_type(dtype, np.float32)


def test_float64_data_beyond_the_float32_range_has_finite_statistics():
    """They were cast to float32: inf, with only NumPy's overflow warning."""
    mean, scale = feature_stats(np.array([[1e39], [3e39]]))
    np.testing.assert_allclose([mean[0], scale[0]], [2e39, 1e39], rtol=1e-12)


def test_standardize_rejects_bad_shapes():
    with pytest.raises(ValueError, match="features"):
        standardize(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="2-D"):
        standardize(np.zeros(3), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"X_train is empty \(shape \(0, 3\)\)"):
        standardize(np.zeros((0, 3)), np.zeros((2, 3)))


@pytest.mark.parametrize("X_train, X_test, error, message", [
    (with_value(X0, (0, 0), NAN), X0, ValueError, "X_train contains 1 NaN"),
    (X0, with_value(X0, (1, 1), INF), ValueError, "X_test contains 1 NaN or infinite"),
    (X0.astype(complex), X0, TypeError, "X_train must hold real numbers"),
    (X0.astype(str), X0, TypeError, "X_train must hold numbers"),
    (X0 * 1e300, X0, ValueError, "X_train feature 0: its mean or std overflows"),
    (X0, X0 * 1e40, ValueError, "X_test row 0 lies beyond the float32 range"),
])
def test_standardize_refuses_what_it_cannot_scale(X_train, X_test, error, message):
    """standardize had no checks: NaN gave all-NaN output, complex lost its
    imaginary part, a huge spread gave all zeros, values beyond float32 inf."""
    from nnx.data import standardize
    with pytest.raises(error, match=re.escape(message)):
        standardize(X_train, X_test)


def test_standardize_still_takes_an_empty_test_set():
    from nnx.data import standardize
    _, Z = standardize(X0, np.zeros((0, N_IN)))
    assert Z.shape == (0, N_IN) and Z.dtype == np.float32


def test_one_hot_closed_form():
    out = one_hot(np.array([2, 0, 1, 2]), 3)
    assert out.dtype == np.float32 and out.shape == (4, 3)
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert one_hot(np.array([], dtype=np.int64), 4).shape == (0, 4)


@pytest.mark.parametrize("y, n, error", [
    ([0, 3], 3, ValueError), ([-1], 3, ValueError), ([0.0, 1.0], 3, TypeError),
    ([[0, 1]], 3, ValueError), ([0], 0, ValueError),
])
def test_one_hot_rejects_bad_input(y, n, error):
    with pytest.raises(error):
        one_hot(np.array(y), n)


# ---- the validation split, statistics and standardisation of prepare_dataset
def former_prepare(ds, seed, validation):
    """What nnx train did before the preparation moved into nnx.data, kept as
    an independent oracle: whole-array NumPy, float64 copies and all."""
    X_train, y_train, out = ds.X_train, ds.y_train, {}
    if validation:
        order = np.random.default_rng(seed).permutation(X_train.shape[0])
        n_val = max(1, int(round(0.1 * X_train.shape[0])))
        val, train = order[:n_val], order[n_val:]
        out["X_val"], out["y_val"] = X_train[val], y_train[val]
        X_train, y_train = X_train[train], y_train[train]
    mean64 = X_train.mean(axis=0, dtype=np.float64)
    std64 = X_train.std(axis=0, dtype=np.float64)
    constant = X_train.max(axis=0) == X_train.min(axis=0)
    scale32 = np.where(constant | (std64 == 0), 1.0, std64).astype(np.float32)
    scale = np.where(scale32 < np.finfo(np.float32).tiny, np.float32(1), scale32)
    mean = mean64.astype(np.float32)
    out.update(X_train=(X_train - mean) / scale, y_train=y_train, X_test=(ds.X_test - mean) / scale,
               y_test=ds.y_test, mean=mean, scale=scale)
    if validation:
        out["X_val"] = (out["X_val"] - mean) / scale
    return out


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("validation", [0.1, None])
@pytest.mark.parametrize("inplace", [False, True])
def test_prepare_dataset_gives_the_former_preparation_bit_for_bit(validation, inplace):
    ds, seed = load_dataset("digits"), 20200720
    expected = former_prepare(ds, seed, validation is not None)
    before = {f: getattr(ds, f).copy() for f in ("X_train", "y_train", "X_test", "y_test")}
    p = prepare_dataset(ds, validation, seed=seed, inplace=inplace)
    assert isinstance(p, PreparedData) and p.n_classes == 10 and p.name == "digits"
    for field, want in expected.items():
        assert same_bits(getattr(p, field), want), field
    if validation is None:
        assert p.X_val is None and p.y_val is None
    untouched = all(np.array_equal(getattr(ds, f), before[f]) for f in before)
    if inplace:  # the dataset's own arrays hold the result
        assert not untouched and np.shares_memory(p.X_train, ds.X_train)
        assert np.shares_memory(p.X_test, ds.X_test)
    else:
        assert untouched
        assert not any(np.shares_memory(getattr(p, f), getattr(ds, f)) for f in before)


def test_the_split_holds_out_a_seeded_tenth_in_the_permutations_order():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((101, 3)).astype(np.float32), rng.integers(0, 5, 101)
    order = np.random.default_rng(7).permutation(101)  # the first 10 rows are held out
    expected = X[order[10:]], y[order[10:]], X[order[:10]], y[order[:10]]
    parts = train_validation_split(X, y, seed=7)
    assert all(same_bits(a, b) for a, b in zip(parts, expected, strict=True))
    X0 = X.copy()
    parts = train_validation_split(X, y, 0.1, 7, inplace=True)
    assert all(same_bits(a, b) for a, b in zip(parts, expected, strict=True))
    assert all(np.shares_memory(a, b) for a, b in zip(parts, (X, y, X, y)))
    assert not np.array_equal(X, X0)  # reordered where it lay


@pytest.mark.parametrize("n, make", [
    (1, lambda n, rng: np.arange(n)),                        # nothing moves
    (50, lambda n, rng: np.arange(n)),
    (50, lambda n, rng: np.roll(np.arange(n), 1)),          # one cycle through every row
    (50, lambda n, rng: np.arange(n)[::-1].copy()),         # 25 swaps
    (257, lambda n, rng: rng.permutation(n)),
])
def test_rows_are_reordered_in_place_a_block_at_a_time(monkeypatch, n, make):
    monkeypatch.setattr(data, "_BLOCK", 3)  # cycles longer than a block go in several steps
    order = make(n, np.random.default_rng(n))
    for shape in ((n,), (n, 4), (n, 2, 3)):
        a = np.random.default_rng(0).standard_normal(shape)
        expected = a[order]
        data._permute_rows(a, order)
        np.testing.assert_array_equal(a, expected)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"fraction": 0}, ValueError, r"fraction=0.0 must be in \(0, 1\)"),
    ({"fraction": 1}, ValueError, r"fraction=1.0 must be in \(0, 1\)"),
    ({"fraction": float("nan")}, ValueError, "fraction=nan"),
    ({"fraction": "0.1"}, TypeError, "fraction must be a number, got '0.1'"),
    ({"fraction": 0.9}, ValueError, "fraction=0.9 of 4 rows holds out 4, leaving no training"),
    ({"seed": -1}, ValueError, "seed=-1 must be a non-negative integer"),
    ({"seed": 1.5}, ValueError, "seed=1.5 must be a non-negative integer"),
    ({"y": np.zeros(3)}, ValueError, "y has 3 rows but X has 4"),
    ({"X": np.float32(1)}, ValueError, "X must have rows"),
    ({"X": [[1.0]] * 4, "inplace": True}, TypeError, "X must be a NumPy array to be changed"),
])
def test_the_split_refuses_bad_arguments(kwargs, error, message):
    args = {"X": np.zeros((4, 2)), "y": np.zeros(4), **kwargs}
    with pytest.raises(error, match=message):
        train_validation_split(**args)


def test_a_read_only_array_is_not_split_in_place():
    X = np.zeros((10, 2))
    X.flags.writeable = False
    with pytest.raises(ValueError, match="X is read-only"):
        train_validation_split(X, np.zeros(10), inplace=True)
    assert train_validation_split(X, np.zeros(10))[0].shape == (9, 2)  # a copy is fine


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 8, 22])
def test_statistics_a_block_at_a_time_equal_numpys_whole_set_bit_for_bit(monkeypatch, dtype, n):
    """Blockwise sums keep NumPy's order of addition: the same mean and std as
    ``mean(axis=0, dtype=float64)`` and ``std`` of the whole set, down to the
    sign of a zero, without the float64 copy of the set that ``std`` makes."""
    monkeypatch.setattr(data, "_BLOCK", 3)
    rng = np.random.default_rng(n)
    X = (rng.standard_normal((n, 5)) * [1, 1e3, 1e-3, 0, 7] + [0, 5, -2, 0, 1e4]).astype(dtype)
    X[:, 3] = -0.0  # a constant column of negative zeros
    mean, scale = data._stats(X)
    want_mean = X.mean(axis=0, dtype=np.float64)
    want_std = X.std(axis=0, dtype=np.float64)
    assert mean.tobytes() == want_mean.tobytes()
    constant = X.max(axis=0) == X.min(axis=0)
    assert scale.tobytes() == np.where(constant | (want_std == 0), 1.0, want_std).tobytes()


def test_standardize_with_is_the_expression_bit_for_bit():
    rng = np.random.default_rng(3)
    X = (rng.random((50, 4)) * 255).astype(np.float32)
    mean, scale = feature_stats(X)
    want = (X - mean) / scale
    assert same_bits(standardize_with(X, mean, scale), want)
    # float64 statistics (a checkpoint of your own): float64, as NumPy gives it
    m64, s64 = mean.astype(np.float64) + 1e-9, scale.astype(np.float64)
    assert same_bits(standardize_with(X, m64, s64), (X - m64) / s64)
    Z = X.copy()
    assert standardize_with(Z, mean, scale, inplace=True) is Z and same_bits(Z, want)
    empty = standardize_with(np.zeros((0, 4), np.float32), mean, scale)
    assert empty.shape == (0, 4)


@pytest.mark.parametrize("X, mean, scale, inplace, error, message", [
    (np.ones((2, 3), np.float32), np.zeros(3), np.ones(3), True, TypeError,
     "X is float32, but standardised with a float64 mean and float64 scale it becomes float64"),
    (np.ones((2, 3)), np.zeros(2), np.ones(3), False, ValueError,
     r"mean has shape \(2,\); X has 3 features, so expected \(3,\)"),
    (np.ones((2, 3)), np.zeros(3), np.array([1.0, 0.0, 1.0]), False, ValueError,
     "scale must hold finite numbers > 0; scale.1. is 0.0"),
    (np.ones((2, 3)), np.array([0, np.nan, 0]), np.ones(3), False, ValueError,
     "mean must hold finite numbers; mean.1. is nan"),
    (np.array([[1.0, np.inf, 0]]), np.zeros(3), np.ones(3), False, ValueError,
     "X contains 1 NaN or infinite value"),
    (np.ones(3), np.zeros(3), np.ones(3), False, ValueError, "X must be 2-D"),
    (np.ones((2, 3)), np.array(["a"] * 3), np.ones(3), False, TypeError,
     "mean must hold real numbers"),
    (np.array([[0, 3e38]], np.float32), np.zeros(2, np.float32),
     np.array([1, 1e-3], np.float32), False, ValueError,
     "X row 0 lies beyond the float32 range once standardised"),
])
def test_standardize_with_refuses_what_it_cannot_scale(X, mean, scale, inplace, error, message):
    with pytest.raises(error, match=message):
        standardize_with(X, mean, scale, inplace=inplace)


def test_prepare_dataset_refuses_bad_arguments():
    ds = load_dataset("digits")
    with pytest.raises(TypeError, match="dataset must be an nnx.data.Dataset, got tuple"):
        prepare_dataset((ds.X_train, ds.y_train))
    with pytest.raises(ValueError, match=r"validation=0.0 must be in \(0, 1\)"):
        prepare_dataset(ds, validation=0)
    with pytest.raises(ValueError, match="seed=-2"):
        prepare_dataset(ds, seed=-2)
    assert "validation=(135, 64)" in repr(prepare_dataset(ds, seed=0))


# --------------------------------------------------------------------- memory
# The peak is read from VmHWM, which starts afresh with the new program;
# ru_maxrss would not do: Linux carries it over from the parent across exec.
MEASURE = """
import sys
from nnx.data import load_dataset, prepare_dataset
def peak():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
base = peak()
ds = load_dataset("mnist", data_dir=sys.argv[1], download=False, verify=False)
p = prepare_dataset(ds, seed=0, inplace=True)
assert p.X_train.shape == (27000, 784) and p.X_test.shape == (5000, 784)
print(base, peak())
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_loading_and_preparing_hold_the_data_about_once(tmp_path):
    """Loading a dataset and preparing it (split, standardise) peaked at 3.5
    times the float32 data above the interpreter (float64 temporaries, then
    copies for the split and for standardising; `nnx train` on Fashion-MNIST
    peaked at 760 MiB). Now each array is converted once and split and
    standardised in place: on top of the data comes a file's bytes while they
    are converted, blocks of rows and the allocator's slack (1.3 times the
    data here). The bound leaves room for those but not for one more copy of
    the training set (0.85 times the data)."""
    n_train, n_test = 30000, 5000
    for name, n in zip(NAMES, (n_train, n_train, n_test, n_test), strict=True):
        rows = np.arange(n)[:, None, None]
        if "images" in name:  # varied, so no feature is constant, yet quick to compress
            array = (rows * 7 + np.arange(28)[:, None] * 3 + np.arange(28)) % 256
        else:
            array = rows[:, 0, 0] % 10
        (tmp_path / name).write_bytes(gzip.compress(idx_bytes(array), compresslevel=1))
    root = str(Path(data.__file__).resolve().parent.parent)  # this checkout's nnx
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path)], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    base, peak = map(int, r.stdout.split())
    data_bytes = (n_train + n_test) * 784 * 4  # the float32 arrays: 110 MB
    assert peak - base < 1.5 * data_bytes + 16 * 2**20, (
        f"loading and preparing took {(peak - base) / 2**20:.0f} MiB above the interpreter's "
        f"{base / 2**20:.0f} MiB for {data_bytes / 2**20:.0f} MiB of float32 data")


@needs_fashion
def test_test_only_loading_reads_no_training_file(monkeypatch, fashion):
    """nnx evaluate loaded (and decompressed) the 60,000 training images it
    never used; with test_only only the test files are read, and the test
    set is the one a full load gives."""
    read = []
    real = data._read_known
    monkeypatch.setattr(data, "_read_known",
                        lambda path, *a: read.append(path.name) or real(path, *a))
    monkeypatch.delenv("NNX_DATA", raising=False)
    ds = load_dataset("fashion-mnist", download=False, test_only=True)
    assert sorted(read) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert ds.X_train.shape == (0, 784) and ds.y_train.shape == (0,)
    np.testing.assert_array_equal(ds.X_test, fashion.X_test)
    np.testing.assert_array_equal(ds.y_test, fashion.y_test)


def test_test_only_needs_the_two_test_files_alone(tmp_path, monkeypatch):
    """nnx evaluate --data-dir with only the t10k files was refused: the
    folder 'holds only some of the dataset's files', the training ones."""
    write_synthetic(tmp_path, mark=3)
    for name in NAMES[:2]:
        (tmp_path / name).unlink()
    ds = load_dataset("mnist", data_dir=tmp_path, download=False, verify=False, test_only=True)
    assert ds.X_test.shape == (2, 9) and set(ds.y_test.tolist()) == {3}
    with pytest.raises(DatasetNotFound, match="holds only some of the dataset's files; "
                                              "missing: train-images"):
        load_dataset("mnist", data_dir=tmp_path, download=False, verify=False)
    # a named folder with the training files alone is not passed over for
    # another copy (a complete one in $NNX_DATA here)
    write_synthetic(tmp_path / "env" / "mnist", mark=5)
    monkeypatch.setenv("NNX_DATA", str(tmp_path / "env"))
    train_only = write_synthetic(tmp_path / "train-only", mark=4)
    for name in NAMES[2:]:
        (train_only / name).unlink()
    with pytest.raises(DatasetNotFound, match="holds only some of the dataset's files; "
                                              "missing: t10k-images"):
        load_dataset("mnist", data_dir=train_only, download=False, verify=False,
                     test_only=True)


def test_test_only_digits_keeps_the_same_test_rows():
    whole, test = load_dataset("digits"), load_dataset("digits", test_only=True)
    assert test.X_train.shape == (0, 64) and test.y_train.shape == (0,)
    np.testing.assert_array_equal(test.X_test, whole.X_test)
    np.testing.assert_array_equal(test.y_test, whole.y_test)


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float64])
def test_a_dataset_loads_straight_into_the_dtype_asked(dtype, tmp_path):
    """A float64 network's data was read into float32 and converted again
    later: two copies, and values that had passed through float32."""
    folder = write_synthetic(tmp_path / "idx", mark=3)
    ds = load_dataset("fashion-mnist", data_dir=folder, download=False, verify=False,
                      dtype=dtype)
    assert ds.X_train.dtype == ds.X_test.dtype == np.dtype(dtype)
    raw = read_idx(folder / NAMES[0]).reshape(4, 9)
    np.testing.assert_array_equal(ds.X_train, raw)
    test_only = load_dataset("fashion-mnist", data_dir=folder, download=False, verify=False,
                             dtype=dtype, test_only=True)
    assert test_only.X_train.dtype == test_only.X_test.dtype == np.dtype(dtype)
    digits = load_dataset("digits", dtype=dtype)
    assert digits.X_train.dtype == np.dtype(dtype)
    prepared = prepare_dataset(digits, seed=0)
    assert prepared.X_train.dtype == prepared.mean.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", [None, "float16", "int64", "floot32"])
def test_a_dataset_dtype_other_than_float32_or_float64_is_refused(dtype):
    with pytest.raises(InputValueError, match=f"dtype={dtype!r}: expected 'float32' or "
                                              "'float64'"):
        load_dataset("digits", dtype=dtype)


def test_standardize_with_a_dtype_stores_the_result_without_a_wide_copy():
    """float64 data standardised for a float32 network made a float64 result
    (twice the float32 data) and fit then a float32 copy of it."""
    import tracemalloc

    from nnx.data import feature_stats, standardize_with
    X = np.random.default_rng(0).standard_normal((20_000, 300)) * 3 + 5
    mean, std = feature_stats(X)
    want = standardize_with(X, mean, std).astype(np.float32)
    tracemalloc.start()
    try:
        got = standardize_with(X, mean, std, dtype="float32")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.dtype == np.float32 and np.array_equal(got, want)
    assert peak < want.nbytes + 9e6  # the result and an 8 MiB block, not a float64 result
    from nnx import InputTypeError
    with pytest.raises(InputTypeError, match=r"dtype='float32' with inplace=True: X is "
                                             r"float64.*drop dtype="):
        standardize_with(X, mean, std, dtype="float32", inplace=True)


@pytest.mark.parametrize("inplace", [False, True])
def test_the_only_row_of_a_class_stays_out_of_the_validation_set(inplace):
    """nnx train says a class of one row "is trained on, never tested", but
    the validation draw took it for some seeds: nothing trained it, and the
    run warned that y_val held a class y_train lacked."""
    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    y[17] = 3  # the one row of class 3
    X = rng.standard_normal((120, 4)).astype(np.float32)
    X[:, 0] = np.arange(120)  # each row known by its first feature
    drawn = 0
    for seed in range(40):
        plain = train_validation_split(X, y, 0.1, seed)[3]
        drawn += int((plain == 3).any())
        ds = Dataset(X.copy(), y.copy(), X[:5].copy(), y[:5].copy(), "t", 4)
        p = prepare_dataset(ds, 0.1, seed=seed, inplace=inplace)
        assert not (p.y_val == 3).any() and (p.y_train == 3).sum() == 1
        assert p.X_val.shape[0] == 12 and p.X_train.shape[0] == 108
    assert drawn > 0  # without the mask, some seeds hold it out
    # a draw that takes none of the kept rows is the plain one, row for row
    keep = np.zeros(120, bool)
    keep[17] = True
    for seed in range(40):
        a, b = train_validation_split(X, y, 0.1, seed), train_validation_split(X, y, 0.1, seed,
                                                                                keep=keep)
        if not (a[3] == 3).any():
            assert all(np.array_equal(u, v) for u, v in zip(a, b))
        else:
            assert sorted(np.concatenate([b[0][:, 0], b[2][:, 0]])) == list(range(120))
    with pytest.raises(InputValueError, match="keep must be a boolean mask of the 120 rows"):
        train_validation_split(X, y, 0.1, 0, keep=[True])


def test_classes_of_one_row_stay_in_training_even_where_few_rows_are_free():
    """With 28 classes of one row each and few others, keep= was dropped
    altogether (the draw as it came): the only rows of two classes left
    training. Now the free rows are held out, fewer than asked if need be."""
    y = np.concatenate([[0, 0, 0], np.arange(1, 29)])
    X = np.arange(31, dtype=np.float64).reshape(-1, 1)
    keep = (np.bincount(y) == 1)[y]
    for seed in range(10):
        X_tr, y_tr, X_val, y_val = train_validation_split(X, y, 0.2, seed, keep=keep)
        assert set(y_val) <= {0} and 1 <= len(y_val) <= 3
        assert sorted(np.concatenate([X_tr[:, 0], X_val[:, 0]])) == list(range(31))
        inplace = train_validation_split(X.copy(), y.copy(), 0.2, seed, keep=keep,
                                         inplace=True)
        assert all(np.array_equal(a, b) for a, b in zip(inplace, (X_tr, y_tr, X_val, y_val)))


@pytest.mark.parametrize("call", [
    lambda: data.feature_stats(np.zeros(5)),
    lambda: data.standardize_with(np.zeros((3, 5)), np.zeros(4), np.ones(4)),
    lambda: data.train_validation_split(np.zeros((3, 2)), np.zeros(4)),
    lambda: data.one_hot(np.array([0, 5]), 3),
])
def test_the_data_helpers_refusals_start_at_the_users_line(call):
    """A refusal from nnx.data showed three frames of nnx (data.py, host.py)
    before the message; the entry points' show one."""
    import traceback
    with pytest.raises(InputValueError) as caught:
        call()
    package = os.path.dirname(data.__file__)
    ours = [f.name for f in traceback.extract_tb(caught.value.__traceback__)
            if f.filename.startswith(package)]
    assert ours == ["entry"], ours
