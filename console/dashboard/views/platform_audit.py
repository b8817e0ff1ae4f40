"""Platform section, audit: what belongs to no tenant (platform changes, logins and failed
logins, personal access tokens). Platform admins only; a 404 for everyone else."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.http import HttpResponse

from console.dashboard.base import PlatformRequest, platform_page, platform_view
from console.dashboard.forms import AuditFilterForm
from controlplane.audit.selectors import platform_audit_list

PAGE_SIZE = 50


@platform_view
def audit(request: PlatformRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    filters: dict[str, Any] = {}
    status = 200
    if form.is_bound:
        if form.is_valid():
            filters = {k: v for k, v in form.cleaned_data.items() if v}
        else:
            status = 400
    entries = Paginator(platform_audit_list(access=request.access, filters=filters), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "entries": entries, "query": query.urlencode(), "section": "audit", "platform": True}
    return platform_page(request, "dashboard/audit.html", context, status=status)
