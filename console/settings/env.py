"""Strict parsing of environment variables: the one place settings read the environment.

A bad value fails at start-up with a message that names the variable and what it accepts,
instead of a surprise at the first request.

Every read by the settings modules also *declares* the variable: its type and bounds, its
default and a description go into ``DECLARED``, from which ``manage.py settings_table`` writes
the README's configuration table (``console/settings/table.py``). A setting read any other way
(``getattr(settings, ..., default)``, ``os.environ``) would be missing from that table, so there
is no other way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import environ

Text = str  # the methods below shadow the builtin names inside the class body
Int = int
Float = float


class ImproperlyConfiguredEnv(Exception):
    """Raised when an environment variable holds a value that cannot be used."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
BASE_PROFILE = "base"


@dataclass
class Declared:
    """One variable as the README shows it: type (with bounds), default, description."""

    name: str
    kind: str
    default: str
    help: str
    profile_defaults: dict[str, str] = field(default_factory=dict)  # e.g. {"local": "`plain`"}


# Every variable the settings modules read, in the order they read it.
DECLARED: dict[str, Declared] = {}


def shown(value: Any) -> str:
    """A default as the README shows it."""
    if value is None or value == "" or value == []:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, list):
        return "`" + ",".join(str(item) for item in value) + "`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def bounds(noun: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{noun}, {minimum:g} to {maximum:g}"
    if minimum is not None:
        return f"{noun} ≥ {minimum:g}"
    if maximum is not None:
        return f"{noun} ≤ {maximum:g}"
    return noun


class Env:
    """Reads typed values from a mapping (``os.environ`` by default).

    ``declare=True`` (the settings modules) records each variable in ``DECLARED`` and requires a
    description (``help``); ``profile`` names the settings module that changes a default
    (``local``, ``test``), so the table can say so.
    """

    def __init__(
        self, environ_map: Mapping[str, str] | None = None, *, declare: bool = False, profile: Text = BASE_PROFILE
    ) -> None:
        self._env = os.environ if environ_map is None else environ_map
        self._declare = declare
        self._profile = profile

    def _record(self, name: Text, kind: Text, default: Any, help: Text, show: Text | None) -> None:
        if not self._declare:
            return
        default_text = show if show is not None else shown(default)
        known = DECLARED.get(name)
        if known is None:
            if not help:
                raise ImproperlyConfiguredEnv(f"{name} is read without a description (help=...)")
            DECLARED[name] = Declared(name=name, kind=kind, default=default_text, help=help)
        elif self._profile != BASE_PROFILE and default_text != known.default:
            known.profile_defaults[self._profile] = default_text

    def raw(self, name: Text) -> Text | None:
        value = self._env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def str(self, name: Text, default: Text, *, help: Text = "", show: Text | None = None) -> Text:
        self._record(name, "text", default, help, show)
        value = self.raw(name)
        return default if value is None else value

    def bool(self, name: Text, default: bool, *, help: Text = "", show: Text | None = None) -> bool:
        self._record(name, "boolean", default, help, show)
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ImproperlyConfiguredEnv(f"{name}={value!r} is not a boolean; use one of {sorted(_TRUE | _FALSE)}")

    def int(
        self,
        name: Text,
        default: Int,
        *,
        minimum: Int | None = None,
        maximum: Int | None = None,
        help: Text = "",
        show: Text | None = None,
    ) -> Int:
        self._record(name, bounds("integer", minimum, maximum), default, help, show)
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ImproperlyConfiguredEnv(f"{name}={value!r} is not an integer") from None
        _check_bounds(name, number, minimum, maximum)
        return number

    def float(
        self,
        name: Text,
        default: Float,
        *,
        minimum: Float | None = None,
        maximum: Float | None = None,
        help: Text = "",
        show: Text | None = None,
    ) -> Float:
        self._record(name, bounds("number", minimum, maximum), default, help, show)
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ImproperlyConfiguredEnv(f"{name}={value!r} is not a number") from None
        _check_bounds(name, number, minimum, maximum)
        return number

    def optional_int(self, name: Text, *, minimum: Int = 0, help: Text = "") -> Int | None:
        """An integer, or ``None`` when unset (for limits where blank means unlimited)."""
        self._record(name, bounds("integer", minimum, None) + " or unset", None, help, None)
        if self.raw(name) is None:
            return None
        return Env(self._env).int(name, 0, minimum=minimum)

    def optional_float(self, name: Text, *, minimum: Float = 0.0, help: Text = "") -> Float | None:
        self._record(name, bounds("number", minimum, None) + " or unset", None, help, None)
        if self.raw(name) is None:
            return None
        return Env(self._env).float(name, 0.0, minimum=minimum)

    def list(self, name: Text, default: list[Text], *, help: Text = "", show: Text | None = None) -> list[Text]:
        self._record(name, "comma-separated list", default, help, show)
        value = self.raw(name)
        if value is None:
            return list(default)
        return [item.strip() for item in value.split(",") if item.strip()]

    def choice(self, name: Text, default: Text, choices: set[Text], *, help: Text = "") -> Text:
        self._record(name, "one of " + ", ".join(f"`{c}`" for c in sorted(choices)), default, help, None)
        value = self.raw(name)
        value = default if value is None else value
        if value not in choices:
            raise ImproperlyConfiguredEnv(f"{name}={value!r} must be one of {sorted(choices)}")
        return value

    def database(self, name: Text, default: Text, *, help: Text = "", show: Text | None = None) -> dict[Text, Any]:
        self._record(name, "database URL", default, help, show)
        value = self.raw(name) or default
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

    def redis_url(self, name: Text, default: Text, *, help: Text = "", show: Text | None = None) -> Text:
        self._record(name, "Redis URL", default, help, show)
        value = self.raw(name) or default
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ImproperlyConfiguredEnv(f"{name}={value!r} must start with redis://, rediss:// or unix://")
        return value


def _check_bounds(name: Text, number: Float, minimum: Float | None, maximum: Float | None) -> None:
    if minimum is not None and number < minimum:
        raise ImproperlyConfiguredEnv(f"{name}={number} is below the minimum {minimum}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfiguredEnv(f"{name}={number} is above the maximum {maximum}")
