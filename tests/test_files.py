"""nnx._files.atomic_write, the one way nnx writes a file: checkpoints and
downloaded dataset files both go through it (nnx.data exports it too)."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nnx import _files
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


def _special_file(kind, path):
    if kind == "fifo":
        os.mkfifo(path)
        return stat.S_ISFIFO
    import socket
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return stat.S_ISSOCK


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_a_pipe_or_socket_at_the_path_is_refused_not_replaced(tmp_path, kind):
    # the rename put a regular file in place of whatever stood at the path:
    # `nnx export model.npz /dev/null`, run as root, replaced the device node
    path = tmp_path / "target"
    still = _special_file(kind, path)
    with pytest.raises(OSError, match=r"is a (named pipe|socket), not a regular file.*give a "
                                      r"file path"):
        with atomic_write(path) as f:
            f.write(b"new")
    assert still(os.lstat(path).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]  # no temporary left


def test_a_folder_at_the_path_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        with atomic_write(tmp_path / "d") as f:
            f.write(b"new")
    assert (tmp_path / "d").is_dir()


def test_a_link_to_a_pipe_is_replaced_not_followed(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "link").symlink_to(tmp_path / "pipe")
    with atomic_write(tmp_path / "link") as f:
        f.write(b"new")
    assert (tmp_path / "link").read_bytes() == b"new"
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)


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


def test_atomic_write_leaves_a_readable_file(tmp_path, umask_022):
    # new files get the umask's permissions (nnx._files)
    with atomic_write(tmp_path / "f.bin") as f:
        f.write(b"data")
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


# ----------------------------------------- what killed writers leave behind
WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from nnx._files import atomic_write
    with atomic_write({path!r}) as f:
        f.write(b"half of it")
        f.flush()
        open({marker!r}, "w").close()
        time.sleep(120)
""")


def start_writer(tmp_path, target):
    """A process stopped in the middle of writing ``target``; returns it once
    its temporary file exists."""
    marker = tmp_path / "writing"
    root = str(Path(_files.__file__).resolve().parents[1])
    child = subprocess.Popen([sys.executable, "-c", WRITER.format(
        root=root, path=str(target), marker=str(marker))])
    deadline = time.time() + 60
    while not marker.exists():
        assert child.poll() is None and time.time() < deadline, "the writer did not start"
        time.sleep(0.02)
    marker.unlink()
    return child


def temporaries(folder):
    return sorted(p for p in folder.iterdir() if p.name.endswith(".tmp"))


def age(path, seconds=3600):
    """Make ``path`` look unchanged for an hour (longer than _files.STALE_AFTER)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


needs_flock = pytest.mark.skipif(os.name != "posix", reason="needs flock (POSIX)")


@needs_flock
def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """A writer killed mid-write left its .tmp file for good: nothing ever
    removed it."""
    path = tmp_path / "f.bin"
    child = start_writer(tmp_path, path)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    (left,) = temporaries(tmp_path)
    assert left.name.startswith(".f.bin.")
    age(left)
    with atomic_write(path) as f:
        f.write(b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


@needs_flock
def test_no_live_or_recent_or_other_targets_temporary_file_is_removed(tmp_path):
    """Only a file no process holds, unchanged for STALE_AFTER seconds, of the
    target being written, is removed: a concurrent writer's file, even an old
    one, stays."""
    path = tmp_path / "f.bin"
    child = start_writer(tmp_path, path)
    try:
        (live,) = temporaries(tmp_path)
        age(live)  # old, but its writer holds it
        recent = tmp_path / ".f.bin.0123456789ab.tmp"
        recent.write_bytes(b"")  # no writer holds it, but it is fresh
        other = tmp_path / ".g.bin.0123456789ab.tmp"
        other.write_bytes(b"")
        age(other)  # another target's
        with atomic_write(path) as f:
            f.write(b"new")
        assert temporaries(tmp_path) == sorted([live, recent, other])
    finally:
        child.kill()
        child.wait(30)
    age(recent)
    with atomic_write(path) as f:
        f.write(b"newer")
    assert temporaries(tmp_path) == [other] and path.read_bytes() == b"newer"


def test_a_folder_that_takes_no_new_file_is_named_by_the_file_asked_for():
    """The error named the hidden temporary file ('/proc/.x.npz.f9ff9b4b8d20.tmp')."""
    if sys.platform != "linux" or not os.path.isdir("/proc"):
        pytest.skip("needs Linux's /proc, where no file can be made")
    with pytest.raises(OSError) as info:
        with _files.atomic_write("/proc/x.npz") as f:
            f.write(b"x")
    assert "'/proc/x.npz'" in str(info.value) and ".x.npz." not in str(info.value)
