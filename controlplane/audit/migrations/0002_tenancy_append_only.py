"""The audit table is append-only in PostgreSQL itself: UPDATE and DELETE raise.

One UPDATE stays possible, the one deletions need: when a tenant or a user is deleted, Django
nulls the rows' ``tenant_id`` / ``actor_id`` (``on_delete=SET_NULL``). The trigger lets an UPDATE
through only if it nulls those two columns and changes nothing else, and only inside a
transaction that is deleting a tenant or a user (``controlplane.audit.guard`` sets
``hangar.audit_detach`` for that transaction). Nothing deletes audit rows (there is no retention
purge). SQLite (the single-machine quickstart) has no such guard: this migration does nothing there.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION hangar_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND current_setting('hangar.audit_detach', true) = 'on'
       AND (to_jsonb(NEW) - 'tenant_id' - 'actor_id') = (to_jsonb(OLD) - 'tenant_id' - 'actor_id')
       AND (NEW.tenant_id IS NULL OR NEW.tenant_id = OLD.tenant_id)
       AND (NEW.actor_id IS NULL OR NEW.actor_id = OLD.actor_id)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_auditlog is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
DROP TRIGGER IF EXISTS audit_auditlog_append_only ON audit_auditlog;
CREATE TRIGGER audit_auditlog_append_only
    BEFORE UPDATE OR DELETE ON audit_auditlog
    FOR EACH ROW EXECUTE FUNCTION hangar_audit_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS audit_auditlog_append_only ON audit_auditlog;
DROP FUNCTION IF EXISTS hangar_audit_append_only();
"""


def _on_postgresql(sql: str) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)  # no placeholders: keep the % signs literal

    return run


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP), elidable=False)]
