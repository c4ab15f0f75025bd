"""System checks: the console's files are private to the service user.

The SQLite database (and its -wal/-shm), the audit spool (and its lock) and the folders that
hold them must be the service user's alone: folders 0700, files 0600. A database anyone on
the host can read hands out live session keys; a spool anyone can write forges audit events.
They are created so (foresight_site/private_files.py, trading/services/audit_spool.py); a
file made by an older version, restored from a backup or moved in by hand may not be.

In production a file or folder that is not private is an Error: runserver, migrate and every
other management command refuse to run, and so does gunicorn (foresight_site/wsgi.py calls
:func:`refuse_to_serve_on_errors`). In development it is a Warning, printed by every command:
a developer's checkout is theirs, and the hint says the one command that fixes it.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from django.conf import settings
from django.core import checks
from django.core.management.base import SystemCheckError

GROUP_OR_OTHERS = 0o077


def console_files() -> list[tuple[Path, bool]]:
    """The files the console makes, (path, is_folder): the SQLite database with its -wal,
    -shm and folder; the audit spool with its lock and folder."""
    paths: list[tuple[Path, bool]] = []
    database = settings.DATABASES["default"]
    name = str(database.get("NAME") or "")
    if database["ENGINE"].endswith("sqlite3") and name and name != ":memory:" and not name.startswith("file:"):
        db = Path(name)
        paths += [(db.parent, True), (db, False), (Path(name + "-wal"), False), (Path(name + "-shm"), False)]
    spool = Path(getattr(settings, "FORESIGHT_AUDIT_SPOOL", "") or Path(settings.BASE_DIR) / "var" / "audit-spool.jsonl")
    paths += [(spool.parent, True), (spool, False), (Path(str(spool) + ".lock"), False)]
    seen: set[Path] = set()
    return [(p, d) for p, d in paths if not (p in seen or seen.add(p))]


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(settings.BASE_DIR).resolve()))
    except ValueError:
        return str(path)


def file_privacy_problems() -> list[tuple[str, str]]:
    """(what is wrong, the command that fixes it) for each console file that exists and is not
    private to this process's user."""
    problems = []
    me = os.geteuid()
    for path, is_folder in console_files():
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        shown = _shown(path)
        if info.st_uid != me:
            problems.append((f"{shown} belongs to uid {info.st_uid}, not to the user the console runs as (uid {me})",
                             f"chown {me} {shown}"))
        mode = stat.S_IMODE(info.st_mode)
        if mode & GROUP_OR_OTHERS:
            want = "700" if is_folder else "600"
            problems.append((f"{shown} is mode {mode:o}: other local users can "
                             f"{'enter it' if is_folder else 'read it'} (it must be {want})",
                             f"chmod {want} {shown}"))
    return problems


@checks.register(checks.Tags.security)
def check_console_files_are_private(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    production = getattr(settings, "PRODUCTION", False)
    level, code = (checks.Error, "foresight.E001") if production else (checks.Warning, "foresight.W001")
    return [level(problem, hint=f"{fix} (the console's files are private to its user; docs/operations.md)",
                  id=code)
            for problem, fix in file_privacy_problems()]


def refuse_to_serve_on_errors() -> None:
    """What runserver does before serving, for a WSGI server (gunicorn) that does not: run the
    system checks and stop on an Error."""
    errors = [m for m in checks.run_checks() if m.is_serious() and not m.is_silenced()]
    if errors:
        raise SystemCheckError("the console refuses to start:\n" + "\n".join(str(e) for e in errors))
