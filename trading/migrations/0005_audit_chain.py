"""The audit log becomes tamper-evident: a hash chain over the events (computed here for the
rows already there, in id order), and a trigger that refuses an insert reusing an id or a
dedupe key (on SQLite, ``INSERT OR REPLACE`` would otherwise rewrite a row by deleting it,
past the triggers of 0002; on PostgreSQL the primary key and the unique dedupe key already
refuse it, and ``ON CONFLICT DO UPDATE`` meets the UPDATE trigger: the trigger is there too,
so that both say the same).

On SQLite, adding a column rebuilds the table and drops its triggers: every trigger is
created again at the end (and 0002's again when this migration is reversed).
"""
from importlib import import_module

from django.db import migrations, models

append_only = import_module("trading.migrations.0002_audit_append_only")  # its trigger statements

NO_REUSE = "audit events are append-only: an id or a dedupe key is never reused"
SQLITE_NO_REUSE = f"""CREATE TRIGGER IF NOT EXISTS trading_auditevent_no_reuse BEFORE INSERT ON trading_auditevent
    WHEN EXISTS (SELECT 1 FROM trading_auditevent WHERE id = NEW.id)
      OR (NEW.dedupe_key IS NOT NULL
          AND EXISTS (SELECT 1 FROM trading_auditevent WHERE dedupe_key = NEW.dedupe_key))
    BEGIN SELECT RAISE(ABORT, '{NO_REUSE}'); END;"""
POSTGRES_NO_REUSE = [
    f"""CREATE OR REPLACE FUNCTION trading_auditevent_no_reuse() RETURNS trigger AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM trading_auditevent WHERE id = NEW.id)
             OR (NEW.dedupe_key IS NOT NULL
                 AND EXISTS (SELECT 1 FROM trading_auditevent WHERE dedupe_key = NEW.dedupe_key)) THEN
            RAISE EXCEPTION '{NO_REUSE}' USING ERRCODE = 'unique_violation';
          END IF;
          RETURN NEW;
        END; $$ LANGUAGE plpgsql;""",
    """CREATE TRIGGER trading_auditevent_no_reuse BEFORE INSERT ON trading_auditevent
       FOR EACH ROW EXECUTE FUNCTION trading_auditevent_no_reuse();""",
]
POSTGRES_NO_REUSE_DROP = [
    "DROP TRIGGER IF EXISTS trading_auditevent_no_reuse ON trading_auditevent;",
    "DROP FUNCTION IF EXISTS trading_auditevent_no_reuse();",
]


def _execute(schema_editor, statements):
    for sql in statements:
        schema_editor.execute(sql)


def chain_existing_events(apps, schema_editor):
    """Link the events already recorded, in id order, then (re)create the triggers."""
    from trading.services.audit_chain import GENESIS, audit_hash

    vendor = schema_editor.connection.vendor
    table = "trading_auditevent"
    if vendor == "sqlite":
        _execute(schema_editor, append_only.SQLITE_DROP)
    elif vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {table} DISABLE TRIGGER trading_auditevent_no_change;")
    AuditEvent = apps.get_model("trading", "AuditEvent")
    prev = GENESIS
    with schema_editor.connection.cursor() as cursor:
        for event in AuditEvent._base_manager.order_by("id").iterator(chunk_size=2000):
            digest = audit_hash(prev, event)
            # Raw SQL: the historical manager is the append-only one, which refuses update().
            cursor.execute(f"UPDATE {table} SET prev_hash = %s, hash = %s WHERE id = %s", [prev, digest, event.id])
            prev = digest
    if vendor == "sqlite":
        _execute(schema_editor, append_only.SQLITE + [SQLITE_NO_REUSE])
    elif vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {table} ENABLE TRIGGER trading_auditevent_no_change;")
        _execute(schema_editor, POSTGRES_NO_REUSE)


def drop_no_reuse(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS trading_auditevent_no_reuse;")
    elif vendor == "postgresql":
        _execute(schema_editor, POSTGRES_NO_REUSE_DROP)


def restore_append_only(apps, schema_editor):
    """Reversed past this migration, SQLite rebuilt the table without 0002's triggers."""
    if schema_editor.connection.vendor == "sqlite":
        _execute(schema_editor, append_only.SQLITE)


class Migration(migrations.Migration):
    dependencies = [("trading", "0004_auth_hardening")]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, restore_append_only),
        migrations.AddField(
            model_name="auditevent", name="prev_hash",
            field=models.CharField(blank=True, default="", editable=False, max_length=64,
                                   help_text="the hash of the event before this one"),
        ),
        migrations.AddField(
            model_name="auditevent", name="hash",
            field=models.CharField(blank=True, default="", editable=False, max_length=64,
                                   help_text="sha256 of prev_hash and this event's content"),
        ),
        migrations.RunPython(chain_existing_events, drop_no_reuse),
    ]
