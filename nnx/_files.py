"""Writing a file all at once, for checkpoints and downloaded datasets: after a
crash the path holds the old file or the new one, never part of one."""

from __future__ import annotations

import contextlib
import os


def _new_file(folder, name):
    """A new, empty file in ``folder`` opened for writing: ``(fd, path)``.
    Unlike mkstemp's private 0600 file, it gets the permissions any new file
    gets under the process umask (applied by the kernel, so no thread sees a
    changed umask)."""
    for _ in range(100):
        # a short stem keeps the temporary name within NAME_MAX when ``name`` is long
        path = os.path.join(folder, f".{name[:64]}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder!r}")


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


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file to write ``path``'s new contents into.

    The file is a temporary one in the same folder; when the body returns it is
    flushed and fsynced, renamed over ``path`` and the folder is fsynced, so the
    rename survives a crash too. A new file gets the umask's permissions; one
    written over an existing file keeps that file's mode. If the body raises,
    the temporary file is removed and ``path`` is left as it was. ``path``
    itself is replaced: a symbolic link there is not followed."""
    path = os.path.abspath(os.fsdecode(os.fspath(path)))
    folder = os.path.dirname(path)
    fd, tmp = _new_file(folder, os.path.basename(path))
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
