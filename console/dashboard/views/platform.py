"""Platform section, accounts: tenants (limits, quotas with usage bars, deactivation) and users
(create, deactivate, reset password, platform admin right). Platform admins only; a 404 for
everyone else. Passwords are shown once, in the response that made them, never cached."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from console.dashboard.base import (
    PlatformRequest,
    actor_for,
    apply_domain_error,
    no_store,
    platform_page,
    platform_view,
)
from console.dashboard.forms import PlatformTenantForm, TenantQuotaForm, TenantSettingsForm, UserCreateForm
from controlplane.core.exceptions import DomainError
from controlplane.deployments.quota import RESOURCE_LABELS, RESOURCES, quota_bars, tenant_quota_usage
from controlplane.deployments.selectors import platform_grant_list
from controlplane.tenancy import services
from controlplane.tenancy.models import QUOTA_FIELDS, Tenant
from controlplane.tenancy.selectors import (
    platform_admin_flag,
    platform_membership_list,
    platform_tenant_get,
    platform_tenant_list,
    platform_user_get,
    platform_user_list,
)


@platform_view
def platform_home(request: PlatformRequest) -> HttpResponse:
    return redirect("dashboard:platform-targets")


# ----------------------------------------------------------------------------- tenants


def _tenants_page(request: PlatformRequest, form: PlatformTenantForm, status: int = 200) -> HttpResponse:
    tenants = platform_tenant_list(access=request.access).order_by("slug")
    context = {"tenants": tenants, "form": form, "section": "tenants"}
    return platform_page(request, "dashboard/platform/tenants.html", context, status=status)


@platform_view
def tenant_index(request: PlatformRequest) -> HttpResponse:
    if request.method != "POST":
        return _tenants_page(request, PlatformTenantForm())
    form = PlatformTenantForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            tenant = services.platform_tenant_create(
                actor=actor_for(request),
                name=data["name"],
                slug=data["slug"],
                owner_username=data["owner"],
                data={k: data[k] for k in ("rpm_limit", "tpm_limit", "monthly_token_budget", "burst_percent")},
            )
        except DomainError as exc:
            apply_domain_error(form, exc)
        else:
            messages.success(request, f"Created tenant {tenant.slug}.")
            return redirect("dashboard:platform-tenant", pk=tenant.pk)
    return _tenants_page(request, form, status=400)


def _quota_rows(tenant: Tenant) -> list[dict[str, Any]]:
    usage = tenant_quota_usage(tenant)
    bars = {bar["resource"]: bar for bar in quota_bars(usage)}
    return [
        {
            "resource": resource,
            "label": RESOURCE_LABELS[resource],
            "used": usage[resource]["used"],
            "allowed": usage[resource]["allowed"],
            "bar": bars.get(resource),
        }
        for resource in RESOURCES
    ]


def _tenant_page(
    request: PlatformRequest,
    tenant: Tenant,
    *,
    settings_form: TenantSettingsForm | None = None,
    quota_form: TenantQuotaForm | None = None,
    status: int = 200,
) -> HttpResponse:
    settings_initial = {
        k: getattr(tenant, k) for k in ("name", "rpm_limit", "tpm_limit", "monthly_token_budget", "burst_percent")
    }
    quota_initial = {resource: getattr(tenant, field) for resource, field in QUOTA_FIELDS.items()}
    context = {
        "t": tenant,
        "settings_form": settings_form or TenantSettingsForm(initial=settings_initial, prefix="settings"),
        "quota_form": quota_form or TenantQuotaForm(initial=quota_initial, prefix="quota"),
        "quota_rows": _quota_rows(tenant),
        "members": platform_membership_list(access=request.access, tenant=tenant),
        "grants": platform_grant_list(access=request.access, filters={"tenant": tenant.slug}),
        "section": "tenants",
    }
    return platform_page(request, "dashboard/platform/tenant_detail.html", context, status=status)


@platform_view
def tenant_detail(request: PlatformRequest, pk: int) -> HttpResponse:
    tenant = platform_tenant_get(access=request.access, pk=pk)
    if request.method != "POST":
        return _tenant_page(request, tenant)
    form = TenantSettingsForm(request.POST, prefix="settings")
    if form.is_valid():
        try:
            services.tenant_update(actor=actor_for(request), tenant=tenant, data=form.cleaned_data)
        except DomainError as exc:
            apply_domain_error(form, exc)
        else:
            messages.success(request, f"Saved {tenant.slug}.")
            return redirect("dashboard:platform-tenant", pk=pk)
    return _tenant_page(request, tenant, settings_form=form, status=400)


@platform_view
@require_POST
def tenant_quota(request: PlatformRequest, pk: int) -> HttpResponse:
    tenant = platform_tenant_get(access=request.access, pk=pk)
    form = TenantQuotaForm(request.POST, prefix="quota")
    if form.is_valid():
        try:
            services.tenant_quota_set(actor=actor_for(request), tenant=tenant, data=form.cleaned_data)
        except DomainError as exc:
            apply_domain_error(form, exc)
        else:
            messages.success(request, f"Saved the quotas of {tenant.slug}.")
            return redirect("dashboard:platform-tenant", pk=pk)
    return _tenant_page(request, tenant, quota_form=form, status=400)


@platform_view
@require_POST
def tenant_active(request: PlatformRequest, pk: int, *, active: bool) -> HttpResponse:
    tenant = platform_tenant_get(access=request.access, pk=pk)
    if active:
        services.tenant_activate(actor=actor_for(request), tenant=tenant)
        messages.success(request, f"Activated {tenant.slug}.")
    else:
        services.tenant_deactivate(actor=actor_for(request), tenant=tenant)
        messages.success(request, f"Deactivated {tenant.slug}: its members lost access and its API keys stopped.")
    return redirect("dashboard:platform-tenant", pk=pk)


# ----------------------------------------------------------------------------- users


def _users_page(
    request: PlatformRequest,
    form: UserCreateForm | None = None,
    *,
    shown: tuple[str, str] | None = None,
    errors: dict[int, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    users = [(user, platform_admin_flag(user)) for user in platform_user_list(access=request.access)]
    context = {
        "users": users,
        "form": form or UserCreateForm(),
        "shown": shown,  # (username, password) right after it was made; never stored
        "row_errors": errors or {},
        "me": request.user.pk,
        "section": "users",
    }
    response = platform_page(request, "dashboard/platform/users.html", context, status=status)
    return no_store(response) if shown else response


@platform_view
def user_index(request: PlatformRequest) -> HttpResponse:
    if request.method != "POST":
        return _users_page(request)
    form = UserCreateForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            user, password = services.user_create(
                actor=actor_for(request),
                username=data["username"],
                email=data["email"],
                password=data["password"] or None,
            )
        except DomainError as exc:
            apply_domain_error(form, exc)
        else:
            messages.success(request, f"Created user {user.username}.")
            if password:  # rendered, not redirected: the password exists only in this response
                return _users_page(request, shown=(user.username, password), status=201)
            return redirect("dashboard:platform-users")
    return _users_page(request, form, status=400)


USER_ACTIONS = ("deactivate", "activate", "reset-password", "platform-admin")


@platform_view
@require_POST
def user_action(request: PlatformRequest, pk: int, action: str) -> HttpResponse:
    user = platform_user_get(access=request.access, pk=pk)
    actor = actor_for(request)
    try:
        if action == "deactivate":
            services.user_deactivate(actor=actor, user=user)
            messages.success(request, f"Deactivated {user.username}; their sessions and tokens stopped working.")
        elif action == "activate":
            services.user_activate(actor=actor, user=user)
            messages.success(request, f"Activated {user.username}.")
        elif action == "reset-password":
            password = services.user_reset_password(actor=actor, user=user)
            messages.success(request, f"Gave {user.username} a new password.")
            return _users_page(request, shown=(user.username, password))
        elif action == "platform-admin":
            value = request.POST.get("value") == "1"
            services.platform_admin_set(actor=actor, user=user, value=value)
            verb = "is now a platform admin" if value else "is no longer a platform admin"
            messages.success(request, f"{user.username} {verb}.")
    except DomainError as exc:
        return _users_page(request, errors={user.pk: exc.message}, status=exc.status)
    return redirect("dashboard:platform-users")
