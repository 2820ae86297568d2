"""Writing a file all at once, for checkpoints and downloaded datasets: after a
crash the path holds the old file or the new one, never part of one.

The new contents go to a temporary file beside the target, named
``.<name>.<12 hex digits>.tmp``, which its writer holds an exclusive
``flock`` on until the rename. A writer killed mid-write leaves that file
behind; the next write of the same target removes such leftovers, but only
those whose lock it can take (the kernel drops a lock when its holder dies,
so a live writer's file is never touched) and that have not changed for
``STALE_AFTER`` seconds (which covers the instant between a file's creation
and its locking, and file systems whose locks other machines do not see).
Where ``flock`` does not exist (Windows) nothing is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

STALE_AFTER = 600  # seconds a leftover temporary file must have stood unchanged


def _stem(name):
    # a short stem keeps the temporary name within NAME_MAX when ``name`` is long
    return f".{name[:64]}."


def _new_file(folder, name):
    """A new, empty file in ``folder`` opened for writing: ``(fd, path)``.
    Unlike mkstemp's private 0600 file, it gets the permissions any new file
    gets under the process umask (applied by the kernel, so no thread sees a
    changed umask). It is locked for as long as ``fd`` is open."""
    for _ in range(100):
        path = os.path.join(folder, f"{_stem(name)}{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:  # named by the file asked for, not our hidden temporary one
            raise type(exc)(exc.errno, f"{exc.strerror} (writing {os.path.join(folder, name)!r}"
                            f" by way of a temporary file in {folder!r})") from None
        if fcntl is not None:
            with contextlib.suppress(OSError):  # a file system without locks: no cleanup then
                fcntl.flock(fd, fcntl.LOCK_EX)
        return fd, path
    raise FileExistsError(f"no free temporary name in {folder!r}")


def _is_abandoned(path, now):
    """Whether no process holds the temporary file ``path`` and it has stood
    unchanged for ``STALE_AFTER`` seconds."""
    try:
        fd = os.open(path, os.O_RDWR)  # NFS emulates flock with locks that need write access
    except OSError:
        return False
    try:
        if now - os.fstat(fd).st_mtime < STALE_AFTER:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its writer is alive
            return False
        return True  # the lock goes with the descriptor, closed below
    finally:
        os.close(fd)


def remove_stale_temporaries(folder, name):
    """Remove the temporary files that dead writers of ``folder/name`` left
    behind; returns their paths."""
    if fcntl is None:
        return []
    pattern = re.compile(re.escape(_stem(name)) + r"[0-9a-f]{12}\.tmp\Z")
    removed, now = [], time.time()
    with contextlib.suppress(OSError):
        with os.scandir(folder) as entries:
            found = [e.path for e in entries if pattern.match(e.name)]
        for path in found:
            if _is_abandoned(path, now):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed.append(path)
    return removed


def _fsync_folder(folder):
    """Make a rename in ``folder`` durable (POSIX). Some file systems, and
    Windows, cannot open or fsync a folder; the file itself is already on disk
    and in place then, so that is not an error."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_replaceable(path):
    """Refuse a ``path`` that holds something other than a regular file (or a
    symbolic link, which is replaced): the rename would put a file in place
    of a folder, a device such as /dev/null, a pipe or a socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError:  # not ours to judge: opening the temporary file will say
        return
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, f"{path!r} is a folder; expected a file path")
    kind = ("a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "a named pipe" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    raise OSError(errno.EINVAL, f"{path!r} is {kind}, not a regular file: writing the new "
                                "file in its place would replace it; give a file path")


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file to write ``path``'s new contents into.

    The file is a temporary one in the same folder; when the body returns it is
    flushed and fsynced, renamed over ``path`` and the folder is fsynced, so the
    rename survives a crash too. A new file gets the umask's permissions; one
    written over an existing file keeps that file's mode. If the body raises,
    the temporary file is removed and ``path`` is left as it was. ``path``
    itself is replaced: a symbolic link there is not followed. A folder,
    device, pipe or socket at ``path`` is refused (``OSError``). After the
    rename, temporary files of ``path`` left by killed writers are removed
    (see the module docstring)."""
    path = os.path.abspath(os.fsdecode(os.fspath(path)))
    _check_replaceable(path)
    folder, name = os.path.split(path)
    fd, tmp = _new_file(folder, name)
    try:
        with os.fdopen(fd, "wb") as f:
            if os.path.isfile(path):  # a file written over keeps its permissions
                os.chmod(tmp, os.stat(path).st_mode & 0o7777)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)
    remove_stale_temporaries(folder, name)
