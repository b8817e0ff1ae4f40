"""The one door of the console: the login page, its lockout, its second factor, its audit rows.

- django-axes counts failed logins per user name and per client address in the database; at
  ``HANGAR_LOGIN_FAILURE_LIMIT`` it refuses that name or address (before checking any password)
  until ``HANGAR_LOGIN_LOCKOUT_MINUTES`` after its last failure. ``lockout_response`` answers
  with the login page saying so and until when (429, ``Retry-After``).
- A user with a confirmed TOTP device (platform admins may enroll one on the security page)
  must also give a current code; a wrong or missing code is a failed login like a wrong
  password, with the same message, so the page never tells which part was wrong.
- Every login and every failed login is written to the audit log (``controlplane.tenancy.services``).
- ``/admin/login/`` redirects here (``console/urls.py``): one form, one throttle, one second factor.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import django_otp
from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.contrib.auth.views import LoginView
from django.db.models import Max, Sum
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from controlplane.core.context import Actor, client_ip
from controlplane.tenancy import services

LOGIN_TEMPLATE = "dashboard/login.html"


def client_ip_address(request: HttpRequest) -> str:
    """The address axes counts failures against: the peer, as everywhere else (``client_ip``)."""
    return client_ip(request.META) or ""


class LoginForm(AuthenticationForm):
    """User name, password and, for accounts that enrolled one, a TOTP code."""

    otp_token = forms.CharField(
        label="Authentication code",
        required=False,
        max_length=8,
        help_text="Only if you turned on two-factor authentication: the 6 digits your app shows.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean()  # the password (a failure is counted and audited)
        user = self.get_user()
        if user is not None and django_otp.user_has_device(user):
            device = django_otp.match_token(user, (cleaned.get("otp_token") or "").strip())
            if device is None:
                # Counted like a wrong password (axes and the audit log listen to this signal).
                user_login_failed.send(
                    sender=__name__,
                    credentials={"username": cleaned.get("username", "")},
                    request=self.request,
                    reason="otp",
                )
                self.user_cache = None
                raise self.get_invalid_login_error()
            self.otp_device = device
        return cleaned


class HangarLoginView(LoginView):
    template_name = LOGIN_TEMPLATE
    form_class = LoginForm
    redirect_authenticated_user = True

    def form_valid(self, form: LoginForm) -> HttpResponse:  # type: ignore[override]
        response = super().form_valid(form)  # logs in: the session is new from here on
        device = getattr(form, "otp_device", None)
        if device is not None:
            django_otp.login(self.request, device)
        return response


# ----------------------------------------------------------------------------- lockout


def locked_until(request: HttpRequest, credentials: dict[str, Any] | None) -> datetime | None:
    """When the lockout of this request's user name or address ends: the last failure of each
    one that reached the limit, plus the cool-off."""
    cool_off = get_cool_off(request)
    if cool_off is None:
        return None
    limit = get_failure_limit(request, credentials)
    username = get_client_username(request, credentials)
    ends: list[datetime] = []
    for field, value in (("username", username), ("ip_address", client_ip_address(request))):
        if not value:
            continue
        totals = AccessAttempt.objects.filter(**{field: value}).aggregate(
            failures=Sum("failures_since_start"), last=Max("attempt_time")
        )
        if (totals["failures"] or 0) >= limit and totals["last"] is not None:
            ends.append(totals["last"] + cool_off)
    return max(ends, default=None)


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """The login page, saying that this account or address is locked and until when (429)."""
    until = locked_until(request, credentials) or timezone.now() + (get_cool_off(request) or timedelta(minutes=1))
    seconds = max(1, math.ceil((until - timezone.now()).total_seconds()))
    form = LoginForm(request, initial={"username": get_client_username(request, credentials) or ""})
    context = {"form": form, "locked_until": until, "locked_seconds": seconds, "next": request.POST.get("next", "")}
    response = render(request, LOGIN_TEMPLATE, context, status=429)
    response["Retry-After"] = str(seconds)
    return response


# ----------------------------------------------------------------------------- audit


@receiver(user_logged_in, dispatch_uid="hangar-audit-login")
def _audit_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if request is None:
        return  # a login without a request (a test client's force_login) is nobody's sign-in
    services.login_record(
        actor=Actor(user=user, source_ip=client_ip(request.META), via="login"),
        user=user,
        path=request.path,
        second_factor=django_otp.user_has_device(user),  # the form required a code
    )


@receiver(user_login_failed, dispatch_uid="hangar-audit-login-failed")
def _audit_login_failure(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    if request is None:
        return
    username = str(credentials.get(get_user_model().USERNAME_FIELD) or credentials.get("username") or "")
    services.login_failure_record(
        actor=Actor(user=None, source_ip=client_ip(request.META), via="login"),
        username=username,
        path=request.path,
        reason=str(kwargs.get("reason") or "password"),
        locked_out=bool(getattr(request, "axes_locked_out", False)),
    )


__all__ = ["HangarLoginView", "LoginForm", "client_ip_address", "lockout_response"]
