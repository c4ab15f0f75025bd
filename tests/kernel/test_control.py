"""kernel/control.py on real files: atomic writes, the "in doubt, stop" reading of control.json,
appends under the writers' lock, status.json."""
from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import stat
import subprocess
import traceback
from pathlib import Path

import pydantic
import pytest

from kernel.control import (
    MAX_CONTROL_BYTES,
    ControlError,
    ControlFileInvalid,
    ControlLockTimeout,
    StatusUnreadable,
    append_commands,
    atomic_write_json,
    clear_halt_and_release,
    control_lock,
    done_command_ids,
    new_command_id,
    read_control,
    read_status,
    set_halt,
    write_status,
)
from kernel.protocol import ID_RE, Command, CommandStatus, Status
from tests.support.file_modes import private_file, umask
from tests.support.status_reader import read_json

# fork: children need not re-import this module (works under any pytest import mode).
MP = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


@pytest.fixture
def control(tmp_path: Path) -> Path:
    return tmp_path / "control.json"


# --------------------------------------------------------------------- atomic_write_json


def test_atomic_write_pretty_json_and_no_temp_files(tmp_path: Path):
    target = tmp_path / "status.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    atomic_write_json(target, {"b": 2, "a": "é"})
    text = target.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert text.index('"b"') < text.index('"a"')  # keys not sorted
    assert '\n  "b": 2' in text  # indent=2
    assert json.loads(text) == {"b": 2, "a": "é"}
    assert os.listdir(tmp_path) == ["status.json"]


def test_atomic_write_dumps_pydantic_models_and_keeps_mode(tmp_path: Path):
    target = tmp_path / "control.json"
    with umask(0o022):
        atomic_write_json(target, Command(id="x1", action="pause"))
    assert target.stat().st_mode & 0o777 == 0o644  # 0o666 minus the umask, not mkstemp's 0600
    os.chmod(target, 0o640)
    atomic_write_json(target, Command(id="x2", action="resume"), fsync=False)
    assert target.stat().st_mode & 0o777 == 0o640
    assert read_json(target) == {
        "id": "x2", "action": "resume", "slot": None, "args": {}, "issued_by": None, "issued_at": None,
    }


def test_atomic_write_failure_removes_temp_file(tmp_path: Path):
    target = tmp_path / "control.json"
    target.mkdir()
    (target / "keep").write_text("x")  # a non-empty directory cannot be replaced by a file
    with pytest.raises(OSError):
        atomic_write_json(target, {"halt": True})
    assert sorted(os.listdir(tmp_path)) == ["control.json"]
    assert os.listdir(target) == ["keep"]


def test_atomic_write_refuses_nan(tmp_path: Path):
    target = write(tmp_path / "status.json", '{"ok": true}\n')
    with pytest.raises(ValueError):
        atomic_write_json(target, {"pnl": float("nan")})
    assert target.read_text() == '{"ok": true}\n'
    assert os.listdir(tmp_path) == ["status.json"]


# --------------------------------------------------------------------- read_control: halt rules


def test_missing_file_is_nothing(control: Path):
    read = read_control(control)
    assert (read.halt, read.commands, read.error, read.fingerprint) == (False, [], None, None)


@pytest.mark.parametrize("text", ["", "   \n\t\n"])
def test_blank_file_is_nothing(control: Path, text: str):
    read = read_control(write(control, text))
    assert (read.halt, read.commands, read.error) == (False, [], None)
    assert read.fingerprint is not None


@pytest.mark.parametrize(
    "halt, reason",
    [
        ("true", None),
        ('{"reason": "fat finger"}', "fat finger"),
        ('"yes"', "yes"),
        ("1", None),
        ("0", None),
        ("[]", None),
        ("{}", None),
        ('""', None),
    ],
)
def test_any_halt_value_but_false_or_null_halts(control: Path, halt: str, reason: str | None):
    read = read_control(write(control, f'{{"halt": {halt}, "commands": []}}'))
    assert read.halt is True
    assert read.halt_reason == reason
    assert read.error is None


@pytest.mark.parametrize("text", ['{"halt": false}', '{"halt": null}', "{}", '{"commands": []}'])
def test_false_null_or_absent_halt_does_not_halt(control: Path, text: str):
    read = read_control(write(control, text))
    assert (read.halt, read.error) == (False, None)


def test_valid_file_gives_commands_in_order(control: Path):
    write(control, json.dumps({"commands": [
        {"id": "x1", "action": "pause"},
        {"id": "x2", "action": "slot.flatten", "slot": "btc-5m", "args": {"why": "risk"}},
    ]}))
    read = read_control(control)
    assert read.error is None and read.halt is False
    assert [(c.id, c.action, c.slot) for c in read.commands] == [
        ("x1", "pause", None), ("x2", "slot.flatten", "btc-5m"),
    ]
    assert read.commands[1].args == {"why": "risk"}


def test_unknown_action_is_not_a_file_error(control: Path):
    read = read_control(write(control, '{"commands": [{"id": "x1", "action": "self_destruct"}]}'))
    assert read.error is None
    assert [c.action for c in read.commands] == ["self_destruct"]


def test_halt_nested_in_a_command_is_not_a_halt(control: Path):
    text = '{"commands": [{"id": "x1", "action": "pause", "args": {"halt": true}}]}'
    read = read_control(write(control, text))
    assert (read.halt, read.error, len(read.commands)) == (False, None, 1)


@pytest.mark.parametrize(
    "text",
    [
        '{"halt": true, "comm',
        '{"halt": {"reason": "x"',
        '{"commands": [{"id": "a", "action": "pause"}], "halt"  :\n "stop',
        '{"halt":',  # torn right after the colon: in doubt, stop
        '{"halt": fals',
        '{"halt": false}{"halt": true}',
        '{"halt": NaN}',
    ],
)
def test_torn_or_non_json_text_with_a_halt_key_halts(control: Path, text: str):
    read = read_control(write(control, text))
    assert read.halt is True
    assert read.commands == []
    assert read.error.startswith("control.json is not valid JSON: ")


@pytest.mark.parametrize(
    "text", ['{"halt": false, "comm', '{"halt": null, "commands": [', "not json at all", "halt: true"]
)
def test_torn_or_garbage_text_without_a_halt_value_does_not_halt(control: Path, text: str):
    read = read_control(write(control, text))
    assert read.halt is False
    assert read.commands == []
    assert "not valid JSON" in read.error


def test_error_message_says_where(control: Path):
    read = read_control(write(control, '{\n  "halt": false\n  "commands": []\n}'))
    assert read.error == "control.json is not valid JSON: Expecting ',' delimiter at line 3 column 3"


def test_wrong_typed_commands_with_halt_true_halts_and_applies_nothing(control: Path):
    read = read_control(write(control, '{"halt": true, "commands": "x"}'))
    assert read.halt is True
    assert read.commands == []
    assert read.error.startswith("control.json: commands: ")


def test_valid_commands_are_not_applied_from_an_invalid_file(control: Path):
    text = '{"halt": {"reason": "stop"}, "commands": [{"id": "a1", "action": "pause"}], "note": 1}'
    read = read_control(write(control, text))
    assert (read.halt, read.halt_reason, read.commands) == (True, "stop", [])
    assert read.error == "control.json: note: unknown key"


def test_unknown_top_level_key_is_an_error_without_halt(control: Path):
    read = read_control(write(control, '{"hlat": true}'))
    assert (read.halt, read.commands) == (False, [])
    assert read.error == "control.json: hlat: unknown key"


def test_duplicate_command_ids_are_a_file_error(control: Path):
    text = json.dumps({"commands": [
        {"id": "a1", "action": "pause"}, {"id": "b2", "action": "resume"}, {"id": "a1", "action": "stop"},
    ]})
    read = read_control(write(control, text))
    assert read.commands == []
    assert read.error == (
        "control.json: commands[2].id: duplicate command id 'a1' (first at commands[0])"
    )


@pytest.mark.parametrize(
    "command, where",
    [
        ({"action": "pause"}, "commands[0].id: field required"),
        ({"id": "has space", "action": "pause"}, "commands[0].id: command id must be"),
        ({"id": "x1", "action": "pause", "colour": "red"}, "commands[0].colour: unknown key"),
        ({"id": "x1", "action": "pause", "args": []}, "commands[0].args: "),
    ],
)
def test_bad_command_is_a_file_error_that_names_it(control: Path, command: dict, where: str):
    read = read_control(write(control, json.dumps({"commands": [command]})))
    assert read.commands == [] and read.halt is False
    assert read.error.startswith("control.json: " + where)


def test_duplicate_top_level_halt_key_halts_if_any_asks(control: Path):
    read = read_control(write(control, '{"halt": true, "halt": false}'))
    assert read.halt is True
    assert "duplicate keys: 'halt'" in read.error


@pytest.mark.parametrize("text", ["[]", '[{"halt": true}]', "true", '"halt"'])
def test_top_level_value_not_an_object_is_an_error_without_halt(control: Path, text: str):
    read = read_control(write(control, text))
    assert (read.halt, read.commands) == (False, [])
    assert read.error.startswith("control.json must hold a JSON object")


def test_invalid_utf8_is_replaced_and_read(control: Path):
    read = read_control(write(control, b'{"halt": "\xff stop now"}'))
    assert (read.halt, read.error) == (True, None)
    assert read.halt_reason == "\ufffd stop now"
    torn = read_control(write(control, b'{"halt": {"reason": "\xfe\xff'))
    assert torn.halt is True and torn.error is not None


def test_utf8_bom_is_accepted(control: Path):
    read = read_control(write(control, b'\xef\xbb\xbf{"halt": true}'))
    assert (read.halt, read.error) == (True, None)


def test_oversized_file_is_an_error_but_still_halts(control: Path):
    padding = " " * (MAX_CONTROL_BYTES + 10)
    read = read_control(write(control, '{"commands": []' + padding + ', "halt": true}'))
    assert read.halt is True and read.commands == []
    assert "larger than 16 MiB" in read.error
    quiet = read_control(write(control, '{"commands": []' + padding + ', "halt": false}'))
    assert quiet.halt is False and "larger than 16 MiB" in quiet.error


def test_fingerprint_and_digest_change_with_each_version(control: Path):
    atomic_write_json(control, {"commands": []})
    first = read_control(control)
    atomic_write_json(control, {"halt": True, "commands": []})
    second = read_control(control)
    assert first.fingerprint != second.fingerprint
    assert first.digest != second.digest
    assert read_control(control).digest == second.digest


# --------------------------------------------------------------------- append_commands


def ids_in(control: Path) -> list[str]:
    return [c["id"] for c in read_json(control)["commands"]]


def test_append_creates_the_file_and_keeps_order(tmp_path: Path):
    control = tmp_path / "control.json"
    append_commands(tmp_path, [{"id": "a1", "action": "pause"}, Command(id="a2", action="resume")])
    append_commands(tmp_path, [{"id": "a3", "action": "stop"}])
    assert ids_in(control) == ["a1", "a2", "a3"]
    read = read_control(control)
    assert read.error is None and read.halt is False
    assert sorted(os.listdir(tmp_path)) == ["control.json", "control.lock"]


def test_append_is_idempotent_by_id(tmp_path: Path):
    control = tmp_path / "control.json"
    append_commands(tmp_path, [{"id": "a1", "action": "pause"}])
    before = read_control(control)
    append_commands(tmp_path, [{"id": "a1", "action": "pause"}])  # re-delivery
    assert read_control(control).fingerprint == before.fingerprint  # not even rewritten
    append_commands(tmp_path, [{"id": "a1", "action": "stop"}, {"id": "a2", "action": "resume"},
                               {"id": "a2", "action": "resume"}])
    assert ids_in(control) == ["a1", "a2"]
    assert [c.action for c in read_control(control).commands] == ["pause", "resume"]


def test_prune_removes_done_ids_and_does_not_re_add_them(tmp_path: Path):
    control = tmp_path / "control.json"
    append_commands(tmp_path, [{"id": f"a{i}", "action": "pause"} for i in range(4)])
    append_commands(tmp_path, [{"id": "a1", "action": "pause"}, {"id": "b1", "action": "resume"}],
                    prune_ids=["a1", "a2", "zz"])
    assert ids_in(control) == ["a0", "a3", "b1"]


def test_append_keeps_a_hand_written_halt_value(tmp_path: Path):
    control = write(tmp_path / "control.json", '{"halt": "yes"}')
    append_commands(tmp_path, [{"id": "a1", "action": "pause"}])
    assert read_json(control)["halt"] == "yes"
    append_commands(tmp_path, [], halt=None)
    assert read_json(control)["halt"] is None
    assert ids_in(control) == ["a1"]


def test_append_refuses_to_overwrite_a_broken_file(tmp_path: Path):
    broken = '{"commands": [{"id": "a1", "action": "pause"},]}'
    control = write(tmp_path / "control.json", broken)
    with pytest.raises(ControlFileInvalid, match="not valid JSON"):
        append_commands(tmp_path, [{"id": "b1", "action": "resume"}])
    with pytest.raises(ControlFileInvalid):
        append_commands(tmp_path, [], halt=False)
    assert control.read_text() == broken
    assert sorted(os.listdir(tmp_path)) == ["control.json", "control.lock"]


def test_a_halt_overwrites_a_broken_file_and_keeps_a_copy(tmp_path: Path):
    broken = '{"commands": [{"id": "a1", "action": "pause"},]}'
    control = write(tmp_path / "control.json", broken)
    append_commands(tmp_path, [{"id": "b1", "action": "slot.flatten", "slot": "btc-5m"}],
                    halt={"reason": "incident"})
    read = read_control(control)
    assert (read.halt, read.halt_reason, read.error) == (True, "incident", None)
    assert [c.id for c in read.commands] == ["b1"]
    copies = [p for p in tmp_path.iterdir() if p.name.startswith("control.json.broken-")]
    assert len(copies) == 1
    assert copies[0].read_text() == broken


def test_a_broken_copy_is_never_more_readable_than_the_file_and_new_files_follow_the_umask(tmp_path: Path):
    control = write(tmp_path / "control.json", '{"halt": false, "hlat": 1}')
    control.chmod(0o600)
    with umask(0o002):
        set_halt(tmp_path, "incident")
    (copy,) = [p for p in tmp_path.iterdir() if p.name.startswith("control.json.broken-")]
    assert copy.stat().st_mode & 0o777 == 0o600 and copy.read_text() == '{"halt": false, "hlat": 1}'
    control.unlink()
    with umask(0o027):
        set_halt(tmp_path, "again")
        write_status(tmp_path / "status.json", status_doc())
    assert control.stat().st_mode & 0o777 == (tmp_path / "status.json").stat().st_mode & 0o777 == 0o640


@pytest.mark.timeout(30)  # a FIFO opened blocking would hang here: fail instead
def test_a_symlink_fifo_or_device_at_control_json_is_reported_never_read_and_replaced_by_a_halt(tmp_path: Path):
    secret = private_file(tmp_path, '{"halt": true, "commands": [{"id": "s1", "action": "stop"}]}')
    control = tmp_path / "control.json"
    makers = {"a symlink": lambda: control.symlink_to(secret), "a FIFO": lambda: os.mkfifo(control),
              "a symlink to /dev/null": lambda: control.symlink_to("/dev/null")}
    with contextlib.suppress(PermissionError):  # mknod needs CAP_MKNOD: else the /dev/null symlink stands in
        os.mknod(tmp_path / "probe", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        makers["a character device"] = lambda: os.mknod(control, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    for kind, make in makers.items():
        make()
        read = read_control(control)
        name = kind.removesuffix(" to /dev/null")
        assert read.error == f"control.json is {name}, not a regular file: remove it", kind
        assert (read.halt, read.commands) == (False, [])  # not followed: the target's halt is not seen
        with pytest.raises(ControlFileInvalid, match=f"is {name}, not a regular file"):
            append_commands(tmp_path, [{"id": "b1", "action": "pause"}])
        assert not stat.S_ISREG(os.lstat(control).st_mode)  # left alone without a halt
        set_halt(tmp_path, "incident")  # a halt replaces it by rename, without opening it
        assert read_control(control).halt and stat.S_ISREG(os.lstat(control).st_mode), kind
        control.unlink()
    assert not [p for p in tmp_path.iterdir() if ".broken-" in p.name]  # nothing of them copied
    assert secret.read_text().startswith('{"halt": true') and secret.stat().st_mode & 0o777 == 0o600
    os.mkfifo(tmp_path / "status.json")
    with pytest.raises(StatusUnreadable, match="status.json is a FIFO, not a regular file"):
        read_status(tmp_path / "status.json")


def test_set_halt_wins_over_an_invalid_file(tmp_path: Path):
    control = write(tmp_path / "control.json", '{"halt": false, "hlat": 1}')
    set_halt(tmp_path, "runaway orders", by="alice")
    halt = read_json(control)["halt"]
    assert halt["reason"] == "runaway orders" and halt["by"] == "alice" and halt["at"].endswith("Z")
    assert read_control(control).halt is True


def test_clear_halt_and_release_in_one_write(tmp_path: Path):
    control = tmp_path / "control.json"
    set_halt(tmp_path, "test")
    append_commands(tmp_path, [{"id": "a1", "action": "pause"}])
    clear_halt_and_release(tmp_path, Command(id="r1", action="release", issued_by="alice"))
    data = read_json(control)
    assert data["halt"] is False
    assert [c["id"] for c in data["commands"]] == ["a1", "r1"]
    assert data["commands"][1] == {"id": "r1", "action": "release", "args": {}, "issued_by": "alice"}
    with pytest.raises(ValueError, match="release"):
        clear_halt_and_release(tmp_path, Command(id="r2", action="resume"))
    assert ids_in(control) == ["a1", "r1"]


def test_append_validates_new_commands_before_writing(tmp_path: Path):
    control = write(tmp_path / "control.json", '{"commands": []}')
    with pytest.raises(pydantic.ValidationError):
        append_commands(tmp_path, [{"id": "ok1", "action": "pause"}, {"id": "bad id", "action": "x"}])
    assert control.read_text() == '{"commands": []}'


def test_append_to_a_missing_state_dir_fails_instead_of_creating_it(tmp_path: Path):
    missing = tmp_path / "typo"
    with pytest.raises(ControlError, match="does not exist"):
        set_halt(missing, "x")
    assert not missing.exists()


# --------------------------------------------------------------------- the writers' lock


def _hold_lock(state_dir: str, held, release) -> None:
    with control_lock(Path(state_dir)):
        held.set()
        release.wait(60)


def test_lock_timeout_raises_control_lock_timeout(tmp_path: Path):
    control = write(tmp_path / "control.json", '{"commands": []}')
    held, release = MP.Event(), MP.Event()
    holder = MP.Process(target=_hold_lock, args=(str(tmp_path), held, release))
    holder.start()
    try:
        assert held.wait(30)
        with pytest.raises(ControlLockTimeout, match="another writer holds it") as info:
            with control_lock(tmp_path, timeout=0.2):
                pass
        assert isinstance(info.value, ControlError)
        with pytest.raises(ControlLockTimeout):
            append_commands(tmp_path, [{"id": "a1", "action": "pause"}], lock_timeout=0.2)
        assert control.read_text() == '{"commands": []}'
    finally:
        release.set()
        holder.join(30)
    assert holder.exitcode == 0
    append_commands(tmp_path, [{"id": "a1", "action": "pause"}], lock_timeout=5)
    assert ids_in(control) == ["a1"]


def test_shell_flock_takes_the_same_lock(tmp_path: Path):
    (tmp_path / "control.lock").touch()
    shell = subprocess.Popen(
        ["flock", str(tmp_path / "control.lock"), "sh", "-c", "echo locked; read line"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert shell.stdout.readline().strip() == "locked"
        with pytest.raises(ControlLockTimeout):
            with control_lock(tmp_path, timeout=0.2):
                pass
    finally:
        shell.communicate("done\n", timeout=30)
    with control_lock(tmp_path, timeout=5):
        pass


# --------------------------------------------------------------------- concurrency


def _writer(state_dir: str, writer: int, go, errors) -> None:
    try:
        go.wait(60)
        for i in range(100):
            append_commands(
                Path(state_dir), [{"id": f"w{writer}-{i:03d}", "action": "pause"}], lock_timeout=300
            )
    except BaseException:
        errors.put(f"writer {writer}: {traceback.format_exc()}")


def _reader(path: str, go, stop, results) -> None:
    reads, failures = 0, []
    go.wait(60)
    while not stop.is_set():
        raw = Path(path).read_bytes()
        try:
            json.loads(raw)
        except ValueError as exc:
            failures.append(f"{exc}: {raw[:200]!r}")
        read = read_control(Path(path))
        if read.error is not None:
            failures.append(read.error)
        reads += 1
    results.put((reads, failures[:5]))


def test_eight_processes_appending_lose_nothing_and_never_tear_the_file(tmp_path: Path):
    control = tmp_path / "control.json"
    atomic_write_json(control, {"halt": None, "commands": []})
    go, stop = MP.Event(), MP.Event()
    errors, results = MP.Queue(), MP.Queue()
    writers = [MP.Process(target=_writer, args=(str(tmp_path), w, go, errors)) for w in range(8)]
    reader = MP.Process(target=_reader, args=(str(control), go, stop, results))
    for p in [*writers, reader]:
        p.start()
    go.set()
    for p in writers:
        p.join(600)
    stop.set()
    reads, failures = results.get(timeout=60)
    reader.join(60)

    assert [p.exitcode for p in writers] == [0] * 8
    assert errors.empty()
    assert failures == []
    assert reads > 0
    ids = ids_in(control)
    assert len(ids) == 800
    assert sorted(ids) == sorted(f"w{w}-{i:03d}" for w in range(8) for i in range(100))
    for w in range(8):  # each writer's commands stay in the order it appended them
        mine = [i for i in ids if i.startswith(f"w{w}-")]
        assert mine == sorted(mine)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


# --------------------------------------------------------------------- status.json


def status_doc(**extra) -> dict:
    return {"state": "running", "heartbeat_at": "2025-01-01T00:00:00.000Z", "pid": 42, **extra}


def test_status_round_trip(tmp_path: Path):
    path = tmp_path / "status.json"
    assert read_status(path) is None
    write_status(path, status_doc(commands=[
        {"id": "a1", "action": "pause", "result": "applied", "at": "2025-01-01T00:00:00.000Z"},
        {"id": "a2", "action": "nope", "result": "rejected", "error": "unknown action",
         "at": "2025-01-01T00:00:00.100Z"},
    ]))
    status = read_status(path)
    assert isinstance(status, Status)
    assert status.state == "running" and status.pid == 42
    assert done_command_ids(status) == {"a1", "a2"}
    status.commands.append(CommandStatus(id="a3", action="stop", result="applied", at="x"))
    write_status(path, status, fsync=False)
    assert done_command_ids(read_status(path)) == {"a1", "a2", "a3"}


def test_write_status_validates_a_dict(tmp_path: Path):
    path = tmp_path / "status.json"
    with pytest.raises(pydantic.ValidationError):
        write_status(path, status_doc(state="exploded"))
    assert not path.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"state": "running", ', "status.json is not valid JSON"),
        ("", "status.json is empty"),
        ("[]", "status.json must hold a JSON object"),
        (json.dumps(status_doc(state="exploded")), "status.json: state: "),
        (json.dumps({"state": "running", "heartbeat_at": "x"}), "status.json: pid: field required"),
    ],
)
def test_malformed_status_is_unreadable(tmp_path: Path, text: str, message: str):
    path = write(tmp_path / "status.json", text)
    with pytest.raises(StatusUnreadable) as info:
        read_status(path)
    assert str(info.value).startswith(message)


def test_status_ignores_unknown_keys_from_a_newer_kernel(tmp_path: Path):
    path = write(tmp_path / "status.json", json.dumps(status_doc(future_field=1)))
    assert read_status(path).pid == 42


# --------------------------------------------------------------------- command ids


def test_new_command_id_is_unique_valid_and_time_ordered():
    ids = [new_command_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(ID_RE.match(i) and i.startswith("c-") for i in ids)
    stamps = [i.split("-")[1] for i in ids]
    assert stamps == sorted(stamps)
    assert new_command_id("cli").startswith("cli-")
    with pytest.raises(ValueError):
        new_command_id("bad prefix")
