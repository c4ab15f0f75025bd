"""Control-plane file IO: control.json (operators -> kernel) and status.json (kernel -> operators).

The state dir holds three files:

- ``control.json``: written by the console, kernelctl and humans with an editor; read by the kernel.
- ``status.json``: written by the kernel alone.
- ``control.lock``: the writers' lock (``flock(2)``, so ``flock(1)`` in a shell takes the same lock).

Each is opened only if it is a regular file, never through a symlink, never blocking on a FIFO or a
device (kernel/safe_files.py); such a file is reported (``ControlRead.error``) and a halt replaces it.

Every writer replaces a file atomically (temp file in the same folder, fsync, rename, fsync the
folder) and writers of control.json hold ``control.lock`` around their read-modify-write. The kernel
reads without the lock: a rename is atomic, so it sees a whole old file or a whole new one.

Reading control.json follows one rule, "in doubt, stop": nothing is applied from a file that cannot
be parsed or validated, but a ``halt`` key with any value except false or null still halts.
docs/control-plane.md is the operators' version of this.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import filelock
from pydantic import BaseModel, ValidationError

from kernel.errors import KernelError
from kernel.protocol import (
    ID_RE,
    Command,
    ControlFile,
    Status,
    halt_id,
    halt_reason,
    halt_requested,
    utcnow_iso,
)
from kernel.safe_files import NotRegularFile, atomic_write_bytes, copy_no_wider, open_regular, read_regular

__all__ = [
    "CONTROL_FILE",
    "STATUS_FILE",
    "LOCK_FILE",
    "MAX_CONTROL_BYTES",
    "KEEP",
    "ControlError",
    "ControlLockTimeout",
    "ControlFileInvalid",
    "StatusUnreadable",
    "ControlRead",
    "atomic_write_json",
    "atomic_write_text",
    "control_lock",
    "read_control",
    "append_commands",
    "set_halt",
    "clear_halt_and_release",
    "read_status",
    "write_status",
    "done_command_ids",
    "new_command_id",
]

CONTROL_FILE = "control.json"
STATUS_FILE = "status.json"
LOCK_FILE = "control.lock"

MAX_CONTROL_BYTES = 16 * 1024 * 1024

log = logging.getLogger("kernel.control")


class ControlError(KernelError):
    """Base of the control-plane file errors."""


class ControlLockTimeout(ControlError, TimeoutError):
    """Another writer held control.lock past the timeout: retry, or find the stuck writer."""


class ControlFileInvalid(ControlError):
    """control.json cannot be parsed or validated; a writer refuses to overwrite it (fix it by hand)."""


class StatusUnreadable(ControlError):
    """status.json exists but cannot be parsed or validated."""


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()  # append_commands(halt=KEEP): leave the file's halt value as it is


# --------------------------------------------------------------------- atomic writes


def atomic_write_text(path: Path, text: str, *, fsync: bool = True) -> None:
    """Replace a text file whole (temp file in the same folder, fsync, rename, fsync the
    folder): a reader sees the old file or the new one, never half of either. A new file gets
    0o666 minus the umask; a symlink or FIFO at ``path`` is replaced, never followed."""
    atomic_write_bytes(Path(path), text.encode("utf-8"), fsync=fsync)


def _to_json_bytes(data: dict | BaseModel) -> bytes:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    # allow_nan=False: NaN/Infinity are not JSON, and our own reader refuses them.
    return (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def atomic_write_json(path: Path, data: dict | BaseModel, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` as pretty JSON, atomically: a reader sees the old file or the
    new one, never a mix. With ``fsync`` (the default) the new content and the rename are on disk
    when this returns. Raises ``ValueError`` for NaN/Infinity, ``TypeError`` for non-JSON values."""
    atomic_write_bytes(Path(path), _to_json_bytes(data), fsync=fsync)


# --------------------------------------------------------------------- the writers' lock


def _file_lock(lock_path: Path, timeout: float) -> filelock.BaseFileLock:
    try:
        # Never silently downgrade to a soft marker file (a crash would leave it behind), and
        # keep the file: flock(1) in a shell must lock the same inode.
        return filelock.FileLock(
            lock_path, timeout=timeout, fallback_to_soft=False, preserve_lock_file=True
        )
    except TypeError:  # filelock < 4 has neither option; its Unix lock already keeps the file
        return filelock.FileLock(lock_path, timeout=timeout)


@contextlib.contextmanager
def control_lock(state_dir: Path, timeout: float = 10.0) -> Iterator[None]:
    """Hold the exclusive writers' lock ``state_dir/control.lock`` (``flock(2)``, across processes).

    Not reentrant: taking it again in the same process while held waits for ``timeout`` and fails.
    Raises :class:`ControlLockTimeout` if another holder keeps it past ``timeout`` seconds, and
    :class:`ControlError` if ``state_dir`` does not exist (a typo must not send a halt nowhere).
    """
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        raise ControlError(f"state dir {state_dir} does not exist or is not a directory")
    lock_path = state_dir / LOCK_FILE
    lock = _file_lock(lock_path, timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise ControlLockTimeout(
            f"could not lock {lock_path} within {timeout:g} s: another writer holds it"
        ) from None
    try:
        yield
    finally:
        lock.release()


# --------------------------------------------------------------------- reading control.json


@dataclass(frozen=True)
class ControlRead:
    """What the kernel may act on from one read of control.json.

    ``error`` says why the file could not be used (then ``commands`` is empty, but ``halt`` is still
    honoured). ``fingerprint`` is ``(st_ino, st_mtime_ns, st_size)`` of the version read, or None if
    the file is missing. Timestamps are coarse and inodes are reused, so two quick rewrites can share
    a fingerprint; ``digest`` (sha256 of the bytes) is exact.
    """

    halt: bool = False
    halt_reason: str | None = None
    halt_id: str | None = None  # the halt block's "id" (protocol.halt_id), when the halt has one
    commands: list[Command] = field(default_factory=list)
    error: str | None = None
    fingerprint: tuple[int, int, int] | None = None
    digest: str | None = None


# A "halt" key, then ':' and a value that is not a complete false or null (or nothing: torn).
_HALT_KEY_RE = re.compile(rb'"halt"[ \t\r\n]*:[ \t\r\n]*')
_NOT_HALT_RE = re.compile(rb"(?:false|null)(?![A-Za-z0-9_])")


def _scan_halt(raw: bytes | mmap.mmap) -> bool:
    """In doubt, stop: does unparseable text carry a "halt" key whose value is not false or null?"""
    for m in _HALT_KEY_RE.finditer(raw):
        if not _NOT_HALT_RE.match(raw, m.end()):
            return True
    return False


def _scan_halt_file(f) -> bool:
    if os.fstat(f.fileno()).st_size == 0:
        return False
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return _scan_halt(mm)


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_validation_error(name: str, exc: ValidationError, limit: int = 5) -> str:
    parts = []
    errors = exc.errors()
    for err in errors[:limit]:
        loc = _format_loc(err["loc"])
        kind = err["type"]
        if kind == "missing":
            parts.append(f"{loc}: field required")
        elif kind == "extra_forbidden":
            parts.append(f"{loc}: unknown key")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {msg} (got {_short(err.get('input'))})")
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return f"{name}: " + "; ".join(parts)


@dataclass
class _Parsed:
    """One parse of control.json bytes. ``file`` is None when the file cannot be used."""

    file: ControlFile | None
    halt: bool
    reason: str | None
    error: str | None
    empty: bool = False
    halt_id: str | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _parse_control(name: str, raw: bytes) -> _Parsed:
    text = raw.decode("utf-8-sig", errors="replace")
    if not text.strip():
        return _Parsed(file=ControlFile(), halt=False, reason=None, error=None, empty=True)

    duplicates: list[str] = []
    last_pairs: list[tuple[str, Any]] = []

    def object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal last_pairs
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj and key not in duplicates:
                duplicates.append(key)
            obj[key] = value
        last_pairs = pairs  # the outermost object is the last one completed
        return obj

    try:
        value = json.loads(text, object_pairs_hook=object_pairs, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return _Parsed(
            None, _scan_halt(raw), None,
            f"{name} is not valid JSON: {exc.msg.removesuffix(' at')} at line {exc.lineno} "
            f"column {exc.colno}",
        )
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, huge integers, absurd nesting
        return _Parsed(
            None, _scan_halt(raw), None, f"{name} is not valid JSON: {exc or type(exc).__name__}"
        )

    if not isinstance(value, dict):
        return _Parsed(
            file=None,
            halt=False,
            reason=None,
            error=f"{name} must hold a JSON object, not {type(value).__name__}",
        )

    halt_values = [v for k, v in last_pairs if k == "halt"]
    halt = any(halt_requested(v) for v in halt_values)
    reason = next((halt_reason(v) for v in halt_values if halt_reason(v)), None)
    hid = next((halt_id(v) for v in halt_values if halt_id(v)), None)

    if duplicates:
        keys = ", ".join(repr(k) for k in duplicates)
        return _Parsed(None, halt, reason, f"{name} has duplicate keys: {keys}", halt_id=hid)
    try:
        file = ControlFile.model_validate(value)
    except ValidationError as exc:
        return _Parsed(None, halt, reason, _describe_validation_error(name, exc), halt_id=hid)

    seen: dict[str, int] = {}
    for i, command in enumerate(file.commands):
        if command.id in seen:
            return _Parsed(
                None,
                halt,
                reason,
                f"{name}: commands[{i}].id: duplicate command id {command.id!r} "
                f"(first at commands[{seen[command.id]}])",
                halt_id=hid,
            )
        seen[command.id] = i
    return _Parsed(file, halt, reason, None, halt_id=hid)


@dataclass
class _Snapshot:
    raw: bytes | None  # None: missing, or too large / unreadable (see parsed.error)
    parsed: _Parsed
    fingerprint: tuple[int, int, int] | None
    digest: str | None


def _unusable(message: str, fingerprint: tuple[int, int, int] | None = None) -> _Snapshot:
    return _Snapshot(None, _Parsed(None, False, None, message), fingerprint, None)


def _snapshot(path: Path) -> _Snapshot:
    """One read of control.json, only if it is a regular file (kernel/safe_files.py): a symlink,
    FIFO or device is reported, never followed or opened (and so never halts)."""
    name = path.name
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return _Snapshot(None, _Parsed(ControlFile(), False, None, None, empty=True), None, None)
    except NotRegularFile as exc:
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            return _unusable(str(exc), (st.st_ino, st.st_mtime_ns, st.st_size))
        return _unusable(str(exc))
    except OSError as exc:
        return _unusable(f"{name} cannot be read: {exc}")
    with os.fdopen(fd, "rb") as f:
        try:
            st = os.fstat(f.fileno())
            fingerprint = (st.st_ino, st.st_mtime_ns, st.st_size)
            raw = f.read(MAX_CONTROL_BYTES + 1)
            if len(raw) > MAX_CONTROL_BYTES:
                return _Snapshot(
                    None,
                    _Parsed(
                        None,
                        _scan_halt_file(f),
                        None,
                        f"{name} is larger than {MAX_CONTROL_BYTES // (1024 * 1024)} MiB; "
                        "prune applied commands",
                    ),
                    fingerprint,
                    None,
                )
        except OSError as exc:
            return _unusable(f"{name} cannot be read: {exc}")
    return _Snapshot(raw, _parse_control(name, raw), fingerprint, hashlib.sha256(raw).hexdigest())


def read_control(path: Path) -> ControlRead:
    """Read control.json once. Never raises for a bad file: the reason is in ``error``.

    Missing or blank: nothing to do. Valid: its halt and commands. Anything else ("in doubt,
    stop"): no commands, ``error`` says why, and ``halt`` is True if a top-level ``halt`` key holds
    anything but false or null (for text that is not JSON at all, if the text shows such a key).
    An unknown ``action`` is not a file error: the kernel rejects that command on its own.
    """
    snap = _snapshot(Path(path))
    p = snap.parsed
    return ControlRead(
        halt=p.halt,
        halt_reason=p.reason if p.halt else None,
        halt_id=p.halt_id if p.halt else None,
        commands=list(p.file.commands) if p.file is not None else [],
        error=p.error,
        fingerprint=snap.fingerprint,
        digest=snap.digest,
    )


# --------------------------------------------------------------------- writing control.json


def _keep_broken_copy(path: Path) -> None:
    """Before a halt replaces an unusable control.json: its bytes to a new
    ``control.json.broken-<UTC time>``, never more readable than it (kernel/safe_files.py). A
    symlink, FIFO or device is not copied (its target may be private, or never end): only logged."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    for n in range(100):
        candidate = path.with_name(f"{path.name}.broken-{stamp}" + (f"-{n}" if n else ""))
        try:
            copy_no_wider(path, candidate)
        except FileExistsError:
            continue
        except NotRegularFile as exc:
            log.warning("%s; a halt replaces it, nothing of it is copied", exc)
        except OSError as exc:  # the halt goes through even if the copy cannot
            log.warning("could not keep a copy of %s before a halt replaced it: %s", path, exc)
        return


def _dump_command(command: Command) -> dict[str, Any]:
    return command.model_dump(mode="json", exclude_none=True)


def append_commands(
    state_dir: Path,
    commands: list[Command | dict],
    *,
    halt: Any = KEEP,
    prune_ids: Iterable[str] = (),
    lock_timeout: float = 10.0,
) -> None:
    """Add ``commands`` to control.json, in one atomic write under the writers' lock.

    - A command whose id is already in the file, or in ``prune_ids``, is skipped (re-delivery is
      harmless). Existing commands keep their order; new ones follow in the given order.
    - Commands whose ids are in ``prune_ids`` (reported done in status.json) are removed.
    - ``halt``: leave as is (default), or set to ``True``, a dict such as
      ``{"reason": ..., "at": ..., "by": ...}``, ``False`` or ``None``.

    If control.json cannot be used, it is not overwritten: :class:`ControlFileInvalid` — unless
    ``halt`` is being set to a value that asks for a halt. Then the halt wins: the broken bytes are
    kept as ``control.json.broken-<UTC timestamp>`` (no more readable than the file; a symlink,
    FIFO or device is never copied, only replaced) and a fresh file holds the halt and ``commands``.
    The file is never read through a symlink nor opened if it is a FIFO or a device.
    New commands are validated first (``pydantic.ValidationError``).
    """
    state_dir = Path(state_dir)
    path = state_dir / CONTROL_FILE
    new = [c if isinstance(c, Command) else Command.model_validate(c) for c in commands]
    prune = set(prune_ids)
    if halt is not KEEP:
        json.dumps(halt, allow_nan=False)  # refuse a non-JSON halt before touching anything
    halting = halt is not KEEP and halt_requested(halt)

    with control_lock(state_dir, timeout=lock_timeout):
        snap = _snapshot(path)
        parsed = snap.parsed
        if parsed.file is None:
            if not halting:
                raise ControlFileInvalid(
                    f"{parsed.error}. Not overwriting {path}: fix or remove it by hand "
                    "(a halt is still written over it)"
                )
            _keep_broken_copy(path)
            existing: list[Command] = []
            current_halt: Any = None
            changed = True
        else:
            existing = [c for c in parsed.file.commands if c.id not in prune]
            current_halt = parsed.file.halt
            changed = parsed.empty or len(existing) != len(parsed.file.commands)

        ids = {c.id for c in existing} | prune
        for command in new:
            if command.id not in ids:
                existing.append(command)
                ids.add(command.id)
                changed = True
        if halt is not KEEP and (type(halt) is not type(current_halt) or halt != current_halt):
            current_halt = halt
            changed = True
        if parsed.empty and halt is KEEP and not existing:
            changed = False  # nothing to say: do not create a file just to hold nothing
        if not changed:
            return

        data = {"halt": current_halt, "commands": [_dump_command(c) for c in existing]}
        payload = _to_json_bytes(data)
        if len(payload) > MAX_CONTROL_BYTES and not halting:
            raise ControlFileInvalid(
                f"{path.name} would grow past {MAX_CONTROL_BYTES // (1024 * 1024)} MiB; "
                "prune the commands status.json reports done"
            )
        atomic_write_bytes(path, payload)


def set_halt(
    state_dir: Path, reason: str | None, by: str | None = None, *, lock_timeout: float = 10.0,
    command_id: str | None = None,
) -> None:
    """Ask the kernel to halt: ``halt = {"id", "reason", "at", "by"}``. Wins over a broken file.
    ``command_id`` (the console's ``halt-…`` id) names the halt in the kernel's log and status."""
    if command_id is not None and not ID_RE.match(command_id):
        raise ValueError(f"halt id {command_id!r} is not a command id")
    value = {"id": command_id, "reason": reason, "at": utcnow_iso(), "by": by}
    append_commands(
        state_dir,
        [],
        halt={k: v for k, v in value.items() if v is not None},
        lock_timeout=lock_timeout,
    )


def clear_halt_and_release(
    state_dir: Path, command: Command | dict, *, lock_timeout: float = 10.0
) -> None:
    """Write ``halt: false`` and append the ``release`` command in one atomic write.

    ``halt: false`` alone never clears a latched halt; the kernel clears it when it applies the
    release, then stays paused until a ``resume``.
    """
    command = command if isinstance(command, Command) else Command.model_validate(command)
    if command.action != "release":
        raise ValueError(f"clear_halt_and_release needs a 'release' command, not {command.action!r}")
    append_commands(state_dir, [command], halt=False, lock_timeout=lock_timeout)


# --------------------------------------------------------------------- status.json


def read_status(path: Path) -> Status | None:
    """status.json as a :class:`Status`, or None if it does not exist yet.
    Raises :class:`StatusUnreadable` if it exists but is not a valid status document, or is not
    a regular file (a symlink, FIFO or device: never followed or opened, the kernel replaces it)."""
    path = Path(path)
    name = path.name
    try:
        raw, _ = read_regular(path)
    except FileNotFoundError:
        return None
    except NotRegularFile as exc:
        raise StatusUnreadable(str(exc)) from exc
    except OSError as exc:
        raise StatusUnreadable(f"{name} cannot be read: {exc}") from exc
    text = raw.decode("utf-8-sig", errors="replace")
    if not text.strip():
        raise StatusUnreadable(f"{name} is empty")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StatusUnreadable(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise StatusUnreadable(f"{name} must hold a JSON object, not {type(value).__name__}")
    try:
        return Status.model_validate(value)
    except ValidationError as exc:
        raise StatusUnreadable(_describe_validation_error(name, exc)) from exc


def write_status(path: Path, status: Status | dict, *, fsync: bool = True) -> None:
    """Replace status.json atomically (a dict is validated as a :class:`Status` first)."""
    if not isinstance(status, Status):
        status = Status.model_validate(status)
    atomic_write_json(Path(path), status, fsync=fsync)


def done_command_ids(status: Status) -> set[str]:
    """Ids of the commands status.json reports a result for: writers prune these from control.json."""
    return {c.id for c in status.commands}


def new_command_id(prefix: str = "c") -> str:
    """A unique command id that sorts by creation time: ``c-20250101T120000.123456Z-1a2b3c4d5e``."""
    now = datetime.now(timezone.utc)
    command_id = f"{prefix}-{now:%Y%m%dT%H%M%S.%f}Z-{secrets.token_hex(5)}"
    if not ID_RE.match(command_id):
        raise ValueError(f"prefix {prefix!r} does not make a valid command id")
    return command_id
