"""Plumbing shared by every dashboard view: the current tenant, the access check, domain errors.

Views stay thin: ``tenant_view(perm)`` resolves the caller's access and current tenant (kept in
the session, only ever one the user belongs to), refuses callers without ``perm``, and turns
domain exceptions into pages. ``platform_view`` does the same for the Platform section, which
does not exist (404) for anyone but platform admins. Forms carry a service's ``field_errors``
next to the fields.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django import forms
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from controlplane.core.context import Actor, client_ip
from controlplane.core.exceptions import DomainError, NotFound, PermissionDenied
from controlplane.tenancy.access import Access, access_for
from controlplane.tenancy.choices import Perm
from controlplane.tenancy.models import Tenant

SESSION_TENANT = "hangar_tenant_id"
T = TypeVar("T")


class TenantRequest(HttpRequest):
    """A request that passed ``tenant_view``: the caller's access and current tenant are attached."""

    access: Access
    tenant: Tenant


class PlatformRequest(HttpRequest):
    """A request that passed ``platform_view``: a platform admin, with a current tenant if they
    belong to one (for the navigation only; platform pages act on every tenant)."""

    access: Access
    tenant: Tenant | None


@dataclass(frozen=True)
class Can:
    """What the current role may do, for templates: ``{% if can.deployment_change %}``."""

    access: Access
    tenant_id: int

    def __getattr__(self, name: str) -> bool:
        try:
            perm = Perm(name.replace("_", ".", 1))
        except ValueError:
            raise AttributeError(name) from None
        return self.access.can(self.tenant_id, perm)


def current_tenant_id(request: HttpRequest, access: Access) -> int | None:
    """The tenant chosen in the session if the user still belongs to it, else their first one."""
    chosen = request.session.get(SESSION_TENANT)
    if chosen in access.roles:
        return int(chosen)
    if not access.roles:
        return None
    first = sorted(access.roles, key=lambda tid: access.slugs[tid])[0]
    request.session[SESSION_TENANT] = first
    return first


def actor_for(request: HttpRequest) -> Actor:
    return Actor(user=request.user, source_ip=client_ip(request.META), via="dashboard")


def tenant_view(perm: Perm) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Require login and ``perm`` in the current tenant; sets ``request.access`` and ``request.tenant``."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            access = access_for(request.user)
            tenant_id = current_tenant_id(request, access)
            if tenant_id is None:
                if access.is_platform_admin:  # a platform admin need not belong to any tenant
                    return redirect("dashboard:platform")
                return render(request, "dashboard/no_tenant.html", status=403)
            request.access = access  # type: ignore[attr-defined]
            request.tenant = Tenant.objects.get(pk=tenant_id)  # type: ignore[attr-defined]
            try:
                access.require(tenant_id, perm)
                return view(request, *args, **kwargs)
            except NotFound as exc:
                raise Http404(exc.message) from None
            except PermissionDenied as exc:
                return render(request, "dashboard/denied.html", {"message": exc.message}, status=403)

        return wrapper

    return decorate


def _signed_in_view(view: Callable[..., HttpResponse], *, platform_only: bool) -> Callable[..., HttpResponse]:
    """A signed-in user's page (a platform admin's only, 404 for anyone else, when
    ``platform_only``); sets ``request.access`` and ``request.tenant`` (the current tenant, or None)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        access = access_for(request.user)
        if platform_only and not access.is_platform_admin:
            raise Http404("Not found.")
        tenant_id = current_tenant_id(request, access)
        request.access = access  # type: ignore[attr-defined]
        request.tenant = Tenant.objects.get(pk=tenant_id) if tenant_id is not None else None  # type: ignore[attr-defined]
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from None
        except PermissionDenied as exc:
            return render(request, "dashboard/denied.html", {"message": exc.message}, status=403)

    return wrapper


def platform_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Require a signed-in platform admin (404 for everyone else, as for an unknown URL)."""
    return _signed_in_view(view, platform_only=True)


def account_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Require a signed-in user (any role, any tenant or none): pages about the user's own
    account, such as their access tokens."""
    return _signed_in_view(view, platform_only=False)


def require(request: TenantRequest, perm: Perm) -> None:
    """Enforce an action's permission on POST (buttons are hidden too, but never trusted)."""
    request.access.require(request.tenant.pk, perm)


def in_tenant(request: TenantRequest, obj: T) -> T:
    """Objects of the user's other tenants are not shown under the current one (perms are per tenant)."""
    if obj.tenant_id != request.tenant.pk:  # type: ignore[attr-defined]
        raise NotFound("Not found.")
    return obj


def page(
    request: TenantRequest, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HttpResponse:
    base = {
        "tenant": request.tenant,
        "role": request.access.role(request.tenant.pk),
        "can": Can(request.access, request.tenant.pk),
        "tenants": sorted(request.access.slugs.items(), key=lambda item: item[1]),
        "platform_admin": request.access.is_platform_admin,
    }
    return render(request, template, base | (context or {}), status=status)


def platform_page(
    request: PlatformRequest, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HttpResponse:
    tenant = request.tenant
    base = {
        "tenant": tenant,
        "role": request.access.role(tenant.pk) if tenant is not None else None,
        "can": Can(request.access, tenant.pk) if tenant is not None else None,
        "tenants": sorted(request.access.slugs.items(), key=lambda item: item[1]),
        "platform_admin": True,
        "nav": "platform",
    }
    return render(request, template, base | (context or {}), status=status)


def account_page(
    request: PlatformRequest, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HttpResponse:
    """A page of ``account_view``: the navigation of the current tenant, if the user has one."""
    tenant = request.tenant
    base = {
        "tenant": tenant,
        "role": request.access.role(tenant.pk) if tenant is not None else None,
        "can": Can(request.access, tenant.pk) if tenant is not None else None,
        "tenants": sorted(request.access.slugs.items(), key=lambda item: item[1]),
        "platform_admin": request.access.is_platform_admin,
        "account_page": True,
    }
    return render(request, template, base | (context or {}), status=status)


def no_store(response: HttpResponse) -> HttpResponse:
    """For pages that show a secret once (a new password or key): never cached, anywhere."""
    response["Cache-Control"] = "no-store"
    return response


def apply_domain_error(form: forms.Form, exc: DomainError) -> None:
    """Put a service's field errors next to the form's fields; the rest on top of the form."""
    if not exc.field_errors:
        form.add_error(None, exc.message)
        return
    for field, messages in exc.field_errors.items():
        target = field if field in form.fields else None
        for message in messages:
            form.add_error(target, message if target else f"{field}: {message}")
