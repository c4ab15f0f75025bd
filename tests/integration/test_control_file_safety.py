"""The state dir's files opened safely, on a real kernel (kernel/safe_files.py): a FIFO or a symlink
put at control.json is reported in ``control_error``, never opened blocking nor followed; the
heartbeat goes on; a halt written as the console writes it (kernel.control_client.halt) replaces
the file and halts; nothing of a symlink's private target is copied anywhere."""
from __future__ import annotations

import os
import stat

import pytest

from kernel import control_client as ctl
from kernel.control import ControlFileInvalid
from tests.support.file_modes import private_file

# A FIFO opened blocking would hang a writer or the test's own reads: fail instead of hanging.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _put(state_dir, make) -> None:
    """Put what ``make(path)`` creates at control.json in one rename, as an attacker or a slip would."""
    tmp = state_dir / ".planted"
    make(tmp)
    os.replace(tmp, state_dir / "control.json")


def _heartbeat_goes_on(k, error: str) -> dict:
    seen = k.wait(lambda s: s["control_error"] == error, what=f"control_error {error!r}")
    assert seen["state"] == "running" and seen["pending_commands"] == []
    return k.wait(lambda s: s["tick"] >= seen["tick"] + 5 and s["heartbeat_at"] > seen["heartbeat_at"],
                  what="the heartbeat to go on past the bad control.json")


def _halt_through_the_console_path(k, reason: str) -> dict:
    ctl.halt(k.state_dir, reason, by="integration-test")  # what trading's halt delivery calls
    st = k.wait(lambda s: s["state"] == "halted", what="the halt")
    assert st["halt"]["reason"] == reason and st["pid"] == k.pid
    assert stat.S_ISREG(os.lstat(k.state_dir / "control.json").st_mode)  # replaced by a regular file
    return k.wait(lambda s: s["control_error"] is None, what="control_error to clear")


def test_a_fifo_at_control_json_freezes_nothing_and_a_halt_gets_through(kernels):
    k = kernels()
    _put(k.state_dir, os.mkfifo)
    _heartbeat_goes_on(k, "control.json is a FIFO, not a regular file: remove it")
    with pytest.raises(ControlFileInvalid, match="control.json is a FIFO, not a regular file"):
        k.send("pause")  # a plain command does not replace it (nor block on it)
    assert stat.S_ISFIFO(os.lstat(k.state_dir / "control.json").st_mode)
    _halt_through_the_console_path(k, "fifo at control.json")
    assert not [p.name for p in k.state_dir.iterdir() if ".broken-" in p.name]


def test_a_symlink_to_a_private_file_is_never_followed_nor_copied(kernels, tmp_path):
    k = kernels()
    secret_text = '{"halt": true, "commands": [{"id": "from-the-secret", "action": "stop"}]}'
    secret = private_file(tmp_path, secret_text, name="secret.json")
    before = os.stat(secret)
    _put(k.state_dir, lambda p: os.symlink(secret, p))
    st = _heartbeat_goes_on(k, "control.json is a symlink, not a regular file: remove it")
    assert not st["halt"]["engaged"]  # the target asks for a halt: it was never read
    _halt_through_the_console_path(k, "symlink at control.json")
    assert k.query("SELECT id FROM commands WHERE id = 'from-the-secret'") == []
    after = os.stat(secret)
    assert secret.read_text() == secret_text and (after.st_mode, after.st_mtime_ns) == (before.st_mode,
                                                                                       before.st_mtime_ns)
    assert not [p.name for p in k.state_dir.iterdir() if ".broken-" in p.name]  # no copy, readable or not
    # Every file the kernel and the writers created follows the umask: none is more readable than it allows.
    mask = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("Umask:")), 8)
    for name in ("control.json", "status.json"):
        assert stat.S_IMODE(os.stat(k.state_dir / name).st_mode) == 0o666 & ~mask, name
