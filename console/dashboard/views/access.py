"""API keys, usage (with CSV export), members and roles, audit log."""

from __future__ import annotations

import csv
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDate
from django.http import HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.views.decorators.http import require_POST

from console.dashboard.base import TenantRequest, actor_for, apply_domain_error, in_tenant, page, require, tenant_view
from console.dashboard.forms import ApiKeyForm, AuditFilterForm, MemberAddForm, MemberRoleForm, UsageFilterForm
from controlplane.audit.selectors import audit_list
from controlplane.core.exceptions import DomainError
from controlplane.deployments.selectors import deployment_list
from controlplane.keys import services as key_services
from controlplane.keys.selectors import api_key_get, api_key_list
from controlplane.tenancy import services as tenancy_services
from controlplane.tenancy.choices import Perm
from controlplane.tenancy.selectors import membership_get, membership_list
from controlplane.usage.selectors import usage_list, usage_totals_by_key

USAGE_WINDOW_DAYS = 30


def served_names(request: TenantRequest) -> list[str]:
    deployments = deployment_list(access=request.access, filters={"tenant": request.tenant.slug})
    return sorted(deployments.values_list("served_model_name", flat=True))


# ----------------------------------------------------------------------------- API keys


def _keys_page(request: TenantRequest, form: ApiKeyForm, *, secret: str = "", status: int = 200) -> HttpResponse:
    scope = {"tenant": request.tenant.slug}
    since = timezone.now() - timedelta(days=USAGE_WINDOW_DAYS)
    usage = {
        row["api_key_id"]: row for row in usage_totals_by_key(access=request.access, filters=scope | {"since": since})
    }
    keys = [(key, usage.get(key.pk)) for key in api_key_list(access=request.access, filters=scope)]
    context = {
        "keys": keys,
        "form": form,
        "secret": secret,
        "window": USAGE_WINDOW_DAYS,
        "now": timezone.now(),
        "nav": "keys",
    }
    return page(request, "dashboard/keys.html", context, status=status)


@tenant_view(Perm.APIKEY_VIEW)
def key_index(request: TenantRequest) -> HttpResponse:
    names = served_names(request)
    if request.method != "POST":
        return _keys_page(request, ApiKeyForm(served_names=names))
    require(request, Perm.APIKEY_CHANGE)
    form = ApiKeyForm(request.POST, served_names=names)
    if form.is_valid():
        data = {k: v for k, v in form.cleaned_data.items() if v is not None}
        try:
            key, secret = key_services.api_key_create(actor=actor_for(request), tenant=request.tenant, data=data)
        except DomainError as exc:
            apply_domain_error(form, exc)
        else:
            # Rendered, not redirected: the secret exists only in this response.
            messages.success(request, f"Created key {key.name}. Copy the secret now; it is not shown again.")
            response = _keys_page(request, ApiKeyForm(served_names=names), secret=secret, status=201)
            response["Cache-Control"] = "no-store"
            return response
    return _keys_page(request, form, status=400)


@tenant_view(Perm.APIKEY_VIEW)
@require_POST
def key_revoke(request: TenantRequest, pk: int) -> HttpResponse:
    require(request, Perm.APIKEY_CHANGE)
    key = in_tenant(request, api_key_get(access=request.access, pk=pk))
    key_services.api_key_revoke(actor=actor_for(request), key=key)
    messages.success(request, f"Revoked {key.name}.")
    return redirect("dashboard:keys")


# ----------------------------------------------------------------------------- usage


def _usage_rows(request: TenantRequest, form: UsageFilterForm) -> QuerySet[Any]:
    data = form.cleaned_data if form.is_valid() else {}
    days = data.get("days") or USAGE_WINDOW_DAYS
    filters: dict[str, Any] = {"tenant": request.tenant.slug, "since": timezone.now() - timedelta(days=days)}
    if data.get("api_key"):
        filters["api_key"] = data["api_key"]
    if data.get("model"):
        filters["model"] = data["model"]
    return (
        usage_list(access=request.access, filters=filters)
        .annotate(day=TruncDate("minute"))
        .values("day", "api_key_id", "api_key__name", "api_key__display_prefix", "model")
        .annotate(
            requests=Sum("requests"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            errors=Sum("errors"),
            latency_ms_sum=Sum("latency_ms_sum"),
        )
        .order_by("-day", "api_key__name", "model")
    )


@tenant_view(Perm.USAGE_VIEW)
def usage(request: TenantRequest) -> HttpResponse:
    form = UsageFilterForm(request.GET or None)
    rows = list(_usage_rows(request, form))
    per_day: dict[str, int] = {}
    for row in rows:
        day = row["day"].isoformat()
        per_day[day] = per_day.get(day, 0) + (row["prompt_tokens"] or 0) + (row["completion_tokens"] or 0)
    days = sorted(per_day)
    peak = max(per_day.values(), default=0) or 1
    bars = [(day, per_day[day], round(100 * per_day[day] / peak)) for day in days]
    status = 400 if form.is_bound and not form.is_valid() else 200
    context = {"form": form, "rows": rows, "bars": bars, "query": request.GET.urlencode(), "nav": "usage"}
    return page(request, "dashboard/usage.html", context, status=status)


@tenant_view(Perm.USAGE_VIEW)
def usage_csv(request: TenantRequest) -> HttpResponse:
    form = UsageFilterForm(request.GET or None)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="usage-{request.tenant.slug}.csv"'
    writer = csv.writer(response)
    writer.writerow(
        ["day", "api_key", "key_prefix", "model", "requests", "prompt_tokens", "completion_tokens", "errors"]
    )
    for row in _usage_rows(request, form):
        writer.writerow(
            [
                row["day"].isoformat(),
                _csv_safe(row["api_key__name"] or ""),
                row["api_key__display_prefix"] or "",
                _csv_safe(row["model"]),
                row["requests"],
                row["prompt_tokens"],
                row["completion_tokens"],
                row["errors"],
            ]
        )
    return response


def _csv_safe(value: str) -> str:
    """Defuse spreadsheet formulas in user-chosen names (CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


# ----------------------------------------------------------------------------- members


def _members_page(
    request: TenantRequest,
    form: MemberAddForm | None = None,
    *,
    errors: dict[int, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    members = membership_list(access=request.access, filters={"tenant": request.tenant.slug}).order_by("user__username")
    rows = [(m, MemberRoleForm(initial={"role": m.role}, prefix=f"m{m.pk}")) for m in members]
    context = {"rows": rows, "form": form or MemberAddForm(), "row_errors": errors or {}, "nav": "members"}
    return page(request, "dashboard/members.html", context, status=status)


@tenant_view(Perm.MEMBER_VIEW)
def member_index(request: TenantRequest) -> HttpResponse:
    if request.method != "POST":
        return _members_page(request)
    require(request, Perm.MEMBER_CHANGE)
    form = MemberAddForm(request.POST)
    if form.is_valid():
        try:
            tenancy_services.membership_add(
                actor=actor_for(request), access=request.access, tenant=request.tenant, **form.cleaned_data
            )
        except DomainError as exc:
            apply_domain_error(form, exc)
        else:
            messages.success(request, f"Added {form.cleaned_data['username']}.")
            return redirect("dashboard:members")
    return _members_page(request, form, status=400)


@tenant_view(Perm.MEMBER_VIEW)
@require_POST
def member_role(request: TenantRequest, pk: int) -> HttpResponse:
    require(request, Perm.MEMBER_CHANGE)
    membership = in_tenant(request, membership_get(access=request.access, pk=pk))
    form = MemberRoleForm(request.POST, prefix=f"m{pk}")
    if form.is_valid():
        try:
            tenancy_services.membership_update(
                actor=actor_for(request), access=request.access, membership=membership, role=form.cleaned_data["role"]
            )
        except DomainError as exc:
            return _members_page(request, errors={pk: exc.message}, status=400)
        messages.success(request, f"{membership.user.username} is now {form.cleaned_data['role']}.")
        return redirect("dashboard:members")
    return _members_page(request, errors={pk: "Choose a valid role."}, status=400)


@tenant_view(Perm.MEMBER_VIEW)
@require_POST
def member_remove(request: TenantRequest, pk: int) -> HttpResponse:
    require(request, Perm.MEMBER_CHANGE)
    membership = in_tenant(request, membership_get(access=request.access, pk=pk))
    try:
        tenancy_services.membership_remove(actor=actor_for(request), access=request.access, membership=membership)
    except DomainError as exc:
        return _members_page(request, errors={pk: exc.message}, status=400)
    messages.success(request, f"Removed {membership.user.username}.")
    return redirect("dashboard:members")


# ----------------------------------------------------------------------------- audit

AUDIT_PAGE_SIZE = 50


@tenant_view(Perm.AUDIT_VIEW)
def audit(request: TenantRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    filters: dict[str, Any] = {"tenant": request.tenant.slug}
    status = 200
    if form.is_bound:
        if form.is_valid():
            filters |= {k: v for k, v in form.cleaned_data.items() if v}
        else:
            status = 400
    rows = audit_list(access=request.access, filters=filters).select_related("actor")
    paginator = Paginator(rows, AUDIT_PAGE_SIZE)
    entries = paginator.get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "entries": entries, "query": query.urlencode(), "nav": "audit"}
    return page(request, "dashboard/audit.html", context, status=status)
