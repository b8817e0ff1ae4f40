"""Re-encrypt stored target credentials with the newest key of HANGAR_ENCRYPTION_KEYS."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from controlplane.core.context import Actor
from controlplane.core.crypto import CredentialsUnreadable
from controlplane.deployments.services import target_credentials_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every target's credentials with the first key of HANGAR_ENCRYPTION_KEYS. "
        "Rotate by putting a new key in front, running this, then removing the old key."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            count = target_credentials_rotate(actor=Actor(user=None, via="rotate_encryption_keys"))
        except CredentialsUnreadable as exc:
            raise CommandError(f"{exc} Nothing was changed.") from None
        self.stdout.write(f"Re-encrypted the credentials of {count} target(s) with the newest key.")
