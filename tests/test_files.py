"""nnx._files.atomic_write, the one way nnx writes a file: checkpoints and
downloaded dataset files both go through it (nnx.data exports it too)."""

import os
import stat

import pytest

from nnx._files import atomic_write


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def record_fsyncs(monkeypatch, path):
    """Replace os.fsync by one that notes, for each call, whether the descriptor
    is a folder, its inode, and what ``path`` held at that moment."""
    calls, real = [], os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        held = path.read_bytes() if path.exists() else None
        calls.append((stat.S_ISDIR(st.st_mode), st.st_ino, held))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


# ---------------------------------- replacing a file, or leaving it as it was
def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as f:
        f.write(b"new contents")
    assert path.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


@pytest.mark.parametrize("existing", [False, True])
def test_atomic_write_leaves_no_partial_file(tmp_path, existing):
    path = tmp_path / "f.bin"
    if existing:
        path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="mid-way"):
        with atomic_write(path) as f:
            f.write(b"half of it")
            raise RuntimeError("writer failed mid-way")
    if existing:
        assert path.read_bytes() == b"old"
        assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    else:
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, existing):
    path = tmp_path / "f.bin"
    if existing:
        path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="mid-way"):
        with atomic_write(path) as f:
            f.write(b"half")
            raise RuntimeError("writer failed mid-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["f.bin"] if existing else [])
    if existing:
        assert path.read_bytes() == b"old"


# ----------------------------------------------------------------- durability
def test_the_file_then_the_folder_are_fsynced(monkeypatch, tmp_path):
    """The rename is only durable once the folder is synced: the data first,
    then, with the new file in place, the folder holding it."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    calls = record_fsyncs(monkeypatch, path)
    with atomic_write(path) as f:
        f.write(b"new")
    assert [(is_dir, held) for is_dir, _, held in calls] == [(False, b"old"), (True, b"new")]
    assert calls[1][1] == tmp_path.stat().st_ino


# ---------------------------------------------------------------- permissions
def test_a_new_file_gets_the_umasks_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "f.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o640


def test_a_file_written_over_keeps_its_mode(tmp_path, umask_022):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    path.chmod(0o600)
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o600


def test_atomic_write_leaves_a_readable_file(tmp_path):
    old = os.umask(0o022)  # new files get the umask's permissions (nnx._files)
    try:
        with atomic_write(tmp_path / "f.bin") as f:
            f.write(b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------- paths
def test_a_name_near_the_length_limit_can_be_written(tmp_path):
    """The temporary name is built from the target's: it must stay within the
    file system's limit (255 bytes) however long the target's name is."""
    path = tmp_path / ("m" * 250 + ".npz")
    with atomic_write(path) as f:
        f.write(b"x")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_str_bytes_and_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for target in ("a.bin", os.fsencode("b.bin")):
        with atomic_write(target) as f:
            f.write(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]
