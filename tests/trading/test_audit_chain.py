"""The audit log is tamper-evident: no insert reuses an id or a dedupe key (below the ORM, raw
SQL included), every event is chained to the one before it, and ``manage.py verifyaudit``
names the first broken link. Runs on SQLite and, with DATABASE_URL=postgres://..., on
PostgreSQL (the raw SQL is each backend's own way of overwriting a row)."""
from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from tests.trading.service_calls import CLI
from trading import services
from trading.models import AuditEvent
from trading.services.audit_chain import GENESIS, audit_hash

pytestmark = pytest.mark.django_db
TABLE = AuditEvent._meta.db_table
COLUMNS = ("id", "at", "actor", "user_id", "source", "ip", "action", "kernel_name", "slot_id", "command_id",
           "outcome", "payload", "dedupe_key", "prev_hash", "hash")


def raw_insert(values: dict, *, overwrite: bool = False) -> None:
    """INSERT a row with raw SQL; ``overwrite``: the backend's way to replace an existing one
    (SQLite's INSERT OR REPLACE, PostgreSQL's ON CONFLICT DO UPDATE)."""
    cols = [c for c in COLUMNS if c in values]
    marks = ", ".join(["%s"] * len(cols))
    params = [json.dumps(values[c]) if c == "payload" else values[c] for c in cols]
    if connection.vendor == "sqlite":
        sql = f"INSERT {'OR REPLACE ' if overwrite else ''}INTO {TABLE} ({', '.join(cols)}) VALUES ({marks})"
    else:
        sql = f"INSERT INTO {TABLE} ({', '.join(cols)}) VALUES ({marks})"
        if overwrite:
            sql += " ON CONFLICT (id) DO UPDATE SET payload = EXCLUDED.payload, actor = EXCLUDED.actor"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def forged_row(event: AuditEvent, **changes) -> dict:
    row = {c: getattr(event, c) for c in COLUMNS}
    row.update(changes)
    return row


def verify() -> str:
    out = []
    call_command("verifyaudit", stdout=type("W", (), {"write": lambda self, s: out.append(s), "flush": lambda self: None})())
    return "".join(out)


def test_each_event_is_chained_to_the_one_before_it():
    events = [services.audit_record(action=f"test.{i}", actor=CLI, payload={"i": i, "big": 1e20, "half": 0.5})
              for i in range(3)]
    stored = list(AuditEvent.objects.order_by("id"))

    assert [e.prev_hash for e in stored] == [GENESIS, stored[0].hash, stored[1].hash]
    assert [e.hash for e in stored] == [e.hash for e in events]  # what was computed is what is stored
    assert all(e.hash == audit_hash(e.prev_hash, e) for e in stored)  # and recomputes from the row read back
    assert verify().startswith(f"3 events, chain intact (last hash {stored[2].hash})")


def test_an_insert_that_reuses_an_id_or_a_dedupe_key_is_refused_below_the_orm():
    event = services.audit_record(action="halt.engaged", actor=CLI, payload={"reason": "real"},
                                  dedupe_key="halt.engaged:h1")
    with pytest.raises(DatabaseError, match="never reused|duplicate|UNIQUE"):
        raw_insert(forged_row(event, actor="mallory", payload={"reason": "forged"}), overwrite=True)
    del_id = forged_row(event, actor="mallory")
    del_id.pop("id")
    with pytest.raises(DatabaseError, match="never reused|duplicate|UNIQUE"):
        raw_insert(del_id, overwrite=True)  # a new id, the same dedupe key
    with pytest.raises(DatabaseError, match="never reused|duplicate|UNIQUE"):
        raw_insert(del_id)

    stored = AuditEvent.objects.get()
    assert (stored.pk, stored.actor, stored.payload) == (event.pk, "tester@host", {"reason": "real"})


def test_editing_a_payload_with_raw_sql_is_refused():
    event = services.audit_record(action="command.issued", actor=CLI, payload={"action": "pause"})
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET payload = %s WHERE id = %s", [json.dumps({"action": "resume"}), event.pk])
    assert AuditEvent.objects.get().payload == {"action": "pause"}
    assert "1 events, chain intact" in verify()


def last_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()


def test_verifyaudit_names_the_first_broken_event():
    first, second = (services.audit_record(action=f"test.{i}", actor=CLI) for i in range(2))
    # Slipped in with raw SQL: a plausible previous hash, but a hash that is not its content's.
    forged = forged_row(second, dedupe_key=None, actor="mallory", action="halt.engaged",
                        prev_hash=second.hash, hash="f" * 64)
    del forged["id"]
    raw_insert(forged)
    forged_id = last_id()
    services.audit_record(action="test.after", actor=CLI)  # chained after the forgery: the walk stops before

    with pytest.raises(CommandError, match=rf"broken at event #{forged_id}: its content does not match"):
        call_command("verifyaudit")


def test_verifyaudit_names_an_event_whose_link_to_the_previous_one_is_wrong():
    first = services.audit_record(action="test.0", actor=CLI)
    # A forger who hashes correctly but cannot know (or chooses not to use) the previous hash.
    row = forged_row(first, dedupe_key=None, actor="mallory", prev_hash=GENESIS)
    del row["id"]
    row["hash"] = audit_hash(GENESIS, AuditEvent(**row))
    raw_insert(row)

    with pytest.raises(CommandError, match=rf"broken at event #{last_id()}: its previous hash"):
        call_command("verifyaudit")


@pytest.mark.integration
def test_the_migration_chains_the_events_already_there_and_keeps_every_trigger(tmp_path, repo_root):
    """``manage.py migrate`` on a file database with events from before the chain (SQLite
    rebuilds the table to add the columns, which drops triggers: they must all be back)."""
    import sqlite3
    import subprocess
    import sys

    from tests.support.processes import clean_env

    db = tmp_path / "console.sqlite3"
    env = clean_env(drop=("REDIS_URL",), DJANGO_SETTINGS_MODULE="foresight_site.settings",
                    DATABASE_URL=f"sqlite:///{db}")

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=repo_root, env=env,
                              capture_output=True, text=True, timeout=300)

    assert manage("migrate", "trading", "0004", "-v0").returncode == 0
    con = sqlite3.connect(db)
    with con:
        for i, actor in enumerate(("olga", "rita")):
            con.execute(f"INSERT INTO {TABLE} (at, actor, source, action, kernel_name, slot_id, command_id, "
                        "outcome, payload) VALUES (?, ?, 'api', 'halt.engaged', 'demo', '', '', 'written', ?)",
                        (f"2025-01-0{i + 1} 12:00:00.123456", actor, json.dumps({"reason": f"r{i}", "x": 2.0})))
    done = manage("migrate", "-v0")
    assert done.returncode == 0, done.stderr

    done = manage("verifyaudit")
    assert done.returncode == 0 and "2 events, chain intact" in done.stdout, done.stdout + done.stderr
    for sql in (f"UPDATE {TABLE} SET actor = 'mallory'", f"DELETE FROM {TABLE}",
                f"INSERT OR REPLACE INTO {TABLE} (id, at, actor, source, action, kernel_name, slot_id, command_id, "
                "outcome, payload, prev_hash, hash) VALUES (1, '2025-01-01', 'mallory', 'api', 'x', '', '', '', '', "
                "'{}', '', '')"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"), con:
            con.execute(sql)

    assert manage("migrate", "trading", "0004", "-v0").returncode == 0  # reversed: 0002's triggers are back
    with pytest.raises(sqlite3.DatabaseError, match="append-only"), con:
        con.execute(f"UPDATE {TABLE} SET actor = 'mallory'")
    assert [r[0] for r in con.execute(f"SELECT actor FROM {TABLE} ORDER BY id")] == ["olga", "rita"]
    con.close()
