"""Login landing, tenant switcher and the overview of the current tenant's deployments."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from console.dashboard import live
from console.dashboard.base import SESSION_TENANT, TenantRequest, page, tenant_view
from console.dashboard.forms import TenantSwitchForm
from controlplane.deployments.quota import quota_bars, tenant_quota_usage
from controlplane.deployments.selectors import deployment_list
from controlplane.tenancy.access import access_for
from controlplane.tenancy.choices import Perm


@tenant_view(Perm.DEPLOYMENT_VIEW)
def overview(request: TenantRequest) -> HttpResponse:
    deployments = list(deployment_list(access=request.access, filters={"tenant": request.tenant.slug}))
    rows = [(d, live.summary(access=request.access, deployment_id=d.pk)) for d in deployments]
    quota = quota_bars(tenant_quota_usage(request.tenant))
    return page(request, "dashboard/overview.html", {"rows": rows, "quota": quota, "nav": "overview"})


@login_required
@require_POST
def switch_tenant(request: HttpRequest) -> HttpResponse:
    form = TenantSwitchForm(request.POST)
    access = access_for(request.user)
    if not form.is_valid() or form.cleaned_data["tenant"] not in access.roles:
        raise Http404("Tenant not found.")
    request.session[SESSION_TENANT] = form.cleaned_data["tenant"]
    target = request.POST.get("next", "/")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/"
    return redirect(target)
