"""The append-only trigger also lets a user's deletion null ``subject_user_id``.

``subject_user`` (migration ``0003_auth_subject_user``) is the account a login or token row is
about; it is ``on_delete=SET_NULL`` like ``actor``, so deleting a user nulls it too, inside the
same ``hangar.audit_detach`` transaction (``controlplane.audit.guard``). Every other change is
still refused. PostgreSQL only, as ``0002_tenancy_append_only``.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

_FUNCTION = """
CREATE OR REPLACE FUNCTION hangar_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND current_setting('hangar.audit_detach', true) = 'on'
       AND (to_jsonb(NEW) - 'tenant_id' - 'actor_id'{extra_keys}) = (to_jsonb(OLD) - 'tenant_id' - 'actor_id'{extra_keys})
       AND (NEW.tenant_id IS NULL OR NEW.tenant_id = OLD.tenant_id)
       AND (NEW.actor_id IS NULL OR NEW.actor_id = OLD.actor_id){extra_checks}
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_auditlog is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
"""
WITH_SUBJECT = _FUNCTION.format(
    extra_keys=" - 'subject_user_id'",
    extra_checks="\n       AND (NEW.subject_user_id IS NULL OR NEW.subject_user_id = OLD.subject_user_id)",
)
WITHOUT_SUBJECT = _FUNCTION.format(extra_keys="", extra_checks="")


def _on_postgresql(sql: str) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)  # no placeholders: keep the % signs literal

    return run


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_auth_subject_user")]

    operations = [migrations.RunPython(_on_postgresql(WITH_SUBJECT), _on_postgresql(WITHOUT_SUBJECT), elidable=False)]
