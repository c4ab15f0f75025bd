"""The state dir's files, opened safely and replaced atomically.

Anyone who can write the state dir can put a symlink, a FIFO or a device where control.json or
status.json should be. Reading one would follow the link (and copy a private file somewhere
readable), or block forever on the FIFO (and freeze whoever reads: the kernel's tick thread,
a console halt). So a file of the state dir is read only if it is a regular file, checked with
``lstat`` before opening and with ``fstat`` after an ``open(O_NOFOLLOW | O_NONBLOCK)``; anything
else is :class:`NotRegularFile`, whose message says what it is and what to do.

Writers never read what they replace: ``rename(2)`` replaces the directory entry itself, so a
symlink or FIFO at the target is replaced, never its target. New files get ``0o666`` minus the
process's umask (``open(2)`` applies it); a file that is replaced keeps its mode if it was a
regular file. A copy (:func:`copy_no_wider`) is never more readable than its source.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

__all__ = [
    "NotRegularFile",
    "atomic_write_bytes",
    "copy_no_wider",
    "file_kind",
    "fsync_dir",
    "open_regular",
    "read_regular",
]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_READ_FLAGS = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
_NEW_FILE_MODE = 0o666  # minus the umask, which open(2) applies


class NotRegularFile(OSError):
    """A state dir file is a symlink, FIFO, device, socket or directory: it is never opened."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = Path(path)
        self.kind = kind
        super().__init__(f"{self.path.name} is {kind}, not a regular file: remove it")

    def __str__(self) -> str:
        return self.args[0]


def file_kind(mode: int) -> str:
    """What a ``st_mode`` names, for an operator: "a FIFO", "a symlink", "a directory"..."""
    for test, kind in ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def open_regular(path: Path) -> int:
    """A read-only descriptor of ``path`` if it is a regular file; :class:`NotRegularFile` if it
    is anything else (never followed, never opened if ``lstat`` says so, never blocking).
    ``FileNotFoundError`` if it does not exist. The caller closes the descriptor."""
    path = Path(path)
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):  # a device is not even opened: opening one can act
        raise NotRegularFile(path, file_kind(st.st_mode))
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # swapped for a symlink since the lstat
            raise NotRegularFile(path, "a symlink") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO or a device since the lstat
            raise NotRegularFile(path, file_kind(st.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, limit: int | None = None) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file (at most ``limit + 1`` of them when a limit is given, so a
    caller can tell "too large") and its ``fstat``. Raises as :func:`open_regular` does."""
    fd = open_regular(path)
    try:
        st = os.fstat(fd)
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read() if limit is None else f.read(limit + 1)
        return raw, st
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems cannot fsync a directory; the rename itself is done
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _create(path: Path, mode: int) -> int:
    return os.open(path, _CREATE_FLAGS, mode)


def _create_temp(directory: Path, name: str) -> tuple[int, Path]:
    """A new temp file beside ``name``, mode 0o666 minus the umask (mkstemp would force 0600)."""
    while True:
        tmp = directory / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return _create(tmp, _NEW_FILE_MODE), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Replace ``path`` whole (temp file in the same folder, fsync, rename, fsync the folder):
    a reader sees the old file or the new one, never half of either. Whatever was at ``path``
    (a symlink, a FIFO) is replaced itself and never opened; a regular file's mode is kept."""
    path = Path(path)
    directory = path.parent
    try:
        st = os.lstat(path)
        keep_mode = stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None
    except FileNotFoundError:
        keep_mode = None
    fd, tmp = _create_temp(directory, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            if keep_mode is not None:
                os.fchmod(f.fileno(), keep_mode)
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(directory)


def copy_no_wider(source: Path, target: Path) -> None:
    """Copy a regular file to a new file ``target`` that is never more readable than the source
    (its mode, minus the umask) and is never a file that already exists (``O_EXCL``, so a symlink
    planted at ``target`` is not followed). A source that is not a regular file is not copied:
    :class:`NotRegularFile`. ``FileExistsError`` if ``target`` exists."""
    src = open_regular(source)
    try:
        mode = stat.S_IMODE(os.fstat(src).st_mode) & 0o666
        dst = _create(Path(target), mode)
        try:
            while chunk := os.read(src, 1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view):]
            os.fsync(dst)
        except BaseException:
            os.close(dst)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            raise
        os.close(dst)
    finally:
        os.close(src)
    fsync_dir(Path(target).parent)
