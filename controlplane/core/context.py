"""Who is acting: passed to every service so audit rows and events can say who and from where."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


@dataclass(frozen=True)
class Actor:
    user: AbstractBaseUser | AnonymousUser | None
    source_ip: str | None = None
    via: str = "api"  # api | dashboard | system | gateway
    # The personal access token the request authenticated with, if any (keys record it).
    token_id: int | None = None

    @property
    def label(self) -> str:
        if self.user is None or not getattr(self.user, "is_authenticated", False):
            return f"system:{self.via}"
        return str(self.user.get_username())

    @property
    def user_id(self) -> Any:
        if self.user is None or not getattr(self.user, "is_authenticated", False):
            return None
        return self.user.pk


SYSTEM = Actor(user=None, via="system")


def client_ip(meta: dict[str, Any]) -> str | None:
    """The peer address Django saw. Proxy headers are not trusted unless a proxy is configured."""
    value = meta.get("REMOTE_ADDR")
    return str(value) if value else None
