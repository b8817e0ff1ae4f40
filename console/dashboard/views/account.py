"""The signed-in user's own account: personal access tokens, and two-factor login for platform admins."""

from __future__ import annotations

from datetime import timedelta

import segno
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_otp.plugins.otp_totp.models import TOTPDevice

from console.dashboard.base import (
    PlatformRequest,
    account_page,
    account_view,
    actor_for,
    apply_domain_error,
    no_store,
)
from console.dashboard.forms import AccessTokenForm, AccessTokenRevokeForm, OtpCodeForm
from controlplane.core.exceptions import DomainError
from controlplane.tenancy import services
from controlplane.tenancy.choices import TOKEN_SCOPE_RANK, TokenScope
from controlplane.tenancy.selectors import access_token_get, access_token_list_with_keys

# ----------------------------------------------------------------------------- access tokens


def _scopes_up_to(scope: str) -> list[str]:
    """``write`` -> ``["read", "write"]``: a token holds its scope and every one below it."""
    rank = TOKEN_SCOPE_RANK[TokenScope(scope)]
    return [s.value for s, r in TOKEN_SCOPE_RANK.items() if r <= rank]


def _tokens_page(
    request: PlatformRequest, form: AccessTokenForm, *, secret: str = "", status: int = 200
) -> HttpResponse:
    tokens = access_token_list_with_keys(user_id=request.user.pk)
    context = {
        "tokens": tokens,
        "form": form,
        "revoke_form": AccessTokenRevokeForm(),
        "secret": secret,
        "now": timezone.now(),
        "nav": "tokens",
    }
    return account_page(request, "dashboard/tokens.html", context, status=status)


@account_view
def token_index(request: PlatformRequest) -> HttpResponse:
    if request.method != "POST":
        return _tokens_page(request, AccessTokenForm())
    form = AccessTokenForm(request.POST)
    if form.is_valid():
        days = form.cleaned_data.get("expires_in_days")
        try:
            token, secret = services.access_token_create(
                actor=actor_for(request),
                user=request.user,
                name=form.cleaned_data["name"],
                scopes=_scopes_up_to(form.cleaned_data["scopes"]),
                expires_at=timezone.now() + timedelta(days=days) if days else None,
            )
        except DomainError as exc:
            apply_domain_error(form, exc)
        else:
            # Rendered, not redirected: the secret exists only in this response.
            messages.success(request, f"Created token {token.name}. Copy it now; it is not shown again.")
            return no_store(_tokens_page(request, AccessTokenForm(), secret=secret, status=201))
    return _tokens_page(request, form, status=400)


@account_view
@require_POST
def token_revoke(request: PlatformRequest, pk: int) -> HttpResponse:
    token = access_token_get(user_id=request.user.pk, pk=pk)
    form = AccessTokenRevokeForm(request.POST)
    revoke_keys = bool(form.is_valid() and form.cleaned_data["revoke_keys"])
    services.access_token_revoke(actor=actor_for(request), token=token, revoke_keys=revoke_keys)
    messages.success(request, f"Revoked {token.name}{' and the API keys it created' if revoke_keys else ''}.")
    return redirect("dashboard:tokens")


# ----------------------------------------------------------------------------- two-factor login


def _require_platform_admin(request: PlatformRequest) -> None:
    if not request.access.is_platform_admin:
        raise Http404("Not found.")


def _security_page(request: PlatformRequest, form: OtpCodeForm, status: int = 200) -> HttpResponse:
    device = TOTPDevice.objects.filter(user=request.user).first()
    qr = ""
    if device is not None and not device.confirmed:
        qr = segno.make(device.config_url, error="m").svg_inline(scale=4, dark="#111827")
    context = {"device": device, "form": form, "qr": qr, "nav": "security"}
    return no_store(account_page(request, "dashboard/security.html", context, status=status))


@account_view
def security(request: PlatformRequest) -> HttpResponse:
    """Two-factor login (TOTP) for platform admins: start, confirm with a code, or turn off."""
    _require_platform_admin(request)
    if request.method != "POST":
        return _security_page(request, OtpCodeForm())
    action = request.POST.get("action", "")
    if action == "start":
        services.totp_start(actor=actor_for(request), user=request.user)
        return _security_page(request, OtpCodeForm())
    form = OtpCodeForm(request.POST)
    if action in ("confirm", "disable") and form.is_valid():
        service = services.totp_confirm if action == "confirm" else services.totp_disable
        try:
            service(actor=actor_for(request), user=request.user, code=form.cleaned_data["otp_token"])
        except DomainError as exc:
            apply_domain_error(form, exc)
        else:
            messages.success(request, "Two-factor login is on." if action == "confirm" else "Two-factor login is off.")
            return redirect("dashboard:security")
    return _security_page(request, form, status=400)
