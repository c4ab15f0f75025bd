"""kernel/safe_files.py on real files: only regular files are opened (never through a symlink, never
blocking on a FIFO), writers replace what is there without reading it, modes follow the umask."""
from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from kernel.safe_files import (
    NotRegularFile,
    atomic_write_bytes,
    copy_no_wider,
    file_kind,
    open_regular,
    read_regular,
)
from tests.support.file_modes import private_file, umask

pytestmark = pytest.mark.timeout(30)  # a FIFO opened blocking would hang: fail instead


def specials(tmp_path: Path) -> dict[str, Path]:
    """One of each thing that is not a regular file, at ``tmp_path/<kind>``."""
    made = {"a symlink": tmp_path / "link", "a FIFO": tmp_path / "fifo", "a directory": tmp_path / "dir",
            "a socket": tmp_path / "sock"}
    made["a symlink"].symlink_to(private_file(tmp_path))
    os.mkfifo(made["a FIFO"])
    made["a directory"].mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(made["a socket"]))
    sock.close()
    return made


def test_only_a_regular_file_is_opened_and_the_refusal_says_what_it_is(tmp_path: Path):
    for kind, path in specials(tmp_path).items():
        with pytest.raises(NotRegularFile) as err:
            open_regular(path)
        assert str(err.value) == f"{path.name} is {kind}, not a regular file: remove it"
        assert err.value.kind == kind
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "missing")
    raw, st = read_regular(private_file(tmp_path, "0123456789"), limit=4)
    assert raw == b"01234" and st.st_size == 10  # limit + 1 bytes: the caller sees "too large"


def test_a_character_device_is_refused_without_being_opened(tmp_path: Path):
    (tmp_path / "null").symlink_to("/dev/null")
    with pytest.raises(NotRegularFile, match="null is a symlink"):
        open_regular(tmp_path / "null")
    # /dev/null itself: a real character device, with no mknod (and so no privilege) needed.
    with pytest.raises(NotRegularFile, match="null is a character device, not a regular file"):
        open_regular(Path("/dev/null"))


def test_atomic_write_replaces_a_symlink_or_fifo_itself_never_its_target(tmp_path: Path):
    made = specials(tmp_path)
    for kind in ("a symlink", "a FIFO"):
        atomic_write_bytes(made[kind], b"new\n")
        assert stat.S_ISREG(os.lstat(made[kind]).st_mode) and made[kind].read_bytes() == b"new\n"
    assert (tmp_path / "private").read_text() == "secret"  # the link's target is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "fifo", "link", "private", "sock"]


def test_new_files_follow_the_umask_and_a_replaced_regular_file_keeps_its_mode(tmp_path: Path):
    with umask(0o027):
        atomic_write_bytes(tmp_path / "a", b"1")
        assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o640
    with umask(0o002):
        atomic_write_bytes(tmp_path / "b", b"1")
        assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) == 0o664
        (tmp_path / "a").chmod(0o600)
        atomic_write_bytes(tmp_path / "a", b"2")
        assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o600
        link = tmp_path / "link"
        link.symlink_to(private_file(tmp_path))
        atomic_write_bytes(link, b"3")  # a symlink's target's mode is not taken either
        assert stat.S_IMODE(os.stat(link).st_mode) == 0o664


def test_a_copy_is_never_more_readable_than_its_source_nor_written_through_a_planted_symlink(tmp_path: Path):
    source = private_file(tmp_path, "bytes")
    with umask(0o002):
        copy_no_wider(source, tmp_path / "copy")
    assert stat.S_IMODE(os.stat(tmp_path / "copy").st_mode) == 0o600
    assert (tmp_path / "copy").read_text() == "bytes"
    source.chmod(0o644)
    with umask(0o077):
        copy_no_wider(source, tmp_path / "copy2")
    assert stat.S_IMODE(os.stat(tmp_path / "copy2").st_mode) == 0o600  # the umask narrows it further
    elsewhere = tmp_path / "elsewhere"
    (tmp_path / "planted").symlink_to(elsewhere)
    with pytest.raises(FileExistsError):
        copy_no_wider(source, tmp_path / "planted")
    assert not elsewhere.exists()
    (tmp_path / "s").mkdir()
    for path in specials(tmp_path / "s").values():
        with pytest.raises(NotRegularFile):
            copy_no_wider(path, tmp_path / f"copy of {path.name}")
        assert not (tmp_path / f"copy of {path.name}").exists()


def test_file_kind_names_each_kind():
    assert file_kind(stat.S_IFIFO) == "a FIFO"
    assert file_kind(stat.S_IFLNK) == "a symlink"
    assert file_kind(stat.S_IFBLK) == "a block device"
    assert file_kind(stat.S_IFREG) == "a regular file"
