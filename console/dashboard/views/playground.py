"""Playground: chat with a deployed model through the gateway, with a pasted or short-lived key."""

from __future__ import annotations

from datetime import timedelta

from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_POST

from console.dashboard.base import TenantRequest, actor_for, page, require, tenant_view
from controlplane.core.exceptions import DomainError
from controlplane.deployments.choices import Phase
from controlplane.deployments.selectors import deployment_list
from controlplane.keys import services as key_services
from controlplane.keys.choices import Scope
from controlplane.tenancy.choices import Perm

PLAYGROUND_KEY_TTL = timedelta(hours=1)
GATEWAY_CHAT_PATH = "/v1/chat/completions"


def _page(request: TenantRequest, *, secret: str = "", error: str = "", status: int = 200) -> HttpResponse:
    deployments = deployment_list(access=request.access, filters={"tenant": request.tenant.slug})
    serving = [d for d in deployments if d.phase in Phase.serving()]
    context = {
        "deployments": serving or list(deployments),
        "secret": secret,
        "error": error,
        "endpoint": GATEWAY_CHAT_PATH,
        "ttl_minutes": int(PLAYGROUND_KEY_TTL.total_seconds() // 60),
        "nav": "playground",
    }
    response = page(request, "dashboard/playground.html", context, status=status)
    if secret:
        response["Cache-Control"] = "no-store"
    return response


@tenant_view(Perm.DEPLOYMENT_VIEW)
def playground(request: TenantRequest) -> HttpResponse:
    return _page(request)


@tenant_view(Perm.DEPLOYMENT_VIEW)
@require_POST
def playground_key(request: TenantRequest) -> HttpResponse:
    """Create an inference-only key that expires within the hour; its secret is shown once."""
    require(request, Perm.APIKEY_CHANGE)
    now = timezone.now()
    data = {
        "name": f"playground {request.user.get_username()} {now:%Y-%m-%d %H:%M}",
        "scopes": [Scope.INFERENCE.value],
        "expires_at": now + PLAYGROUND_KEY_TTL,
    }
    try:
        _key, secret = key_services.api_key_create(actor=actor_for(request), tenant=request.tenant, data=data)
    except DomainError as exc:
        return _page(request, error=exc.message, status=400)
    return _page(request, secret=secret, status=201)
