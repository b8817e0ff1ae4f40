"""Rotating HANGAR_ENCRYPTION_KEYS: new key in front, re-encrypt, drop the old key."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from controlplane.audit.models import AuditLog
from controlplane.core.crypto import CredentialsUnreadable, decrypt_json, encrypt_json
from controlplane.deployments.models import Target
from tests.factories import TargetFactory

pytestmark = pytest.mark.django_db

OLD, NEW, STRANGER = (Fernet.generate_key().decode() for _ in range(3))
SECRET = {"kubeconfig": "apiVersion: v1\nclusters: []\n"}


def test_rotation_re_encrypts_with_the_newest_key_so_the_old_one_can_go(settings: Any, capsys: Any) -> None:
    settings.HANGAR_ENCRYPTION_KEYS = [OLD]
    target = TargetFactory(kind="kubernetes", credentials=encrypt_json(SECRET))
    bare = TargetFactory(kind="local")
    before = target.credentials

    settings.HANGAR_ENCRYPTION_KEYS = [NEW, OLD]
    call_command("rotate_encryption_keys")
    assert "1 target(s)" in capsys.readouterr().out
    target.refresh_from_db()
    assert target.credentials != before and Target.objects.get(pk=bare.pk).credentials == ""

    settings.HANGAR_ENCRYPTION_KEYS = [NEW]  # the old key is gone: still readable
    assert decrypt_json(target.credentials) == SECRET
    audit = AuditLog.objects.get(action="target.credentials_rotate")
    assert audit.changes == {"targets": 1} and "clusters" not in str(audit.changes)


def test_rotation_without_the_key_that_wrote_them_changes_nothing(settings: Any) -> None:
    settings.HANGAR_ENCRYPTION_KEYS = [OLD]
    readable = TargetFactory(kind="kubernetes", credentials=encrypt_json(SECRET))
    settings.HANGAR_ENCRYPTION_KEYS = [STRANGER]
    orphan = TargetFactory(kind="kubernetes", credentials=encrypt_json(SECRET))
    kept = {t.pk: t.credentials for t in Target.objects.all()}

    settings.HANGAR_ENCRYPTION_KEYS = [NEW, OLD]  # the stranger's key was removed too early
    with pytest.raises(CommandError, match="Nothing was changed"):
        call_command("rotate_encryption_keys")
    assert {t.pk: t.credentials for t in Target.objects.all()} == kept
    with pytest.raises(CredentialsUnreadable):
        decrypt_json(Target.objects.get(pk=orphan.pk).credentials)
    assert decrypt_json(Target.objects.get(pk=readable.pk).credentials) == SECRET
