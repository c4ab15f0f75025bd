"""Audit events are append-only below the ORM too: triggers refuse UPDATE and DELETE."""
from django.db import migrations

SQLITE = [
    """CREATE TRIGGER IF NOT EXISTS trading_auditevent_no_update BEFORE UPDATE ON trading_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;""",
    """CREATE TRIGGER IF NOT EXISTS trading_auditevent_no_delete BEFORE DELETE ON trading_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;""",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS trading_auditevent_no_update;",
    "DROP TRIGGER IF EXISTS trading_auditevent_no_delete;",
]
POSTGRES = [
    """CREATE OR REPLACE FUNCTION trading_auditevent_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'audit events are append-only'; END; $$ LANGUAGE plpgsql;""",
    """CREATE TRIGGER trading_auditevent_no_change BEFORE UPDATE OR DELETE ON trading_auditevent
       FOR EACH ROW EXECUTE FUNCTION trading_auditevent_append_only();""",
    """CREATE TRIGGER trading_auditevent_no_truncate BEFORE TRUNCATE ON trading_auditevent
       FOR EACH STATEMENT EXECUTE FUNCTION trading_auditevent_append_only();""",
]
POSTGRES_DROP = [
    "DROP TRIGGER IF EXISTS trading_auditevent_no_change ON trading_auditevent;",
    "DROP TRIGGER IF EXISTS trading_auditevent_no_truncate ON trading_auditevent;",
    "DROP FUNCTION IF EXISTS trading_auditevent_append_only();",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        for sql in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("trading", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE, "postgresql": POSTGRES}),
            _run({"sqlite": SQLITE_DROP, "postgresql": POSTGRES_DROP}),
        ),
    ]
