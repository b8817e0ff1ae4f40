"""Django's admin, read-only for everything the services own.

Services validate, write audit rows, purge the gateways' key caches and re-check websockets; an
edit in the admin would do none of it. So every model of the control plane (and the users and
groups the platform services manage) is shown here, never added, changed or deleted: the
dashboard and the REST API are where things change.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only pages: no add, change or delete (hence no save buttons and no bulk delete)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
