"""Signing in the way people do: through the login page, with its throttle and audit.

Django's ``Client.login()`` calls ``authenticate()`` without a request, which django-axes
refuses (it counts failures per address); tests sign in through ``/login/`` instead.
"""

from __future__ import annotations

from typing import Any

from django.test import Client


def log_in(client: Client, username: str, password: str, *, otp_token: str = "", **extra: Any) -> bool:
    """Post the login form; True when the session is signed in."""
    data = {"username": username, "password": password, "otp_token": otp_token}
    response = client.post("/login/", data, **extra)
    return response.status_code == 302 and "_auth_user_id" in client.session
