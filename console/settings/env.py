"""Strict parsing of environment variables: the one place settings read the environment.

A bad value fails at start-up with a message that names the variable and what it accepts,
instead of a surprise at the first request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import environ

Text = str  # the methods below shadow the builtin names inside the class body
Int = int
Float = float


class ImproperlyConfiguredEnv(Exception):
    """Raised when an environment variable holds a value that cannot be used."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Env:
    """Reads typed values from a mapping (``os.environ`` by default)."""

    def __init__(self, environ_map: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if environ_map is None else environ_map

    def raw(self, name: Text) -> Text | None:
        value = self._env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def str(self, name: Text, default: Text) -> Text:
        value = self.raw(name)
        return default if value is None else value

    def bool(self, name: Text, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ImproperlyConfiguredEnv(f"{name}={value!r} is not a boolean; use one of {sorted(_TRUE | _FALSE)}")

    def int(self, name: Text, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ImproperlyConfiguredEnv(f"{name}={value!r} is not an integer") from None
        if minimum is not None and number < minimum:
            raise ImproperlyConfiguredEnv(f"{name}={number} is below the minimum {minimum}")
        if maximum is not None and number > maximum:
            raise ImproperlyConfiguredEnv(f"{name}={number} is above the maximum {maximum}")
        return number

    def float(self, name: Text, default: float, *, minimum: float | None = None) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ImproperlyConfiguredEnv(f"{name}={value!r} is not a number") from None
        if minimum is not None and number < minimum:
            raise ImproperlyConfiguredEnv(f"{name}={number} is below the minimum {minimum}")
        return number

    def optional_int(self, name: Text, *, minimum: Int = 0) -> Int | None:
        """An integer, or ``None`` when unset (for limits where blank means unlimited)."""
        if self.raw(name) is None:
            return None
        return self.int(name, 0, minimum=minimum)

    def optional_float(self, name: Text, *, minimum: Float = 0.0) -> Float | None:
        if self.raw(name) is None:
            return None
        return self.float(name, 0.0, minimum=minimum)

    def list(self, name: Text, default: list[Text]) -> list[Text]:
        value = self.raw(name)
        if value is None:
            return list(default)
        return [item.strip() for item in value.split(",") if item.strip()]

    def choice(self, name: Text, default: Text, choices: set[Text]) -> Text:
        value = self.str(name, default)
        if value not in choices:
            raise ImproperlyConfiguredEnv(f"{name}={value!r} must be one of {sorted(choices)}")
        return value

    def database(self, name: Text, default: Text) -> dict[Text, Any]:
        value = self.str(name, default)
        if "://" not in value:
            raise ImproperlyConfiguredEnv(
                f"{name}={value!r} is not a database URL (postgres://user:pass@host:port/db or sqlite:///path)"
            )
        scheme = value.split("://", 1)[0]
        if scheme not in {"postgres", "postgresql", "sqlite", "pgsql"}:
            raise ImproperlyConfiguredEnv(f"{name} uses the unsupported scheme {scheme!r}; use postgres or sqlite")
        try:
            config: dict[Text, Any] = environ.Env.db_url_config(value)
        except Exception as exc:  # environ raises a mix of error types on bad URLs
            raise ImproperlyConfiguredEnv(f"{name} could not be parsed: {exc}") from None
        return config

    def redis_url(self, name: Text, default: Text) -> Text:
        value = self.str(name, default)
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ImproperlyConfiguredEnv(f"{name}={value!r} must start with redis://, rediss:// or unix://")
        return value
